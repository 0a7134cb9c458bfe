"""``deepfm train --model fm --solver mcmc|als`` end to end: the model directory holds the posterior
samples and predicts their average (what ``GibbsFM.predict`` returns), through ``evaluate``,
``predict`` and ONNX alike; a resumed chain is the same chain; a solver refuses what it cannot fit."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import torch
from safetensors.numpy import load_file

from deepfm import Estimator
from deepfm.cli import main
from deepfm.data.design import design_of_data
from deepfm.data.holdout import hashed_mask
from deepfm.errors import ConfigError, SettingWarning
from deepfm.models.posterior import PosteriorFM
from deepfm.solvers.als import ALSFM
from deepfm.solvers.gibbs import GibbsFM
from deepfm.solvers.sweeps import CHAIN_FILE, thinned


def ratings(rows: int = 500, seed: int = 0) -> pa.Table:
    """Ratings 1–5 from user and item biases and a rank-2 interaction, with a genre bag and a numeric field."""
    rng = np.random.default_rng(seed)
    gen = np.random.default_rng(99)  # the same "true" model for every split
    users, items = 25, 30
    bias_u, bias_i = gen.normal(0, 0.6, users), gen.normal(0, 0.6, items)
    factors_u, factors_i = gen.normal(0, 0.6, (users, 2)), gen.normal(0, 0.6, (items, 2))
    u, i = rng.integers(0, users, rows), rng.integers(0, items, rows)
    age = rng.uniform(0, 1, rows)
    score = 3 + bias_u[u] + bias_i[i] + (factors_u[u] * factors_i[i]).sum(1) + 0.5 * age + rng.normal(0, 0.3, rows)
    genres = np.array(["a", "b", "a|c", "b|c", "c"])[i % 5]
    return pa.table({"user": u.astype(str), "item": i.astype(str), "age": age, "genres": genres,
                     "label": np.clip(np.round(score), 1, 5).astype(np.int64)})


def binary(table: pa.Table) -> pa.Table:
    return table.set_column(table.schema.get_field_index("label"), "label",
                            pa.array((table["label"].to_numpy() >= 4).astype(np.int64)))


TASKS = {"regression": lambda t: t, "binary": binary, "ordinal": lambda t: t}


def sampler(task: str, **training) -> Estimator:
    """An FM for ``ratings()`` fitted by MCMC: 12 sweeps, 10 samples kept."""
    return Estimator(data={"task": task, "categorical": ("user", "item"), "numeric": ("age",), "multi": ("genres",)},
                     model={"name": "fm", "embed_dim": 3},
                     training={"solver": "mcmc", "sweeps": 12, "burn_in": 2, **training})


def fit(task: str, out: Path | None, **training) -> Estimator:
    return sampler(task, **training).fit(TASKS[task](ratings()), out=out, progress=False)


def chain_of(out: Path) -> GibbsFM:
    """The chain the run left in its (last) checkpoint."""
    return GibbsFM.from_tensors(load_file(str(out / "checkpoint" / CHAIN_FILE)))


@pytest.mark.parametrize("task", ["regression", "binary", "ordinal"])
def test_predictions_are_the_posterior_average_of_the_chain(task, tmp_path):
    estimator = fit(task, tmp_path / task)
    test = TASKS[task](ratings(200, seed=1))
    chain = chain_of(tmp_path / task)
    assert isinstance(estimator.model, PosteriorFM) and estimator.model.num_samples == 10 == len(chain.samples)
    design = design_of_data(estimator.encode(test), estimator.encoder.num_features)
    expected = chain.class_probabilities(design) if task == "ordinal" else chain.predict(design)
    loaded = Estimator.load(tmp_path / task)
    for model in (estimator, loaded):
        np.testing.assert_allclose(model.predict(test), expected, rtol=1e-5, atol=1e-6)
    assert np.ptp(expected) > 0.1  # predictions that depend on the row


def test_the_groups_of_the_hyperpriors_are_the_fields(tmp_path):
    estimator = fit("regression", tmp_path / "m")
    sizes = [spec.size for spec in estimator.encoder.fields]
    groups = estimator.model.groups.numpy()
    np.testing.assert_array_equal(groups, np.repeat(np.arange(len(sizes)), sizes))
    np.testing.assert_array_equal(chain_of(tmp_path / "m").groups, groups)


def test_binary_averages_probabilities_not_scores():
    model = PosteriorFM(num_features=2, embed_dim=1, num_samples=2, likelihood="probit")
    model.load_samples(np.array([-3.0, 1.0]), np.zeros((2, 2)), np.zeros((2, 2, 1)))
    from deepfm.data.batch import Batch

    logit = model(Batch(torch.zeros(1, 1, dtype=torch.int64), None, [], None))
    from scipy.special import ndtr

    expected = (ndtr(-3.0) + ndtr(1.0)) / 2  # not Φ(−1), the probability of the average score
    assert torch.sigmoid(logit).item() == pytest.approx(expected, rel=1e-6)


def test_a_regression_predicts_within_the_training_labels_range_in_pytorch_and_onnx(tmp_path):
    """Each sample's ŷ is clipped to the training labels' range before the average (libFM's MCMC), in the model
    directory's module, so that predict, serve and the ONNX graph agree; on a sparse sample, pairs no row saw."""
    ort = pytest.importorskip("onnxruntime")
    from deepfm.export import export_onnx

    estimator = Estimator(data={"task": "regression", "categorical": ("user", "item")}, model={"name": "fm", "embed_dim": 8},
                          training={"solver": "mcmc", "sweeps": 30, "burn_in": 5})
    estimator.fit(ratings(120).drop_columns(["genres", "age"]), out=tmp_path / "m", progress=False)
    users, items = np.meshgrid(np.arange(25), np.arange(30))
    grid = pa.table({"user": users.ravel().astype(str), "item": items.ravel().astype(str)})
    design = design_of_data(estimator.encode(grid, with_labels=False), estimator.encoder.num_features)
    samples = chain_of(tmp_path / "m").sample_predictions(design)
    assert ((samples < 1) | (samples > 5)).any()  # the clip has work to do
    predicted = estimator.predict(grid)
    np.testing.assert_allclose(predicted, np.clip(samples, 1, 5).mean(axis=0), rtol=1e-5, atol=1e-5)
    encoded = estimator.encode(grid, with_labels=False)
    session = ort.InferenceSession(str(export_onnx(tmp_path / "m", tmp_path / "m.onnx")), providers=["CPUExecutionProvider"])
    ones = np.ones(encoded.ids.shape, np.float32)  # (every value is 1: one-hot ids only)
    onnx = session.run(["prediction"], {"ids": encoded.ids.astype(np.int64), "values": ones})[0]
    np.testing.assert_allclose(onnx, predicted, rtol=0, atol=1e-5)


def test_a_posterior_saved_before_the_clip_loads_and_predicts_unbounded():
    model = PosteriorFM(num_features=2, embed_dim=1, num_samples=2, likelihood="gaussian")
    model.load_samples(np.array([7.0, 9.0]), np.zeros((2, 2)), np.zeros((2, 2, 1)), target_range=(1.0, 5.0))
    from deepfm.data.batch import Batch

    batch = Batch(torch.zeros(1, 1, dtype=torch.int64), None, [], None)
    assert model(batch).item() == 5.0
    older = {k: v for k, v in model.state_dict().items() if k != "target_range"}
    model.load_state_dict(older)
    assert model(batch).item() == 8.0


def test_the_train_metric_is_measured_every_twentieth_of_the_run_and_at_the_end():
    logs: list[str] = []
    estimator = sampler("binary", sweeps=45, burn_in=5)
    estimator.fit(binary(ratings()), progress=False, log=logs.append)
    measured = [h["epoch"] for h in estimator.result.history if "auc" in h]
    assert measured == [2 * i for i in range(1, 23)] + [45]
    assert all("alpha" in h for h in estimator.result.history) and len(estimator.result.history) == 45
    assert [line.split(":")[0] for line in logs if line.startswith("sweep")] == [f"sweep {s}" for s in measured]


def test_thinning_keeps_evenly_spaced_samples_and_the_last():
    np.testing.assert_array_equal(thinned(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(thinned(10, 10), np.arange(10))
    np.testing.assert_array_equal(thinned(180, 1), [179])  # one sample: the last, the most converged
    np.testing.assert_array_equal(thinned(180, 2), [0, 179])
    estimator = fit("regression", None, samples=4)
    assert estimator.model.num_samples == 4


def test_more_samples_than_the_sweeps_after_burn_in_keeps_those_and_says_so():
    logs = []
    estimator = sampler("regression", samples=50).fit(TASKS["regression"](ratings()), progress=False, log=logs.append)
    assert estimator.model.num_samples == 10  # 12 sweeps, 2 burnt in
    assert "note: training.samples 50: 10 sweeps follow the burn-in, so the model keeps 10 samples" in logs[0], logs[:3]


def test_a_resumed_chain_equals_an_uninterrupted_one(tmp_path):
    whole = fit("ordinal", tmp_path / "whole", checkpoint_every=4)

    def interrupt(message: str) -> None:
        if message.startswith("sweep 7:"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sampler("ordinal", checkpoint_every=4).fit(ratings(), out=tmp_path / "cut", progress=False, log=interrupt)
    saved = json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())
    assert saved["history"][-1]["epoch"] == 4 and saved["seconds"] > 0
    resumed = sampler("ordinal", checkpoint_every=4).fit(ratings(), out=tmp_path / "cut", resume=True, progress=False)
    test = ratings(200, seed=1)
    np.testing.assert_array_equal(resumed.predict(test), whole.predict(test))
    assert [h["epoch"] for h in resumed.result.history] == list(range(1, 13))
    assert resumed.metrics["seconds_before_resume"] == round(saved["seconds"], 3)  # the run's seconds count the chain's
    assert resumed.metrics["seconds"] > resumed.metrics["seconds_before_resume"]


def test_resuming_with_other_settings_is_refused(tmp_path):
    fit("regression", tmp_path / "m")
    with pytest.raises(ConfigError, match="burn_in 2 → 5"):
        sampler("regression", burn_in=5).fit(ratings(), out=tmp_path / "m", resume=True, progress=False)
    # the chain keeps only its schedule's samples as it runs: another schedule would be another model
    with pytest.raises(ConfigError, match="sweeps 12 → 24"):
        sampler("regression", sweeps=24).fit(ratings(), out=tmp_path / "m", resume=True, progress=False)
    with pytest.raises(ConfigError, match="samples 0 → 4"):  # (the run record: 0, every sample after the burn-in)
        sampler("regression", samples=4).fit(ratings(), out=tmp_path / "m", resume=True, progress=False)


@pytest.mark.parametrize("solver", ["mcmc", "als"])
def test_the_sweeping_solvers_keep_every_training_row_unless_a_valid_fraction_is_set(solver):
    """MCMC and ALS stop at their sweeps, not by validation: without validation data they train on every row;
    a ``data.valid_fraction`` the user set still holds rows out, to be scored."""
    data = {"task": "regression", "categorical": ("user", "item")}
    every_row = Estimator(data=data, model={"name": "fm", "embed_dim": 3},
                          training={"solver": solver, "sweeps": 3}).fit(ratings(), progress=False)
    assert (every_row.metrics["rows"], every_row.metrics["valid_rows"]) == (500, 0)
    held = Estimator(data={**data, "valid_fraction": 0.2}, model={"name": "fm", "embed_dim": 3},
                     training={"solver": solver, "sweeps": 3}).fit(ratings(), progress=False)
    held_out = int(hashed_mask(0, 500, 0.2, seed=2026).sum())  # the default seed's rows
    assert (held.metrics["rows"], held.metrics["valid_rows"]) == (500 - held_out, held_out) and 70 < held_out < 130
    assert set(held.metrics["best_valid"]) >= {"rmse"}
    from deepfm.api import run_record  # a resumed run is compared on the rows it holds out, not the setting's value

    assert run_record(every_row.config, ratings(), None)["trained_with"]["data"]["valid_fraction"] == 0.0
    assert run_record(held.config, ratings(), None)["trained_with"]["data"]["valid_fraction"] == 0.2


def test_an_ordinal_chain_has_a_cutpoint_for_a_class_only_the_held_out_rows_hold():
    """The task's classes come from every label of the file; the chain samples one cutpoint between each
    two of them, so the model it fills scores that class too (a class missing from the chain's own rows
    crashed the run), and its progress RMSE is of ratings, as ``evaluate``'s, not of class positions."""
    table = ratings(200)
    labels = 2 * table["label"].to_numpy()  # ratings 2, 4, ..., 10: positions 0-4 would halve an RMSE
    held = hashed_mask(0, len(labels), 0.2, seed=2026)
    labels[np.flatnonzero(held)[0]] = 14  # the file's only 14
    table = table.set_column(table.schema.get_field_index("label"), "label", pa.array(labels))
    estimator = Estimator(data={"task": "ordinal", "categorical": ("user", "item"), "valid_fraction": 0.2},
                          model={"name": "fm", "embed_dim": 3},
                          training={"solver": "mcmc", "sweeps": 6, "burn_in": 2, "seed": 2026}).fit(table, progress=False)
    assert estimator.encoder.task.classes[-1] == "14"
    assert estimator.predict(table).shape == (200, len(estimator.encoder.task.classes))
    on_training_rows = estimator.evaluate(table.filter(pa.array(~held)))["rmse"]
    assert estimator.result.history[-1]["rmse"] == pytest.approx(on_training_rows, rel=1e-3)


def test_als_stores_one_fm_that_predicts_what_alsfm_predicts(tmp_path):
    estimator = Estimator(data={"task": "regression", "categorical": ("user", "item")}, model={"name": "fm", "embed_dim": 3},
                          training={"solver": "als", "sweeps": 5, "als_l2": 2.0})
    estimator.fit(ratings(), out=tmp_path / "als", progress=False)
    als = ALSFM.from_tensors(load_file(str(tmp_path / "als" / "checkpoint" / CHAIN_FILE)))
    test = ratings(200, seed=1)
    design = design_of_data(estimator.encode(test), estimator.encoder.num_features)
    np.testing.assert_allclose(Estimator.load(tmp_path / "als").predict(test), als.predict(design), rtol=1e-5, atol=1e-5)
    assert type(estimator.model).__name__ == "FactorizationMachine"


# -- the CLI ----------------------------------------------------------------------------------------

@pytest.fixture
def rating_files(tmp_path) -> dict[str, Path]:
    paths = {}
    for name, seed, rows in (("train", 0, 500), ("test", 1, 200)):
        paths[name] = tmp_path / f"{name}.csv"
        pacsv.write_csv(ratings(rows, seed).drop_columns(["genres"]), paths[name])
        paths[f"{name}_binary"] = tmp_path / f"{name}_binary.csv"
        pacsv.write_csv(binary(ratings(rows, seed)).drop_columns(["genres"]), paths[f"{name}_binary"])
    return paths


def test_cli_trains_evaluates_and_predicts_an_ordinal_chain(rating_files, tmp_path, capsys):
    out = tmp_path / "ord"
    assert main(["train", "--train", str(rating_files["train"]), "--out", str(out), "--model", "fm", "--solver", "mcmc",
                 "--task", "ordinal", "--sweeps", "10", "--burn-in", "2", "--categorical", "user,item", "--quiet"]) == 0
    assert not (out / "checkpoint").exists()  # removed after a finished run
    assert main(["evaluate", str(out), str(rating_files["test"]), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"rows", "accuracy", "logloss", "auc", "rmse", "mae"} and metrics["rmse"] < 1.0
    assert main(["predict", str(out), str(rating_files["test"]), "--out", str(tmp_path / "p.csv")]) == 0
    table = pacsv.read_csv(tmp_path / "p.csv")
    assert table.column_names == ["prediction", "expected", "p_1", "p_2", "p_3", "p_4", "p_5"]


@pytest.mark.parametrize("flags, message", [
    (["--model", "deepfm", "--solver", "mcmc"], "fits model fm only"),
    (["--model", "fm", "--solver", "als", "--task", "binary"], "fits the tasks regression, not binary"),
    (["--model", "fm", "--solver", "mcmc", "--task", "multiclass"], "not multiclass"),
])
def test_cli_refuses_a_model_or_task_the_solver_cannot_fit(rating_files, tmp_path, capsys, flags, message):
    assert main(["train", "--train", str(rating_files["train_binary"]), "--out", str(tmp_path / "x"), *flags]) == 2
    assert message in capsys.readouterr().err


def test_als_refuses_binary_labels_found_by_auto_detection(rating_files, tmp_path, capsys):
    assert main(["train", "--train", str(rating_files["train_binary"]), "--out", str(tmp_path / "x"), "--model", "fm",
                 "--solver", "als", "--quiet"]) == 2
    assert "fits the tasks regression, not binary" in capsys.readouterr().err


# -- ONNX: the average over the samples in one graph ----------------------------------------------

@pytest.mark.parametrize("task", ["regression", "binary", "ordinal"])
def test_onnx_averages_the_samples_like_pytorch(task, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from deepfm.export import export_onnx

    estimator = Estimator(data={"task": task, "categorical": ("user", "item"), "numeric": ("age",)},
                          model={"name": "fm", "embed_dim": 3}, training={"solver": "mcmc", "sweeps": 8, "burn_in": 2})
    estimator.fit(TASKS[task](ratings()).drop_columns(["genres"]), out=tmp_path / "m", progress=False)
    test = TASKS[task](ratings(200, seed=1)).drop_columns(["genres"])
    encoded = estimator.encode(test, with_labels=False)
    session = ort.InferenceSession(str(export_onnx(tmp_path / "m", tmp_path / "m.onnx")), providers=["CPUExecutionProvider"])
    onnx = session.run(["prediction"], {"ids": encoded.ids.astype(np.int64), "values": encoded.dense_values()})[0]
    np.testing.assert_allclose(onnx, estimator.predict(test), rtol=0, atol=1e-5)


def test_a_burn_in_that_leaves_no_sample_is_refused_before_any_data_is_read():
    with pytest.raises(ConfigError, match="burn_in 20 leaves no sample of the 20 sweeps"):
        Estimator(model={"name": "fm"}, training={"solver": "mcmc", "sweeps": 20, "burn_in": 20})


def test_serve_answers_with_the_posterior_average(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from deepfm.serving.app import create_app

    estimator = fit("binary", tmp_path / "m")
    test = binary(ratings(20, seed=1))
    rows = [{k: v for k, v in row.items() if k != "label"} for row in test.to_pylist()]
    with TestClient(create_app(tmp_path / "m", batching=False)) as client:
        answer = client.post("/predict", json={"rows": rows}).json()
    np.testing.assert_allclose(answer["predictions"], estimator.predict(test), rtol=1e-6)


@pytest.mark.parametrize("solver, settings, said", [
    ("mcmc", {"lr": 0.1, "epochs": 5, "patience": 1, "linear_l2": 0.1, "als_l2": 3.0},
     "solver mcmc does not use training.epochs, training.lr, training.patience, training.linear_l2, training.als_l2: "
     "they are not applied (it samples for training.sweeps"),
    ("als", {"lr": 0.1, "samples": 3, "burn_in": 1, "select_by": "mae"},
     "solver als does not use training.lr, training.samples, training.burn_in, training.select_by: they are not "
     "applied (it solves for training.sweeps with its own λ"),
    ("gradient", {"samples": 3, "als_l2": 3.0, "epochs": 1},
     "solver gradient does not use training.sweeps, training.samples, training.als_l2: they are not applied (those "
     "are the mcmc and als solvers')"),
])
def test_a_solver_warns_of_the_settings_it_leaves_alone_with_a_log_or_without(solver, settings, said):
    """With no log (a quiet command, a script's fit) the settings had been dropped without a word."""
    with pytest.warns(SettingWarning) as warned:
        Estimator(data={"task": "regression", "categorical": ("user", "item")}, model={"name": "fm", "embed_dim": 3},
                  training={"solver": solver, "sweeps": 2, **settings}).fit(ratings(), progress=False)
    assert [str(w.message) for w in warned if str(w.message).startswith(said)], [str(w.message) for w in warned]
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingWarning)
        Estimator(data={"task": "regression", "categorical": ("user", "item")}, model={"name": "fm", "embed_dim": 3},
                  training={"solver": solver, **({"epochs": 1} if solver == "gradient" else {"sweeps": 2})}).fit(
            ratings(), progress=False)


def test_rows_held_out_for_a_sampler_are_said_to_be_scored_not_to_stop_it():
    logs: list[str] = []
    Estimator(data={"task": "regression", "categorical": ("user", "item"), "valid_fraction": 0.2},
              model={"name": "fm", "embed_dim": 3}, training={"solver": "mcmc", "sweeps": 2}).fit(
        ratings(), progress=False, log=logs.append)
    said = [line for line in logs if line.startswith("validation: no --valid file")]
    assert said and "held out for a score at the end (mcmc trains on none of them)" in said[0], logs


def test_a_sampler_resumed_with_its_default_burn_in_stated_is_the_same_run(tmp_path):
    """The run record holds the burn-in the chain ran with (a tenth of 20 sweeps: 2), not whether it was given."""
    settings = {"data": {"task": "regression", "categorical": ("user", "item")}, "model": {"name": "fm", "embed_dim": 3}}
    first = Estimator(**settings, training={"solver": "mcmc", "sweeps": 20}).fit(ratings(), out=tmp_path / "m",
                                                                                 progress=False)
    again = Estimator(**settings, training={"solver": "mcmc", "sweeps": 20, "burn_in": 2}).fit(
        ratings(), out=tmp_path / "m", resume=True, progress=False)
    np.testing.assert_allclose(again.predict(ratings()), first.predict(ratings()))
    with pytest.raises(ConfigError, match="burn_in 2 → 3"):
        Estimator(**settings, training={"solver": "mcmc", "sweeps": 20, "burn_in": 3}).fit(
            ratings(), out=tmp_path / "m", resume=True, progress=False)
    record = json.loads((tmp_path / "m" / "checkpoint-run.json").read_text())
    record["trained_with"]["training"]["burn_in"] = None  # as the version before recorded an unset burn-in
    (tmp_path / "m" / "checkpoint-run.json").write_text(json.dumps(record))
    Estimator(**settings, training={"solver": "mcmc", "sweeps": 20}).fit(ratings(), out=tmp_path / "m", resume=True,
                                                                         progress=False)
