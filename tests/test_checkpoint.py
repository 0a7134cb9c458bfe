"""Checkpoints are swapped atomically: a crash at any step leaves a complete checkpoint to resume from."""

import os

import pytest
import torch
from torch import nn

from deepfm.training import checkpoint
from deepfm.training.checkpoint import complete_checkpoint, load_checkpoint, save_checkpoint


def save(directory, value: float) -> None:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.bias.fill_(value)
    save_checkpoint(directory, model, {}, {"epoch": int(value)}, None)


def saved_epoch(directory) -> int:
    return load_checkpoint(directory)[2]["epoch"]


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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_a_stale_staging_directory_is_removed_not_reused(tmp_path):
    directory = tmp_path / "checkpoint"
    stale = tmp_path / "checkpoint.tmp"
    stale.mkdir()
    (stale / "best.safetensors").write_bytes(b"left by a crashed run")
    save(directory, 1)
    assert not (directory / "best.safetensors").exists()
    assert saved_epoch(directory) == 1 and not stale.exists()


def test_no_checkpoint_is_none(tmp_path):
    assert complete_checkpoint(tmp_path / "checkpoint") is None
    assert complete_checkpoint(None) is None
