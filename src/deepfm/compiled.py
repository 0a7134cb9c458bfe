"""numba's ``njit`` for the CPU training step's compiled passes (``models.mlp_passes``, ``training.adam_pass``, ...),
and a pass run over row blocks on torch's threads.

The machine code is cached next to the module, or in numba's per-user folder; where neither can be
written (a read-only install and home), it is compiled afresh in each process instead of failing.
numba is imported on first use: ``import deepfm`` and prediction do not load it.
"""

from __future__ import annotations

import os
import threading
from queue import SimpleQueue
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch

F = TypeVar("F", bound=Callable)
MIN_BLOCK_ROWS = 256  # below this a block's hand-off costs more than its second thread saves


def compiled(function: F | None = None, **options: Any) -> F | Callable[[F], F]:
    """``function`` compiled by numba (nogil, NumPy's error model), cached on disk where a cache folder can be
    written. ``@compiled`` or ``@compiled(**njit options)``.

    NumPy's error model: a float divided by zero is ±inf or NaN, as in NumPy, where numba's default (Python's) checks
    every division for a zero to raise ZeroDivisionError; that branch kept the loops of the optimiser passes
    (g / (√G + ε)) from vectorising. AdaGrad's update of 2,500 rows × 64, 200 calls: 0.31 → 0.07-0.09 ms, the same
    numbers bit for bit (numba 0.68, AVX-512 host, 2026-12-05)."""
    if function is None:
        return lambda f: compiled(f, **options)
    from numba import njit

    defer_blas_check()
    options = {"error_model": "numpy", **options}
    forget_caches_of_other_options(function)
    try:
        return njit(cache=True, nogil=True, **options)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return njit(nogil=True, **options)(function)


def load_compiler() -> None:
    """Load numba and its CPU target now (~0.6 s of a process's first compiled pass, which would otherwise fall
    inside whatever that pass's caller times)."""
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.registry import cpu_target

    with global_compiler_lock:
        cpu_target.target_context.refresh()


def defer_blas_check() -> None:
    """Keep numba's CPU target from importing ``scipy.linalg`` when it loads (~0.15 s of every process's first
    compiled pass, inside its first training batch; no pass here calls BLAS). numba's ``np.linalg`` support asks
    SciPy for BLAS when it compiles such a call, as before; only ``arraymath``'s check at its import, which sets
    whether ``np.dot`` of vectors may use BLAS, is answered by whether SciPy is installed. Once a process, before
    the target loads; a numba without these names is left as it is."""
    import sys

    if "numba.np.arraymath" in sys.modules:
        return
    try:
        from importlib.util import find_spec

        import numba.np.linalg as linalg

        ensure_blas = linalg.ensure_blas
        linalg.ensure_blas = lambda: None
        try:
            import numba.np.arraymath as arraymath
        finally:
            linalg.ensure_blas = ensure_blas
        if arraymath.ensure_blas is not ensure_blas and hasattr(arraymath, "_HAVE_BLAS"):
            arraymath.ensure_blas = ensure_blas
            arraymath._HAVE_BLAS = find_spec("scipy") is not None
    except (ImportError, AttributeError):
        pass


# What the machine code cached beside a module was compiled with. numba keys its cache by the function's signature and
# its source file's stamp, not by njit's options: a change here leaves passes of untouched files loading code built
# with the former ones. A cache folder whose tag differs is emptied of numba's files once (``compiled``).
CACHE_TAG = "deepfm compiled(): nogil, error_model numpy\n"
_tagged: set[str] = set()


def forget_caches_of_other_options(function: Callable) -> None:
    """Remove numba's cache files beside ``function``'s module (``__pycache__``) unless they were written with
    ``CACHE_TAG``'s options, then tag the folder; once per folder and process. A folder that cannot be read or
    written is left as it is."""
    import inspect
    from pathlib import Path

    try:
        folder = Path(inspect.getfile(function)).resolve().parent / "__pycache__"
    except (TypeError, OSError):
        return
    if str(folder) in _tagged:
        return
    _tagged.add(str(folder))
    tag = folder / "deepfm-numba-options.txt"
    try:
        if tag.read_text() == CACHE_TAG:
            return
    except OSError:
        pass
    try:
        for cached in [*folder.glob("*.nbi"), *folder.glob("*.nbc")]:
            cached.unlink()
        folder.mkdir(exist_ok=True)
        tag.write_text(CACHE_TAG)
    except OSError:
        return


class _Helpers:
    """Daemon threads that run passes handed to them through one queue. A hand-off is a queue put and a
    lock (~25 µs here, where ``ThreadPoolExecutor``'s future took ~50 µs): a step makes ~20 of them."""

    def __init__(self) -> None:
        self.tasks: SimpleQueue = SimpleQueue()
        self.threads = 0
        self.lock = threading.Lock()

    def ensure(self, count: int) -> None:
        """At least ``count`` threads (extra ones idle: the pool never shrinks)."""
        with self.lock:
            while self.threads < count:
                threading.Thread(target=self._work, name=f"deepfm-pass-{self.threads}", daemon=True).start()
                self.threads += 1

    def _work(self) -> None:
        while True:
            task = self.tasks.get()
            try:
                task.result = task.function(*task.args)
            except BaseException as error:  # noqa: BLE001 - handed back to the caller, who raises it
                task.error = error
            task.function = task.args = None  # the block's arrays are the caller's again
            task.finished = True  # before the release: a caller holding the lock knows the block has ended
            task.done.release()
            del task  # nor kept while this thread waits for the next


class _Task:
    __slots__ = ("function", "args", "done", "result", "error", "finished")

    def __init__(self, function: Callable, args: tuple) -> None:
        self.function, self.args, self.result, self.error, self.finished = function, args, None, None, False
        self.done = threading.Lock()
        self.done.acquire()

    def wait(self) -> None:
        """Until the block has run (an interrupt while waiting waits on: the block writes into the caller's arrays)."""
        try:
            self.done.acquire()
        except BaseException:  # KeyboardInterrupt: wait for a block still running, then re-raise
            if not self.finished:  # (an interrupt just after the lock was taken: taking it again would wait forever)
                self.done.acquire()
            raise


_helpers = _Helpers()


def _forget_helpers_in_child() -> None:
    global _helpers
    _helpers = _Helpers()  # a forked child has none of the parent's threads


if hasattr(os, "register_at_fork"):  # not on Windows (no fork there)
    os.register_at_fork(after_in_child=_forget_helpers_in_child)


def numpy_view(t: torch.Tensor) -> np.ndarray:
    """A contiguous CPU tensor's elements as a compiled pass reads them: float32 as they are, bfloat16 as
    their bits (uint16). A view: a pass writing into it writes into the tensor."""
    t = t.detach()
    return t.numpy() if t.dtype == torch.float32 else t.view(torch.int16).numpy().view(np.uint16)


def in_row_blocks(compiled_pass: Callable, arrays: Sequence[np.ndarray], *args: Any) -> list:
    """``compiled_pass(*blocks, first_row, *args)`` on consecutive row blocks of ``arrays`` (all with the
    same rows), one block per torch thread (a nogil pass runs beside the others); the results in block order.
    Float sums a pass returns per block then depend on the thread count by rounding, not bit for bit. The
    first error of a block is raised once every block has ended. A pass must not call ``in_row_blocks``
    itself (a helper waiting on helpers can wait forever)."""
    rows = len(arrays[0])
    blocks = max(1, min(torch.get_num_threads(), rows // MIN_BLOCK_ROWS))
    bounds = [rows * block // blocks for block in range(blocks + 1)]
    calls = [([a[start:stop] for a in arrays], start) for start, stop in zip(bounds[:-1], bounds[1:])]
    if blocks == 1:
        return [compiled_pass(*calls[0][0], calls[0][1], *args)]
    helpers = _helpers
    helpers.ensure(blocks - 1)
    tasks = [_Task(compiled_pass, (*block, start, *args)) for block, start in calls[1:]]
    for task in tasks:
        helpers.tasks.put(task)
    try:
        first = compiled_pass(*calls[0][0], calls[0][1], *args)
    finally:  # every other block ends before the caller goes on or raises: none still writes into its arrays
        interrupted = None
        for task in tasks:
            try:
                task.wait()
            except BaseException as error:  # noqa: BLE001 - raised once every block has ended
                interrupted = interrupted or error
        if interrupted is not None:
            raise interrupted
    for task in tasks:
        if task.error is not None:
            error, task.error = task.error, None
            raise error
    return [first, *(task.result for task in tasks)]
