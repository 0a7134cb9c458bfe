"""Training across processes and machines: ``torchrun`` ranks (gloo on CPU, nccl on GPU).

How a run is split, and why it equals one process with a global batch of ``batch_size × world``:

- Rank 0 fits the encoders on the whole training file (one pass, as a single process would) and
  broadcasts them as JSON: every rank encodes with the same vocabularies, and no rank needs to
  agree with another on floating-point statistics computed from a different order of chunks.
- Rank ``r`` keeps rows ``r, r + world, r + 2·world, …`` of the training file, cut to
  ``⌊N / world⌋`` rows on every rank (at most ``world − 1`` rows are left out), so every rank
  takes the same number of steps and no collective waits forever.
- After each backward pass gradients are averaged over ranks: dense ones with one all-reduce;
  the embedding tables' sparse row gradients by all-gathering every rank's (rows, values) and
  summing rows that several ranks touched. ``DistributedDataParallel`` is not used because it
  only recognises sparse gradients of ``nn.Embedding`` modules; the fused table here produces
  its own (see ``FeaturesEmbedding``). The cost per step is O(world × rows touched × k), never
  O(table).
- Batch norm layers normalise over the global batch (``GlobalBatchNorm1d``), as one process would.
- Validation rows are predicted in contiguous blocks, one per rank, and all-gathered: every
  rank computes the same metrics from the same predictions, so early stopping and the choice
  of the best epoch are identical everywhere.
- Only rank 0 writes checkpoints and the model directory; on resume every rank reads them
  (multi-machine runs need the output directory on a shared file system).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from deepfm.data.batch import EncodedData
from deepfm.data.encoders import FeatureEncoder
from deepfm.models.layers import WarmStartBatchNorm1d
from deepfm.data.frame import RawFrame


@dataclass(frozen=True)
class Context:
    """This process's place in the run (``world == 1``: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True inside a process started by ``torchrun`` with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def context() -> Context:
    if not active():
        return Context()
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                   int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def is_main() -> bool:
    return context().is_main


def setup(device: str) -> Context:
    """Join the process group ``torchrun`` describes in the environment (no-op when not launched
    by it, or already joined). ``device`` picks the backend: nccl for CUDA, gloo otherwise."""
    if launched() and not dist.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    return context()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: str, ctx: Context) -> str:
    """``cuda`` means this rank's own GPU (``cuda:LOCAL_RANK``) when distributed."""
    if ctx.world > 1 and device == "cuda":
        return f"cuda:{ctx.local_rank}"
    return device


def _comm_device() -> torch.device:
    """Where collective tensors must live: the rank's GPU for nccl, CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# -- the same encoders everywhere --------------------------------------------------------------


def broadcast_text(text: str | None) -> str:
    """Rank 0's ``text`` on every rank (UTF-8 bytes in a tensor: no pickle)."""
    if not active():
        assert text is not None
        return text
    device = _comm_device()
    data = torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8) if is_main() else None
    size = torch.tensor([0 if data is None else len(data)], dtype=torch.int64, device=device)
    dist.broadcast(size, 0)
    buffer = data.to(device) if data is not None else torch.empty(int(size), dtype=torch.uint8, device=device)
    dist.broadcast(buffer, 0)
    return bytes(buffer.cpu().numpy()).decode("utf-8")


def broadcast_model(model: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank."""
    if not active():
        return
    device = _comm_device()
    for tensor in model.state_dict().values():
        moved = tensor.detach().to(device)
        dist.broadcast(moved, 0)
        if moved is not tensor:
            tensor.detach().copy_(moved)


# -- batch norm over the global batch ----------------------------------------------------------


class _SumOverRanks(torch.autograd.Function):
    """y = Σ_ranks x; the gradient of a sum is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm1d(WarmStartBatchNorm1d):
    """``BatchNorm1d`` whose training statistics are those of the global batch (all ranks' rows),
    on CPU (gloo) as on GPU; ``nn.SyncBatchNorm`` needs a GPU. The all-reduces are differentiable,
    so the gradient is that of one process normalising the global batch. Running statistics are
    therefore the same on every rank. Evaluation uses them, as ``BatchNorm1d`` does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C) -> (B, C)
        if not (self.training and active()):
            return super().forward(x)
        x = x.float()  # under bf16 autocast: statistics, counts and running buffers stay fp32
        all_reduce = _SumOverRanks.apply
        sums = all_reduce(torch.cat([x.sum(0), x.new_tensor([x.shape[0]])]))  # (C + 1,)
        count = sums[-1]
        mean = sums[:-1] / count  # (C,)
        var = all_reduce(((x - mean) ** 2).sum(0)) / count  # biased, as batch norm normalises
        with torch.no_grad():
            momentum = self.warm_momentum()
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean.detach(), momentum)
            self.running_var.lerp_(var.detach() * count / (count - 1).clamp(min=1), momentum)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


def global_batch_norm(model: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm1d`` of ``model`` by a ``GlobalBatchNorm1d`` with the same state
    (same parameter and buffer names, so the saved model loads as usual). No-op in one process."""
    if not active():
        return model
    for name, child in model.named_children():
        if type(child) in (nn.BatchNorm1d, WarmStartBatchNorm1d):
            if not (child.affine and child.track_running_stats):
                raise ValueError("distributed batch norm needs affine=True and track_running_stats=True")
            replacement = GlobalBatchNorm1d(child.num_features, child.eps, child.momentum)
            replacement.load_state_dict(child.state_dict())
            setattr(model, name, replacement.to(child.weight.device))
        else:
            global_batch_norm(child)
    return model


# -- each rank its rows ------------------------------------------------------------------------


def shard_mask(first_row: int, rows: int, total: int, ctx: Context) -> np.ndarray:
    """Which of the rows ``first_row .. first_row + rows`` of a ``total``-row file rank ``ctx.rank`` keeps:
    global row g is kept iff ``g % world == rank`` and ``g // world < total // world``. Shape (rows,) bool."""
    g = np.arange(first_row, first_row + rows, dtype=np.int64)
    return (g % ctx.world == ctx.rank) & (g // ctx.world < total // ctx.world)


def encode_shard(frames: Iterable[RawFrame], encoder: FeatureEncoder, total_rows: int, ctx: Context) -> EncodedData:
    """This rank's rows of a file, encoded chunk by chunk (``frames``: the file's chunks in order),
    so memory holds the shard and one chunk."""
    parts, start = [], 0
    for frame in frames:
        keep = np.flatnonzero(shard_mask(start, frame.num_rows, total_rows, ctx))
        start += frame.num_rows
        if len(keep):
            parts.append(encoder.transform(frame).take(keep))
    if not parts:
        raise ValueError(f"rank {ctx.rank} has no training rows: {total_rows} rows for {ctx.world} ranks")
    return EncodedData.concat(parts) if len(parts) > 1 else parts[0]


# -- gradients ---------------------------------------------------------------------------------


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


def _gather_padded(tensor: torch.Tensor, world: int) -> list[torch.Tensor]:
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


def _average_sparse(grad: torch.Tensor, world: int) -> torch.Tensor:
    grad = grad.coalesce()
    device = _comm_device()
    rows = torch.cat(_gather_padded(grad.indices()[0].to(device), world))  # (Σ U_r,)
    values = torch.cat(_gather_padded(grad.values().to(device), world)) / world  # (Σ U_r, k)
    merged = torch.sparse_coo_tensor(rows.unsqueeze(0), values, grad.shape, check_invariants=False).coalesce()
    return merged.to(grad.device)


# -- validation --------------------------------------------------------------------------------


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
    parts = _gather_padded(torch.from_numpy(np.ascontiguousarray(block, dtype=np.float64)).to(_comm_device()),
                           dist.get_world_size())
    return torch.cat(parts).cpu().numpy()


# -- launching ---------------------------------------------------------------------------------


def without_flag(argv: Sequence[str], flag: str) -> list[str]:
    """``argv`` minus ``flag VALUE`` / ``flag=VALUE``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            out.append(arg)
    return out


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``deepfm ARGV`` as ``nproc`` ranks on this machine (torchrun's launcher, in this process);
    the exit status: 0, 2 when a rank stopped on an input error (it printed the one-line cause), else 1."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    try:
        run(get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "deepfm", *argv]))
    except ChildFailedError as error:
        return 2 if any(f.exitcode == 2 for f in error.failures.values()) else 1
    return 0
