"""Sample weights (``--weight COL``): each row counts by its weight in the loss and the metrics."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from deepfm import Estimator
from deepfm.config import DataConfig
from deepfm.data.encoders import FeatureEncoder
from deepfm.data.readers import read_frame
from deepfm.errors import DataError
from deepfm.tasks import BinaryTask
from deepfm.training.trainer import Trainer


def table(rows: int = 200, weights=None) -> pa.Table:
    rng = np.random.default_rng(1)
    w = rng.uniform(0.5, 2.0, rows) if weights is None else weights
    return pa.table({"city": rng.integers(0, 6, rows).astype(str), "label": np.arange(rows) % 2, "w": w})


def test_the_weight_column_is_not_a_feature_and_travels_with_the_rows(write_table):
    path = write_table("train.csv", {"city": ["a", "b", "a"], "label": [1, 0, 1], "w": [0.5, 2, 1]})
    encoder = FeatureEncoder.fit([read_frame(path)], DataConfig(weight="w"))
    assert [f.name for f in encoder.fields] == ["city"]
    data = encoder.transform(read_frame(path))
    assert data.weights.tolist() == [0.5, 2.0, 1.0]
    assert data.take(np.array([2, 0])).weights.tolist() == [1.0, 0.5]
    assert FeatureEncoder.from_dict(encoder.to_dict()).weight == "w"
    assert encoder.transform(read_frame(path), with_labels=False).weights is None  # predicting needs no weights


@pytest.mark.parametrize("bad, shown", [("-1", "'-1'"), ("", "missing"), ("inf", "'inf'"), ("1e400", "'1e400'")])
def test_a_missing_negative_or_infinite_weight_is_located(write_table, bad, shown):
    path = write_table("train.csv", {"city": ["a", "b", "a"], "label": [1, 0, 1], "w": ["1.0", bad, "2.5"]})
    encoder = FeatureEncoder.fit([read_frame(path)], DataConfig(weight="w"))
    with pytest.raises(DataError) as caught:
        encoder.transform(read_frame(path))
    assert str(caught.value) == f"{path}:3:3: sample weights must be finite numbers ≥ 0, got {shown}"


def test_an_unknown_weight_column_is_named(write_table):
    path = write_table("train.csv", {"city": ["a", "b"], "label": [1, 0]})
    with pytest.raises(DataError, match=r"--weight \(data.weight\) names column 'w', which is not in the file"):
        FeatureEncoder.fit([read_frame(path)], DataConfig(weight="w"))


def test_the_training_loss_reads_each_batch_s_weights():
    """(Adam: an FM trained by AdaGrad takes its compiled step, whose weighted loss ``test_fm_step`` compares.)"""
    seen = []
    original = BinaryTask.loss

    def spy(self, logits, labels, weights=None):
        seen.append(weights)
        return original(self, logits, labels, weights)

    BinaryTask.loss = spy
    try:
        est = Estimator(data={"weight": "w", "valid_fraction": 0}, model={"name": "fm"},
                        training={"epochs": 1, "batch_size": 1000, "optimizer": "adam"}).fit(
            table(), progress=False)
    finally:
        BinaryTask.loss = original
    torch.testing.assert_close(seen[0].sort().values, torch.from_numpy(
        np.sort(table()["w"].to_numpy().astype(np.float32))))
    assert est.encoder.weight == "w"


def test_evaluation_metrics_are_weighted():
    est = Estimator(data={"weight": "w"}, model={"name": "fm"}, training={"epochs": 1}).fit(table(), progress=False)
    data = table(weights=np.r_[np.zeros(100), np.ones(100)])
    weighted = est.evaluate(data)
    second_half = est.evaluate(data.slice(100).drop(["w"]))
    assert weighted["logloss"] == pytest.approx(second_half["logloss"])
    assert weighted["auc"] == pytest.approx(second_half["auc"])
    assert weighted["weighted_by"] == "w" and "weighted_by" not in second_half  # the result says which it is


def test_cli_weight_flag(tmp_path, write_table):
    from deepfm.cli import main

    rows = 60
    path = write_table("train.csv", {"city": [str(i % 4) for i in range(rows)], "label": [i % 2 for i in range(rows)],
                                     "w": [1.0 + i % 3 for i in range(rows)]})
    assert main(["train", "--train", str(path), "--out", str(tmp_path / "m"), "--weight", "w", "--model", "fm",
                 "--epochs", "1", "--quiet"]) == 0
    assert Estimator.load(tmp_path / "m").encoder.weight == "w"
