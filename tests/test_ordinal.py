"""``--task ordinal``: ordered numeric classes (ratings 1–5) for every model through a cumulative link
P(y ≤ j) = σ(c_j − η), and the ordered probit of the MCMC solver; metrics as classes and as ratings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from deepfm import Estimator
from deepfm.data.batch import Batch
from deepfm.errors import DataError
from deepfm.models import MODELS
from deepfm.models.heads import CumulativeLink
from deepfm.tasks import OrdinalTask, task_from_dict
from deepfm.models.fnn import STAGE_1


def ratings(rows: int = 1500, seed: int = 0) -> pa.Table:
    """A rating that grows with a + b (an ordered signal), 1–5."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 10, rows), rng.integers(0, 10, rows)
    rating = np.clip(np.round(1 + (a + b) / 4.5 + rng.normal(0, 0.3, rows)), 1, 5).astype(np.int64)
    return pa.table({"a": a.astype(str), "b": b.astype(str), "label": rating})


class Score(torch.nn.Module):
    """η = the row's first id, for checking the head alone."""

    def forward(self, batch: Batch) -> torch.Tensor:
        return batch.ids[:, 0].float()


def test_the_cumulative_link_gives_the_differences_of_the_cumulative_probabilities():
    head = CumulativeLink(Score(), [-1.0, 0.5, 2.0])
    ids = torch.tensor([[-30], [-1], [0], [1], [3], [40]])
    log_p = head(Batch(ids, None, [], None)).detach()
    eta = ids[:, 0].double()
    cumulative = torch.sigmoid(torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)[None] - eta[:, None])
    expected = torch.diff(torch.cat([torch.zeros(6, 1), cumulative, torch.ones(6, 1)], dim=1), dim=1)
    np.testing.assert_allclose(log_p.exp().double(), expected, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(head.cutpoints().detach(), [-1.0, 0.5, 2.0], rtol=1e-5)
    assert torch.isfinite(log_p).all()  # far tails: logs, not log(0)


def test_the_head_starts_at_the_training_class_rates():
    task = OrdinalTask(["1", "2", "3"], [0.2, 0.5, 0.3])
    head = CumulativeLink(Score(), task.initial_cutpoints())
    p = head(Batch(torch.zeros(1, 1, dtype=torch.int64), None, [], None)).detach().exp()
    np.testing.assert_allclose(p[0], [0.2, 0.5, 0.3], rtol=1e-4)


@pytest.mark.parametrize("model", sorted(set(MODELS) - {"lr"}))
def test_every_model_learns_ordered_ratings(model):
    train, test = ratings(1500), ratings(400, seed=1)
    est = Estimator(data={"task": "ordinal"}, model={"name": model, "mlp": (32,), "embed_dim": 4},
                    training={"epochs": 6, "lr": 1e-2, "batch_size": 128}).fit(train, progress=False)
    assert est.encoder.task.classes == ["1", "2", "3", "4", "5"] and est.classes == [1, 2, 3, 4, 5]
    probabilities = est.predict(test)
    assert probabilities.shape == (400, 5) and np.allclose(probabilities.sum(axis=1), 1)
    metrics = est.evaluate(test)
    assert set(metrics) == {"rows", "accuracy", "logloss", "auc", "rmse", "mae"}
    assert metrics["rmse"] < 0.6 and metrics["accuracy"] > 0.6, metrics


def test_metrics_read_the_classes_as_ratings():
    task = OrdinalTask(["1", "2", "5"], [1 / 3] * 3)
    log_p = np.log([[0.5, 0.5, 1e-12], [0.0 + 1e-12, 0.0 + 1e-12, 1.0]])
    metrics = task.metrics(np.array([0, 2]), log_p)
    expected = np.array([1.5, 5.0])  # Σ_j P(j)·value_j
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((expected - [1, 5]) ** 2)), rel=1e-6)
    assert metrics["mae"] == pytest.approx(0.25, rel=1e-6) and metrics["accuracy"] == 1.0


def test_labels_are_numbers_and_4_0_is_the_class_4():
    est = Estimator(data={"task": "ordinal", "valid_fraction": 0}, model={"name": "fm", "embed_dim": 2},
                    training={"epochs": 1})  # (the class rates are those of the training rows: every row here)
    train = pa.table({"a": ["x", "y", "x", "y"], "label": ["4", "5", "4.0", "1"]})
    est.fit(train, progress=False)
    assert est.encoder.task.classes == ["1", "4", "5"] and est.encoder.task.class_rates == [0.25, 0.5, 0.25]
    assert est.encode(pa.table({"a": ["x"], "label": ["5.0"]})).labels.tolist() == [2.0]
    with pytest.raises(DataError, match="label 3 is not one of the training classes"):
        est.encode(pa.table({"a": ["x"], "label": [3]}))
    with pytest.raises(DataError, match="is not a number"):
        Estimator(data={"task": "ordinal"}, model={"name": "fm"}).fit(
            pa.table({"a": ["x", "y"], "label": ["low", "high"]}), progress=False)


def test_the_task_round_trips_through_features_json():
    task = OrdinalTask(["1", "2", "3"], [0.2, 0.5, 0.3])
    again = task_from_dict(task.to_dict())
    assert isinstance(again, OrdinalTask) and again == task and again.output_dim == 3


def test_predict_writes_the_class_the_expected_rating_and_each_probability():
    columns = OrdinalTask(["1", "2", "3"]).prediction_columns(np.array([[0.1, 0.2, 0.7]]))
    assert list(columns) == ["prediction", "expected", "p_1", "p_2", "p_3"]
    assert columns["prediction"].tolist() == ["3"] and columns["expected"][0] == pytest.approx(2.6)


def test_fnn_pretrains_its_fm_under_the_same_head():
    logs: list[str] = []
    Estimator(data={"task": "ordinal"}, model={"name": "fnn", "mlp": (16,), "embed_dim": 4},
              training={"epochs": 1, "batch_size": 256}).fit(ratings(600), progress=False, log=logs.append)
    assert STAGE_1 in logs


def test_onnx_exports_the_head(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from deepfm.export import export_onnx

    est = Estimator(data={"task": "ordinal"}, model={"name": "deepfm", "mlp": (16,), "embed_dim": 4},
                    training={"epochs": 2, "batch_size": 128})
    est.fit(ratings(600), out=tmp_path / "m", progress=False)
    test = ratings(200, seed=1)
    encoded = est.encode(test, with_labels=False)
    session = ort.InferenceSession(str(export_onnx(tmp_path / "m", tmp_path / "m.onnx")), providers=["CPUExecutionProvider"])
    values = np.ones(encoded.ids.shape, np.float32)
    onnx = session.run(["prediction"], {"ids": encoded.ids.astype(np.int64), "values": values})[0]
    np.testing.assert_allclose(onnx, est.predict(test), rtol=0, atol=1e-5)


def test_a_parquet_of_predictions_holds_the_rating_class_as_a_number(tmp_path):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from deepfm.cli import main

    pacsv.write_csv(ratings(600), tmp_path / "train.csv")
    assert main(["train", "--train", str(tmp_path / "train.csv"), "--out", str(tmp_path / "m"), "--task", "ordinal",
                 "--model", "fm", "--epochs", "1", "--quiet"]) == 0
    assert main(["predict", str(tmp_path / "m"), str(tmp_path / "train.csv"), "--out", str(tmp_path / "p.parquet")]) == 0
    written = pq.read_table(tmp_path / "p.parquet")
    assert written.schema.field("prediction").type == pa.int64()  # as the ratings were written: 4, not '4'
    assert set(written["prediction"].to_pylist()) <= {1, 2, 3, 4, 5}


def test_predict_keep_refuses_a_column_the_predictions_write(tmp_path, capsys):
    """--keep expected (or p_5) would be overwritten by the model's column of that name without a word."""
    import pyarrow.csv as pacsv

    from deepfm.cli import main

    pacsv.write_csv(ratings(600), tmp_path / "train.csv")
    assert main(["train", "--train", str(tmp_path / "train.csv"), "--out", str(tmp_path / "m"), "--task", "ordinal",
                 "--model", "fm", "--epochs", "1", "--quiet"]) == 0
    requests = ratings(50).append_column("expected", pa.array(["E"] * 50)).append_column("p_5", pa.array(["P"] * 50))
    pacsv.write_csv(requests, tmp_path / "requests.csv")
    for name in ("expected", "p_5", "prediction"):
        capsys.readouterr()
        assert main(["predict", str(tmp_path / "m"), str(tmp_path / "requests.csv"), "--keep", name,
                     "--out", str(tmp_path / "p.csv")]) == 2
        assert f"--keep {name}: the predictions write a column of that name (prediction, expected, p_1" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


def test_serve_answers_an_ordinal_model_with_each_rows_expected_rating_as_predict_writes_it(tmp_path):
    """serve gave the class probabilities only; predict's file also has the expected rating (a multiclass tester's
    find)."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from deepfm.serving.app import create_app

    estimator = Estimator(data={"task": "ordinal"}, model={"name": "fm", "embed_dim": 4}, training={"epochs": 1})
    estimator.fit(ratings(600), out=tmp_path / "m", progress=False)
    test = ratings(8, seed=1)
    rows = [{k: v for k, v in row.items() if k != "label"} for row in test.to_pylist()]
    with TestClient(create_app(tmp_path / "m", batching=False)) as client:
        answer = client.post("/predict", json={"rows": rows}).json()
    probabilities = estimator.predict(test)
    np.testing.assert_allclose(answer["expected"], probabilities @ np.array(estimator.classes, float), rtol=1e-5)
