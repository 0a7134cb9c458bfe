"""Collecting tensors from every rank: validation is predicted in one block per rank, then gathered;
rows each rank encoded (its share of the held-out rows) are gathered into one ``EncodedData``."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from deepfm.data.batch import EncodedData
from deepfm.distributed.process import Context, active, comm_device, context


def gather_padded(tensor: torch.Tensor, world: int) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (first dimensions may differ), in rank order."""
    device = tensor.device
    size = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = max(int(s) for s in sizes)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return [g[: int(s)] for g, s in zip(gathered, sizes)]


def _block(n: int, ctx: Context) -> tuple[int, int]:
    return n * ctx.rank // ctx.world, n * (ctx.rank + 1) // ctx.world


def block_of(data: EncodedData) -> EncodedData:
    """This rank's contiguous block of ``data`` (all of it in a single process)."""
    ctx = context()
    return data if ctx.world == 1 else data.slice(*_block(len(data), ctx))


def gather_blocks(block: np.ndarray) -> np.ndarray:
    """Concatenate every rank's ``block`` (from ``block_of``) in rank order; the same on every rank."""
    if not active():
        return block
    parts = gather_padded(torch.from_numpy(np.ascontiguousarray(block, dtype=np.float64)).to(comm_device()),
                           dist.get_world_size())
    return torch.cat(parts).cpu().numpy()


def gather_rows(part: EncodedData) -> EncodedData:
    """Every rank's labelled rows ``part`` (single-valued fields only; maybe none), concatenated in
    rank order: the same ``EncodedData`` on every rank."""
    if not active():
        return part
    world, device = dist.get_world_size(), comm_device()
    present = torch.tensor([part.values is not None, part.weights is not None], dtype=torch.int32, device=device)
    dist.all_reduce(present, op=dist.ReduceOp.MAX)  # a column that one rank has, every rank sends

    def gathered(column: np.ndarray) -> np.ndarray:
        return torch.cat(gather_padded(torch.from_numpy(np.ascontiguousarray(column)).to(device), world)).cpu().numpy()

    n = len(part)
    values = part.dense_values() if part.values is not None else np.ones(part.ids.shape, np.float32)
    weights = part.weights if part.weights is not None else np.ones(n, np.float32)
    return EncodedData(ids=gathered(part.ids), values=gathered(values) if present[0] else None,
                       labels=gathered(part.labels), weights=gathered(weights) if present[1] else None)
