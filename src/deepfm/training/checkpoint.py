"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint holds the model, both optimisers' state, the torch RNG and the loop's
position (epoch, step, history, best so far), enough for a resumed run to continue
exactly where the interrupted one stopped.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def _flatten(prefix: str, value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Move tensors out of a nested structure into ``tensors``; leave a JSON-able skeleton."""
    if isinstance(value, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = value.detach().contiguous().cpu()
        return {"__tensor__": key}
    if isinstance(value, dict):
        return {"__dict__": [[_key(k), _flatten(f"{prefix}.{k}", v, tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_flatten(f"{prefix}.{i}", v, tensors) for i, v in enumerate(value)]
    return value


def _key(key: Any) -> Any:
    return {"__int__": key} if isinstance(key, int) else key


def _unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict) and "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if isinstance(value, dict) and "__dict__" in value:
        return {(k["__int__"] if isinstance(k, dict) else k): _unflatten(v, tensors) for k, v in value["__dict__"]}
    if isinstance(value, list):
        return [_unflatten(v, tensors) for v in value]
    return value


def save_checkpoint(directory: Path, model: torch.nn.Module, optimizer_state: dict[str, Any], loop_state: dict[str, Any],
                    best_weights: dict[str, torch.Tensor] | None) -> None:
    """Write atomically, so a crash at any point leaves a complete checkpoint (the new or the previous):
    write ``directory.tmp`` (a stale one is removed first, never reused), rename the current checkpoint
    to ``directory.old``, rename ``.tmp`` to ``directory``, then delete ``.old``. ``load_checkpoint``
    reads ``.old`` when a crash came between the two renames."""
    directory = Path(directory)
    staging = staging_dir(directory)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, staging / "model.safetensors")
    tensors: dict[str, torch.Tensor] = {"torch_rng": torch.get_rng_state()}
    skeleton = _flatten("optimizer", optimizer_state, tensors)
    save_file(tensors, staging / "optimizer.safetensors")
    if best_weights is not None:
        save_file(best_weights, staging / "best.safetensors")
    (staging / "state.json").write_text(json.dumps({"loop": loop_state, "optimizer": skeleton}, indent=1))
    publish(staging, directory)


def staging_dir(directory: Path) -> Path:
    """An empty ``directory.tmp`` to write the next checkpoint into (a stale one is removed, never reused)."""
    staging = _sibling(Path(directory), ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, directory: Path) -> None:
    """Make the complete checkpoint in ``staging`` (with its ``state.json``) the one at ``directory``."""
    previous = _sibling(directory, ".old")
    if directory.exists():
        if previous.exists():
            shutil.rmtree(previous)  # the current checkpoint is complete: the older one is not needed
        os.replace(directory, previous)
    os.replace(staging, directory)
    if previous.exists():
        shutil.rmtree(previous)


def _sibling(directory: Path, suffix: str) -> Path:
    return directory.with_name(directory.name + suffix)


def complete_checkpoint(directory: Path | None) -> Path | None:
    """The directory that holds the latest complete checkpoint at ``directory``: itself, its ``.old``
    (a crash between the two renames of ``save_checkpoint``), or None."""
    if directory is None:
        return None
    for candidate in (Path(directory), _sibling(Path(directory), ".old")):
        if (candidate / "state.json").exists():
            return candidate
    return None


def load_checkpoint(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any], dict[str, torch.Tensor] | None, torch.Tensor]:
    """Return (model weights, optimizer state, loop state, best weights or None, torch RNG state)."""
    directory = complete_checkpoint(directory) or Path(directory)
    state = json.loads((directory / "state.json").read_text())
    tensors = load_file(directory / "optimizer.safetensors")
    weights = load_file(directory / "model.safetensors")
    best = load_file(directory / "best.safetensors") if (directory / "best.safetensors").exists() else None
    return weights, _unflatten(state["optimizer"], tensors), state["loop"], best, tensors["torch_rng"]
