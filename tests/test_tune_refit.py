"""``deepfm tune`` saves the best trial refitted on the training and validation rows (``--refit off``: as it trained)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepfm.cli import main

pytest.importorskip("optuna")

SMALL = ["--model", "fm", "--epochs", "4", "--trials", "2", "--quiet"]


@pytest.fixture(scope="module")
def searches(tmp_path_factory):
    """The same 2-trial FM search on 300 training and 100 validation rows, with tune's default refit and with
    --refit off and --refit held-out."""
    from deepfm.data.synthetic import SyntheticSpec, make_ctr_table
    import pyarrow.csv as pacsv

    root = tmp_path_factory.mktemp("tune_refit")
    train, valid = root / "train.csv", root / "valid.csv"
    pacsv.write_csv(make_ctr_table(SyntheticSpec(rows=300, seed=3), part=0)[0], train)
    pacsv.write_csv(make_ctr_table(SyntheticSpec(rows=100, seed=3), part=1)[0], valid)
    outs = {}
    for name, flags in {"default": [], "off": ["--refit", "off"], "held-out": ["--refit", "held-out"]}.items():
        outs[name] = root / name
        assert main(["tune", "--train", str(train), "--valid", str(valid), "--out", str(outs[name]), *SMALL, *flags]) == 0
    return {"train": train, "valid": valid, "root": root, **outs}


def read(directory, name: str) -> dict:
    return json.loads((directory / name).read_text())


def predictions(directory, data, capsys) -> np.ndarray:
    capsys.readouterr()
    assert main(["predict", str(directory), str(data), "--out", "-"]) == 0
    return np.loadtxt(capsys.readouterr().out.splitlines()[1:])


def test_the_saved_model_is_the_best_trial_refitted_on_training_and_validation_rows(searches):
    summary, metrics = read(searches["default"], "tune.json"), read(searches["default"], "metrics.json")
    best = next(t for t in summary["trials"] if t["number"] == summary["best_trial"])
    assert summary["refit"]["rows"] == 400 and summary["refit"]["epochs"] == best["best_epoch"], \
        "every labelled row, for the epochs validation chose"
    assert metrics["refit"] == summary["refit"]
    assert summary["best_value"] == best["auc"] == metrics["best_valid"]["auc"], "the metric is the trial's, on validation"
    best_toml = (searches["default"] / "best.toml").read_text()
    assert 'refit = "on"' in best_toml
    assert f"# the saved model: refitted on 400 rows (training + validation) for {best['best_epoch']} epochs" in best_toml


def test_refit_changes_the_saved_model_and_off_keeps_the_best_trial_as_it_trained(searches, capsys):
    assert read(searches["off"], "tune.json")["refit"] is None
    assert "refit" not in read(searches["off"], "metrics.json")
    assert 'refit = "off"' in (searches["off"] / "best.toml").read_text()
    off, refitted = (predictions(searches[name], searches["valid"], capsys) for name in ("off", "default"))
    assert not np.allclose(off, refitted)


def test_held_out_refits_only_rows_held_out_of_the_training_file(searches):
    assert read(searches["held-out"], "tune.json")["refit"] is None, "a --valid file was given"


@pytest.mark.parametrize("name", ["default", "off"])
def test_train_with_best_toml_reproduces_the_saved_model(searches, name, capsys):
    again = searches["root"] / f"again-{name}"
    assert main(["train", "--config", str(searches[name] / "best.toml"), "--out", str(again), "--quiet"]) == 0
    assert read(again, "metrics.json").get("refit", {}).get("rows") == read(searches[name], "metrics.json").get("refit", {}).get("rows")
    np.testing.assert_allclose(predictions(again, searches["valid"], capsys),
                               predictions(searches[name], searches["valid"], capsys), atol=1e-6)


def test_a_streamed_search_saves_the_best_trial_as_it_trained(tmp_path, ctr_csv, capsys):
    """Refitting needs the rows in memory (deepfm train refuses it for streamed data): tune says so and
    saves the best trial."""
    out = tmp_path / "out"
    assert main(["tune", "--train", str(ctr_csv()), "--valid", str(ctr_csv("v.csv", rows=100, part=1)), "--stream", "on",
                 "--model", "fm", "--epochs", "2", "--trials", "1", "--out", str(out)]) == 0
    assert read(out, "tune.json")["refit"] is None
    assert "refit: not for streamed data" in capsys.readouterr().err


def test_fnn_with_its_fm_pretraining_is_saved_as_it_trained(tmp_path, ctr_csv, capsys):
    """A refit does not replay FNN's FM pre-training (deepfm train refuses it): tune says so."""
    out = tmp_path / "out"
    assert main(["tune", "--train", str(ctr_csv()), "--valid", str(ctr_csv("v.csv", rows=100, part=1)), "--model", "fnn",
                 "--mlp", "8", "--epochs", "2", "--trials", "1", "--out", str(out)]) == 0
    assert read(out, "tune.json")["refit"] is None
    assert "refit: FNN's FM pre-training is not replayed" in capsys.readouterr().err
