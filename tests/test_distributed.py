"""Training across processes: two gloo ranks on this machine equal one process with the global batch.

With B rows per rank and gradients averaged over ranks, a step of W ranks is the step of one
process on a batch of B × W rows. The data here is one global batch per epoch (no shuffling
effect, no dropout), so the two runs must end with the same weights, resumed or not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest
import torch

from deepfm.artifact import load_model_dir
from deepfm.cli import main
from deepfm.data.synthetic import SyntheticSpec, make_ctr_table
from deepfm.distributed import Context, shard_mask, without_flag

ROWS, WORLD = 512, 2
FLAGS = ["--mlp", "16,16", "--embed-dim", "4", "--dropout", "0", "--patience", "0", "--lr", "0.01", "--quiet"]


def test_shards_partition_the_rows_and_are_equal_in_size():
    total, world = 103, 4
    masks = [np.concatenate([shard_mask(start, 25 if start < 100 else 3, total, Context(rank=r, world=world))
                             for start in (0, 25, 50, 75, 100)]) for r in range(world)]
    assert all(m.sum() == total // world for m in masks)  # same steps on every rank
    stacked = np.stack(masks)
    assert (stacked.sum(0) <= 1).all()  # no row on two ranks
    assert stacked.sum() == total - total % world  # at most world - 1 rows left out


def test_nproc_flag_is_not_passed_to_the_ranks():
    assert without_flag(["train", "--nproc", "2", "--epochs", "1", "--nproc=3"], "--nproc") == ["train", "--epochs", "1"]


def _deepfm(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "deepfm", "train", *args], capture_output=True, text=True, env=env,
                            timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_model_dir(directory).model.state_dict()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp")
    spec = SyntheticSpec(categorical=4, numeric=2, vocabulary=50, seed=3)
    paths = {}
    for part, name in enumerate(("train", "valid")):
        paths[name] = root / f"{name}.csv"
        pacsv.write_csv(make_ctr_table(spec, ROWS, part)[0], paths[name])
    paths["root"] = root
    return paths


@pytest.mark.parametrize("solver", ["mcmc", "als"])
def test_a_sampler_or_als_is_refused_on_several_processes_before_any_starts(solver, tmp_path):
    """Each rank would run its own chain on half the rows and race the others for one checkpoint."""
    (tmp_path / "r.csv").write_text("user,item,label\n" + "".join(f"u{i % 7},i{i % 5},{i % 5 + 1}\n" for i in range(60)))
    result = subprocess.run([sys.executable, "-m", "deepfm", "train", "--train", str(tmp_path / "r.csv"), "--out",
                             str(tmp_path / "m"), "--model", "fm", "--task", "regression", "--solver", solver,
                             "--sweeps", "2", "--nproc", "2"], capture_output=True, text=True, timeout=180)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"training.solver {solver}: runs in one process, not 2" in result.stderr
    assert "rank" not in result.stderr and not (tmp_path / "m").exists()


def test_a_data_error_under_two_ranks_is_said_before_the_other_ranks_echo_of_it(tmp_path):
    lines = ["label,city"] + [f"{i % 2},c{i % 9}" for i in range(600)]
    lines[450] += ",extra"  # line 451 of the file
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "deepfm", "train", "--train", str(tmp_path / "bad.csv"), "--out",
                             str(tmp_path / "m"), "--nproc", "2", "--epochs", "1", "--quiet"],
                            capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if str(tmp_path) in line or line.startswith("rank ")]
    assert ours[0] == f"{tmp_path / 'bad.csv'}:451:3: expected 2 fields, found 3: a value holding the delimiter needs quotes around it", result.stderr[-3000:]
    assert "failed (exitcode: 2)" not in result.stderr  # torchrun's echo of an error the rank said


def test_a_reader_that_leaves_stdout_ends_two_ranks_as_sigpipe_ends_a_unix_tool(data, tmp_path):
    # deepfm train --nproc 2 --json | true: rank 0's one line meets a closed pipe; not a failed rank
    reading, writing = os.pipe()
    os.close(reading)  # the reader left before the line was written
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "deepfm", "train", "--train", str(data["train"]), "--out",
                             str(tmp_path / "m"), "--nproc", "2", "--epochs", "1", "--mlp", "8", "--json"],
                            stdout=writing, stderr=subprocess.PIPE, text=True, env=env, timeout=180)
    os.close(writing)
    assert result.returncode == 141, result.stderr[-3000:]  # 128 + SIGPIPE, the status a shell shows for `| head`
    assert "failed (exitcode" not in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert (tmp_path / "m" / "model.safetensors").exists()  # written before the line


def test_two_ranks_say_the_batch_of_their_steps_and_torchrun_has_no_threads_to_warn_of(data, tmp_path):
    env = {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"}
    result = subprocess.run([sys.executable, "-m", "deepfm", "train", "--train", str(data["train"]), "--out",
                             str(tmp_path / "m"), "--nproc", "2", "--epochs", "1", "--batch-size", "64", "--mlp", "8",
                             "--portfolio", "off"], capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes, each a batch of 64 rows: steps of 128 rows, as one process with --batch-size 128" in result.stderr
    assert "Setting OMP_NUM_THREADS" not in result.stderr  # the launcher gave each rank its share of the cores
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    ranks = metrics["peak_rss_mb_ranks"]  # each rank's own peak; the summary's figure is the job's, not rank 0's
    assert len(ranks) == 2 and min(ranks) > 50 and metrics["peak_rss_mb"] == pytest.approx(sum(ranks), abs=0.2)
    left = metrics["ids"]["rows"] - metrics["rows"]  # an odd count of training rows leaves one out, said so
    assert (f"{left} of the {metrics['ids']['rows']:,} training rows left out" in result.stderr) == (left > 0)


def test_two_ranks_resumed_equal_one_process_with_the_global_batch(data):
    # no batch norm here: the biases before it get a zero gradient up to rounding, which Adam's first
    # steps turn into ±lr, differently in each run (batch norm has its own test below)
    config = data["root"] / "no-bn.toml"
    config.write_text("[model]\nbatch_norm = false\n")

    def args(out: str, batch_size: int) -> list[str]:
        return ["--train", str(data["train"]), "--valid", str(data["valid"]), "--out", str(data["root"] / out),
                *FLAGS, "--batch-size", str(batch_size), "--device", "cpu", "--config", str(config)]

    _deepfm(*args("ddp", ROWS // WORLD), "--nproc", str(WORLD), "--epochs", "1", "--keep-checkpoint")
    assert (data["root"] / "ddp" / "checkpoint" / "state.json").exists()  # written by rank 0
    _deepfm(*args("ddp", ROWS // WORLD), "--nproc", str(WORLD), "--epochs", "2", "--resume")
    assert main(["train", *args("single", ROWS), "--epochs", "2"]) == 0  # in this process
    assert main(["train", *args("per-rank", ROWS // WORLD), "--epochs", "2"]) == 0  # a wrong average would give this

    distributed, one, per_rank = (_weights(data["root"] / name) for name in ("ddp", "single", "per-rank"))
    for name, weight in one.items():
        torch.testing.assert_close(distributed[name], weight, atol=1e-6, rtol=1e-5, msg=name)
    assert max(float((per_rank[n] - one[n]).abs().max()) for n in one) > 1e-3
    metrics = load_model_dir(data["root"] / "ddp").metrics
    assert metrics["ranks"] == WORLD and metrics["rows"] == ROWS and metrics["epochs"] == 2
    reference = load_model_dir(data["root"] / "single").metrics
    assert metrics["history"][-1]["valid"]["logloss"] == pytest.approx(reference["history"][-1]["valid"]["logloss"], abs=1e-6)


def test_batch_norm_uses_the_global_batch_statistics_on_every_rank():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = Path(__file__).with_name("distributed_bn_check.py")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert result.stdout.count("all equal") == 2


def test_cleanup_frees_the_process_group_and_its_threads_before_the_interpreter_exits():
    # a group still alive at exit is torn down during finalisation, where gloo's worker thread can abort
    # the finished rank (SIGABRT, "terminate called without an active exception"): torchrun then fails
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = Path(__file__).with_name("distributed_teardown_check.py")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert result.stdout.count("freed") == 2, result.stdout + result.stderr[-3000:]
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("shared, setting", [(True, "1"), (False, "0"), (False, "no-room")],
                         ids=["tables in shared memory", "tables sent by gloo", "no room in /dev/shm"])
def test_table_rows_are_updated_once_across_ranks_and_checkpointed_whole(tmp_path, shared, setting):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEEPFM_SHARED_TABLES": "0" if setting == "0" else "1"}
    script = Path(__file__).with_name("distributed_rows_check.py")
    before = set(Path("/dev/shm").glob("deepfm-*"))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             str(script), str(tmp_path), *([setting] if setting == "no-room" else [])],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.stdout.count("all equal") == 2, result.stdout + result.stderr[-3000:]
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(f"shared tables {shared}") == 4  # 2 ranks x 2 optimisers
    assert set(Path("/dev/shm").glob("deepfm-*")) <= before  # the shared files are unlinked once mapped


def test_table_rows_packed_for_the_exchange_unpack_to_the_same_rows_and_values():
    from deepfm.distributed.rows import _pack, _unpack

    shared = torch.tensor([1, 4, 7], dtype=torch.int64)  # FM's w and V from one batch: the same rows
    factors, linear, other = torch.zeros(10, 3), torch.zeros(10, 1), torch.zeros(10, 2, dtype=torch.float64)
    parts = [(shared, torch.randn(3, 3)), (shared, torch.randn(3, 1)), (torch.tensor([0, 9]), torch.randn(2, 2).double())]
    alone = _pack([(shared.clone(), parts[0][1]), (shared.clone(), parts[1][1]), parts[2]])

    unpacked = _unpack(_pack(parts), [factors, linear, other])
    for (rows, values), (sent_rows, sent_values) in zip(unpacked, parts):
        assert torch.equal(rows, sent_rows) and torch.equal(values, sent_values) and values.dtype == sent_values.dtype
    assert unpacked[0][0] is unpacked[1][0]  # received once, merged once
    assert len(_pack(parts)) == len(alone) - 3 * 8  # the shared rows' 3 ids are sent once


def test_tables_go_to_shared_memory_only_where_it_has_room_for_them(tmp_path, monkeypatch):
    from deepfm.distributed import shared_tables

    tables = [torch.nn.Parameter(torch.zeros(1000, 10))]  # 40 kB
    free = {"bytes": 10 << 30}
    monkeypatch.setattr(shared_tables.os, "statvfs", lambda path: type("Stats", (), {
        "f_bavail": free["bytes"] // 4096, "f_frsize": 4096})())
    assert shared_tables.has_room(tables, tmp_path)
    free["bytes"] = 64 << 20  # Docker's default /dev/shm: full of other files' pages but ours
    assert not shared_tables.has_room(tables, tmp_path)
