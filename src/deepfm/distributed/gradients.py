"""Gradients averaged over ranks after each backward pass (dense: all-reduce; sparse rows: all-gather)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from deepfm.distributed.gather import gather_padded
from deepfm.distributed.process import active, comm_device


def average_gradients(model: nn.Module) -> None:
    """Replace every gradient by its mean over ranks (no-op in a single process).

    Dense gradients: one flat all-reduce. Sparse (row) gradients: all-gather every rank's rows and
    values, sum duplicate rows, divide by ``world``; the result is coalesced (sorted, distinct rows).
    """
    if not active():
        return
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
    for p in params:
        if p.grad.is_sparse:
            p.grad = _average_sparse(p.grad, world)


def _average_sparse(grad: torch.Tensor, world: int) -> torch.Tensor:
    grad = grad.coalesce()
    device = comm_device()
    rows = torch.cat(gather_padded(grad.indices()[0].to(device), world))  # (Σ U_r,)
    values = torch.cat(gather_padded(grad.values().to(device), world)) / world  # (Σ U_r, k)
    merged = torch.sparse_coo_tensor(rows.unsqueeze(0), values, grad.shape, check_invariants=False).coalesce()
    return merged.to(grad.device)
