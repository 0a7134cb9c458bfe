"""The process group: this rank's place in the run, joining and leaving, broadcasting rank 0's state."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


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
        _import_group_defaults()
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    return context()


def _import_group_defaults() -> None:
    """Import ``torch.distributed.nn.functional`` while no process group exists, so that its
    ``group=group.WORLD`` default arguments are ``None``.

    torch imports it late (``torch._dynamo`` imports it through FSDP, and torch.optim's wrappers import
    ``torch._dynamo``; deepfm's optimisers skip them, other code may not). Imported after
    ``init_process_group``, those defaults hold the group, ``cleanup`` cannot free it and gloo's worker
    threads outlive it: one that drops its last work's tensors while the
    interpreter exits aborts the finished rank (SIGABRT, "terminate called without an active
    exception"), and torchrun reports a failure (pytorch/pytorch#190489 describes the abort)."""
    import torch.distributed.nn.functional  # noqa: F401


def cleanup() -> None:
    """Leave the process group: it is freed here, its threads joined, while the interpreter is whole."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: str, ctx: Context) -> str:
    """``cuda`` means this rank's own GPU (``cuda:LOCAL_RANK``) when distributed."""
    if ctx.world > 1 and device == "cuda":
        return f"cuda:{ctx.local_rank}"
    return device


def comm_device() -> torch.device:
    """Where collective tensors must live: the rank's GPU for nccl, CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_text(text: str | None) -> str:
    """Rank 0's ``text`` on every rank (UTF-8 bytes in a tensor: no pickle)."""
    if not active():
        assert text is not None
        return text
    device = comm_device()
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
    device = comm_device()
    for tensor in model.state_dict().values():
        moved = tensor.detach().to(device)
        dist.broadcast(moved, 0)
        if moved is not tensor:
            tensor.detach().copy_(moved)
