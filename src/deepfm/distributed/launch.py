"""Starting ``nproc`` ranks of a ``deepfm`` command on this machine (torchrun's launcher)."""

from __future__ import annotations

from typing import Sequence


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


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``deepfm ARGV`` as ``nproc`` ranks on this machine (torchrun's launcher, in this process);
    the exit status: 0, 2 when a rank stopped on an input error (it printed the one-line cause), else 1."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    try:
        run(get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "deepfm", *argv]))
    except ChildFailedError as error:
        return 2 if any(f.exitcode == 2 for f in error.failures.values()) else 1
    return 0
