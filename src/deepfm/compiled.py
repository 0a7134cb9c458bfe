"""numba's ``njit`` for the CPU training step's compiled passes (``models.mlp_passes``, ``training.rowwise``),
and a pass run over row blocks on torch's threads.

The machine code is cached next to the module, or in numba's per-user folder; where neither can be
written (a read-only install and home), it is compiled afresh in each process instead of failing.
numba is imported on first use: ``import deepfm`` and prediction do not load it.
"""

from __future__ import annotations

import os
import threading
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


_pool: tuple[int, ThreadPoolExecutor] | None = None  # (its threads, the pool)
_pool_lock = threading.Lock()


def _helpers() -> ThreadPoolExecutor:
    """A pool of torch's thread count less one (the caller's), made again when that count changes."""
    global _pool
    size = max(torch.get_num_threads() - 1, 1)
    with _pool_lock:
        if _pool is None or _pool[0] != size:
            if _pool is not None:
                _pool[1].shutdown(wait=False)  # its queued passes still run
            _pool = (size, ThreadPoolExecutor(size, thread_name_prefix="deepfm-pass"))
        return _pool[1]


def _forget_pool_in_child() -> None:
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()  # a forked child has none of the parent's threads


if hasattr(os, "register_at_fork"):  # not on Windows (no fork there)
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def numpy_view(t: torch.Tensor) -> np.ndarray:
    """A contiguous CPU tensor's elements as a compiled pass reads them: float32 as they are, bfloat16 as
    their bits (uint16). A view: a pass writing into it writes into the tensor."""
    t = t.detach()
    return t.numpy() if t.dtype == torch.float32 else t.view(torch.int16).numpy().view(np.uint16)


def in_row_blocks(compiled_pass: Callable, arrays: Sequence[np.ndarray], *args: Any) -> list:
    """``compiled_pass(*blocks, first_row, *args)`` on consecutive row blocks of ``arrays`` (all with the
    same rows), one block per torch thread (a nogil pass runs beside the others); the results in block order.
    Float sums a pass returns per block then depend on the thread count by rounding, not bit for bit."""
    rows = len(arrays[0])
    blocks = max(1, min(torch.get_num_threads(), rows // MIN_BLOCK_ROWS))
    bounds = np.linspace(0, rows, blocks + 1).astype(int).tolist()
    calls = [([a[start:stop] for a in arrays], start) for start, stop in zip(bounds[:-1], bounds[1:])]
    if blocks == 1:
        return [compiled_pass(*calls[0][0], calls[0][1], *args)]
    pending = [_helpers().submit(compiled_pass, *block, start, *args) for block, start in calls[1:]]
    first = compiled_pass(*calls[0][0], calls[0][1], *args)
    return [first, *(p.result() for p in pending)]
