"""Process-wide settings for speed and memory, applied when training or serving starts.

- Intra-op threads: one per core this process may use (not the machine's count).
- OpenMP threads wait passively (``deepfm/__init__.py`` sets ``OMP_WAIT_POLICY=PASSIVE`` before
  torch loads, unless set): spinning threads halve training speed next to any busy process.
- Flush-to-zero for denormals, which otherwise appear in the optimiser state of rarely seen
  embedding rows and slow CPU math badly.
- Arrow allocates through the system allocator (``deepfm/__init__.py`` sets
  ``ARROW_DEFAULT_MEMORY_POOL=system`` before pyarrow loads, for its C++ compute engine too):
  parsing speed is the same here, and memory freed after parsing goes back to the OS instead of
  staying in mimalloc's arenas (about 150 MB less resident after fitting 1M Criteo-shaped rows).
"""

from __future__ import annotations

import ctypes
import os
import sys

import pyarrow as pa
import torch


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configure(threads: int = 0) -> None:
    torch.set_num_threads(threads or available_cores())
    torch.set_flush_denormal(True)
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL", "system") == "system" and pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())  # pyarrow was loaded before deepfm; a pool you chose is kept


def release_free_memory() -> None:
    """Hand memory that is free but still held by the allocators back to the OS (after parsing)."""
    pa.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).malloc_trim(0)  # glibc only
        except (OSError, AttributeError):
            pass
