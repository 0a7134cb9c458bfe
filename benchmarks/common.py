"""What every benchmark process shares (imports neither deepfm nor the peers)."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Callable


def bench_device() -> str:
    """Where every benchmark process trains: ``BENCH_DEVICE`` (``cpu`` unless set; ``cuda`` on a GPU machine)."""
    return os.environ.get("BENCH_DEVICE", "cpu")


def wait_for(device) -> None:
    """Until a GPU ``device`` (a torch.device) has run what was queued on it, so that a clock read after it counts
    that work; nothing on the CPU."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_task(tasks: dict[str, Callable[..., dict]]) -> None:
    """``python script.py TASK ARGS...``: run one task, print its figures as one JSON line."""
    name, args = sys.argv[1], sys.argv[2:]
    began = time.perf_counter()
    result = tasks[name](*args)
    result.update(task=name, process_wall_s=time.perf_counter() - began, peak_rss_mb=peak_rss_mb())
    print(json.dumps(result), flush=True)
