"""Embedding tables in shared memory when every rank runs on one machine.

Replicated tables (``rows``) cost an all-gather of every updated row after each step, and a copy of
each table per rank. When all ranks are on one machine (``WORLD_SIZE == LOCAL_WORLD_SIZE``, gloo on
CPU), each table is instead one file in ``/dev/shm`` that every rank maps: an owner's update is
written once into the memory every rank reads, and ``OwnedRows.share`` only waits until every owner
has written (one barrier) before the next forward pass reads the table. The gradient rows go to
their owners through shared memory too: each rank writes its packed rows into its own mailbox (a
sparse file, so only the pages written take memory), the ranks all-gather the byte counts (which
also says that every mailbox is written), and each owner reads its rows from every mailbox.

Rank 0 creates each file and writes its table into it, every rank maps it (``numpy.memmap``, shared),
and rank 0 unlinks the file once all have mapped it (the memory lives as long as a mapping). The
values are rank 0's, which ``broadcast_model`` already gave every rank. ``DEEPFM_SHARED_TABLES=0``
keeps private tables (and the all-gather); so do several machines, GPUs, and a ``/dev/shm`` that is
missing or too small (``has_room``).
"""

from __future__ import annotations

import os
import uuid
import weakref
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from deepfm.distributed.process import active, broadcast_text

SHARED_DIR = Path("/dev/shm")
MARGIN_BYTES = 64 << 20  # free space in SHARED_DIR beyond 1.5 x the tables' bytes (mailboxes, others)
NOT_SHARED = "-"
MAPPABLE = (torch.float32, torch.float64, torch.float16)  # dtypes numpy can map
_SHARED: dict[int, tuple[weakref.ref, int, list[torch.Tensor]]] = {}  # id(table) -> (it, its address, mailboxes)


def one_machine() -> bool:
    """Every rank of the run on this machine, talking gloo on CPU, and not turned off."""
    return (active() and dist.get_backend() == "gloo" and os.environ.get("DEEPFM_SHARED_TABLES", "1") != "0"
            and int(os.environ.get("LOCAL_WORLD_SIZE", "0")) == dist.get_world_size())


def share_tables(tables: list[nn.Parameter]) -> bool:
    """Put ``tables`` (CPU, the same values on every rank) in memory that every rank of this machine
    maps, with one mailbox per rank for the tables' gradient rows (``mailboxes_of``). Every rank
    calls it (collectives). Returns whether the tables are now shared."""
    if not tables or not one_machine() or any(t.device.type != "cpu" or t.dtype not in MAPPABLE for t in tables):
        return False
    prefix = NOT_SHARED  # rank 0 decides for every rank (broadcast_text sends no empty text)
    if dist.get_rank() == 0 and SHARED_DIR.is_dir() and os.access(SHARED_DIR, os.W_OK) and has_room(tables, SHARED_DIR):
        prefix = str(SHARED_DIR / f"deepfm-{os.getpid()}-{uuid.uuid4().hex[:12]}")
    prefix = broadcast_text(prefix)
    if prefix == NOT_SHARED:
        return False
    world = dist.get_world_size()
    table_paths = [Path(f"{prefix}-table{n}") for n in range(len(tables))]
    box_paths = [Path(f"{prefix}-box{r}") for r in range(world)]
    try:
        if dist.get_rank() == 0:
            for path, table in zip(table_paths, tables):
                mapped = np.memmap(path, dtype=_numpy_dtype(table), mode="w+", shape=tuple(table.shape))
                mapped[...] = table.detach().numpy()
                del mapped
            for path in box_paths:  # sparse files: a page takes memory once a rank writes it
                with open(path, "wb") as box:
                    box.truncate(mailbox_bytes(tables))
        dist.barrier()  # the files are written
        boxes = [torch.from_numpy(np.memmap(path, dtype=np.uint8, mode="r+")) for path in box_paths]
        for path, table in zip(table_paths, tables):
            table.data = torch.from_numpy(np.memmap(path, dtype=_numpy_dtype(table), mode="r+", shape=tuple(table.shape)))
            _SHARED[id(table)] = (weakref.ref(table), table.data_ptr(), boxes)
        dist.barrier()  # every rank has mapped them
    finally:
        if dist.get_rank() == 0:
            for path in table_paths + box_paths:
                path.unlink(missing_ok=True)
    return True


def has_room(tables: list[nn.Parameter], directory: Path) -> bool:
    """Whether ``directory``'s file system has room for ``tables`` and what the mailboxes use, with a
    margin: a write past a full ``/dev/shm`` (Docker's default is 64 MB) kills the process (SIGBUS)."""
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize >= 1.5 * sum(t.numel() * t.element_size() for t in tables) + MARGIN_BYTES


def mailbox_bytes(tables: list[nn.Parameter]) -> int:
    """Room for the largest packed gradient of ``tables`` (``rows._pack``: every row of every table
    touched; a header of 16 bytes per table, row ids and values each padded to 8 bytes)."""
    return sum(16 + 8 * len(t) + -(-t.shape[1:].numel() * t.element_size() * len(t) // 8) * 8 for t in tables)


def is_shared(table: nn.Parameter) -> bool:
    """Whether ``table`` still holds the memory that every rank of this machine maps (``share_tables``;
    not a copy of it, nor other memory assigned to it since)."""
    return mailboxes_of([table]) is not None


def mailboxes_of(tables: list[nn.Parameter]) -> list[torch.Tensor] | None:
    """The mailboxes (one byte buffer per rank, mapped by every rank) that ``tables`` were shared
    with, or None unless all of them were shared together and still hold that memory."""
    found = []
    for table in tables:
        held, address, boxes = _SHARED.get(id(table), (lambda: None, 0, None))
        if held() is not table or address != table.data_ptr():
            return None
        found.append(boxes)
    return found[0] if found and all(boxes is found[0] for boxes in found) else None


def _numpy_dtype(table: torch.Tensor) -> np.dtype:
    return torch.empty((), dtype=table.dtype).numpy().dtype
