"""The forward pass behind ``deepfm serve``: ONNX Runtime where it can serve the model, PyTorch otherwise;
either way the predictions of ``deepfm predict`` (float32 rounding)."""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")
from fastapi.testclient import TestClient  # noqa: E402

from deepfm.api import Estimator  # noqa: E402
from deepfm.errors import ConfigError  # noqa: E402
from deepfm.serving import backends  # noqa: E402
from deepfm.serving.app import create_app  # noqa: E402

HEADER = ["label", "user", "city", "price"]


def _write(path: Path, rows: int, seed: int, rating: bool) -> Path:
    """user: integer ids, city: strings, price: numbers; about 1 cell in 10 empty; a label to learn."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        for _ in range(rows):
            user, city, price = int(rng.integers(100, 130)), ["paris", "oslo", "lima"][int(rng.integers(0, 3))], rng.uniform(1, 9)
            label = (user % 5) + price / 3 if rating else int((user % 3 == 0) ^ (city == "oslo"))
            cells = [str(user), city, f"{price:.2f}"]
            writer.writerow([f"{label:.2f}" if rating else str(label)] + [c if rng.random() > 0.1 else "" for c in cells])
    return path


@pytest.fixture(scope="module", params=["binary", "regression"])
def model(request, tmp_path_factory) -> dict:
    """A DeepFM with batch norm and dropout on single-valued fields (which the ONNX graph takes)."""
    root = tmp_path_factory.mktemp(request.param)
    rating = request.param == "regression"
    train, test = _write(root / "train.csv", 400, 0, rating), _write(root / "test.csv", 60, 1, rating)
    Estimator(data={"numeric": ("price",)}, model={"mlp": (16, 16), "embed_dim": 4, "batch_norm": True, "dropout": 0.2},
              training={"epochs": 2, "batch_size": 64}).fit(train, out=root / "model", progress=False)
    with open(test, newline="") as handle:
        rows = [{k: (v or None) for k, v in row.items() if k != "label"} for row in csv.DictReader(handle)]
    return {"dir": root / "model", "rows": rows, "expected": Estimator.load(root / "model").predict(test)}


def _predict(app, body: dict) -> tuple[list[float], dict]:
    with TestClient(app) as client:
        response = client.post("/predict", json=body)
        assert response.status_code == 200, response.text
        return response.json()["predictions"], client.get("/metadata").json()


@pytest.mark.parametrize("backend", ["auto", "onnxruntime", "torch"])
@pytest.mark.parametrize("body", ["rows", "columns"])
def test_every_backend_predicts_what_deepfm_predict_does(model, backend, body):
    rows = model["rows"]
    request = {"rows": rows} if body == "rows" else {"columns": {k: [r[k] for r in rows] for k in rows[0]}}
    predictions, metadata = _predict(create_app(model["dir"], backend=backend), request)
    assert metadata["backend"] == ("torch" if backend == "torch" else "onnxruntime")
    np.testing.assert_allclose(predictions, model["expected"], rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def multi_valued(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("multi")
    train = root / "train.csv"
    train.write_text("label,user,tags\n" + "".join(f"{i % 2},u{i % 7},t{i % 3}|t{i % 5}\n" for i in range(200)))
    Estimator(data={"multi": ("tags",)}, model={"mlp": (8,), "embed_dim": 4},
              training={"epochs": 1}).fit(train, out=root / "m", progress=False)
    return root / "m"


def test_auto_serves_multi_valued_fields_with_torch_and_says_why(multi_valued, caplog):
    with caplog.at_level(logging.WARNING, logger=backends.__name__):
        _, metadata = _predict(create_app(multi_valued), {"rows": [{"user": "u1", "tags": "t1|t2"}]})
    assert metadata["backend"] == "torch"
    assert "multi-valued fields (tags)" in caplog.text
    with pytest.raises(ConfigError, match=r"--backend onnxruntime: the model has multi-valued fields \(tags\)"):
        create_app(multi_valued, backend="onnxruntime")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_deepfm_serve_backend_onnxruntime_refuses_to_start_without_it(multi_valued, capsys, workers):
    """Exit status 2 and the reason, before any port is opened or worker started."""
    from deepfm.cli import main

    assert main(["serve", str(multi_valued), "--backend", "onnxruntime", "--workers", workers]) == 2
    assert "serve --backend onnxruntime: the model has multi-valued fields (tags)" in capsys.readouterr().err


def test_without_onnxruntime_auto_falls_back_to_torch_and_onnxruntime_refuses(model, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if it were not installed
    with caplog.at_level(logging.WARNING, logger=backends.__name__):
        predictions, metadata = _predict(create_app(model["dir"]), {"rows": model["rows"]})
    assert metadata["backend"] == "torch" and "onnxruntime is not installed" in caplog.text
    np.testing.assert_allclose(predictions, model["expected"], rtol=1e-6, atol=1e-6)
    with pytest.raises(ConfigError, match="onnxruntime is not installed"):
        create_app(model["dir"], backend="onnxruntime")


def test_onnx_runtime_serves_only_once_it_agrees_with_torch(model, monkeypatch, caplog):
    """A graph that predicted otherwise than PyTorch (an exporter's bug) is caught at start-up, not served."""
    right = backends.OnnxPredictor.__call__
    monkeypatch.setattr(backends.OnnxPredictor, "__call__", lambda self, data: right(self, data) + 1e-3)
    with caplog.at_level(logging.WARNING, logger=backends.__name__):
        _, metadata = _predict(create_app(model["dir"]), {"rows": model["rows"][:1]})
    assert metadata["backend"] == "torch" and "differ from PyTorch's" in caplog.text


def test_probe_rows_hold_an_id_of_each_fields_own_range(model):
    encoder = Estimator.load(model["dir"]).encoder
    probe = backends.probe_rows(encoder, rows=500)
    for j, spec in enumerate(encoder.single_fields):
        assert spec.offset <= probe.ids[:, j].min() and probe.ids[:, j].max() < spec.offset + spec.size


@pytest.mark.parametrize("name", ["lr", "fm", "deepfm", "fnn", "ipnn", "opnn", "pnn", "wide_deep", "fm_dnn"])
def test_auto_serves_every_model_kind_with_onnx_runtime(model, name):
    """No model falls back to PyTorch unnoticed: each exports and agrees with PyTorch on the probe rows."""
    import torch

    from deepfm.config import ModelConfig
    from deepfm.models.registry import build_model

    encoder = Estimator.load(model["dir"]).encoder
    torch.manual_seed(0)
    config = ModelConfig(name=name, embed_dim=4, mlp=(8, 8), batch_norm=True)
    built = build_model(config, num_features=encoder.num_features, num_fields=len(encoder.fields))
    assert backends.predictor_for(built, encoder, "auto", threads=1).name == "onnxruntime"


def test_small_requests_run_on_one_thread_and_share_the_weights_with_the_large_ones(model, monkeypatch):
    """Waking a second thread costs a one-row request more than it saves: with 2 threads, requests of up to
    SMALL_ROWS rows run on a one-thread session, larger ones on the two-thread one; both read one copy of the
    weights and predict alike."""
    estimator = Estimator.load(model["dir"])
    predictor = backends.predictor_for(estimator.model, estimator.encoder, "onnxruntime", threads=2)
    assert predictor.small_session is not predictor.session
    assert predictor.small_session.get_session_options().intra_op_num_threads == 1
    assert predictor.session.get_session_options().intra_op_num_threads == 2
    assert backends.predictor_for(estimator.model, estimator.encoder, "onnxruntime", threads=1).small_session \
        is not None
    ran = []
    for which in ("session", "small_session"):
        session = getattr(predictor, which)
        monkeypatch.setattr(predictor, which, type("Spy", (), {
            "run": lambda self, *args, _s=session, _w=which: ran.append(_w) or _s.run(*args)})())
    probe = backends.probe_rows(estimator.encoder, rows=64)
    small, large = predictor(probe.slice(0, backends.SMALL_ROWS)), predictor(probe)
    assert ran == ["small_session", "session"]
    np.testing.assert_allclose(small, large[:backends.SMALL_ROWS], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(large, backends.TorchPredictor(estimator.model, estimator.encoder.task)(probe),
                               **backends.TOLERANCE)


def test_small_requests_in_any_order_predict_as_each_alone(model):
    """Requests of up to SMALL_ROWS rows reuse inputs prepared once: whatever ran before (more rows, fewer,
    with values or without), each request predicts what PyTorch predicts for its own rows."""
    estimator = Estimator.load(model["dir"])
    predictor = backends.predictor_for(estimator.model, estimator.encoder, "onnxruntime", threads=2)
    reference = backends.TorchPredictor(estimator.model, estimator.encoder.task)
    probe = backends.probe_rows(estimator.encoder, rows=64)
    assert probe.dense_values() is not None  # price is scaled: its values vary
    without_values = type(probe)(ids=probe.ids, values=None, bags=[])
    for start, n, data in [(0, 8, probe), (8, 1, without_values), (9, 3, probe), (12, 8, without_values),
                           (20, 2, probe), (22, 40, probe), (0, 1, probe)]:
        rows = data.slice(start, start + n)
        np.testing.assert_allclose(predictor(rows), reference(rows), **backends.TOLERANCE)
