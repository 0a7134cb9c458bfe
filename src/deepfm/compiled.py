"""numba's ``njit`` for the CPU training step's compiled passes (``models.dropout``, ``training.rowwise``).

The machine code is cached next to the module, or in numba's per-user folder; where neither can be
written (a read-only install and home), it is compiled afresh in each process instead of failing.
numba is imported on first use: ``import deepfm`` and prediction do not load it.
"""

from __future__ import annotations

from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


def compiled(function: F) -> F:
    """``function`` compiled by numba (nogil), cached on disk where a cache folder can be written."""
    from numba import njit

    try:
        return njit(cache=True, nogil=True)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return njit(nogil=True)(function)
