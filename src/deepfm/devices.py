"""Which torch device a run asks for, checked against this torch before any data is read."""

from __future__ import annotations

import torch

from deepfm.errors import ConfigError


def resolve_device(device: str, option: str = "--device") -> str:
    """``device`` checked against this torch: ``auto`` -> cuda when available, else cpu; a device this
    torch cannot use is a ``ConfigError`` naming ``option``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{option} {device}: not a torch device (cpu, cuda, cuda:N, mps or auto)") from None
    if kind.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{option} {device}: this torch has no CUDA (torch.cuda.is_available() is False)")
    if kind.type == "cuda" and kind.index is not None and kind.index >= torch.cuda.device_count():
        raise ConfigError(f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA devices")
    if kind.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{option} {device}: this torch has no MPS (torch.backends.mps.is_available() is False)")
    if kind.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{option} {device}: deepfm runs on cpu, cuda or mps")
    return device


def usable_here(device: str) -> str:
    """A saved model's training device if this machine has it; else this machine's first GPU for a CUDA model (one
    trained on cuda:3 where there is one GPU), else cpu: a model trained on a GPU (cuda, cuda:3, mps) loads and
    predicts on a machine without one."""
    try:
        return resolve_device(device)
    except ConfigError:
        return "cuda" if device.startswith("cuda") and torch.cuda.is_available() else "cpu"
