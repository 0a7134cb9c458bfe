"""A frame's columns worked on side by side: Arrow's compute kernels and NumPy's release the GIL, so
counting and encoding a chunk column by column on the process's cores runs ~1.5-1.8× faster on two than
one after the other (a 65k-row chunk of 39 columns). Small frames (a served request) stay on the caller's
thread, where a hand-off would cost more than it saves.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, wait
from functools import cache
from typing import Callable, Sequence, TypeVar

from deepfm.runtime import available_cores

T = TypeVar("T")
R = TypeVar("R")
MIN_ROWS = 8192  # frames with fewer rows are worked on one column after the other
MAX_THREADS = 8


@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(MAX_THREADS, available_cores()), thread_name_prefix="deepfm-columns")


if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads: it makes its own pool
    os.register_at_fork(after_in_child=_pool.cache_clear)


def each_column(work: Callable[[T], R], columns: Sequence[T], rows: int, side_by_side: bool = True) -> list[R]:
    """``[work(c) for c in columns]``, side by side on a pool of the process's cores where ``side_by_side``,
    the frame has at least ``MIN_ROWS`` rows and there is more than one core and column. ``work`` must
    write nothing another column's work reads. Every column's work ends before the first error (in
    column order) is raised, as the loop would raise it."""
    if not side_by_side or rows < MIN_ROWS or len(columns) < 2 or available_cores() < 2:
        return [work(column) for column in columns]
    futures = [_pool().submit(work, column) for column in columns]
    wait(futures)
    return [future.result() for future in futures]
