"""Gradients averaged over ranks after each backward pass (dense: all-reduce; table rows: by their owners)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from deepfm.distributed.process import active
from deepfm.distributed.rows import OwnedRows, average_rows


def average_gradients(model: nn.Module) -> OwnedRows:
    """Replace every gradient by its mean over ranks (no-op in a single process).

    Dense gradients: one flat all-reduce. Sparse (row) gradients: each rank keeps the mean over ranks
    of the rows it owns (``deepfm.distributed.rows``), coalesced; after the optimiser's step,
    ``share()`` on the returned rows copies every rank's updated rows into every rank's tables.
    """
    if not active():
        return OwnedRows()
    world = dist.get_world_size()
    params = [p for p in model.parameters() if p.grad is not None]
    dense = [p for p in params if not p.grad.is_sparse]
    if dense:
        flat = torch.cat([p.grad.reshape(-1) for p in dense])
        dist.all_reduce(flat)
        flat /= world
        position = 0
        for p in dense:
            n = p.grad.numel()
            p.grad.copy_(flat[position : position + n].view_as(p.grad))
            position += n
    return average_rows([p for p in params if p.grad.is_sparse])
