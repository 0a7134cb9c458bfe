"""The solver seam: ``training.solver`` picks what fits the parameters; gradient training with FNN's stages."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from deepfm import Estimator
from deepfm.config import build_config
from deepfm.errors import ConfigError
from deepfm.solvers import SOLVERS, ALSSolver, GradientSolver, MCMCSolver, build_solver
from deepfm.training.trainer import Trainer
from deepfm.models.fnn import STAGE_1

FNN = {"model": {"name": "fnn", "mlp": (16,), "embed_dim": 4},
       "training": {"epochs": 2, "batch_size": 64, "checkpoint_every": 3, "seed": 3}}


def clicks(rows: int = 400) -> pa.Table:
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 8, rows), rng.integers(0, 6, rows)
    return pa.table({"a": a.astype(str), "b": b.astype(str), "label": ((a + b) % 3 == 0).astype(int)})


def test_the_config_names_the_solver():
    assert isinstance(build_solver(build_config({})), GradientSolver)
    assert build_config({}).training.solver == "gradient" and set(SOLVERS) == {"gradient", "mcmc", "als"}
    assert isinstance(build_solver(build_config({"model": {"name": "fm"}, "training": {"solver": "mcmc"}})), MCMCSolver)
    assert isinstance(build_solver(build_config({"model": {"name": "fm"}, "training": {"solver": "als"}})), ALSSolver)
    with pytest.raises(ConfigError, match="training.solver"):
        build_config({"training": {"solver": "newton"}})


def test_fnn_resume_without_a_checkpoint_still_pretrains_with_an_fm(tmp_path):
    said = []
    Estimator(**FNN).fit(clicks(), out=tmp_path / "m", resume=True, progress=False, log=said.append)
    assert STAGE_1 in said


def test_fnn_interrupted_in_stage_1_resumes_it_to_the_same_weights(tmp_path, monkeypatch):
    full = Estimator(**FNN).fit(clicks(), out=tmp_path / "full", progress=False)

    original, calls = Trainer._step, {"n": 0}

    def stop_in_stage_1(self, batch):  # stage 1 has 7 steps an epoch; stop in its second epoch
        calls["n"] += 1
        if calls["n"] > 10:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_step", stop_in_stage_1)
    with pytest.raises(KeyboardInterrupt):
        Estimator(**FNN).fit(clicks(), out=tmp_path / "cut", progress=False)
    monkeypatch.setattr(Trainer, "_step", original)
    said = []
    resumed = Estimator(**FNN).fit(clicks(), out=tmp_path / "cut", resume=True, progress=False, log=said.append)
    assert any(line.startswith("  fm resumed from") for line in said)
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(value, resumed.model.state_dict()[key], rtol=0, atol=0)
    assert not (tmp_path / "cut" / "checkpoint-fnn-stage1").exists()  # stage 2's checkpoint carries the run


def test_fnn_resumed_in_stage_2_does_not_pretrain_again(tmp_path):
    first = {**FNN, "training": {**FNN["training"], "epochs": 1}}
    Estimator(**first).fit(clicks(), out=tmp_path / "m", progress=False)
    said = []
    Estimator(**FNN).fit(clicks(), out=tmp_path / "m", resume=True, progress=False, log=said.append)
    assert STAGE_1 not in said


def test_a_sampler_asked_to_stream_says_which_flags_to_change(tmp_path, ctr_csv, capsys):
    """It named config keys (training.solver mcmc ... data.stream off) to a user who had typed flags."""
    from deepfm.cli import main

    code = main(["train", "--train", str(ctr_csv()), "--out", str(tmp_path / "m"), "--model", "fm", "--solver", "mcmc",
                 "--stream", "on", "--sweeps", "2", "--quiet"])
    assert code == 2
    assert capsys.readouterr().err.rstrip().endswith(
        "--solver mcmc (training.solver) reads the training rows in memory: --stream off (data.stream), or --solver "
        "gradient to stream them")
