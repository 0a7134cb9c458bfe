"""Starting ``nproc`` ranks of a ``deepfm`` command on this machine (torchrun's launcher), and
restarting them from the last checkpoint when one fails."""

from __future__ import annotations

import logging
import os
from typing import Sequence

from deepfm.runtime import LAUNCHER_PID


def without_flag(argv: Sequence[str], flag: str) -> list[str]:
    """``argv`` minus ``flag VALUE`` / ``flag=VALUE``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            out.append(arg)
    return out


# torchrun shares its rendezvous store with the ranks' process group by default; restarted ranks can
# then read the previous attempt's addresses from it and fail to connect (pytorch/pytorch#135712).
# Set for the launcher here; a torchrun started by hand with --max-restarts needs it in its environment.
FRESH_STORE_EACH_RESTART = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"


def under_torchrun() -> bool:
    """True in a worker that torchrun (or ``launch``) started, whatever the number of ranks."""
    return "TORCHELASTIC_RESTART_COUNT" in os.environ


def restart_count() -> int:
    """How many times torchrun has restarted this run's workers (0: the first attempt). A restarted
    worker continues from the run's last checkpoint, as ``--resume`` does."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def restarts_of_the_run() -> int:
    """The most restarts any rank has seen (0: the first attempt). torchrun counts per machine, and a
    machine whose ranks were healthy does not count a restart it took part in (pytorch/pytorch#108158),
    so the ranks take the maximum to agree on resuming. Call after joining the process group."""
    import torch
    import torch.distributed as dist

    from deepfm.distributed.process import active, comm_device

    if not active():
        return restart_count()
    most = torch.tensor([restart_count()], dtype=torch.int64, device=comm_device())
    dist.all_reduce(most, op=dist.ReduceOp.MAX)
    return int(most.item())


def _reader_left(exitcode: int) -> bool:
    """A rank's exit code when SIGPIPE ended it: stdout's reader left (``deepfm train --nproc 2 --json | head``)."""
    import signal

    sigpipe = getattr(signal, "SIGPIPE", None)
    return sigpipe is not None and exitcode == -sigpipe


def _said_by_the_rank(record: logging.LogRecord) -> bool:
    """False for torchrun's "failed (exitcode: 2) ..." line: a rank that exits 2 stopped on an input error and
    printed it in one line; torchrun's echo of it would come after. False too for a rank that SIGPIPE ended: not a
    failure but a reader that left, which the launcher ends as (other exit codes keep theirs)."""
    if not (str(record.msg).startswith("failed (exitcode") and record.args):
        return True
    return not (record.args[0] == 2 or _reader_left(record.args[0]))


def launch(nproc: int, argv: Sequence[str], max_restarts: int = 0) -> int:
    """Run ``deepfm ARGV`` as ``nproc`` ranks on this machine (torchrun's launcher, in this process),
    restarting every rank up to ``max_restarts`` times when one fails (a restarted rank resumes from
    the checkpoint); the exit status: 0, 2 when a rank stopped on an input error (it printed the
    one-line cause), 128 + the signal's number when one stopped the launcher or SIGPIPE a rank (stdout's reader
    left, as a Unix tool's status says), else 1. Ctrl-C is
    ``KeyboardInterrupt`` here once the ranks have stopped (SIGTERM and SIGHUP ``Stopped``): the launcher, which knows the whole command
    (``--nproc`` too), says how to resume."""
    import signal

    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from deepfm.runtime import available_cores

    logging.getLogger("torch.distributed.elastic.multiprocessing.api").addFilter(_said_by_the_rank)
    os.environ.setdefault(FRESH_STORE_EACH_RESTART, "1")
    # each rank's share of the cores (torchrun would set 1 and warn that it did; the ranks set torch's threads alike)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, available_cores() // nproc)))
    os.environ[LAUNCHER_PID] = str(os.getpid())
    try:
        run(get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}",
                                          "-m", "deepfm", *argv]))
    except ChildFailedError as error:
        codes = [failure.exitcode for failure in error.failures.values()]
        if any(code == 2 for code in codes):
            return 2
        return 128 - codes[0] if all(_reader_left(code) for code in codes) else 1
    except SignalException as stopped:  # torchrun's handler: it has passed the signal on to the ranks and waited
        if stopped.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        if stopped.sigval in (signal.SIGTERM, signal.SIGHUP):  # a job scheduler's stop: said as Ctrl-C's is
            from deepfm.errors import Stopped

            raise Stopped(int(stopped.sigval)) from None
        return 128 + int(stopped.sigval)
    finally:
        os.environ.pop(LAUNCHER_PID, None)
    return 0
