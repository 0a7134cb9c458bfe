"""``deepfm tune``: an Optuna search on validation rows that leaves a model directory, its trials and a config."""

from __future__ import annotations

import json
import sys
from typing import get_args

import numpy as np
import pytest

from deepfm.cli import main
from deepfm.config import TrainingConfig, build_config
from deepfm.experiments.tune import search_space, toml_text

pytest.importorskip("optuna")

SMALL = ["--epochs", "4", "--mlp", "16", "--quiet"]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A DeepFM tuned once for this module: 8 trials on 500 synthetic rows, 50 of them held out."""
    from deepfm.data.synthetic import SyntheticSpec, make_ctr_table
    import pyarrow.csv as pacsv

    root = tmp_path_factory.mktemp("tune")
    train, valid = root / "train.csv", root / "valid.csv"
    pacsv.write_csv(make_ctr_table(SyntheticSpec(rows=500, seed=4), part=0)[0], train)
    pacsv.write_csv(make_ctr_table(SyntheticSpec(rows=200, seed=4), part=1)[0], valid)
    out = root / "out"
    assert main(["tune", "--train", str(train), "--model", "deepfm", "--trials", "8", "--out", str(out), *SMALL]) == 0
    return {"train": train, "valid": valid, "out": out, "root": root}


def test_tune_writes_a_model_directory_that_evaluate_and_predict_read(tuned, capsys):
    assert main(["evaluate", str(tuned["out"]), str(tuned["valid"]), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == 200 and 0.0 <= result["auc"] <= 1.0
    predictions = tuned["root"] / "p.csv"
    assert main(["predict", str(tuned["out"]), str(tuned["valid"]), "--out", str(predictions)]) == 0
    assert len(predictions.read_text().splitlines()) == 201


def test_tune_json_records_every_trial_its_params_metric_and_state(tuned):
    summary = json.loads((tuned["out"] / "tune.json").read_text())
    assert summary["metric"] == "auc" and summary["direction"] == "maximize"
    assert summary["validation"]["rows"] == 50, "no --valid: the held-out tenth of the training rows"
    trials = summary["trials"]
    assert [t["number"] for t in trials] == list(range(8))
    assert {t["state"] for t in trials} <= {"complete", "pruned", "fail"}
    for trial in trials:
        assert set(trial["params"]) == {"lr", "embed_l2", "optimizer", "embed_dim", "batch_size", "dropout"}
        assert len(trial["per_epoch"]) >= 1, "each epoch's validation metric is reported to the pruner"
    complete = [t for t in trials if t["state"] == "complete"]
    best = max(complete, key=lambda t: t["auc"])
    assert summary["best_trial"] == best["number"] and summary["best_value"] == best["auc"]
    metrics = json.loads((tuned["out"] / "metrics.json").read_text())
    assert metrics["best_valid"]["auc"] == best["auc"], "the model directory is the best trial's"


def test_the_first_trial_is_the_models_defaults(tuned):
    first = json.loads((tuned["out"] / "tune.json").read_text())["trials"][0]["params"]
    defaults = build_config({"model": {"name": "deepfm"}})
    assert first["lr"] == defaults.training.lr and first["optimizer"] == defaults.training.optimizer
    assert first["embed_dim"] == defaults.model.embed_dim and first["dropout"] == defaults.model.dropout


def test_train_with_best_toml_reproduces_the_best_trial(tuned, capsys):
    again = tuned["root"] / "again"
    assert main(["train", "--config", str(tuned["out"] / "best.toml"), "--out", str(again), "--quiet"]) == 0
    best = json.loads((tuned["out"] / "metrics.json").read_text())
    reproduced = json.loads((again / "metrics.json").read_text())
    assert reproduced["best_epoch"] == best["best_epoch"]
    assert reproduced["best_valid"]["auc"] == pytest.approx(best["best_valid"]["auc"], abs=1e-9)
    capsys.readouterr()
    assert main(["predict", str(again), str(tuned["valid"]), "--out", "-"]) == 0
    first = capsys.readouterr().out
    assert main(["predict", str(tuned["out"]), str(tuned["valid"]), "--out", "-"]) == 0
    np.testing.assert_allclose(np.loadtxt(first.splitlines()[1:]), np.loadtxt(capsys.readouterr().out.splitlines()[1:]),
                               atol=1e-6)


def test_a_setting_given_as_a_flag_is_fixed_not_searched(tmp_path, ctr_csv):
    out = tmp_path / "out"
    assert main(["tune", "--train", str(ctr_csv()), "--valid", str(ctr_csv("v.csv", rows=100, part=1)), "--model", "fm",
                 "--optimizer", "adagrad", "--embed-dim", "6", "--trials", "3", "--out", str(out), *SMALL]) == 0
    summary = json.loads((out / "tune.json").read_text())
    assert summary["validation"] == {"source": "file", "path": str(tmp_path / "v.csv")}
    assert all(set(t["params"]) == {"lr", "embed_l2", "batch_size"} for t in summary["trials"])
    best = (out / "best.toml").read_text()
    assert 'optimizer = "adagrad"' in best and "embed_dim = 6" in best


def test_the_search_space_comes_from_the_config_and_holds_the_defaults():
    for model in ("fm", "deepfm"):
        defaults = build_config({"model": {"name": model}})
        dims = {d.key: d for d in search_space(defaults)}
        assert dims["optimizer"].space == get_args(TrainingConfig.model_fields["optimizer"].annotation)
        assert dims["lr"].kind == "log" and dims["embed_l2"].kind == "log"
        assert ("dropout" in dims) == (model == "deepfm"), "dropout only for models with an MLP"
        for dim in dims.values():
            section = getattr(defaults, dim.section)
            assert dim.holds(getattr(section, dim.key)), f"{dim.key}: the default is inside the range"


def test_best_toml_is_a_config_file(tmp_path):
    from deepfm.config import load_config_file

    config = build_config({"model": {"name": "deepfm", "mlp": (8, 4)}, "data": {"categorical": ("a", "b")},
                           "training": {"lr": 3e-3}})
    path = tmp_path / "c.toml"
    path.write_text(toml_text({k: v for k, v in config.to_json_dict().items() if k != "out"}))
    assert build_config(load_config_file(path)) == config


def test_without_optuna_tune_names_the_extra_to_install(tmp_path, ctr_csv, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    assert main(["tune", "--train", str(ctr_csv()), "--out", str(tmp_path / "o"), "--trials", "1"]) == 2
    assert "pip install 'deepfm[tune]'" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [["--trials", "0"], ["--timeout", "0"]])
def test_trials_and_timeout_must_be_positive(tmp_path, ctr_csv, flag, capsys):
    assert main(["tune", "--train", str(ctr_csv()), "--out", str(tmp_path / "o"), *flag]) == 2
    assert flag[0] in capsys.readouterr().err


def test_a_trial_the_pruner_stops_ends_after_that_epoch(tmp_path, ctr_csv, monkeypatch):
    import optuna

    class AllButTheFirst(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return trial.number > 0

    monkeypatch.setattr(optuna.pruners, "MedianPruner", lambda **_: AllButTheFirst())
    out = tmp_path / "out"
    assert main(["tune", "--train", str(ctr_csv()), "--model", "fm", "--trials", "3", "--out", str(out), *SMALL]) == 0
    trials = json.loads((out / "tune.json").read_text())["trials"]
    assert [t["state"] for t in trials] == ["complete", "pruned", "pruned"]
    assert [len(t["per_epoch"]) for t in trials] == [4, 1, 1]
