"""Regression tests for the data-side bugs of issues 11 and 16: each failed before its fix."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from deepfm.config import DataConfig
from deepfm.data.encoders import UNSEEN, FeatureEncoder
from deepfm.data.readers import frame_from_table, read_frame
from deepfm.errors import DataError
from deepfm.models.fm import FactorizationMachine


def fm_by_definition(model: FactorizationMachine, x: np.ndarray) -> float:
    """Rendle 2010, eq. 1 on a dense x: w0 + Σ w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j."""
    w0 = float(model.linear.bias.detach())
    w = model.linear.weights.weight.detach().double().numpy()[:, 0]
    v = model.embedding.weight.detach().double().numpy()
    pairs = sum(float(v[i] @ v[j]) * x[i] * x[j] for i in np.flatnonzero(x) for j in np.flatnonzero(x) if i < j)
    return w0 + float(w @ x) + pairs


def dense_x(encoder: FeatureEncoder, data, row: int) -> np.ndarray:
    x = np.zeros(encoder.num_features)
    values = data.dense_values()
    for j in range(data.ids.shape[1]):
        x[data.ids[row, j]] += 1.0 if values is None else values[row, j]
    for bag in data.bags:
        for k in range(bag.offsets[row], bag.offsets[row + 1]):
            x[bag.ids[k]] += bag.weights[k]
    return x


def fm_predictions(encoder: FeatureEncoder, data) -> tuple[np.ndarray, list[float]]:
    torch.manual_seed(0)
    model = FactorizationMachine(encoder.num_features, 4)
    with torch.no_grad():
        model.embedding.weight.normal_(0, 1)
        model.linear.weights.weight.normal_(0, 1)
    model.eval()
    with torch.no_grad():
        got = model(data.to_batch()).double().numpy()
    return got, [fm_by_definition(model, dense_x(encoder, data, r)) for r in range(len(data))]


# -- 16.1: repeated ids in one row are one feature with the summed weight -------------------------


TRAIN = {"label": [1, 0, 1, 0], "city": ["x", "y", "x", "y"], "tags": ["a|b", "b", "a", "c|a"]}


def test_repeated_and_unseen_values_of_a_row_are_merged_into_one_feature(write_table):
    cfg = DataConfig(multi=("tags",))
    encoder = FeatureEncoder.fit([read_frame(write_table("train.csv", TRAIN), multi=cfg.multi)], cfg)
    rows = {"label": [1, 0, 1], "city": ["x", "y", "x"], "tags": ["zz|yy", "a|a", "a|b:0.5|a:2"]}
    data = encoder.transform(read_frame(write_table("test.csv", rows), multi=cfg.multi))
    tags = next(f for f in encoder.fields if f.name == "tags")
    bag = data.bags[0]
    assert bag.offsets.tolist() == [0, 1, 2, 4]
    assert bag.ids[0] == tags.offset + UNSEEN and bag.weights[0] == 2.0  # 'unseen' with x = 2
    assert bag.weights[1] == 2.0  # x_a = 2
    assert sorted(bag.weights[2:].tolist()) == [0.5, 3.0]
    got, expected = fm_predictions(encoder, data)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_a_libfm_row_repeating_an_index_is_one_feature(write_text):
    path = write_text("train.libfm", "1 3:1 5:1 3:1\n0 5:1 7:2\n1 9:1\n")
    encoder = FeatureEncoder.fit([read_frame(path)], DataConfig())
    data = encoder.transform(read_frame(path))
    assert np.diff(data.bags[0].offsets).tolist() == [2, 2, 1]
    got, expected = fm_predictions(encoder, data)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_values_colliding_in_one_hash_bucket_are_one_feature(write_table):
    train = {"label": [i % 2 for i in range(40)], "tags": [f"t{i}|t{i + 1}|t{i + 2}" for i in range(40)]}
    cfg = DataConfig(multi=("tags",), hash_buckets=2)
    encoder = FeatureEncoder.fit([read_frame(write_table("train.csv", train), multi=cfg.multi)], cfg)
    data = encoder.transform(read_frame(write_table("train.csv", train), multi=cfg.multi))
    bag = data.bags[0]
    rows = np.repeat(np.arange(len(data)), np.diff(bag.offsets))
    assert len(np.unique(rows * encoder.num_features + bag.ids)) == len(bag.ids)
    assert np.allclose(np.add.reduceat(bag.weights, bag.offsets[:-1]), 3.0)
    got, expected = fm_predictions(encoder, data)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# -- 16.4: hashed fields follow the id rules (rare and unseen values -> id 1) -----------------------


def hashed_encoder(write_table, min_count: int):
    users = [f"u{i % 20}" for i in range(100)] + ["once"]
    train = {"label": [i % 2 for i in range(101)], "user": users}
    cfg = DataConfig(hash_buckets=8, min_count=min_count)
    return FeatureEncoder.fit([read_frame(write_table("train.csv", train))], cfg)


def local_ids(encoder: FeatureEncoder, values: list) -> list[int]:
    frame = frame_from_table(pa.table({"user": pa.array(values, pa.string())}), "<test>")
    return (encoder.transform(frame).ids[:, 0] - encoder.fields[0].offset).tolist()


def test_hashed_field_gives_values_rarer_than_min_count_the_unseen_id(write_table):
    encoder = hashed_encoder(write_table, min_count=5)
    assert encoder.fields[0].hash_buckets == 8
    ids = local_ids(encoder, ["once", "u3", "never-seen", None])
    assert ids[0] == UNSEEN and ids[2] == UNSEEN and ids[3] == 0
    assert 2 <= ids[1] < 10


def test_hashed_field_counts_distinct_values_after_the_min_count_filter(write_table):
    users = [f"u{i % 4}" for i in range(40)] + [f"rare{i}" for i in range(20)]
    train = {"label": [i % 2 for i in range(60)], "user": users}
    encoder = FeatureEncoder.fit([read_frame(write_table("train.csv", train))], DataConfig(hash_buckets=8, min_count=2))
    assert encoder.fields[0].hash_buckets == 0 and len(encoder.fields[0].vocabulary) == 4


def test_hashed_field_with_its_frequent_set_survives_the_json_round_trip(write_table):
    encoder = hashed_encoder(write_table, min_count=5)
    again = FeatureEncoder.from_dict(encoder.to_dict())
    values = ["once", "never-seen"] + [f"u{i}" for i in range(20)]
    assert local_ids(again, values) == local_ids(encoder, values)


# -- 16.7: --multi weights and gzip names ------------------------------------------------------------


def multi_tokens(write_table, cells: list[str]) -> tuple[list, list]:
    frame = read_frame(write_table("t.csv", {"label": [1] * len(cells), "tags": cells}), multi=("tags",))
    return frame.columns["tags"].to_pylist(), frame.weights["tags"].to_pylist()


def test_only_a_trailing_number_after_a_colon_is_a_weight(write_table):
    values, weights = multi_tokens(write_table, ["url:x|a:0.5", r"12\:30|b", "c:d:2"])
    assert values == [["url:x", "a"], ["12:30", "b"], ["c:d"]]
    assert weights == [[1.0, 0.5], [1.0, 1.0], [2.0]]


def test_upper_case_gz_suffix_is_gzip(tmp_path):
    path = tmp_path / "data.CSV.GZ"
    with gzip.open(path, "wt") as handle:
        handle.write("label,city\n1,paris\n0,rome\n")
    frame = read_frame(path)
    assert frame.columns["city"].to_pylist() == ["paris", "rome"]


# -- 11.3: a pandas index is not a feature -------------------------------------------------------------


def test_parquet_written_by_pandas_does_not_read_its_index_as_a_column(tmp_path):
    df = pd.DataFrame({"label": [1, 0, 1], "city": ["a", "b", "c"]}).iloc[[2, 0, 1]]
    df.to_parquet(tmp_path / "t.parquet")
    frame = read_frame(tmp_path / "t.parquet")
    assert list(frame.columns) == ["city"]


def test_arrow_table_from_pandas_does_not_read_its_index_as_a_column():
    df = pd.DataFrame({"label": [1, 0, 1], "city": ["a", "b", "c"]}).iloc[[2, 0, 1]]
    frame = frame_from_table(pa.Table.from_pandas(df), "<table>")
    assert list(frame.columns) == ["city"]


# -- 11.6: an unknown --label -----------------------------------------------------------------------


def test_unknown_label_suggests_the_closest_column_and_not_the_flag_it_was_given_with(write_table):
    path = write_table("t.csv", {"Rating": [1, 2], "user": ["a", "b"]})
    with pytest.raises(DataError) as error:
        read_frame(path, label="rating")
    assert "did you mean 'Rating'" in str(error.value)
    assert "name the label with --label" not in str(error.value)


def test_missing_default_label_suggests_the_flag(write_table):
    path = write_table("t.csv", {"click": [1, 0], "user": ["a", "b"]})
    with pytest.raises(DataError, match="--label"):
        read_frame(path)
