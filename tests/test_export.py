"""``deepfm export DIR --onnx FILE``: onnxruntime predicts what PyTorch predicts, on real encoded rows."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest
import torch

ort = pytest.importorskip("onnxruntime")

from deepfm.api import Estimator  # noqa: E402
from deepfm.cli import main  # noqa: E402
from deepfm.data.synthetic import SyntheticSpec, make_ctr_table  # noqa: E402
from deepfm.export import export_onnx  # noqa: E402
from deepfm.models.first_layer import MIN_WIDTH  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """CTR data with missing values, numeric (scaled, so values ≠ 1) and categorical fields."""
    root = tmp_path_factory.mktemp("export")
    spec = SyntheticSpec(categorical=5, numeric=3, vocabulary=200, seed=7)
    paths = {"root": root}
    for part, name in enumerate(("train", "test")):
        paths[name] = root / f"{name}.csv"
        pacsv.write_csv(make_ctr_table(spec, 600 if name == "train" else 300, part)[0], paths[name])
    return paths


def onnx_predict(path: Path, estimator: Estimator, data: Path) -> np.ndarray:
    encoded = estimator.encode(data, with_labels=False)
    values = encoded.dense_values() if encoded.values is not None else np.ones(encoded.ids.shape, np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["prediction"], {"ids": encoded.ids.astype(np.int64), "values": values})[0]  # the graph takes int64


@pytest.mark.parametrize("name", ["lr", "fm", "deepfm", "ipnn", "wide_deep"])
def test_onnx_matches_pytorch_to_1e5(files, name):
    out = files["root"] / name
    Estimator(data={"numeric": ("I1", "I2", "I3")}, model={"name": name, "mlp": (16, 16), "embed_dim": 4},
              training={"epochs": 1, "batch_size": 64}).fit(files["train"], out=out, progress=False)
    estimator = Estimator.load(out)
    assert estimator.encode(files["test"]).values is not None  # numeric fields: real values, not all ones
    onnx = onnx_predict(export_onnx(out, out / "model.onnx"), estimator, files["test"])
    torch_predictions = estimator.predict(files["test"])
    assert onnx.shape == (300,) and onnx.dtype == np.float32
    np.testing.assert_allclose(onnx, torch_predictions, rtol=0, atol=1e-5)
    assert np.ptp(torch_predictions) > 1e-4  # a model that predicts something row-dependent


@pytest.mark.parametrize("name", ["deepfm", "wide_deep"])
def test_export_traces_without_a_tracer_warning(files, tmp_path, name):
    """The first layer's distinct-rows plan is declined under tracing before any tensor becomes a Python value."""
    out = tmp_path / name
    Estimator(model={"name": name, "mlp": (16,), "embed_dim": MIN_WIDTH}, training={"epochs": 1, "batch_size": 64}).fit(
        files["train"], out=out, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(out, out / "model.onnx")
    assert [str(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)] == []


def test_cli_writes_the_file_and_refuses_multi_valued_fields(files, tmp_path, capsys):
    onnx_path = tmp_path / "m.onnx"
    model = files["root"] / "deepfm"  # trained by the test above when run together; train one if alone
    if not model.exists():
        Estimator(model={"mlp": (8,), "embed_dim": 4}, training={"epochs": 1}).fit(files["train"], out=model, progress=False)
    assert main(["export", str(model), "--onnx", str(onnx_path)]) == 0 and onnx_path.stat().st_size > 0

    bags = tmp_path / "bags.csv"
    bags.write_text("label,tags,c\n1,a|b,x\n0,b,y\n1,a,x\n0,c|a,y\n")
    Estimator(data={"multi": ("tags",)}, model={"mlp": (8,), "embed_dim": 4}, training={"epochs": 1}).fit(
        bags, out=tmp_path / "bagged", progress=False)
    capsys.readouterr()
    assert main(["export", str(tmp_path / "bagged"), "--onnx", str(tmp_path / "no.onnx")]) == 2
    error = capsys.readouterr().err
    assert "multi-valued fields (tags)" in error and "Traceback" not in error
    assert not (tmp_path / "no.onnx").exists()


def test_cli_refuses_an_onnx_path_it_could_not_write_before_any_work(tmp_path, capsys):
    """A folder, or a path through a file, is exit status 2 with the flag named (it was a traceback, exit 1)."""
    (tmp_path / "p1.csv").write_text("x\n")
    for onnx_path, said in ((tmp_path, "that is a folder"), (tmp_path / "p1.csv" / "x.onnx", "is a file, not a folder")):
        capsys.readouterr()
        assert main(["export", str(tmp_path / "no-model"), "--onnx", str(onnx_path)]) == 2
        error = capsys.readouterr().err
        assert f"--onnx {onnx_path}: " in error and said in error and "Traceback" not in error


def test_export_refuses_to_write_over_a_file_that_is_not_an_onnx_graph(files, tmp_path, capsys):
    """A new user's --onnx m/model.safetensors replaced the model's own weights (exit 0); then nothing loaded it."""
    model = tmp_path / "m"
    Estimator(model={"name": "fm", "embed_dim": 4}, training={"epochs": 1}).fit(files["train"], out=model, progress=False)
    weights = (model / "model.safetensors").read_bytes()
    for target, said in ((model / "model.safetensors", "a file of the model directory"),
                         (files["train"], "an existing file, not an .onnx graph")):
        assert main(["export", str(model), "--onnx", str(target)]) == 2
        assert f"{target}: {said}; write the ONNX graph to an .onnx file" in capsys.readouterr().err
    (tmp_path / "w.onnx").symlink_to(model / "model.safetensors")
    assert main(["export", str(model), "--onnx", str(tmp_path / "w.onnx")]) == 2
    assert (model / "model.safetensors").read_bytes() == weights
    for _ in range(2):  # a graph written before is replaced
        assert main(["export", str(model), "--onnx", str(model / "model.onnx")]) == 0


def test_a_model_directory_that_is_a_file_is_said_to_be_one(tmp_path, capsys):
    (tmp_path / "p1.csv").write_text("x\n")
    assert main(["predict", str(tmp_path / "p1.csv"), str(tmp_path / "p1.csv")]) == 2
    assert "p1.csv: not a model directory (a file)" in capsys.readouterr().err


def test_probabilities_far_below_one_in_a_million_stay_torchs_not_zero(files, tmp_path):
    """ONNX Runtime's Sigmoid gives exactly 0 below a logit of about −18 (and twice torch's value at −17): a pCTR of 0
    breaks logloss monitoring and anything divided by it. The graph computes 1 / (1 + e^−x), as torch does."""
    from deepfm.export import write_onnx

    estimator = Estimator(model={"name": "fm", "embed_dim": 4}, training={"epochs": 1, "batch_size": 64}).fit(
        files["train"], progress=False)
    with torch.no_grad():
        estimator.model.linear.bias.fill_(-21.0)  # logits about −21: probabilities near 1e-9
    write_onnx(estimator.model, "binary", len(estimator.encoder.single_fields), str(tmp_path / "model.onnx"))
    torch_predictions = estimator.predict(files["test"])
    assert 0 < torch_predictions.min() and torch_predictions.max() < 1e-6
    np.testing.assert_allclose(onnx_predict(tmp_path / "model.onnx", estimator, files["test"]), torch_predictions,
                               rtol=1e-4)


def test_an_ordinal_models_class_probabilities_in_the_tails_stay_torchs(tmp_path):
    """The cumulative link's log P(y ≤ j) is −softplus(c_j − η): exported as log(Sigmoid) it was −inf, and the
    classes far from η exactly 0, under ONNX Runtime."""
    import pyarrow as pa

    from deepfm.export import write_onnx

    rng = np.random.default_rng(0)
    table = pa.table({"user": rng.integers(0, 30, 400).astype(str), "item": rng.integers(0, 40, 400).astype(str),
                      "label": rng.integers(1, 6, 400)})
    estimator = Estimator(data={"task": "ordinal"}, model={"name": "fm", "embed_dim": 4},
                          training={"epochs": 1}).fit(table, progress=False)
    with torch.no_grad():
        estimator.model.score.linear.bias.fill_(25.0)  # η far above every cutpoint: P(y < 5) near 1e-11
    write_onnx(estimator.model, estimator.encoder.task, len(estimator.encoder.single_fields), str(tmp_path / "m.onnx"))
    rows = tmp_path / "rows.csv"
    pacsv.write_csv(table.drop_columns(["label"]).slice(0, 50), rows)
    torch_predictions = estimator.predict(rows)
    assert 0 < torch_predictions[:, :4].min() and torch_predictions[:, :4].max() < 1e-8
    np.testing.assert_allclose(onnx_predict(tmp_path / "m.onnx", estimator, rows), torch_predictions, rtol=1e-4)
