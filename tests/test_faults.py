"""Surviving a killed worker: under ``--max-restarts`` torchrun restarts every rank, and the restarted
ranks continue from the last checkpoint, so the run ends with the model an uninterrupted run trains.

The kill is real (SIGKILL of rank 1 from outside, once rank 0 has written a mid-epoch checkpoint);
the test checks that a restart happened and resumed mid-run before comparing the two models.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.csv as pacsv
import pytest
import torch

from deepfm.artifact import load_model_dir
from deepfm.data.synthetic import SyntheticSpec, make_ctr_table

ROWS, EPOCHS, BATCH, EVERY = 4000, 2, 16, 20  # 125 steps per rank and epoch, a checkpoint every 20
FLAGS = ["--mlp", "16,16", "--embed-dim", "4", "--patience", "0", "--lr", "0.01", "--batch-size", str(BATCH),
         "--epochs", str(EPOCHS), "--checkpoint-every", str(EVERY), "--device", "cpu", "--nproc", "2"]
TOLERANCE = 1e-6  # the resumed run replays the same steps: equal up to float rounding


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("faults")
    spec = SyntheticSpec(categorical=4, numeric=2, vocabulary=200, seed=4)
    paths = {"root": root}
    for part, name in enumerate(("train", "valid")):
        paths[name] = root / f"{name}.csv"
        pacsv.write_csv(make_ctr_table(spec, ROWS if name == "train" else 1000, part)[0], paths[name])
    return paths


def _train(data: dict[str, Path], out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "deepfm", "train", "--train", str(data["train"]), "--valid",
                             str(data["valid"]), "--out", str(out), *FLAGS, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the worker of ``rank`` that ``parent`` (the launcher) started, from /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def _checkpoint_step(out: Path) -> tuple[int, int] | None:
    try:
        loop = json.loads((out / "checkpoint" / "state.json").read_text())["loop"]
    except (OSError, ValueError, KeyError):
        return None
    return loop["epoch"], loop["step"]


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_model_dir(directory).model.state_dict()


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker to kill in /proc")
@pytest.mark.parametrize("reading", [[], ["--stream", "--chunk-rows", "500"]], ids=["in memory", "streamed"])
def test_a_worker_killed_mid_epoch_restarts_from_the_checkpoint_and_ends_as_an_uninterrupted_run(data, reading):
    killed, straight = (data["root"] / f"{run}{'-streamed' if reading else ''}" for run in ("killed", "straight"))
    run = _train(data, killed, "--max-restarts", "1", *reading)
    deadline, position = time.monotonic() + 240, None
    while position is None or position[1] == 0:  # wait for a mid-epoch checkpoint of epoch 1
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[1][-3000:]
        position = _checkpoint_step(killed)
        time.sleep(0.02)
    victim = _rank_pid(run.pid, rank=1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    _, log = run.communicate(timeout=300)
    assert run.returncode == 0, log[-3000:]
    assert "restart 1 (torchrun)" in log, log[-3000:]
    resumed = [line for line in log.splitlines() if line.startswith("resumed from")]
    assert resumed and not resumed[-1].endswith(f"at epoch {EPOCHS + 1}, step 0"), log[-3000:]  # before the end

    uninterrupted = _train(data, straight, *reading)
    _, straight_log = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, straight_log[-3000:]

    expected, got = _weights(straight), _weights(killed)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, atol=TOLERANCE, rtol=0, msg=name)
    auc = [json.loads((out / "metrics.json").read_text())["best_valid"]["auc"] for out in (killed, straight)]
    assert abs(auc[0] - auc[1]) < 1e-4
    assert not any((killed / name).exists() for name in ("checkpoint", "checkpoint.old"))


def test_max_restarts_is_not_passed_to_the_ranks():
    from deepfm.distributed import without_flag

    assert without_flag(["train", "--max-restarts", "2", "--epochs", "1"], "--max-restarts") == ["train", "--epochs", "1"]


def test_resuming_past_a_damaged_checkpoint_warns_and_continues_from_the_previous(ctr_csv, tmp_path, capsys):
    from deepfm.cli import main

    run = ["train", "--train", str(ctr_csv()), "--out", str(tmp_path / "m"), "--mlp", "16", "--embed-dim", "4",
           "--batch-size", "64", "--valid-fraction", "0"]
    assert main([*run, "--epochs", "2", "--keep-checkpoint", "--quiet"]) == 0  # checkpoints after epochs 1 and 2
    damaged = tmp_path / "m" / "checkpoint" / "optimizer.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])
    assert main([*run, "--epochs", "3", "--resume", "--keep-checkpoint"]) == 0
    log = capsys.readouterr().err
    assert f"checkpoint damaged, not used: {damaged}" in log
    assert f"resumed from {tmp_path / 'm' / 'checkpoint.old'} at epoch 2, step 0" in log

    for path in (tmp_path / "m" / "checkpoint" / "state.json", tmp_path / "m" / "checkpoint.old" / "state.json"):
        path.write_text("{}")
    assert main([*run, "--epochs", "4", "--resume", "--quiet"]) == 2
    assert "no usable checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated", "[]", '"x"'])
@pytest.mark.parametrize("name", ["checkpoint-features.json", "checkpoint-run.json"])
def test_a_damaged_encoder_or_run_record_beside_the_checkpoint_exits_2_naming_it(name, damage, ctr_csv, tmp_path,
                                                                               capsys):
    """A new user truncated them, a reviewer wrote JSON of another type: tracebacks (exit 1) instead of the
    checkpoint's own one-line error."""
    from deepfm.cli import main

    run = ["train", "--train", str(ctr_csv()), "--out", str(tmp_path / "m"), "--mlp", "16", "--embed-dim", "4",
           "--batch-size", "64", "--valid-fraction", "0", "--keep-checkpoint", "--quiet"]
    assert main([*run, "--epochs", "1"]) == 0
    damaged = tmp_path / "m" / name
    damaged.write_bytes(damaged.read_bytes()[:50] if damage == "truncated" else damage.encode())
    assert main([*run, "--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{damaged}: damaged" in err and "--overwrite" in err and "Traceback" not in err


def _wait_for_a_checkpoint(run: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + 240
    while _checkpoint_step(out) is None:
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[1][-3000:]
        time.sleep(0.02)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the workers in /proc")
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_on_the_launcher_says_once_how_to_resume_with_nproc_and_exits_128_plus_it(data, number):
    """SIGINT as a terminal's Ctrl-C reaches the launcher, SIGTERM as a job scheduler stops it (torchrun passes either
    on to the ranks)."""
    out = data["root"] / f"interrupted-{int(number)}"
    run = _train(data, out)
    _wait_for_a_checkpoint(run, out)
    run.send_signal(number)
    _, log = run.communicate(timeout=120)
    hints = [line for line in log.splitlines() if line.startswith("interrupted")]
    assert run.returncode == 128 + number and "Traceback" not in log, log[-3000:]
    assert len(hints) == 1 and "--nproc 2" in hints[0] and hints[0].endswith(" --resume"), log[-3000:]
    resumed = subprocess.run(hints[0].split(": ", 1)[1].replace("deepfm ", f"{sys.executable} -m deepfm ", 1), shell=True,
                             capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert resumed.returncode == 0 and "resumed from" in resumed.stderr, resumed.stderr[-3000:]


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the workers in /proc")
def test_a_rank_killed_without_restarts_ends_the_run_with_a_line_that_says_how_to_resume(data):
    """A new user saw torchrun's report and a rank's traceback, and no word of the checkpoint the run had."""
    out = data["root"] / "rank-failed"
    run = _train(data, out)
    _wait_for_a_checkpoint(run, out)
    rank = _rank_pid(run.pid, 1)
    assert rank is not None
    os.kill(rank, signal.SIGKILL)
    _, log = run.communicate(timeout=120)
    assert run.returncode == 1
    last = log.strip().splitlines()[-1]
    assert last.startswith("a rank failed; resume with: deepfm train ") and "--nproc 2" in last, log[-3000:]
    assert last.endswith(" --resume")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the workers in /proc")
def test_a_launcher_killed_by_sigkill_takes_its_ranks_with_it(data):
    """torchrun starts the ranks in sessions of their own: without the parent-death signal they trained on."""
    out = data["root"] / "killed-launcher"
    run = _train(data, out)
    _wait_for_a_checkpoint(run, out)
    ranks = [_rank_pid(run.pid, rank) for rank in (0, 1)]
    assert None not in ranks
    run.kill()
    run.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() and "Z" not in (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1][:3]
              for pid in ranks):
        assert time.monotonic() < deadline, "a rank outlived its launcher"
        time.sleep(0.1)
    assert not (out / "model.safetensors").exists()
