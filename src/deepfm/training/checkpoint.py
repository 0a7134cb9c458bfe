"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint holds the model, both optimisers' state, the RNG training draws from (the fit's own,
``deepfm.randomness``, or torch's default one) and the loop's
position (epoch, step, history, best so far), enough for a resumed run to continue
exactly where the interrupted one stopped.

On disk, next to the latest checkpoint ``DIR``: ``DIR.old``, the previous one, kept until a newer
one is complete, and ``DIR.tmp`` while one is being written. Each holds a ``manifest.json`` with
the SHA-256 of its other files; a checkpoint whose files do not match it (truncated, damaged) is
skipped for the previous one, with a warning that names the file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from deepfm import randomness
from deepfm.data.identity import sha256_of
from deepfm.errors import CheckpointError

MANIFEST = "manifest.json"  # written last: the SHA-256 of every other file of the checkpoint
FORMAT = "deepfm-checkpoint"


def _flatten(prefix: str, value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Move tensors out of a nested structure into ``tensors``; leave a JSON-able skeleton."""
    if isinstance(value, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = value.detach()  # (``Contents.of`` brings it to the CPU, copied where training changes it)
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
    """Write into ``directory.tmp`` and ``publish`` it: a crash at any point leaves a complete checkpoint."""
    Contents.of(model, optimizer_state, loop_state, best_weights, copied=False).write(Path(directory))


class Contents:
    """What one checkpoint writes: the model's tensors, the optimisers' (and the RNG's) tensors, ``state.json``'s text
    and the best epoch's weights. ``of(..., copied=True)`` copies the tensors that training changes in place, so that
    a thread can write them while training goes on."""

    def __init__(self, model: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], state: str,
                 best: dict[str, torch.Tensor] | None):
        self.model, self.tensors, self.state, self.best = model, tensors, state, best

    @classmethod
    def of(cls, model: torch.nn.Module, optimizer_state: dict[str, Any], loop_state: dict[str, Any],
           best_weights: dict[str, torch.Tensor] | None, copied: bool) -> "Contents":
        def cpu(tensor: torch.Tensor) -> torch.Tensor:  # one copy at most (a GPU's tensor: the move to the CPU)
            tensor = tensor.detach()
            moved = tensor.contiguous().cpu()
            return moved.clone() if copied and moved.data_ptr() == tensor.data_ptr() else moved

        tensors: dict[str, torch.Tensor] = {"torch_rng": randomness.get_state()}  # the fit's generator (deepfm.randomness)
        skeleton = _flatten("optimizer", optimizer_state, tensors)
        state = json.dumps({"loop": loop_state, "optimizer": skeleton}, indent=1)  # (the loop's history grows on)
        # (the best weights are a copy already, replaced, never changed, when an epoch improves)
        return cls({k: cpu(v) for k, v in model.state_dict().items()}, {k: cpu(v) for k, v in tensors.items()}, state,
                   best_weights)

    def write(self, directory: Path) -> None:
        """Write the checkpoint into ``directory.tmp`` and publish it; a write that fails (a full disk) removes
        ``.tmp`` and raises an ``OSError`` (safetensors says it as its own error)."""
        staging = staging_dir(directory)
        try:
            for name, tensors in (("model", self.model), ("optimizer", self.tensors), ("best", self.best)):
                if tensors is not None:
                    save_file(tensors, staging / f"{name}.safetensors")
            (staging / "state.json").write_text(self.state)
        except (OSError, SafetensorError) as error:
            shutil.rmtree(staging, ignore_errors=True)
            number = _errno_of(str(error)) if isinstance(error, SafetensorError) else None
            if number is not None:
                raise OSError(number, os.strerror(number), str(staging)) from None
            raise
        publish(staging, directory)


def state_bytes(model: torch.nn.Module, optimizer_state: dict[str, Any]) -> int:
    """The bytes of the model's and the optimisers' tensors (what a copy of them for a checkpoint takes; counted
    where they are, a GPU's not copied to count them)."""
    def tensors_in(value: Any) -> list[torch.Tensor]:
        if isinstance(value, torch.Tensor):
            return [value]
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
        return [tensor for item in items for tensor in tensors_in(item)]

    return sum(t.nelement() * t.element_size() for t in [*model.state_dict().values(), *tensors_in(optimizer_state)])


class CheckpointWriter:
    """Checkpoints written on a thread of their own while training goes on, one at a time: the state is copied
    when a checkpoint is asked for, and its files, fsyncs, SHA-256s and renames overlap the next epoch's steps (they
    were 15-50 ms an epoch of FM on Frappe, whose epochs take 50-150 ms). State over ``in_background_below`` bytes
    is written at once, as its copy would take that much memory again. ``wait()`` ends the write in flight and raises
    its error; the trainer waits before it returns or stops, so a run never ends before its last checkpoint."""

    in_background_below = 256 * 2**20

    def __init__(self) -> None:
        self._done = threading.Event()  # set by the writer's thread as it ends (a join that Ctrl-C interrupts marks a
        self._done.set()  # thread as stopped while it still runs, in Python 3.11)
        self._error: BaseException | None = None

    def save(self, directory: Path, model: torch.nn.Module, optimizer_state: dict[str, Any],
             loop_state: dict[str, Any], best_weights: dict[str, torch.Tensor] | None) -> None:
        self.wait()  # one at a time, in order: a newer checkpoint never lands before an older one
        if state_bytes(model, optimizer_state) >= self.in_background_below:
            save_checkpoint(directory, model, optimizer_state, loop_state, best_weights)
            return
        contents = Contents.of(model, optimizer_state, loop_state, best_weights, copied=True)
        self._done.clear()
        threading.Thread(target=self._write, args=(contents, Path(directory)), name="deepfm-checkpoint").start()

    def _write(self, contents: Contents, directory: Path) -> None:
        try:
            contents.write(directory)
        except BaseException as error:  # raised in the training thread, by ``wait``
            self._error = error
        finally:
            self._done.set()

    def wait(self, raising: bool = True) -> None:
        """Until the write in flight has ended (an interrupt while waiting waits on: what follows, a resume hint or
        the removal of an unsaved run's files, must not race the write), then raise its error (``raising``)."""
        try:
            self._done.wait()
        except BaseException:  # KeyboardInterrupt: the write ends first
            self._done.wait()
            raise
        error, self._error = self._error, None
        if error is not None and raising:
            raise error


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by a file holding ``text``: a crash at any point leaves the old file or the new."""
    path = Path(path)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text)
    _sync_file(partial)
    os.replace(partial, path)


def _errno_of(message: str) -> int | None:
    """The storage error a safetensors write failed with, from its message (it says the OS's words), or None."""
    return next((number for number, words in ((errno.ENOSPC, "No space left"), (errno.EDQUOT, "quota exceeded"),
                                              (errno.EROFS, "Read-only file system")) if words in message), None)


def staging_dir(directory: Path) -> Path:
    """An empty ``directory.tmp`` to write the next checkpoint into (a stale one is removed, never reused)."""
    staging = _sibling(Path(directory), ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, directory: Path) -> None:
    """Make the checkpoint written in ``staging`` (with its ``state.json``) the latest at ``directory``
    and the one it replaces the previous (``directory.old``; the one before that is deleted).

    ``staging`` is sealed first: its files flushed to disk and their SHA-256 written to
    ``manifest.json``, last, so a checkpoint with a manifest is complete. Then two renames: the
    latest becomes ``.old``, ``staging`` becomes the latest. A crash at any point leaves the latest
    or, between the renames, ``.old`` complete; ``.tmp`` is never read."""
    _seal(Path(staging))
    previous = _sibling(directory, ".old")
    if directory.exists():
        if previous.exists():
            shutil.rmtree(previous)  # the new checkpoint is sealed: the one before the latest is not needed
        os.replace(directory, previous)
    os.replace(staging, directory)
    _sync_directory(directory.parent)


def _seal(staging: Path) -> None:
    names = sorted(p.name for p in staging.iterdir() if p.is_file() and p.name != MANIFEST)
    for name in names:
        _sync_file(staging / name)
    files = {name: sha256_of(staging / name) for name in names}
    manifest = {"format": FORMAT, "files": files, "files_sha256": _digest_of(files)}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
    _sync_file(staging / MANIFEST)
    _sync_directory(staging)


def _sync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _sync_directory(path: Path) -> None:
    """Persist renames and new entries in ``path`` (a no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _digest_of(files: dict[str, str]) -> str:
    """The manifest's checksum of its own list, so that damage there is not blamed on another file."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def _sibling(directory: Path, suffix: str) -> Path:
    return directory.with_name(directory.name + suffix)


def stage_checkpoint(checkpoint_dir: Path | None, suffix: str) -> Path | None:
    """Where a stage of a run checkpoints on its own (FNN's pre-training, the refit): beside the run's checkpoint
    directory, its name + ``suffix``; None without checkpoints."""
    return None if checkpoint_dir is None else _sibling(Path(checkpoint_dir), suffix)


def checkpoint_paths(directory: Path) -> tuple[Path, Path, Path]:
    """(latest, previous, staging): every path a checkpoint at ``directory`` may occupy."""
    directory = Path(directory)
    return directory, _sibling(directory, ".old"), _sibling(directory, ".tmp")


def remove_checkpoint_dirs(directory: Path) -> None:
    """Delete the checkpoint at ``directory``: the latest, the previous and any unfinished one."""
    for path in checkpoint_paths(directory):
        if path.exists():
            shutil.rmtree(path)


def damage(candidate: Path) -> str | None:
    """What is wrong with the checkpoint in ``candidate`` (None: it is complete and every file matches
    its manifest). A checkpoint of an older version (``state.json``, no manifest) is taken as it is."""
    manifest_path = candidate / MANIFEST
    if not manifest_path.exists():
        return None if (candidate / "state.json").exists() else f"{candidate}: incomplete (no {MANIFEST})"
    try:
        manifest = json.loads(manifest_path.read_text())
        listed = manifest["files"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        return f"{manifest_path}: unreadable ({type(error).__name__})"
    if manifest.get("files_sha256") != _digest_of(listed):
        return f"{manifest_path}: damaged (its own checksum does not match)"
    if "state.json" not in listed:
        return f"{manifest_path}: does not list state.json"
    for name, expected in listed.items():
        path = candidate / name
        if Path(name).name != name or not path.is_file():
            return f"{path}: missing"
        if sha256_of(path) != expected:
            return f"{path}: checksum does not match {MANIFEST} (the file is truncated or damaged)"
    return None


def checkpoint_json(path: Path) -> dict[str, Any]:
    """A JSON file a run writes beside its checkpoint (its encoders, its run record), read for ``--resume``; a damaged
    one (truncated, edited) is a ``CheckpointError`` naming it."""
    try:
        read = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        read, problem = None, f"not JSON ({error})"
    else:
        problem = None if isinstance(read, dict) else f"a JSON {type(read).__name__}, not the object it was written as"
    if problem is not None:
        raise CheckpointError(f"{path}: damaged, {problem}; it belongs to the interrupted run's checkpoint, which "
                              "cannot be resumed without it: train again without --resume (--overwrite)")
    return read


def complete_checkpoint(directory: Path | None, warn: Callable[[str], None] | None = None,
                        remedy: str = "Train again without --resume (--overwrite), or restore the files") -> Path | None:
    """The directory of the latest good checkpoint at ``directory``: itself, else the previous one
    (``.old``), or None when there is none. A damaged one is skipped (``warn`` is told which file and
    why); when every checkpoint there is damaged, ``CheckpointError`` (saying ``remedy``)."""
    if directory is None:
        return None
    problems = []
    for candidate in checkpoint_paths(Path(directory))[:2]:
        if not candidate.is_dir():
            continue
        problem = damage(candidate)
        if problem is None:
            for earlier in problems:
                (warn or _warn)(f"checkpoint damaged, not used: {earlier}; using the previous checkpoint {candidate}")
            return candidate
        problems.append(problem)
    if problems:
        raise CheckpointError(f"no usable checkpoint at {directory}: {'; '.join(problems)}. {remedy}")
    return None


def _warn(message: str) -> None:
    warnings.warn(message, CheckpointWarning, stacklevel=3)


class CheckpointWarning(UserWarning):
    """The latest checkpoint was damaged; an earlier one is used."""


def load_checkpoint(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any], dict[str, torch.Tensor] | None, torch.Tensor]:
    """Return (model weights, optimizer state, loop state, best weights or None, torch RNG state) of
    the checkpoint in ``directory`` (a directory ``complete_checkpoint`` found)."""
    directory = Path(directory)
    state = json.loads((directory / "state.json").read_text())
    tensors = load_file(directory / "optimizer.safetensors")
    weights = load_file(directory / "model.safetensors")
    best = load_file(directory / "best.safetensors") if (directory / "best.safetensors").exists() else None
    return weights, _unflatten(state["optimizer"], tensors), state["loop"], best, tensors["torch_rng"]
