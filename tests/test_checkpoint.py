"""Checkpoints are swapped atomically: a crash at any step leaves a complete checkpoint to resume from.
Every file is checksummed in the checkpoint's manifest; a damaged latest checkpoint gives way to the
previous one, with a warning that names the file, and when none is intact the error says so."""

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from deepfm.errors import CheckpointError
from deepfm.training import checkpoint
from deepfm.training.checkpoint import complete_checkpoint, load_checkpoint, save_checkpoint

FILE_KINDS = ["model.safetensors", "optimizer.safetensors", "best.safetensors", "state.json", "manifest.json"]


def save(directory, value: float) -> None:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.bias.fill_(value)
    save_checkpoint(directory, model, {"step": torch.tensor([value])}, {"epoch": int(value)},
                    {"bias": torch.tensor([value])})


def saved_epoch(directory) -> int:
    return load_checkpoint(complete_checkpoint(directory))[2]["epoch"]


class Crash(Exception):
    pass


def crash_on_rename(monkeypatch, number: int) -> None:
    """Make the ``number``-th ``os.replace`` of ``save_checkpoint`` raise, as a crash there would."""
    calls = {"n": 0}
    original = os.replace

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == number:
            raise Crash
        original(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", replace)


@pytest.mark.parametrize("crash_at", [1, 2], ids=["before moving the old one aside", "between the two renames"])
def test_a_crash_during_the_swap_leaves_the_previous_checkpoint(tmp_path, monkeypatch, crash_at):
    directory = tmp_path / "checkpoint"
    save(directory, 1)
    crash_on_rename(monkeypatch, crash_at)
    with pytest.raises(Crash):
        save(directory, 2)
    monkeypatch.undo()
    assert complete_checkpoint(directory) is not None
    assert saved_epoch(directory) == 1
    save(directory, 3)  # the next save recovers
    assert saved_epoch(directory) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "checkpoint.old"]


def test_a_stale_staging_directory_is_removed_not_reused(tmp_path):
    directory = tmp_path / "checkpoint"
    stale = tmp_path / "checkpoint.tmp"
    stale.mkdir()
    (stale / "leftover.safetensors").write_bytes(b"left by a crashed run")
    save(directory, 1)
    assert not (directory / "leftover.safetensors").exists()
    assert saved_epoch(directory) == 1 and not stale.exists()


def test_no_checkpoint_is_none(tmp_path):
    assert complete_checkpoint(tmp_path / "checkpoint") is None
    assert complete_checkpoint(None) is None


def test_the_previous_checkpoint_is_kept_beside_the_latest(tmp_path):
    directory = tmp_path / "checkpoint"
    for value in (1, 2, 3):
        save(directory, value)
    assert saved_epoch(directory) == 3
    assert load_checkpoint(tmp_path / "checkpoint.old")[2]["epoch"] == 2  # and the one before is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "checkpoint.old"]


def test_the_manifest_lists_every_file_with_its_sha256(tmp_path):
    save(tmp_path / "checkpoint", 1)
    listed = json.loads((tmp_path / "checkpoint" / "manifest.json").read_text())["files"]
    assert sorted(listed) == sorted(FILE_KINDS[:-1])
    assert listed["state.json"] == hashlib.sha256((tmp_path / "checkpoint" / "state.json").read_bytes()).hexdigest()


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [truncate, flip_a_byte], ids=["truncated", "one bit flipped"])
@pytest.mark.parametrize("name", FILE_KINDS)
def test_a_damaged_latest_checkpoint_gives_way_to_the_previous_with_a_warning(tmp_path, name, damage):
    directory = tmp_path / "checkpoint"
    save(directory, 1)
    save(directory, 2)
    damage(directory / name)
    warnings: list[str] = []
    assert complete_checkpoint(directory, warnings.append) == tmp_path / "checkpoint.old"
    assert load_checkpoint(tmp_path / "checkpoint.old")[2]["epoch"] == 1
    assert len(warnings) == 1 and str(directory / name) in warnings[0] and "checkpoint.old" in warnings[0]


def test_a_missing_file_is_damage_too(tmp_path):
    directory = tmp_path / "checkpoint"
    save(directory, 1)
    save(directory, 2)
    (directory / "optimizer.safetensors").unlink()
    warnings: list[str] = []
    assert complete_checkpoint(directory, warnings.append) == tmp_path / "checkpoint.old"
    assert "optimizer.safetensors: missing" in warnings[0]


def test_without_a_warn_function_it_is_a_python_warning(tmp_path):
    directory = tmp_path / "checkpoint"
    save(directory, 1)
    save(directory, 2)
    truncate(directory / "model.safetensors")
    with pytest.warns(checkpoint.CheckpointWarning, match="model.safetensors"):
        assert complete_checkpoint(directory) == tmp_path / "checkpoint.old"


@pytest.mark.parametrize("saves", [1, 2], ids=["only one checkpoint", "latest and previous"])
def test_when_no_checkpoint_is_intact_the_error_names_every_damaged_file(tmp_path, saves):
    directory = tmp_path / "checkpoint"
    for value in range(1, saves + 1):
        save(directory, value)
    damaged = [directory / "state.json", tmp_path / "checkpoint.old" / "model.safetensors"][:saves]
    for path in damaged:
        flip_a_byte(path)
    with pytest.raises(CheckpointError, match="no usable checkpoint") as error:
        complete_checkpoint(directory, lambda message: None)
    assert all(str(path) in str(error.value) for path in damaged)


def test_a_checkpoint_of_an_older_version_without_a_manifest_is_still_read(tmp_path):
    directory = tmp_path / "checkpoint"
    save(directory, 1)
    (directory / "manifest.json").unlink()
    assert complete_checkpoint(directory) == directory


@pytest.mark.parametrize("files_written", range(5), ids=lambda n: f"crash after {n} files")
def test_a_crash_while_writing_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch, files_written):
    """Whichever file a crash interrupts (four files, then the manifest), the latest sealed checkpoint
    is read, intact, and the unsealed one is never read."""
    directory = tmp_path / "checkpoint"
    save(directory, 1)
    calls = {"n": 0}
    sync = checkpoint._sync_file

    def crash_after(path):
        if calls["n"] == files_written:
            raise Crash
        calls["n"] += 1
        sync(path)

    monkeypatch.setattr(checkpoint, "_sync_file", crash_after)
    with pytest.raises(Crash):
        save(directory, 2)
    monkeypatch.undo()
    warnings: list[str] = []
    assert complete_checkpoint(directory, warnings.append) == directory and not warnings
    assert saved_epoch(directory) == 1


def test_a_file_written_atomically_is_the_old_or_the_new_never_a_part(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint-features.json"
    checkpoint.write_atomically(path, '{"old": true}')
    crash_on_rename(monkeypatch, 1)
    with pytest.raises(Crash):
        checkpoint.write_atomically(path, '{"new": true}')
    monkeypatch.undo()
    assert path.read_text() == '{"old": true}'
    checkpoint.write_atomically(path, '{"new": true}')
    assert path.read_text() == '{"new": true}'


def test_a_checkpoint_written_while_training_goes_on_holds_the_state_it_was_asked_for(tmp_path):
    """The writer's thread writes a copy: steps taken meanwhile (in place, as optimisers step) are not in it."""
    from deepfm.training.checkpoint import CheckpointWriter

    model, state, history = nn.Linear(2, 1), {"step": torch.tensor([1.0])}, [{"epoch": 1}]
    with torch.no_grad():
        model.bias.fill_(1.0)
    writer = CheckpointWriter()
    writer.save(tmp_path / "c", model, state, {"history": history}, None)
    with torch.no_grad():
        model.bias.fill_(2.0)
    state["step"].fill_(2.0)
    history.append({"epoch": 2})
    writer.wait()
    weights, optimizer_state, loop = load_checkpoint(complete_checkpoint(tmp_path / "c"))[:3]
    assert float(weights["bias"]) == 1.0 and float(optimizer_state["step"]) == 1.0 and loop["history"] == [{"epoch": 1}]


def test_the_writers_error_is_raised_in_the_training_thread(tmp_path, monkeypatch):
    from deepfm.training.checkpoint import CheckpointWriter

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "publish", full)
    writer = CheckpointWriter()
    writer.save(tmp_path / "c", nn.Linear(2, 1), {}, {}, None)
    with pytest.raises(OSError, match="No space left"):
        writer.wait()
    writer.wait()  # raised once
    writer.save(tmp_path / "c", nn.Linear(2, 1), {}, {}, None)
    writer.wait(raising=False)  # the trainer's, while its own error (diverged, interrupted) is on its way out


def test_state_too_large_to_copy_is_written_before_training_goes_on(tmp_path, monkeypatch):
    from deepfm.training.checkpoint import CheckpointWriter

    monkeypatch.setattr(CheckpointWriter, "in_background_below", 0)
    writer = CheckpointWriter()
    writer.save(tmp_path / "c", nn.Linear(2, 1), {}, {"epoch": 3}, None)
    assert writer._done.is_set() and load_checkpoint(complete_checkpoint(tmp_path / "c"))[2]["epoch"] == 3


def test_an_interrupt_while_waiting_for_the_write_waits_for_it_to_end(tmp_path, monkeypatch):
    """Python 3.11 marks a thread whose join Ctrl-C interrupted as stopped while it still runs: the run's end then
    raced its last write (an unsaved run's files removed under it, a resume hint naming an older checkpoint)."""
    import threading
    import time

    from deepfm.training.checkpoint import CheckpointWriter, Contents

    release, real_write = threading.Event(), Contents.write

    def slow_write(self, directory):
        release.wait()
        real_write(self, directory)

    monkeypatch.setattr(Contents, "write", slow_write)
    writer = CheckpointWriter()
    writer.save(tmp_path / "c", nn.Linear(2, 1), {}, {"epoch": 1}, None)
    real_wait, waits = writer._done.wait, []

    def interrupted_once(*args, **kwargs):
        waits.append(1)
        if len(waits) == 1:
            threading.Timer(0.2, release.set).start()
            raise KeyboardInterrupt
        return real_wait(*args, **kwargs)

    monkeypatch.setattr(writer._done, "wait", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        writer.wait()
    assert len(waits) == 2 and load_checkpoint(complete_checkpoint(tmp_path / "c"))[2]["epoch"] == 1
