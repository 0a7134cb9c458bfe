"""Whether a model directory holds a checkpoint to resume, read from file names alone (no torch import: the
command's Ctrl-C handler asks it)."""

from __future__ import annotations

from pathlib import Path


def checkpoint_saved(out: Path) -> bool:
    """Whether a run into ``out`` has written a checkpoint to resume: a single run's (``checkpoint`` or, between
    two swaps, ``checkpoint.old``), a portfolio recipe's or FNN's pre-training stage's (never one being written)."""
    found = [*out.glob("checkpoint*/state.json"), *out.glob("checkpoint*/portfolio-*/state.json")]
    return any(not any(part.endswith(".tmp") for part in path.relative_to(out).parts) for path in found)
