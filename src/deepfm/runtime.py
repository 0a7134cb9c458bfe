"""Process-wide settings for speed and memory. The ``deepfm`` command applies them for its whole
process; the Python API applies them only while it trains (``scoped``) and restores the host's.

- Intra-op threads: one per core this process may use (not the machine's count).
- OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``, set by the command before torch
  loads, unless set): spinning gains ~2% on an idle machine (DeepFM 55.2-56.0k vs 54.2-54.7k
  samples/s) but next to one busy process it halved training speed on Frappe (12.5k vs 25.6k
  samples/s, 2 cores).
- Flush-to-zero for denormals, which otherwise appear in the optimiser state of rarely seen
  embedding rows and slow CPU math badly.
- glibc's malloc keeps freed blocks under 32 MB for the next allocation (``keep_freed_memory``, set by the
  command and by ``deepfm serve``'s workers): by default it unmaps a freed block above its adaptive
  threshold or beyond the heap's trim threshold and maps fresh zeroed pages for the next one, and a
  DeepFM step's tensors of a few MB each took 2,300-5,000 page faults a step (Criteo shape, batch
  4096, 2 cores): 9-21 ms of system time a step, 2-6 ms with this setting (under 170 faults); the
  step 0.91× as long (median of five process pairs). It costs peak memory: 658-673 → 698-702 MB
  training on the one-hot shape, about the same on the Criteo shape.
- Arrow allocates through the system allocator (``ARROW_DEFAULT_MEMORY_POOL=system``, set by the
  command before pyarrow loads, for its C++ compute engine too): parsing speed is the same here,
  and memory freed after parsing goes back to the OS instead of staying in mimalloc's arenas
  (about 150 MB less resident after fitting 1M Criteo-shaped rows).
- NumPy asks for no transparent huge pages (``NUMPY_MADVISE_HUGEPAGE=0``, set by the command; ``configure``
  applies the variable, off where it is unset): with the kernel's default ``defrag=madvise`` memory is
  compacted for each huge page at its first touch. Filling new arrays the size of 1M Criteo-shaped rows'
  encoded columns (208 MB) took 0.15-0.67 s that way, 0.08 s in 4 KB pages; the one reading pass of
  those rows 4.51 → 3.83 s (medians of six fresh processes each, alternated), at the same peak memory.

torch, pyarrow and numpy are imported inside the functions, so the command can set the environment
before any of them loads.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from contextlib import contextmanager
from functools import wraps
from typing import Any, Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

HUGE_PAGES = "NUMPY_MADVISE_HUGEPAGE"
ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE", "ARROW_DEFAULT_MEMORY_POOL": "system", HUGE_PAGES: "0"}
# glibc's mallopt parameters and the values keep_freed_memory sets
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MAP_FROM = 32 << 20  # blocks this large or larger are mapped alone (and unmapped when freed); glibc before
# 2.35 refuses more on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_FROM = 256 << 20  # free() hands a heap's free top back to the OS only beyond this (32 MB: 1,400 faults a step)
MALLOC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
MALLOC_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")


def set_process_environment() -> None:
    """The command's environment defaults (a variable already set wins) and ``keep_freed_memory``.
    Call before torch, pyarrow or numpy is imported: each reads these once, when it loads."""
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    keep_freed_memory()


def keep_freed_memory() -> bool:
    """Have glibc's malloc serve blocks under 32 MB from its heaps and hand a heap's free top back to the OS
    only beyond 256 MB, so that tensors freed by one step are reused by the next instead of page-faulted
    in afresh (see the module). For the whole process and for good (glibc cannot report the settings it replaces): the
    ``deepfm`` command sets it, the Python API leaves the host's malloc alone (call this to get the same).
    Nothing is done, and False returned, without glibc or where the malloc settings come from the
    environment (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, or either in ``GLIBC_TUNABLES``)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(name in os.environ for name in MALLOC_SETTINGS) or any(name in tunables for name in MALLOC_TUNABLES):
        return False
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MAP_FROM)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_FROM))


def _glibc() -> ctypes.CDLL | None:
    """This process's C library where it is glibc (``mallopt``'s numbering and ``malloc_trim`` are its own), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - a symbol only glibc exports
        return libc
    except (OSError, AttributeError):
        return None


LAUNCHER_PID = "DEEPFM_LAUNCHER_PID"  # set by ``deepfm.distributed.launch`` for its ranks: the process that speaks for them


def started_by_launch() -> bool:
    """True in a rank that ``deepfm ... --nproc N`` started (``distributed.launch``), not in a torchrun run by hand
    (nor in a process that merely inherited the variable: a rank is a torchrun worker)."""
    return LAUNCHER_PID in os.environ and "TORCHELASTIC_RESTART_COUNT" in os.environ


def stop_with_the_launcher() -> None:
    """In a rank that ``deepfm ... --nproc N`` started: be sent SIGTERM when the launcher dies, even by SIGKILL
    (torchrun starts its ranks in sessions of their own, so a ``kill -9`` of the command's process group left them
    training). Linux only (``prctl``); elsewhere, and in any other process, nothing."""
    import signal

    libc = _glibc()
    if not started_by_launch() or libc is None:
        return
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.getppid() != int(os.environ[LAUNCHER_PID]):  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB since it started: Linux's ``VmHWM``, which counts this program alone.
    ``ru_maxrss`` also keeps the peak of the process it was forked from (a rank of torchrun started at torchrun's
    221 MB, and reported 1,156 MB against 566 MB training the same file alone); it is the answer elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configure(threads: int = 0) -> None:
    """Set the thread count, flush-to-zero, Arrow's system allocator and NumPy's huge pages (off unless
    ``NUMPY_MADVISE_HUGEPAGE`` says otherwise) for the rest of the process."""
    import pyarrow as pa
    import torch

    torch.set_num_threads(threads or available_cores())
    torch.set_flush_denormal(True)
    try:
        huge_pages = int(os.environ.get(HUGE_PAGES, ENVIRONMENT[HUGE_PAGES])) != 0  # as numpy reads it at import
    except ValueError:
        huge_pages = False
    set_numpy_huge_pages(huge_pages)
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL", "system") == "system" and pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())  # pyarrow was loaded before deepfm; a pool you chose is kept


def _numpy_multiarray() -> Any:
    import numpy as np

    return np.core.multiarray if np.lib.NumpyVersion(np.__version__).major < 2 else np._core.multiarray


def numpy_huge_pages() -> bool | None:
    """Whether NumPy asks the kernel for transparent huge pages for its large arrays (``madvise``); None where
    this NumPy cannot say."""
    getter = getattr(_numpy_multiarray(), "_get_madvise_hugepage", None)  # alongside the setter in the NumPys deepfm supports
    return None if getter is None else bool(getter())


def set_numpy_huge_pages(enabled: bool) -> bool | None:
    """Whether NumPy asks the kernel for transparent huge pages for its large arrays, from now on; the setting
    it replaces, or None where this NumPy has no such switch (nothing is changed then)."""
    switch = getattr(_numpy_multiarray(), "_set_madvise_hugepage", None)
    return None if switch is None else bool(switch(enabled))


def cpu_has_bf16_math(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX flags in ``cpuinfo``); None where that
    cannot be read (not Linux). Without them torch emulates bf16 products, slower than fp32."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return None
    return None


def flush_denormal_enabled() -> bool:
    """Whether this thread flushes denormals to zero (torch can set the mode but not report it)."""
    import torch

    return torch.tensor([1e-40], dtype=torch.float32).mul(1.0).item() == 0.0


@contextmanager
def earlier_objects_frozen() -> Iterator[None]:
    """Inside the block, Python's cyclic garbage collector skips the objects alive when it began (``gc.freeze``); they
    are its again after it. A process that has imported torch and pyarrow holds ~190k such objects, and numba's load
    in the first training batch set off two full collections over all of them (0.12-0.17 s each, 10 objects freed).
    Garbage that the block makes is collected as before; a cycle of earlier objects that becomes garbage inside it,
    after it. Where objects are frozen already (a host's own ``gc.freeze``, or an enclosing block), nothing is done;
    where the host freezes objects while the block runs (from another thread), all stay frozen after it, as the host's
    freeze would have left them: every object the block froze was alive then."""
    import gc

    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    marker = [None]  # tracked and made after the freeze: frozen at the end only if someone froze objects meanwhile
    try:
        yield
    finally:
        if any(tracked is marker for tracked in gc.get_objects()):  # (frozen objects are not listed)
            gc.unfreeze()


_PRESERVED_LOCK = threading.Lock()
_PRESERVED: dict[str, Any] = {"blocks": 0}  # blocks running, and the process's settings before the first


@contextmanager
def preserved() -> Iterator[None]:
    """Restore the thread count, denormal mode, Arrow pool and NumPy's huge pages after the block, whatever
    it set, so a library call leaves its host's process as it found it; the garbage collector skips the objects
    alive before the block while it runs (``earlier_objects_frozen``). Blocks running at once in threads (fits of a
    threaded search) restore the settings when the last one ends: the first to end had set the thread count back
    under the others, whose later steps then summed in another order."""
    import pyarrow as pa
    import torch

    with _PRESERVED_LOCK:
        if _PRESERVED["blocks"] == 0:
            _PRESERVED.update(threads=torch.get_num_threads(), flush=flush_denormal_enabled(),
                              pool=pa.default_memory_pool(), huge_pages=numpy_huge_pages())
        _PRESERVED["blocks"] += 1
    try:
        with earlier_objects_frozen():
            yield
    finally:
        with _PRESERVED_LOCK:
            _PRESERVED["blocks"] -= 1
            if _PRESERVED["blocks"] == 0:
                torch.set_num_threads(_PRESERVED["threads"])
                torch.set_flush_denormal(_PRESERVED["flush"])
                pa.set_memory_pool(_PRESERVED["pool"])
                if _PRESERVED["huge_pages"] is not None:
                    set_numpy_huge_pages(_PRESERVED["huge_pages"])


def preserving(method: F) -> F:
    """``method`` run inside ``preserved()``: it may ``configure`` the process for its own work."""

    @wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with preserved():
            return method(*args, **kwargs)

    return call  # type: ignore[return-value]


def release_free_memory() -> None:
    """Hand memory that is free but still held by the allocators back to the OS (after parsing)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
