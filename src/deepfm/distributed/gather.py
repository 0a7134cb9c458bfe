"""Collecting tensors from every rank: validation is predicted in one block per rank, then gathered."""

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
