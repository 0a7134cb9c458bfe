"""numba's ``njit`` for the CPU training step's compiled passes (``models.mlp_passes``, ``training.rowwise``),
and a pass run over row blocks on torch's threads.

The machine code is cached next to the module, or in numba's per-user folder; where neither can be
written (a read-only install and home), it is compiled afresh in each process instead of failing.
numba is imported on first use: ``import deepfm`` and prediction do not load it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch

F = TypeVar("F", bound=Callable)
MIN_BLOCK_ROWS = 256  # below this a block's hand-off costs more than its second thread saves


def compiled(function: F | None = None, **options: Any) -> F | Callable[[F], F]:
    """``function`` compiled by numba (nogil), cached on disk where a cache folder can be written.
    ``@compiled`` or ``@compiled(**njit options)``."""
    if function is None:
        return lambda f: compiled(f, **options)
    from numba import njit

    try:
        return njit(cache=True, nogil=True, **options)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return njit(nogil=True, **options)(function)


_pool: ThreadPoolExecutor | None = None


def _helpers(count: int) -> ThreadPoolExecutor:
    """A pool of ``count`` threads beside the caller's (made again if torch's thread count changed)."""
    global _pool
    if _pool is None or _pool._max_workers != count:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool = ThreadPoolExecutor(count, thread_name_prefix="deepfm-pass")
    return _pool


def _forget_pool_in_child() -> None:
    global _pool
    _pool = None  # a forked child has none of the parent's threads


os.register_at_fork(after_in_child=_forget_pool_in_child)


def in_row_blocks(compiled_pass: Callable, arrays: Sequence[np.ndarray], *args: Any) -> list:
    """``compiled_pass(*blocks, first_row, *args)`` on consecutive row blocks of ``arrays`` (all with the
    same rows), one block per torch thread (a nogil pass runs beside the others); the results in block order."""
    rows = len(arrays[0])
    blocks = max(1, min(torch.get_num_threads(), rows // MIN_BLOCK_ROWS))
    bounds = np.linspace(0, rows, blocks + 1).astype(int).tolist()
    calls = [([a[start:stop] for a in arrays], start) for start, stop in zip(bounds[:-1], bounds[1:])]
    if blocks == 1:
        return [compiled_pass(*calls[0][0], calls[0][1], *args)]
    pending = [_helpers(blocks - 1).submit(compiled_pass, *block, start, *args) for block, start in calls[1:]]
    first = compiled_pass(*calls[0][0], calls[0][1], *args)
    return [first, *(p.result() for p in pending)]
