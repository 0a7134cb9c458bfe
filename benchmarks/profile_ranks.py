"""Where a streamed run's CPU time goes, per rank: one process against several (issue 15).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/profile_ranks.py --out DIR -- --train big.csv --config ... --threads 1
    OMP_WAIT_POLICY=PASSIVE torchrun --standalone --nproc-per-node 2 benchmarks/profile_ranks.py --out DIR -- \\
        --train big.csv --config ... --threads 1 --batch-size 2048

Runs ``deepfm train ARGS`` in this process with timers around each phase of the pipeline and writes
``DIR/rank{R}.json``: per phase the CPU seconds of the thread that ran it (``time.thread_time``; with
one torch thread that is all of a main-thread phase's CPU) and its wall seconds, and every thread's
CPU seconds from ``/proc/self/task`` (torch's and gloo's threads included). Phases:

- prefetch thread: ``read, parse, encode, shuffle`` (the ``StreamSource`` batches), ``to tensors``,
  ``distinct ids, design`` (``Batch.prepare``);
- main thread: ``step`` (all of ``Trainer._step``), of which ``backward``, ``penalty`` (per-occurrence
  L2), ``exchange: dense`` and ``exchange: sparse`` (``average_gradients``), ``update: sparse tables``
  and ``update: dense`` (the optimisers' steps), ``exchange: updated rows`` (``OwnedRows.share``),
  and ``forward + loss``: the rest of the step (zeroing gradients included); ``before_training_wall_s``
  (the streamed fit and set-up, up to the first step).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from deepfm import distributed  # noqa: E402
from deepfm.data.batch import Batch  # noqa: E402
from deepfm.data.encoded import EncodedData  # noqa: E402
from deepfm.data.stream import StreamSource  # noqa: E402
from deepfm.distributed import gradients, rows  # noqa: E402
from deepfm.training import optim, rowwise, trainer  # noqa: E402

PHASES: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])  # name -> [cpu s, wall s, calls]
STARTED = time.perf_counter()
FIRST_STEP: list[float] = []


@contextmanager
def timed(name: str):
    cpu, wall = time.thread_time(), time.perf_counter()
    try:
        yield
    finally:
        entry = PHASES[name]
        entry[0] += time.thread_time() - cpu
        entry[1] += time.perf_counter() - wall
        entry[2] += 1


def wrap(owner, attribute: str, name: str) -> None:
    original = getattr(owner, attribute, None)
    if original is None:  # another version of the code
        return

    def timed_call(*args, **kwargs):
        with timed(name):
            return original(*args, **kwargs)

    setattr(owner, attribute, timed_call)


def timed_generator(owner, attribute: str, name: str) -> None:
    """Each ``next`` of the generator ``owner.attribute`` returns, timed as ``name``."""
    original = getattr(owner, attribute)

    def timed_batches(*args, **kwargs):
        iterator = original(*args, **kwargs)
        while True:
            with timed(name):
                try:
                    item = next(iterator)
                except StopIteration:
                    return
            yield item

    setattr(owner, attribute, timed_batches)


def instrument() -> None:
    timed_generator(StreamSource, "batches", "read, parse, encode, shuffle")
    wrap(EncodedData, "to_batch", "to tensors")
    wrap(Batch, "prepare", "distinct ids, design")
    step = trainer.Trainer._step

    def first_step(self, batch):
        if not FIRST_STEP:
            FIRST_STEP.append(time.perf_counter())
        return step(self, batch)

    trainer.Trainer._step = first_step
    wrap(trainer.Trainer, "_step", "step")  # all of it; "forward + loss" is what the phases below leave
    wrap(torch.Tensor, "backward", "backward")
    wrap(trainer, "batch_occurrences", "penalty")
    wrap(optim.ModelOptimizer, "add_occurrence_penalty", "penalty")
    wrap(distributed, "average_gradients", "exchange: all")
    wrap(gradients, "_average_sparse", "exchange: sparse")  # before the tables' rows had owners
    wrap(gradients, "average_rows", "exchange: sparse")  # each row averaged by its owner ...
    wrap(rows.OwnedRows, "share", "exchange: updated rows")  # ... which sends it to every rank once updated
    wrap(rowwise.RowWiseAdam, "step", "update: sparse tables")
    wrap(rowwise.LazyAdagrad, "step", "update: sparse tables")
    wrap(torch.optim.Adam, "step", "update: dense")


def threads_cpu() -> dict[str, float]:
    """CPU seconds of every thread of this process (utime + stime), by thread name and id."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[f"{name} {task.name}"] = round((int(fields[11]) + int(fields[12])) / ticks, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="a directory for rank{R}.json")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then deepfm train's arguments")
    args = parser.parse_args()
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    instrument()
    from deepfm.cli import main as deepfm

    scratch = Path(args.out) / "model"
    code = deepfm(["train", *train_args, "--out", str(scratch), "--overwrite", "--quiet", "--json"])
    rank = int(os.environ.get("RANK", "0"))
    phases = {name: {"cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "calls": calls}
              for name, (cpu, wall, calls) in PHASES.items()}
    def rest(whole: str, parts: list[str]) -> dict:
        """What the phase ``whole`` spent outside the phases ``parts`` it contains."""
        totals = [PHASES.get(whole, [0.0, 0.0, 0])] + [PHASES.get(p, [0.0, 0.0, 0]) for p in parts]
        return {"cpu_s": round(totals[0][0] - sum(t[0] for t in totals[1:]), 2),
                "wall_s": round(totals[0][1] - sum(t[1] for t in totals[1:]), 2), "calls": totals[0][2]}

    phases["exchange: dense"] = rest("exchange: all", ["exchange: sparse"])
    phases["forward + loss"] = rest("step", ["backward", "penalty", "exchange: all", "exchange: updated rows",
                                             "update: sparse tables", "update: dense"])
    usage = os.times()
    record = {"rank": rank, "exit": code, "argv": train_args, "threads": torch.get_num_threads(),
              "before_training_wall_s": round(FIRST_STEP[0] - STARTED, 2) if FIRST_STEP else None,
              "process_cpu_s": round(usage.user + usage.system, 2), "wall_s": round(time.perf_counter() - STARTED, 2),
              "phases": phases, "threads_cpu_s": threads_cpu()}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"rank{rank}.json").write_text(json.dumps(record, indent=1) + "\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
