"""FeatureEncoder: fit on train only, reserved ids, hashing, numeric encodings, multi-valued bags,
the JSON round trip, and batching of encoded data."""

from __future__ import annotations

import json
import re

import warnings

import numpy as np
import torch
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepfm.config import DataConfig
from deepfm.data.batch import Bag, EncodedData, iterate_batches
from deepfm.data.encoders import MISSING, UNSEEN, FeatureEncoder, signed_log
from deepfm.data.even_sample import EvenSample
from deepfm.data.hashing import fnv1a64_unique, hash_bucket
from deepfm.data.readers import read_frame
from deepfm.data.stream import ChunkedFile, encode_file, fit_streaming
from deepfm.data.tables import frame_from_table
from deepfm.defaults import LONG_TAIL_MIN_COUNT, RARE_VALUE_RULE_ROWS
from deepfm.errors import DataError

TRAIN = {
    "label": [1, 0, 1, 0, 1, 0],
    "city": ["paris", "paris", "rome", None, "paris", "oslo"],
    "price": ["1.5", "2.0", None, "10.0", "0.5", "3.25"],
    "tags": ["a|b:0.5", "b", None, "a|c", "c", "a"],
}


def encode(write_table, train=TRAIN, valid=None, **config):
    """Fit on ``train`` (a dict of columns) and return (encoder, encoded train, encoded valid)."""
    cfg = DataConfig(**config)
    frame = read_frame(write_table("train.csv", train), multi=cfg.multi)
    encoder = FeatureEncoder.fit([frame], cfg)
    encoded_valid = None
    if valid is not None:
        encoded_valid = encoder.transform(read_frame(write_table("valid.csv", valid), multi=cfg.multi))
    return encoder, encoder.transform(frame), encoded_valid


def field(encoder: FeatureEncoder, name: str):
    return next(f for f in encoder.fields if f.name == name)


def column(encoder: FeatureEncoder, data: EncodedData, name: str) -> np.ndarray:
    """Field-local ids of a single-valued field."""
    j = [f.name for f in encoder.single_fields].index(name)
    return data.ids[:, j] - field(encoder, name).offset


# -- kinds and the id layout ------------------------------------------------------------------


def test_kinds_follow_the_inference_rule(write_table):
    encoder, _, _ = encode(write_table, {"label": [1, 0], "s": ["a", "b"], "i": ["3", "4"], "f": ["1.5", "2"]})
    assert [(f.name, f.kind) for f in encoder.fields] == [("s", "categorical"), ("i", "categorical"), ("f", "numeric")]


def test_flags_override_inferred_kinds(write_table):
    encoder, _, _ = encode(write_table, {"label": [1, 0], "i": ["3", "4"], "f": ["1.5", "2"]},
                           numeric=("i",), categorical=("f",))
    assert {f.name: f.kind for f in encoder.fields} == {"i": "numeric", "f": "categorical"}


def test_ignored_columns_are_not_fields(write_table):
    encoder, data, _ = encode(write_table, ignore=("price",), multi=("tags",))
    assert [f.name for f in encoder.fields] == ["city", "tags"]
    assert data.ids.shape == (6, 1)


def test_fields_own_contiguous_disjoint_id_ranges(write_table):
    encoder, _, _ = encode(write_table, multi=("tags",))
    offset = 0
    for spec in encoder.fields:
        assert spec.offset == offset
        offset += spec.size
    assert encoder.num_features == offset


def test_multi_valued_fields_come_after_single_valued_fields(write_table):
    encoder, _, _ = encode(write_table, multi=("tags",))
    kinds = [f.kind for f in encoder.fields]
    assert kinds == ["categorical", "numeric", "multi"]


def test_ids_are_stored_as_int32_and_batches_hold_int64(write_table):
    _, data, _ = encode(write_table, multi=("tags",))
    assert data.ids.dtype == np.int32  # half the memory while the table has < 2³¹ rows
    assert data.to_batch().ids.dtype == torch.int64  # what the lookups take
    assert data.bags[0].ids.dtype == np.int64
    assert data.bags[0].offsets.dtype == np.int64


def test_every_id_falls_inside_its_fields_range(write_table):
    valid = {"label": [1, 0], "city": ["berlin", None], "price": ["99.0", None], "tags": ["zz|a", None]}
    encoder, data, encoded_valid = encode(write_table, valid=valid, multi=("tags",))
    for encoded in (data, encoded_valid):
        for j, spec in enumerate(encoder.single_fields):
            assert ((encoded.ids[:, j] >= spec.offset) & (encoded.ids[:, j] < spec.offset + spec.size)).all()
        spec = encoder.multi_fields[0]
        assert ((encoded.bags[0].ids >= spec.offset) & (encoded.bags[0].ids < spec.offset + spec.size)).all()


# -- categorical vocabularies -----------------------------------------------------------------


def test_categorical_vocabulary_starts_at_id_two(write_table):
    encoder, data, _ = encode(write_table)
    spec = field(encoder, "city")
    assert sorted(spec.vocabulary) == ["oslo", "paris", "rome"]
    assert spec.size == 2 + 3
    local = column(encoder, data, "city")
    for row, value in enumerate(TRAIN["city"]):
        if value is not None:
            assert local[row] == 2 + spec.vocabulary.index(value)


def test_missing_categorical_value_is_id_zero(write_table):
    encoder, data, _ = encode(write_table)
    assert column(encoder, data, "city")[3] == MISSING == 0


def test_vocabulary_is_fitted_on_train_only(write_table):
    valid = {"label": [1, 0, 1], "city": ["berlin", "rome", None], "price": ["1.0", "2.0", "3.0"], "tags": ["a", "a", "a"]}
    encoder, _, encoded_valid = encode(write_table, valid=valid)
    assert "berlin" not in field(encoder, "city").vocabulary
    assert column(encoder, encoded_valid, "city").tolist() == [UNSEEN, 2 + field(encoder, "city").vocabulary.index("rome"), MISSING]


def test_unseen_value_is_id_one(write_table):
    valid = {"label": [1], "city": ["berlin"], "price": ["1.0"], "tags": ["a"]}
    encoder, _, encoded_valid = encode(write_table, valid=valid)
    assert UNSEEN == 1
    assert column(encoder, encoded_valid, "city").tolist() == [1]


def test_values_rarer_than_min_count_share_the_unseen_id(write_table):
    encoder, data, _ = encode(write_table, min_count=2)
    spec = field(encoder, "city")
    assert spec.vocabulary == ["paris"]
    assert column(encoder, data, "city").tolist() == [2, 2, UNSEEN, MISSING, 2, UNSEEN]


def test_refitting_on_the_same_data_gives_the_same_vocabulary(write_table):
    first, _, _ = encode(write_table)
    second, _, _ = encode(write_table)
    assert first.to_dict() == second.to_dict()


# -- hashing ----------------------------------------------------------------------------------


def test_fnv1a64_matches_the_reference_test_vectors():
    hashes = fnv1a64_unique(pa.array(["", "a", "foobar"]))
    assert hashes.tolist() == [0xCBF29CE484222325, 0xAF63DC4C8601EC8C, 0x85944171F73967E8]


def test_hash_bucket_is_in_range_and_equal_values_share_a_bucket():
    values = pa.array([f"v{i % 37}" for i in range(500)])
    buckets = hash_bucket(values, 7)
    assert buckets.dtype == np.int64
    assert ((buckets >= 0) & (buckets < 7)).all()
    again = hash_bucket(pa.array([f"v{i}" for i in range(37)]), 7)
    assert (buckets[:37] == again).all()


HASHED = {"label": [i % 2 for i in range(40)], "user": [f"u{i % 20}" for i in range(40)]}


def test_field_with_more_values_than_hash_buckets_is_hashed(write_table):
    encoder, data, _ = encode(write_table, HASHED, hash_buckets=8)
    spec = field(encoder, "user")
    assert spec.hash_buckets == 8
    assert spec.vocabulary is None
    assert spec.size == 2 + 8
    local = column(encoder, data, "user")
    assert ((local >= 2) & (local < 10)).all()


def test_the_fit_notes_say_which_fields_hash_buckets_hashed_or_that_none_was(write_table):
    hashed = {**HASHED, "city": [f"c{i % 3}" for i in range(40)]}
    assert encode(write_table, hashed, hash_buckets=8)[0].fit_notes[-1] == (
        "hash buckets: 1 field of more than 8 kept values hashed into 8 buckets each (a value seen too rarely to "
        "keep shares the unseen id): user")
    assert encode(write_table, hashed, hash_buckets=50)[0].fit_notes[-1] == (
        "hash buckets: no field keeps more than 50 values, so every field keeps its vocabulary")


def test_hashed_ids_are_the_fnv_bucket_plus_two(write_table):
    encoder, data, _ = encode(write_table, HASHED, hash_buckets=8)
    expected = 2 + fnv1a64_unique(pa.array(HASHED["user"])) % np.uint64(8)
    assert column(encoder, data, "user").tolist() == expected.astype(np.int64).tolist()


def test_hashing_is_deterministic_across_encoders(write_table):
    _, first, _ = encode(write_table, HASHED, hash_buckets=8)
    _, second, _ = encode(write_table, HASHED, hash_buckets=8)
    assert (first.ids == second.ids).all()


def test_hashed_field_maps_unseen_values_to_the_unseen_id_and_missing_to_zero(write_table):
    valid = {"label": [1, 0], "user": ["never-seen", None]}
    encoder, _, encoded_valid = encode(write_table, HASHED, valid=valid, hash_buckets=8)
    local = column(encoder, encoded_valid, "user")
    assert local[0] == UNSEEN
    assert local[1] == MISSING


def test_field_with_few_values_keeps_its_vocabulary_despite_hash_buckets(write_table):
    encoder, _, _ = encode(write_table, hash_buckets=8)
    spec = field(encoder, "city")
    assert spec.hash_buckets == 0
    assert sorted(spec.vocabulary) == ["oslo", "paris", "rome"]


# -- numeric encodings ------------------------------------------------------------------------


def test_numeric_scale_present_value_is_id_one_with_standardised_signed_log(write_table):
    encoder, data, _ = encode(write_table, multi=("tags",))
    spec = field(encoder, "price")
    j = [f.name for f in encoder.single_fields].index("price")
    present = np.array([v is not None for v in TRAIN["price"]])
    raw = np.array([float(v) for v in TRAIN["price"] if v is not None])
    assert spec.size == 2
    assert (data.ids[present, j] == spec.offset + 1).all()
    expected = (signed_log(raw) - spec.mean) / spec.std
    assert np.allclose(data.dense_values()[present, j], expected, atol=1e-6)


def test_numeric_scale_standardises_the_training_values(write_table):
    encoder, data, _ = encode(write_table)
    j = [f.name for f in encoder.single_fields].index("price")
    present = np.array([v is not None for v in TRAIN["price"]])
    x = data.dense_values()[present, j].astype(np.float64)
    assert abs(x.mean()) < 1e-5
    assert abs(x.std() - 1) < 1e-5


def test_numeric_missing_value_is_id_zero(write_table):
    encoder, data, _ = encode(write_table)
    assert column(encoder, data, "price")[2] == MISSING


def test_numeric_scale_of_a_negative_value_uses_the_signed_log(write_table):
    train = {"label": [1, 0, 1], "x": ["-3.0", "0.0", "3.0"]}
    encoder, data, _ = encode(write_table, train)
    spec = field(encoder, "x")
    assert spec.mean == pytest.approx(0.0)
    assert data.dense_values()[:, 0] == pytest.approx([-np.log1p(3) / spec.std, 0.0, np.log1p(3) / spec.std], rel=1e-5)


def test_numeric_bucket_gives_quantile_ids_and_unit_values(write_table):
    train = {"label": [i % 2 for i in range(40)], "x": [f"{i}.0" for i in range(40)]}
    encoder, data, _ = encode(write_table, train, numeric_encoding="bucket", numeric_buckets=4)
    spec = field(encoder, "x")
    assert len(spec.edges) == 3
    assert spec.size == 2 + 3
    local = column(encoder, data, "x")
    assert local.min() == 1 and local.max() == 4
    assert (np.diff(local) >= 0).all()  # the values are increasing, so are the buckets
    assert np.bincount(local)[1:].tolist() == [10, 10, 10, 10]
    assert data.values is None


def test_numeric_bucket_edges_describe_the_whole_of_a_sorted_file_not_its_start(write_table, monkeypatch):
    """A file sorted by the column (by time, say): edges from its first values described its start alone."""
    monkeypatch.setattr("deepfm.data.encoders.QUANTILE_SAMPLE", 1500)  # the file holds more values than the sample
    path = write_table("sorted.csv", {"label": [i % 2 for i in range(4000)], "x": [f"{i}.0" for i in range(4000)]})
    config = DataConfig(numeric_encoding="bucket", numeric_buckets=4)
    file = ChunkedFile(path, chunk_bytes=4096)  # ~10 chunks: the first four filled the former sample
    encoder, rows = fit_streaming(file, config)
    assert len(rows) > 5
    assert field(encoder, "x").edges == pytest.approx([1000, 2000, 3000], abs=200)  # a sample's quartiles of 0-3999
    data = encode_file(file, encoder, rows)
    assert np.bincount(column(encoder, data, "x"))[1:] == pytest.approx([1000] * 4, abs=200)


def test_an_even_sample_is_the_same_however_the_stream_is_chunked_and_at_most_its_limit():
    whole = np.arange(1000.0)
    samples = []
    for cuts in ([1000], [1, 999], [7] * 142 + [6], [300, 0, 700]):
        sample, start = EvenSample(limit=100), 0
        for size in cuts:
            sample.add(whole[start : start + size])
            start += size
        samples.append(sample.values().tolist())
        assert 40 < len(samples[-1]) <= 100 and sample.stride == 16
    assert all(s == samples[0] for s in samples)
    small = EvenSample(limit=100)
    small.add(whole[:100])
    assert small.values().tolist() == whole[:100].tolist()  # at most the limit: every value


def test_an_even_sample_of_rows_that_repeat_a_pattern_keeps_every_value_of_it():
    """A file of 24 hours an entity: every stride-th position (a power of two) kept hours 0, 8 and 16 alone."""
    hours = np.arange(200_000, dtype=np.float64) % 24
    sample = EvenSample(limit=10_000)
    for start in range(0, len(hours), 65_536):
        sample.add(hours[start : start + 65_536])
    assert sample.stride >= 8 and set(sample.values()) == set(range(24))
    assert np.quantile(sample.values(), [0.25, 0.5, 0.75]) == pytest.approx([5.5, 11.5, 17.5], abs=1)


def test_numeric_bucket_missing_is_zero_and_out_of_range_values_clip_to_the_end_buckets(write_table):
    train = {"label": [i % 2 for i in range(40)], "x": [f"{i}.0" for i in range(40)]}
    valid = {"label": [0, 1, 0], "x": ["-100.0", None, "1e9"]}
    encoder, _, encoded_valid = encode(write_table, train, valid=valid, numeric_encoding="bucket", numeric_buckets=4)
    assert column(encoder, encoded_valid, "x").tolist() == [1, MISSING, 4]


def test_non_finite_numeric_training_values_never_give_nan_features(write_table):
    train = {"label": [1, 0, 1, 0], "x": ["1.5", "inf", "2.5", "3.5"]}
    try:
        encoder, data, _ = encode(write_table, train)
    except DataError as error:  # rejecting the value is as good as ignoring it, if it is located
        assert str(error).endswith("got 'inf'") and ":3:2:" in str(error)
        return
    spec = field(encoder, "x")
    assert np.isfinite(spec.mean) and np.isfinite(spec.std)
    assert data.values is None or np.isfinite(data.values).all()


@pytest.mark.parametrize("word", ["NA", "NULL", "null", "None", "N/A", "#N/A", "<NA>"])
@pytest.mark.parametrize("flagged", [False, True])
def test_words_for_a_missing_number_are_missing_in_a_numeric_column_and_said(write_table, word, flagged):
    """A new user's float column with 'NA' on every 10th row (R's, pandas' and SQL exports' missing number) became
    categorical, one id per float, without a word; with --numeric it stopped at the first 'NA'."""
    x = [word if i % 10 == 0 else f"{i / 7:.3f}" for i in range(40)]
    train = {"label": [i % 2 for i in range(40)], "x": x, "c": ["NA" if i % 3 else "b" for i in range(40)]}
    encoder, data, _ = encode(write_table, train, **({"numeric": ("x",)} if flagged else {}))
    assert field(encoder, "x").kind == "numeric"
    assert field(encoder, "c").kind == "categorical" and "NA" in field(encoder, "c").vocabulary  # ids keep the word
    column = [f.name for f in encoder.fields].index("x")
    missing = data.ids[:, column][::10]
    assert len(set(missing.tolist())) == 1 and missing[0] != data.ids[1, column]  # the missing id, as an empty cell
    assert any(note.startswith("column 'x' is numeric, and 4 of its first 40 values are words for a missing number "
                               f"(first {word!r})") for note in encoder.fit_notes), encoder.fit_notes


# -- multi-valued fields ----------------------------------------------------------------------


def test_multi_valued_field_gives_a_bag_of_offsets_ids_and_weights(write_table):
    encoder, data, _ = encode(write_table, multi=("tags",))
    spec = field(encoder, "tags")
    bag = data.bags[0]
    gid = {value: spec.offset + 2 + spec.vocabulary.index(value) for value in spec.vocabulary}
    assert bag.offsets.tolist() == [0, 2, 3, 4, 6, 7, 8]
    assert bag.ids.tolist() == [gid["a"], gid["b"], gid["b"], spec.offset + MISSING, gid["a"], gid["c"], gid["c"], gid["a"]]
    assert bag.weights.dtype == np.float32
    assert bag.weights.tolist() == [1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_empty_set_is_one_missing_id_with_weight_one(write_table):
    train = {"label": [1, 0, 1, 0], "tags": [None, "a", None, None]}
    encoder, data, _ = encode(write_table, train, multi=("tags",))
    bag, offset = data.bags[0], field(encoder, "tags").offset
    assert bag.offsets.tolist() == [0, 1, 2, 3, 4]
    assert bag.ids.tolist() == [offset + MISSING, offset + 2, offset + MISSING, offset + MISSING]
    assert bag.weights.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_an_empty_token_in_a_multi_valued_cell_is_missing_not_a_value(write_table):
    """A new user's 'a|', 'a||b' and '|' learned a value '' with its own embedding."""
    train = {"label": [1, 0, 1, 0], "tags": ["a|", "a||b", "|", "b"]}
    encoder, data, _ = encode(write_table, train, multi=("tags",))
    spec = field(encoder, "tags")
    assert sorted(spec.vocabulary) == ["a", "b"]
    gid = {value: spec.offset + 2 + spec.vocabulary.index(value) for value in spec.vocabulary}
    assert data.bags[0].offsets.tolist() == [0, 1, 3, 4, 5]
    assert data.bags[0].ids.tolist() == [gid["a"], gid["a"], gid["b"], spec.offset + MISSING, gid["b"]]


def test_multi_valued_unseen_values_get_the_unseen_id(write_table):
    valid = {"label": [1], "city": ["paris"], "price": ["1.0"], "tags": ["a|zzz"]}
    encoder, _, encoded_valid = encode(write_table, valid=valid, multi=("tags",))
    spec = field(encoder, "tags")
    assert encoded_valid.bags[0].ids.tolist() == [spec.offset + 2 + spec.vocabulary.index("a"), spec.offset + UNSEEN]


def test_multi_valued_field_is_marked_weighted(write_table):
    encoder, _, _ = encode(write_table, multi=("tags",))
    assert field(encoder, "tags").weighted


# -- libFM / libFFM through the encoder -------------------------------------------------------


def test_libfm_minus_one_labels_mean_zero(write_text):
    frame = read_frame(write_text("train.libfm", "-1 0:1 3:1\n1 1:1 4:1\n-1 2:1 3:1\n"))
    encoder = FeatureEncoder.fit([frame], DataConfig())
    assert encoder.task == "binary"
    assert encoder.transform(frame).labels.tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("labels, stray, line", [
    (["0"] * 150 + ["-1"] + ["1"] * 149, "label -1 in a file of 0/1 labels (1 of 300 labels are -1)", 151),
    (["-1"] * 150 + ["0"] + ["1"] * 149, "label 0 in a file of -1/1 labels (1 of 300 labels are 0)", 151)])
def test_a_stray_label_in_a_libfm_file_of_two_classes_is_located_not_read_as_ratings(write_text, labels, stray, line):
    path = write_text("train.libfm", "".join(f"{label} {i % 7}:1 {7 + i % 5}:1\n" for i, label in enumerate(labels)))
    with pytest.raises(DataError) as caught:
        FeatureEncoder.fit([read_frame(path)], DataConfig())
    assert str(caught.value).startswith(f"{path}:{line}:1: {stray}: fix the odd labels")


def test_libfm_labels_of_three_values_in_shares_are_ratings(write_text):
    path = write_text("train.libfm", "".join(f"{(-1, 0, 1)[i % 3]} {i % 7}:1\n" for i in range(30)))
    assert FeatureEncoder.fit([read_frame(path)], DataConfig()).task == "regression"


def test_libfm_real_valued_labels_are_regression(write_text):
    frame = read_frame(write_text("train.libfm", "3.5 0:1 3:1\n1 1:1 4:1\n5 2:1 3:1\n"))
    encoder = FeatureEncoder.fit([frame], DataConfig())
    assert encoder.task == "regression"
    assert encoder.transform(frame).labels.tolist() == [3.5, 1.0, 5.0]


def test_libfm_values_become_feature_values(write_text):
    frame = read_frame(write_text("train.libfm", "1 0:0.5 3:1\n0 1:2 4:1\n"))
    encoder = FeatureEncoder.fit([frame], DataConfig())
    assert encoder.transform(frame).dense_values().tolist() == [[0.5, 1.0], [2.0, 1.0]]


def test_libfm_model_with_variable_width_rows_encodes_a_file_whose_rows_happen_to_have_equal_width(write_text):
    train = read_frame(write_text("train.libfm", "1 0:1 5:1\n0 1:1 6:1 8:1\n1 2:1 7:1\n"))
    encoder = FeatureEncoder.fit([train], DataConfig())
    test = read_frame(write_text("test.libfm", "1 0:1 5:1\n0 1:1 6:1\n"), layout=encoder.layout)
    encoded = encoder.transform(test)
    spec = field(encoder, "features")
    gid = {v: spec.offset + 2 + spec.vocabulary.index(v) for v in spec.vocabulary}
    assert encoded.bags[0].ids.tolist() == [gid["0"], gid["5"], gid["1"], gid["6"]]


def test_a_libfm_row_holding_two_indices_of_one_positional_field_is_located_not_read_into_the_next(write_text):
    """Rows of one index per field (f1 in 0-2, f2 in 10-12, f3 in 20-22): a row to score with two of f1's indices and
    none of f2's has the right width, and index order would read its second f1 index as f2 (an unseen value there)."""
    train = read_frame(write_text("train.libfm", "1 0:1 10:1 20:1\n0 1:1 11:1 22:1\n1 2:1 12:1 21:1\n"))
    encoder = FeatureEncoder.fit([train], DataConfig())
    assert list(encoder.layout) == ["f1", "f2", "f3"]
    good = read_frame(write_text("good.libfm", "1 2:1 11:1 20:1\n0 0:1 15:1 21:1\n"), layout=encoder.layout)
    assert len(encoder.transform(good)) == 2  # an index no field has seen (15) is an unseen value, as ever
    bad = read_frame(write_text("bad.libfm", "1 2:1 11:1 20:1\n0 0:1 1:1 21:1\n"), layout=encoder.layout)
    with pytest.raises(DataError, match=r"bad\.libfm:2:7: index 1 is a value of the model's field f1, but this row's "
                                        r"2nd index in order, which the model reads as field f2"):
        encoder.transform(bad)


def test_libffm_model_encodes_a_file_where_a_field_never_occurs(write_text):
    train = read_frame(write_text("train.ffm", "1 0:1:1 1:5:1\n0 0:2:1 1:7:1\n1 0:3:1 2:9:1 1:6:1\n"))
    encoder = FeatureEncoder.fit([train], DataConfig())
    test = read_frame(write_text("test.ffm", "1 0:1:1 1:5:1\n0 0:2:1 1:7:1\n"), layout=encoder.layout)
    encoded = encoder.transform(test)
    assert len(encoded) == 2


def test_a_libfm_file_read_without_the_models_layout_is_a_clear_error(write_text):
    train = read_frame(write_text("train.libfm", "1 0:1 5:1\n0 1:1 6:1 8:1\n1 2:1 7:1\n"))
    encoder = FeatureEncoder.fit([train], DataConfig())
    with pytest.raises(DataError, match="give the model a file like the one it was trained on .in Python, read a libFM/libFFM file with layout=encoder.layout"):
        encoder.transform(read_frame(write_text("test.libfm", "1 0:1 5:1\n0 1:1 6:1\n")))


def test_libffm_row_lacking_a_scalar_field_encodes_it_as_missing(write_text):
    train = read_frame(write_text("train.ffm", "1 0:1:1 1:5:1\n0 0:2:1 1:7:1\n"))
    encoder = FeatureEncoder.fit([train], DataConfig())
    test = read_frame(write_text("test.ffm", "1 1:5:1\n0 0:2:1 1:7:1\n"), layout=encoder.layout)
    assert [f.kind for f in encoder.fields] == ["categorical", "categorical"]
    encoded = encoder.transform(test)
    assert column(encoder, encoded, "field0").tolist() == [MISSING, 2 + field(encoder, "field0").vocabulary.index("2")]


# -- the JSON round trip ----------------------------------------------------------------------


def test_encoder_json_round_trip_encodes_identically(write_table):
    train = dict(TRAIN, user=[f"u{i}" for i in range(6)])
    valid = {"label": [1, 0], "city": ["rome", "berlin"], "price": ["2.0", None], "tags": ["b|zz:3", None], "user": ["u1", "u99"]}
    cfg = DataConfig(multi=("tags",), hash_buckets=4)
    encoder = FeatureEncoder.fit([read_frame(write_table("train.csv", train), multi=cfg.multi)], cfg)
    restored = FeatureEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    frame = read_frame(write_table("valid.csv", valid), multi=cfg.multi)
    a, b = encoder.transform(frame), restored.transform(frame)
    assert restored == encoder
    assert (a.ids == b.ids).all()
    assert np.array_equal(a.dense_values(), b.dense_values())
    assert (a.bags[0].offsets == b.bags[0].offsets).all()
    assert (a.bags[0].ids == b.bags[0].ids).all()
    assert (a.bags[0].weights == b.bags[0].weights).all()
    assert (a.labels == b.labels).all()


def test_encoder_json_round_trip_keeps_bucket_edges(write_table):
    train = {"label": [i % 2 for i in range(20)], "x": [f"{i}.5" for i in range(20)]}
    encoder, _, _ = encode(write_table, train, numeric_encoding="bucket", numeric_buckets=4)
    restored = FeatureEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    assert restored.fields[0].edges == encoder.fields[0].edges


def test_encoder_dict_records_the_schema_version_and_size(write_table):
    encoder, _, _ = encode(write_table)
    data = encoder.to_dict()
    assert data["schema_version"] == 1
    assert data["num_features"] == encoder.num_features


def test_encoder_dict_with_another_schema_version_is_refused(write_table):
    encoder, _, _ = encode(write_table)
    with pytest.raises(ValueError, match="schema version"):
        FeatureEncoder.from_dict(dict(encoder.to_dict(), schema_version=99))


def test_encoder_dict_whose_sizes_do_not_add_up_is_refused(write_table):
    encoder, _, _ = encode(write_table)
    with pytest.raises(ValueError, match="inconsistent"):
        FeatureEncoder.from_dict(dict(encoder.to_dict(), num_features=encoder.num_features + 1))


# -- Bag / EncodedData / iterate_batches ------------------------------------------------------


def traced_data(n: int = 23) -> EncodedData:
    """Row r has id r, value r/10, label r and a bag of (r % 3) ids, each 1000*r + k (empty when r % 3 == 0)."""
    lengths = np.arange(n) % 3
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.concatenate([1000 * r + np.arange(lengths[r]) for r in range(n)]).astype(np.int64)
    weights = (ids % 1000 + 1).astype(np.float32)
    return EncodedData(
        ids=np.arange(n, dtype=np.int64).reshape(n, 1),
        values=(np.arange(n, dtype=np.float32) / 10).reshape(n, 1),
        bags=[Bag(offsets, ids, weights)],
        labels=np.arange(n, dtype=np.float32),
    )


def rows_of_bag(bag: Bag) -> list[list[int]]:
    return [bag.ids[bag.offsets[i]:bag.offsets[i + 1]].tolist() for i in range(len(bag.offsets) - 1)]


def test_bag_take_gathers_each_selected_rows_ids_and_weights():
    bag = traced_data().bags[0]
    taken = bag.take(np.array([5, 3, 2, 5, 0]))
    assert rows_of_bag(taken) == [[5000, 5001], [], [2000, 2001], [5000, 5001], []]
    assert taken.weights.tolist() == [1, 2, 1, 2, 1, 2]
    assert taken.offsets.dtype == np.int64


def test_bag_slice_rebases_offsets():
    bag = traced_data().bags[0].slice(4, 7)
    assert bag.offsets[0] == 0
    assert rows_of_bag(bag) == [[4000], [5000, 5001], []]


@pytest.mark.parametrize("rows", [np.array([7, 1, 4]), [7, 1, 4]])
def test_encoded_data_take_keeps_rows_aligned(rows):
    part = traced_data().take(rows)
    assert part.ids[:, 0].tolist() == [7, 1, 4]
    assert part.labels.tolist() == [7, 1, 4]
    assert part.dense_values()[:, 0] == pytest.approx([0.7, 0.1, 0.4])
    assert rows_of_bag(part.bags[0]) == [[7000], [1000], [4000]]


def test_encoded_data_take_of_no_rows_is_empty_and_of_a_mask_of_another_length_an_error():
    data = traced_data()
    assert len(data.take([])) == 0 and data.take([]).ids.shape == (0, data.ids.shape[1])
    with pytest.raises(ValueError, match="mask"):
        data.take(np.ones(len(data) - 1, dtype=bool))


def test_encoded_data_take_of_a_mask_keeps_the_rows_where_it_is_true():
    data = traced_data()
    mask = np.arange(len(data)) % 5 == 1
    part = data.take(mask)
    assert part.labels.tolist() == data.labels[mask].tolist() == [1, 6, 11, 16, 21]
    assert (part.ids == data.ids[mask]).all() and rows_of_bag(part.bags[0]) == rows_of_bag(data.bags[0].take(np.flatnonzero(mask)))


def test_encoded_data_concat_undoes_slicing():
    data = traced_data()
    joined = EncodedData.concat([data.slice(0, 10), data.slice(10, 23)])
    assert (joined.ids == data.ids).all()
    assert rows_of_bag(joined.bags[0]) == rows_of_bag(data.bags[0])


def test_unshuffled_batches_are_consecutive_slices():
    batches = list(iterate_batches(traced_data(), batch_size=10))
    assert [b.labels.tolist() for b in batches] == [list(range(0, 10)), list(range(10, 20)), [20, 21, 22]]


def test_shuffled_batches_cover_every_row_exactly_once():
    batches = list(iterate_batches(traced_data(), batch_size=5, shuffle=True, seed=1, epoch=0))
    seen = np.concatenate([b.labels for b in batches])
    assert sorted(seen.tolist()) == list(range(23))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]


def test_shuffled_batches_keep_each_rows_columns_together():
    for batch in iterate_batches(traced_data(), batch_size=4, shuffle=True, seed=3, epoch=2):
        rows = batch.labels.astype(int)
        assert (batch.ids[:, 0] == rows).all()
        assert batch.values[:, 0] == pytest.approx(rows / 10)
        assert rows_of_bag(batch.bags[0]) == [[1000 * r + k for k in range(r % 3)] for r in rows]


def test_shuffle_order_depends_only_on_seed_and_epoch():
    def order(seed, epoch):
        return np.concatenate([b.labels for b in iterate_batches(traced_data(), 6, shuffle=True, seed=seed, epoch=epoch)]).tolist()

    assert order(7, 0) == order(7, 0)
    assert order(7, 0) != order(7, 1)
    assert order(7, 0) != order(8, 0)
    assert order(7, 0) != list(range(23))


def test_skip_drops_the_first_batches_of_the_same_order():
    full = [b.labels.tolist() for b in iterate_batches(traced_data(), 5, shuffle=True, seed=2, epoch=4)]
    resumed = [b.labels.tolist() for b in iterate_batches(traced_data(), 5, shuffle=True, seed=2, epoch=4, skip=2)]
    assert resumed == full[2:]


def test_batch_tensors_keep_int64_ids_and_map_bag_entries_to_batch_rows():
    batch = traced_data(6).to_batch()
    assert str(batch.ids.dtype) == "torch.int64"
    assert batch.size == 6
    assert batch.bags[0].rows.tolist() == [1, 2, 2, 4, 5, 5]
    assert str(batch.bags[0].ids.dtype) == "torch.int64"


def test_text_labels_become_binary_with_a_positive_value_and_the_choice_is_saved():
    import pyarrow as pa

    from deepfm.config import DataConfig
    from deepfm.data.encoders import FeatureEncoder
    from deepfm.data.readers import frame_from_table

    table = pa.table({"income": ["<=50K", ">50K", " >50K", "<=50K"], "job": ["a", "b", "a", "c"]})
    frame = frame_from_table(table, "<t>", label="income")
    encoder = FeatureEncoder.fit([frame], DataConfig(label="income", positive=">50K"))
    assert encoder.task == "binary" and encoder.label_mean == 0.5
    restored = FeatureEncoder.from_dict(encoder.to_dict())
    assert restored.transform(frame_from_table(table, "<t>", label="income")).labels.tolist() == [0, 1, 1, 0]


def test_ids_widen_to_int64_only_for_tables_of_2_31_rows_or_more():
    from deepfm.data.batch import id_dtype

    assert id_dtype(2**31 - 1) == np.int32
    assert id_dtype(2**31) == np.int64


def test_a_vocabulary_reads_like_a_list_of_values_and_is_saved_as_one():
    from deepfm.data.encoders import FieldSpec
    from deepfm.data.vocabulary import Vocabulary

    vocabulary = Vocabulary(["paris", "oslo", "rome"])
    assert len(vocabulary) == 3 and list(vocabulary) == ["paris", "oslo", "rome"] and vocabulary[1] == "oslo"
    assert vocabulary.index("rome") == 2 and "oslo" in vocabulary and "berlin" not in vocabulary
    with pytest.raises(ValueError, match="berlin"):
        vocabulary.index("berlin")
    assert vocabulary == ["paris", "oslo", "rome"] and vocabulary != ["oslo"]
    spec = FieldSpec(name="city", kind="categorical", size=5, vocabulary=["paris", "oslo", "rome"])
    assert isinstance(spec.vocabulary, Vocabulary) and spec.to_dict()["vocabulary"] == ["paris", "oslo", "rome"]


@pytest.mark.parametrize("hashed_from", [0, 10**9], ids=["hashed lookup", "arrow lookup"])
def test_vocabulary_positions_equal_arrow_index_in_with_nulls_unseen_and_chunks(hashed_from, monkeypatch):
    import pyarrow.compute as pc

    import deepfm.data.vocabulary as vocabulary_module
    from deepfm.data.vocabulary import Vocabulary

    monkeypatch.setattr(vocabulary_module, "HASHED_LOOKUP_FROM", hashed_from)
    rng = np.random.default_rng(5)
    words = [f"w{i:x}" for i in rng.choice(10_000, 500, replace=False)]
    vocabulary = Vocabulary(words[:300])
    column = pa.chunked_array([pa.array([words[i] for i in rng.integers(0, 500, 200)] + [None, ""]),
                               pa.array(["w-new", words[0]])])
    expected = pc.fill_null(pc.index_in(column, value_set=pa.array(words[:300])), -1).to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(vocabulary.positions(column), expected)
    assert (Vocabulary([]).positions(pa.array(["a", None])) == -1).all()


def test_vocabulary_positions_never_map_a_hash_collision_to_another_values_id(monkeypatch):
    import deepfm.data.vocabulary as vocabulary_module

    by_length = lambda strings: np.array([len(s) for s in strings.to_pylist()], dtype=np.uint64)  # noqa: E731
    monkeypatch.setattr(vocabulary_module, "fnv1a64_unique", by_length)  # a hash that collides on purpose
    monkeypatch.setattr(vocabulary_module, "HASHED_LOOKUP_FROM", 0)
    vocabulary = vocabulary_module.Vocabulary(["a", "bb", "ccc"])
    assert vocabulary.positions(pa.array(["bb", "xx", "ccc", "q"])).tolist() == [1, -1, 2, -1]
    clashing = vocabulary_module.Vocabulary(["aa", "bb", "c"])  # two values share a hash: Arrow's lookup
    assert clashing.positions(pa.array(["bb", "aa", "zz", "c"])).tolist() == [1, 0, -1, 2]


def test_fit_notes_say_when_a_few_bad_values_made_a_number_column_categorical(write_table):
    price = [f"{i / 10:.1f}" for i in range(200)]
    price[150] = "12.3x"
    path = write_table("a.csv", {"label": [i % 2 for i in range(200)], "price": price, "city": ["a", "b"] * 100})
    (note,) = FeatureEncoder.fit([read_frame(path)], DataConfig()).fit_notes
    assert note.startswith("column 'price' is categorical: 1 of its first 200 values is not a number (first '12.3x' at ")
    assert f"{path}:152:2" in note and "--numeric price" in note
    price[150] = "15.0"
    path = write_table("b.csv", {"label": [i % 2 for i in range(200)], "price": price, "city": ["a", "b"] * 100})
    assert FeatureEncoder.fit([read_frame(path)], DataConfig()).fit_notes == []


def test_fit_notes_name_the_integer_columns_read_as_ids_unless_the_user_named_them(write_table, tmp_path):
    columns = {"label": [i % 2 for i in range(60)], "user": [str(i % 7) for i in range(60)],
               "clicks": [str(i * 3 - 1) for i in range(60)], "city": ["a", "b", "c"] * 20}  # -1 among them
    path = write_table("a.csv", columns)
    (note,) = FeatureEncoder.fit([read_frame(path)], DataConfig()).fit_notes
    assert note.startswith("integer columns read as categorical, each value its own id: user, clicks (--numeric ")
    assert FeatureEncoder.fit([read_frame(path)], DataConfig(categorical=["user"], numeric=["clicks"])).fit_notes == []
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.table({"label": columns["label"], "user": [i % 7 for i in range(60)]}), parquet)  # int64
    (note,) = FeatureEncoder.fit([read_frame(parquet)], DataConfig()).fit_notes
    assert note.startswith("integer columns read as categorical, each value its own id: user (") and "Criteo" not in note


def test_criteos_integer_columns_in_another_format_are_noted_with_the_flag_that_reads_them_as_criteo_does(tmp_path):
    """A Parquet copy of Criteo's rows (I1-I13 int64) trained another model than its raw files, without a word on it."""
    parquet = tmp_path / "day_0.parquet"
    columns = {"label": [i % 2 for i in range(60)], **{f"I{i}": [(j * i) % 9 for j in range(60)] for i in range(1, 14)},
               "C1": ["a", "b", "c"] * 20}
    pq.write_table(pa.table(columns), parquet)
    (note,) = FeatureEncoder.fit([read_frame(parquet)], DataConfig()).fit_notes
    assert note.endswith("; I1-I13 are among Criteo's counts I1-I13, which Criteo's raw files (--format criteo) give as "
                         "numbers: --numeric I1,I2,I3,I4,I5,I6,I7,I8,I9,I10,I11,I12,I13 reads them so here")
    table = frame_from_table(pq.read_table(parquet), "<table>", "label", True)  # in memory: the Python API's setting
    (note,) = FeatureEncoder.fit([table], DataConfig()).fit_notes
    said = note.split("as numbers: ")[1].removesuffix(" reads them so here")
    assert said == 'data={"numeric": [' + ", ".join(f'"I{i}"' for i in range(1, 14)) + "]}"
    named = json.loads(said.removeprefix("data=").replace("'", '"'))  # what it says works as said
    assert FeatureEncoder.fit([table], DataConfig(**named)).fit_notes == []
    with_missing = pa.table({**columns, **{f"I{i}": [None] + columns[f"I{i}"][1:] for i in range(3, 14)}})
    pq.write_table(with_missing.cast(pa.schema([(f.name, pa.float64() if f.name[0] == "I" and f.name not in ("I1", "I2")
                                                 else f.type) for f in with_missing.schema])), parquet)  # as pandas writes
    notes = FeatureEncoder.fit([read_frame(parquet)], DataConfig()).fit_notes  # its floats are numbers, its ints ids
    assert next(n for n in notes if n.startswith("integer columns")).endswith(
        "; I1, I2 are among Criteo's counts I1-I13, which Criteo's raw files (--format criteo) give as numbers: --numeric "
        "I1,I2 reads them so here")


def test_integer_columns_of_a_dataframe_or_arrow_table_are_noted_with_the_python_apis_setting():
    """In memory as in a file, integer columns are read as ids, and the fit's log says so; it names the setting the
    Python API takes (Estimator(data={"numeric": [...]})), not the command's flags. Naming the columns silences it."""
    import pandas as pd

    from deepfm import Estimator

    frame = pd.DataFrame({"label": [i % 2 for i in range(60)], "user": [i % 7 for i in range(60)],
                          "clicks": [i * 3 - 1 for i in range(60)], "city": ["a", "b", "c"] * 20})
    expected = ('integer columns read as categorical, each value its own id: user, clicks (data={"numeric": [...]} '
                'reads counts and amounts as numbers; data={"categorical": [...]} names ids and silences this note)')
    for data in (frame, pa.Table.from_pandas(frame, preserve_index=False)):
        lines: list[str] = []
        Estimator(model={"name": "fm"}, training={"epochs": 1}).fit(data, progress=False, log=lines.append)
        assert expected in lines
        named = Estimator(data={"categorical": ["user"], "numeric": ["clicks"]}, model={"name": "fm"},
                          training={"epochs": 1}).fit(data, progress=False).encoder
        assert named.fit_notes == [] and named.layout["clicks"] == "numeric"


def test_fit_notes_say_why_libfm_features_became_one_multi_valued_field_and_why_the_task_is_regression(write_text):
    path = write_text("d.libfm", "1 0:1 5:1\n0 1:1 6:1\n2\n1 0:1 7:1\n")
    notes = FeatureEncoder.fit([read_frame(path)], DataConfig()).fit_notes
    assert notes[0] == ("libFM rows differ in width (most have 2 features; line 3 has 0), so the features are one "
                        "multi-valued field, not 2 positional fields")
    assert notes[1].startswith("task: regression, since the labels are not all 0/1 (0, 1, 2")
    overlapping = write_text("o.libfm", "1 0:1 5:1\n0 6:1 7:1\n")
    (note,) = FeatureEncoder.fit([read_frame(overlapping)], DataConfig()).fit_notes
    assert note.startswith("libFM rows of 2 features each whose index ranges overlap")


def test_fit_notes_stay_quiet_for_id_columns_with_an_odd_value_and_keep_the_regression_note_short(write_table):
    ids = [str(1000 + i) for i in range(200)]
    ids[7] = "E14"  # an id column is categorical anyway: no advice to make it numeric
    labels = [float(i % 9) for i in range(200)]
    path = write_table("c.csv", {"label": labels, "item": ids})
    (note,) = FeatureEncoder.fit([read_frame(path)], DataConfig()).fit_notes
    assert note == ("task: regression, since the labels are not all 0/1 (0, 1, 2, ...); --task binary (data.task) refuses such labels; "
                    "classes 0, 1, 2, ...: --task multiclass (--task ordinal for ordered grades)")
    ratings = write_table("r.csv", {"label": [float(1 + i % 5) for i in range(200)], "item": ids})
    (note,) = FeatureEncoder.fit([read_frame(ratings)], DataConfig()).fit_notes
    assert note == "task: regression, since the labels are not all 0/1 (1, 2, 3, ...); --task binary (data.task) refuses such labels"


def test_two_label_values_that_are_not_0_and_1_are_a_regression_whose_note_says_how_to_read_them_as_clicks(write_table):
    path = write_table("pm.csv", {"label": [-1, 1] * 50, "item": [f"i{i % 7}" for i in range(100)]})
    (note,) = FeatureEncoder.fit([read_frame(path)], DataConfig()).fit_notes
    assert note == ("task: regression, since the labels are not all 0/1 (-1, 1); --task binary (data.task) refuses such labels; for a "
                    "binary task of these two values, --positive 1 reads 1 as the positive class and -1 as the negative one")
    encoder = FeatureEncoder.fit([read_frame(path)], DataConfig(positive="1"))  # as the note says
    assert encoder.task.name == "binary" and encoder.fit_notes == []


@pytest.mark.parametrize("label, shown", [("1e999", "inf"), ("1e39", "1e\\+39"), ("-1e30", "-1e\\+30")])
def test_a_label_the_loss_cannot_square_is_a_located_error(write_table, label, shown):
    # 1e39 is finite as read (float64) and infinite in float32; 1e30's squared error overflows float32
    path = write_table("d.csv", {"label": ["1", "2.5e18", label], "c": ["a", "b", "c"]})
    with pytest.raises(DataError, match=rf"d.csv:4:1: the label must be a finite number of magnitude at most "
                                        rf"1.8e\+19 \(the model squares it in float32\), got {shown}$"):
        FeatureEncoder.fit([read_frame(path)], DataConfig())


# -- how often the training ids recur (the statistic of deepfm.defaults' data rule) ------------------


def test_id_counts_are_the_rows_the_id_occurrences_and_the_distinct_ids_of_the_training_data(write_table):
    encoder, _, _ = encode(write_table, multi=("tags",))
    # city: paris ×3, rome, oslo (a missing value is no id); tags: a ×3, b ×2, c ×2; price is numeric
    assert (encoder.id_counts.rows, encoder.id_counts.occurrences, encoder.id_counts.distinct) == (6, 12, 6)
    assert encoder.id_counts.ids_per_row == 1.0


def test_id_counts_measure_the_shape_over_every_value_and_count_the_values_min_count_kept(write_table):
    encoder, _, _ = encode(write_table, multi=("tags",), min_count=2)
    counts = encoder.id_counts
    assert (counts.occurrences, counts.distinct, counts.ids_per_row) == (12, 6, 1.0)  # as at min_count 1
    assert (counts.min_count, counts.kept) == (2, 4)  # rome and oslo share the unseen id


def long_tail_table(rows: int) -> dict[str, list]:
    """``rows`` rows: a user id new in every row (a long tail) beside a device of three recurring values."""
    return {"label": [i % 2 for i in range(rows)], "user": [f"u{i}" for i in range(rows)],
            "device": [("phone", "tablet", "desktop")[i % 3] for i in range(rows)]}


def test_values_seen_under_ten_times_in_a_long_tail_share_the_rare_id_unless_min_count_is_set(write_table):
    rows = RARE_VALUE_RULE_ROWS
    encoder, data, _ = encode(write_table, long_tail_table(rows))
    assert encoder.id_counts.min_count == LONG_TAIL_MIN_COUNT == 10 and encoder.id_counts.kept == 3
    assert (data.ids[:, 0] == field(encoder, "user").offset + UNSEEN).all()  # each user seen once: the rare id
    assert len(field(encoder, "device").vocabulary) == 3
    every_value, _, _ = encode(write_table, long_tail_table(rows), min_count=1)  # the user's setting wins
    assert every_value.id_counts.kept == rows + 3 and len(field(every_value, "user").vocabulary) == rows


def test_fewer_training_rows_than_the_rule_needs_keep_every_value(write_table):
    encoder, _, _ = encode(write_table, long_tail_table(RARE_VALUE_RULE_ROWS - 1))
    assert encoder.id_counts.min_count == 1 and len(field(encoder, "user").vocabulary) == RARE_VALUE_RULE_ROWS - 1


def test_the_ids_per_row_shown_are_never_rounded_onto_the_edge_of_a_band_they_are_below():
    from deepfm.data.encoders import IdCounts

    assert "(0.2999 per row;" in IdCounts(rows=200_000, occurrences=2_000_000, distinct=59_981).describe()
    assert "(0.299995 per row;" in IdCounts(rows=200_000, occurrences=2_000_000, distinct=59_999).describe()
    assert "(0.3 per row;" in IdCounts(rows=200_000, occurrences=2_000_000, distinct=60_000).describe()
    assert "(0.009995 per row;" in IdCounts(rows=200_000, occurrences=2_000_000, distinct=1_999).describe()
    assert "(2.58 per row;" in IdCounts(rows=300, occurrences=1_000, distinct=775).describe()


def test_id_counts_survive_the_json_round_trip_and_older_schemas_have_none(write_table):
    encoder, _, _ = encode(write_table, multi=("tags",))
    saved = json.loads(json.dumps(encoder.to_dict()))
    assert FeatureEncoder.from_dict(saved).id_counts == encoder.id_counts
    older = {key: value for key, value in saved["id_counts"].items() if key not in ("min_count", "kept")}
    assert FeatureEncoder.from_dict(saved | {"id_counts": older}).id_counts == encoder.id_counts  # min_count 1
    del saved["id_counts"]
    assert FeatureEncoder.from_dict(saved).id_counts is None


def test_a_column_of_lists_is_a_multi_valued_field_and_predicts_as_its_text_does(tmp_path):
    """A pandas column of Python lists (or a Parquet list column) is multi-valued without --multi: each item
    a value of weight 1 (null lists and items left out); the saved model reads the same field from a CSV
    written as 'a|b'."""
    pd = pytest.importorskip("pandas")
    from deepfm import Estimator

    rng = np.random.default_rng(0)
    tags = [list(rng.choice(["x", "y", "z", "w:0.5", "12:30"], rng.integers(0, 3), replace=False)) for _ in range(300)]
    tags[3], tags[4] = None, ["x", None]
    frame = pd.DataFrame({"label": rng.integers(0, 2, 300), "user": rng.choice(["a", "b", "c"], 300), "tags": tags})
    est = Estimator(model={"name": "fm", "embed_dim": 4}, training={"epochs": 1}).fit(frame, progress=False)
    assert [(spec.name, spec.kind) for spec in est.encoder.fields] == [("user", "categorical"), ("tags", "multi")]
    # an item is read as a cell's token is: 'w:0.5' the value w of weight 0.5, as the text 'x|w:0.5' gives it
    assert sorted(next(s for s in est.encoder.fields if s.name == "tags").vocabulary.values.to_pylist()) == ["12", "w", "x", "y", "z"]
    text = frame.drop(columns="label").assign(tags=["|".join(v for v in t or [] if v) for t in tags])
    text.to_csv(tmp_path / "rows.csv", index=False)
    est.save(tmp_path / "m")
    np.testing.assert_allclose(Estimator.load(tmp_path / "m").predict(tmp_path / "rows.csv"), est.predict(frame), rtol=1e-6)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "rows.parquet")
    np.testing.assert_allclose(est.predict(tmp_path / "rows.parquet"), est.predict(frame), rtol=1e-6)
    np.testing.assert_allclose(est.predict(text), est.predict(frame), rtol=1e-6)  # a table of a|b text too
    category = text.assign(tags=text["tags"].astype("category"))  # a pandas category: Arrow's dictionary
    category.to_parquet(tmp_path / "category.parquet", index=False)
    np.testing.assert_allclose(est.predict(tmp_path / "category.parquet"), est.predict(frame), rtol=1e-6)
    np.testing.assert_allclose(est.predict(category), est.predict(frame), rtol=1e-6)
    no_tags = text.assign(tags=[None] * len(text))  # a column of nulls: every row without tags
    np.testing.assert_allclose(est.predict(no_tags), est.predict(text.assign(tags="")), rtol=1e-6)
    empty_lists = frame.drop(columns="label").assign(tags=[[] for _ in tags])  # Arrow's lists of null: a row's no tags
    np.testing.assert_allclose(est.predict(empty_lists), est.predict(no_tags), rtol=1e-6)
    text.drop(columns="tags").to_csv(tmp_path / "without.csv", index=False)
    with pytest.raises(DataError, match="column 'tags' is required by the model but not in the file"):
        est.predict(tmp_path / "without.csv")
    frame.drop(columns="label").to_csv(tmp_path / "repr.csv", index=False)  # pandas writes each list's repr
    with pytest.raises(DataError, match=r"holds .*: a list written as text .* df\['tags'\]\.str\.join\('\|'\)"):
        est.predict(tmp_path / "repr.csv")


def test_pandas_intervals_periods_and_durations_are_read_as_values_whatever_their_form():
    """pd.cut's intervals failed with Arrow's 'Unsupported cast from struct<left, right>' naming no column; a period
    was its raw count and a duration its count in its unit: another unit at predict time read as unseen ids."""
    pd = pytest.importorskip("pandas")
    from deepfm import Estimator
    from deepfm.data.tables import table_from_pandas

    rng = np.random.default_rng(0)
    age = rng.integers(18, 90, 300)
    frame = pd.DataFrame({"age_bin": pd.cut(age, [0, 30, 50, 100]), "month": pd.period_range("2020-01", periods=300, freq="M"),
                          "wait": pd.to_timedelta(rng.integers(0, 5, 300), unit="D").astype("timedelta64[us]"),
                          "label": rng.integers(0, 2, 300)})
    table = table_from_pandas(frame)
    assert table.column("age_bin")[0].as_py() == str(frame["age_bin"][0]) and table.column("month")[0].as_py() == "2020-01"
    est = Estimator(model={"name": "fm", "embed_dim": 4}, training={"epochs": 1}).fit(frame, progress=False)
    rows = frame.drop(columns="label")
    as_text = rows.assign(age_bin=rows["age_bin"].astype(str), wait=rows["wait"].astype("timedelta64[s]"))
    np.testing.assert_array_equal(est.predict(as_text), est.predict(rows))
    with pytest.raises(DataError, match="more than one column named 'age_bin'"):
        est.predict(pd.concat([rows, rows[["age_bin"]]], axis=1))


def test_a_column_of_lists_that_are_not_ids_is_named_unless_ignored():
    """Lists of floats (an embedding) or of lists are not multi-valued fields: named at fit, and left alone
    (not converted) when --ignore names them."""
    from deepfm import Estimator

    table = pa.table({"label": [1, 0] * 20, "user": ["a", "b"] * 20, "emb": [[0.1, 0.2]] * 40, "nest": [[["a"]]] * 40})
    for column, kind in (("emb", "double"), ("nest", "list<item: string>")):
        ignored = ("emb", "nest") if column == "nest" else ("nest",)
        with pytest.raises(DataError, match=f"column '{column}' holds lists of {re.escape(kind)}: deepfm reads lists of ids"):
            Estimator(data={"ignore": tuple(c for c in ignored if c != column)}, model={"name": "fm"},
                      training={"epochs": 1}).fit(table, progress=False)
    est = Estimator(data={"ignore": ("emb", "nest")}, model={"name": "fm"}, training={"epochs": 1}).fit(table, progress=False)
    assert [spec.name for spec in est.encoder.fields] == ["user"]


def test_a_float_column_of_whole_numbers_read_as_numbers_is_noted():
    """A pandas id column with one missing value turns into floats (49.0), which read as numbers: the fit
    says so, as it says integer columns are read as ids; --numeric or --categorical silences it."""
    table = pa.table({"label": [1, 0, 1, 0], "user": [1.0, 2.0, None, 4.0], "price": [1.5, 2.0, 3.0, 4.0]})
    notes = FeatureEncoder.fit([read_frame_of(table)], DataConfig()).fit_notes
    assert any(note.startswith("columns of decimal numbers, all whole in the first 4 rows, read as numbers: user (")
               and note.endswith('; data={"categorical": [...]} names ids, data={"numeric": [...]} silences this note)')
               for note in notes)  # in memory: the Python API's setting, not the command's flags
    assert not any("price" in note for note in notes)
    for named in ({"numeric": ("user",)}, {"categorical": ("user",)}):
        assert not any("whole" in note for note in FeatureEncoder.fit([read_frame_of(table)], DataConfig(**named)).fit_notes)


def read_frame_of(table: pa.Table):
    from deepfm.data.tables import frame_from_table

    return frame_from_table(table, "<table>")


def test_boolean_and_time_columns_read_as_ids_say_how_a_file_to_predict_must_write_them():
    table = pa.table({"label": [1, 0], "flag": [True, False],
                      "when": pa.array([0, 3_600_000_000], pa.timestamp("us"))})
    notes = FeatureEncoder.fit([read_frame_of(table)], DataConfig()).fit_notes
    assert any(note.startswith("column 'flag' holds booleans, read as the ids 'true' and 'false'") for note in notes)
    assert any(note.startswith("column 'when' holds times (timestamp[us]), read as ids") for note in notes)


def test_a_text_column_of_sets_not_named_multi_is_noted():
    table = pa.table({"label": [1, 0, 1, 0], "genres": ["Action|Comedy", "Drama", "Comedy|Drama", "Action|Drama"],
                      "city": ["a", "b", "c", "a"]})
    notes = FeatureEncoder.fit([read_frame_of(table)], DataConfig()).fit_notes
    assert [note for note in notes if "--multi" in note] == [
        "column 'genres' is one id per whole value, and most of its values hold '|' (first 'Action|Comedy'): "
        "--multi genres reads each as a set of ids (a multi-valued field)"]
    from deepfm.data.tables import frame_from_table

    read_as_sets = frame_from_table(table, "<table>", multi=("genres",))  # as --multi genres reads it
    assert not any("--multi" in note for note in FeatureEncoder.fit([read_as_sets], DataConfig(multi=("genres",))).fit_notes)


def test_a_time_note_shows_the_form_rows_to_predict_must_write():
    table = pa.table({"label": [1, 0], "when": pa.array([0, 3_600_000_000], pa.timestamp("us"))})
    note = next(n for n in FeatureEncoder.fit([read_frame_of(table)], DataConfig()).fit_notes if "holds times" in n)
    assert note.endswith("Rows to predict must write times in this form: '1970-01-01 00:00:00.000000'")


def test_rows_whose_values_are_far_more_often_unseen_than_in_training_are_noted(tmp_path):
    """A DataFrame's bool column stores 'true'/'false'; its CSV writes True/False: every row unseen, noted (a
    DataWarning; the CLI prints it as a note). The same rows as trained, or a field as rare as in training, are not."""
    import warnings

    pd = pytest.importorskip("pandas")
    from deepfm import Estimator
    from deepfm.errors import DataWarning

    frame = pd.DataFrame({"label": [0, 1] * 100, "flag": [True, False, False, True] * 50, "user": [f"u{i % 9}" for i in range(200)]})
    est = Estimator(model={"name": "fm", "embed_dim": 4}, training={"epochs": 1}).fit(frame, progress=False)
    assert {spec.name: spec.unseen_share for spec in est.encoder.fields} == {"flag": 0.0, "user": 0.0}
    frame.drop(columns="label").to_csv(tmp_path / "rows.csv", index=False)
    with pytest.warns(DataWarning, match=r"column 'flag': 100% of these rows' values were not seen in training"):
        est.predict(tmp_path / "rows.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        est.predict(frame)
    saved = FeatureEncoder.from_dict(json.loads(json.dumps(est.encoder.to_dict())))
    assert saved.fields[0].unseen_share == 0.0
    older = est.encoder.to_dict()
    for field in older["fields"]:
        field.pop("unseen_share")  # a model saved before the share was kept: nothing to compare with
    assert FeatureEncoder.from_dict(older).scoring_notes(est.encode(tmp_path / "rows.csv")) == []


def test_unseen_share_is_good_turing_new_values_plus_those_rare_in_training():
    """Values seen r times recur at (r+1)·n_{r+1}/N: new ones at n_1/N; at min_count 3 those seen 1-2 times, i.e.
    the training values seen 2-3 times. A value seen once is not counted twice."""
    from deepfm.data.encoders import unseen_share

    counts = pa.array([1, 1, 2, 3, 5, 8])  # N = 20: n_1 = 2, values seen 2..3 times hold 5 occurrences
    assert unseen_share(counts, 1) == 0.1
    assert unseen_share(counts, 3) == round((2 + 5) / 20, 4)
    assert unseen_share(pa.array([1] * 10), 2) == 1.0  # every value unique: every new row's value is new
    assert unseen_share(pa.array([], pa.int64()), 1) is None


def test_a_long_tail_field_written_in_another_form_is_noted():
    """A field with a recorded share over one half (a long tail at min_count 2) is still noted when every row is
    unseen; rows like the training rows are not."""
    import warnings

    from deepfm import Estimator
    from deepfm.errors import DataWarning

    rows = 600
    ids = [f"{i}" if i % 10 < 3 else f"{i % 7}" for i in range(rows)]  # 30% of rows unique, the rest recur
    table = pa.table({"label": [i % 2 for i in range(rows)], "item": ids})
    est = Estimator(model={"name": "lr"}, data={"min_count": 2}, training={"epochs": 1}).fit(table, progress=False)
    assert 0.25 <= est.encoder.fields[0].unseen_share <= 0.35
    fresh = pa.table({"item": [f"{i}" if i % 10 < 3 else f"{i % 7}" for i in range(rows, 2 * rows)]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        est.predict(fresh)
    with pytest.warns(DataWarning, match=r"column 'item': 100% of these rows' values were not seen"):
        est.predict(pa.table({"item": [f"{v}.0" for v in fresh["item"].to_pylist()]}))
    unique = pa.table({"label": [i % 2 for i in range(rows)], "item": [f"{i}" if i % 10 else "x" for i in range(rows)]})
    tail = Estimator(model={"name": "lr"}, data={"min_count": 2}, training={"epochs": 1}).fit(unique, progress=False)
    assert tail.encoder.fields[0].unseen_share == pytest.approx(0.9, abs=0.01)  # a long tail: 90% of rows bring a new value
    with warnings.catch_warnings():  # rows a little newer than those (98% new) are no news
        warnings.simplefilter("error", DataWarning)
        tail.predict(pa.table({"item": [f"{i}" if i % 50 else "x" for i in range(rows, 2 * rows)]}))


def test_a_multi_valued_field_written_in_another_form_is_noted():
    import warnings

    from deepfm import Estimator
    from deepfm.errors import DataWarning

    tags = [["a", "b"], ["c"], ["a", "c"], ["b"]] * 30
    table = pa.table({"label": [0, 1] * 60, "tags": tags, "user": [f"u{i % 5}" for i in range(120)]})
    est = Estimator(model={"name": "fm", "embed_dim": 4}, training={"epochs": 1}).fit(table, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        est.predict(table.drop(["label"]))
    upper = [[t.upper() for t in row] for row in tags]
    with pytest.warns(DataWarning, match=r"column 'tags': 100% of these rows' values were not seen"):
        est.predict(pa.table({"tags": upper, "user": table["user"]}))


def test_a_column_that_numbers_the_rows_is_noted_as_a_row_id():
    rows = 2_000
    table = pa.table({"label": [i % 2 for i in range(rows)], "id": [f"{10_000 + i}" for i in range(rows)],
                      "user": [f"u{i % 300}" for i in range(rows)], "rare": [f"{i}" if i % 3 else "x" for i in range(rows)]})
    notes = FeatureEncoder.fit([read_frame_of(table)], DataConfig()).fit_notes
    assert [note for note in notes if "row id" in note] == [
        "column 'id' holds a value no other training row holds on 100% of the rows: a row id? It tells the model "
        "nothing of other rows, and rows to predict bring new ones; --ignore id (data.ignore) leaves it out"]  # not user, nor rare (67%)
    assert not any("row id" in note for note in FeatureEncoder.fit([read_frame_of(table.slice(0, 500))], DataConfig()).fit_notes)


def test_a_second_fit_reads_its_data_as_its_own_config_says_not_as_the_former_model():
    """An Estimator fitted on a column of lists, then on other data whose column of that name is plain text:
    the text is one value per row (a categorical field), not split on '|' as the former model's field was."""
    from deepfm import Estimator

    lists = pa.table({"label": [0, 1] * 50, "tags": [["a", "b"], ["c"]] * 50})
    text = pa.table({"label": [0, 1] * 50, "tags": ["a|b", "c"] * 50})
    est = Estimator(model={"name": "lr"}, training={"epochs": 1}).fit(lists, progress=False)
    assert [spec.kind for spec in est.encoder.fields] == ["multi"]
    est.fit(text, progress=False)
    assert [spec.kind for spec in est.encoder.fields] == ["categorical"]


def test_an_empty_string_is_missing_in_every_input_as_in_a_csv_cell(tmp_path):
    """Parquet, Arrow and pandas kept '' as a value of its own (a vocabulary entry, or unseen), CSV and the server read
    it as missing: the same rows scored differently by how they came. Now the missing id everywhere, numbers too."""
    import pyarrow.csv as pacsv

    table = pa.table({"label": ["1", "0", "1", "0"], "city": ["a", "", "b", None], "age": ["31", "", "40", "52"],
                      "tag": pa.array(["x", "", "y", ""]).dictionary_encode()})
    pacsv.write_csv(table, tmp_path / "rows.csv")
    pq.write_table(table, tmp_path / "rows.parquet")
    config = DataConfig(categorical=("city", "tag"), numeric=("age",))
    encoder = FeatureEncoder.fit([read_frame(tmp_path / "rows.csv")], config)
    assert encoder.to_dict() == FeatureEncoder.fit([read_frame(tmp_path / "rows.parquet")], config).to_dict()
    expected = encoder.transform(read_frame(tmp_path / "rows.csv"))
    for frame in (read_frame(tmp_path / "rows.parquet"), frame_from_table(table, "<table>"),
                  frame_from_table(pa.Table.from_pandas(table.to_pandas()), "<table>")):
        got = encoder.transform(frame)
        np.testing.assert_array_equal(got.ids, expected.ids)
        np.testing.assert_array_equal(got.dense_values(), expected.dense_values())


def test_a_column_that_alone_makes_the_ids_a_long_tail_is_named_with_what_it_turns_on():
    """MovieLens' integer timestamp read as ids: 0.57 distinct values a row, so the rare-value rule merged the users and
    items seen under 10 times too. The fit names the column, what it sets and the flag that leaves it out."""
    rng = np.random.default_rng(0)
    rows = 20_000
    table = pa.table({"label": rng.integers(0, 2, rows), "user": rng.integers(0, 300, rows),
                      "item": rng.integers(0, 500, rows), "time": rng.permutation(rows) // 2})
    notes = FeatureEncoder.fit([read_frame_of(table)], DataConfig()).fit_notes
    # the ids' distinct values a row with the column and without it, beside the line (a new user read the column's own
    # 0.26 a row next to '≥ 0.3' as a contradiction)
    assert ["column 'time' holds 10,000 distinct values in 20,000 training rows (0.50 a row): with it the ids hold 0.54 "
            "distinct values a row, 0.04 without it, so it tips them over the long tail's line (0.3 a row), which sets "
            "the long tail's training defaults; every field's values seen fewer than 10 times then share their field's "
            "rare id (data.min_count 10), and --min-count 1 (data.min_count) keeps them. If it is not a feature (a "
            "timestamp, a row id), --ignore time (data.ignore)"] == [n for n in notes if "tips" in n]
    assert not any("tips" in n for n in FeatureEncoder.fit([read_frame_of(table)], DataConfig(min_count=1)).fit_notes)
    assert not any("tips" in n for n in FeatureEncoder.fit([read_frame_of(table)], DataConfig(ignore=("time",))).fit_notes)
    two = table.append_column("session", pa.array(rng.permutation(rows) // 2))  # neither alone: a long tail either way
    assert not any("tips" in n for n in FeatureEncoder.fit([read_frame_of(two)], DataConfig()).fit_notes)


def test_a_fit_that_logs_nothing_warns_of_a_column_that_changes_what_the_model_trains_on():
    """The Python API logs nothing unless given ``log``: a timestamp that turns on the long tail's settings, or a row
    id, is a DataWarning there (a new user's MovieLens RMSE went from 0.88 to 1.02 in silence); with a log, a line."""
    from deepfm import Estimator
    from deepfm.errors import DataWarning
    from deepfm.sklearn import FMRegressor

    rng = np.random.default_rng(0)
    rows = 12_000
    table = pa.table({"label": rng.integers(0, 2, rows), "user": rng.integers(0, 300, rows),
                      "item": rng.integers(0, 500, rows), "time": rng.permutation(rows) // 2})
    settings = {"model": {"name": "lr"}, "training": {"epochs": 1, "portfolio": "off"}}
    with pytest.warns(DataWarning, match=r"the training data: column .time. holds [0-9,]+ distinct .* --ignore time \(data.ignore\)"):
        Estimator(**settings).fit(table, progress=False)
    logged: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        Estimator(**settings).fit(table, progress=False, log=logged.append)
        Estimator(data={"ignore": ["time"]}, **settings).fit(table, progress=False)
    assert any("column 'time' holds" in line for line in logged)
    X = table.drop_columns(["label"]).to_pandas()
    with pytest.warns(DataWarning, match="column 'time' holds"):
        FMRegressor(model="lr", epochs=1, categorical=["user", "item", "time"]).fit(X, table["label"].to_numpy() * 1.5)


@pytest.mark.parametrize("scale, offset", [(1.0, 0.0), (1e-12, 0.0), (600.0, 1.7e9), (60.0, 1.7e9)])
def test_a_numeric_fields_standardisation_keeps_its_spread_at_any_scale_and_offset(scale, offset):
    # tiny values, and Unix timestamps over minutes: their log's spread is 1e-13 or 1e-8, not a constant
    x = offset + scale * np.random.default_rng(0).random(3000)
    chunks = [frame_from_table(pa.table({"label": [1, 0] * 750, "v": part}), "t.csv") for part in np.split(x, 2)]
    (spec,) = FeatureEncoder.fit(chunks, DataConfig(numeric=("v",))).fields
    assert spec.mean == pytest.approx(signed_log(x).mean(), rel=1e-12)
    assert spec.std == pytest.approx(signed_log(x).std(), rel=1e-6)


def test_a_constant_numeric_field_is_scaled_by_one():
    frame = frame_from_table(pa.table({"label": [1, 0] * 50, "v": [0.1] * 100}), "t.csv")
    (spec,) = FeatureEncoder.fit([frame], DataConfig(numeric=("v",))).fields
    assert spec.std == 1.0


@pytest.mark.parametrize("unit", ["us", "ms", "s"])
def test_times_at_another_resolution_or_in_utc_read_as_the_training_columns_instants(unit):
    """pandas gives ns from to_datetime and us from Parquet: a model trained on one read every value of the other as
    unseen (a new user's test AUC 0.947 -> 0.534, with only a 100%-unseen note)."""
    import warnings

    import pandas as pd

    from deepfm import Estimator

    days = np.arange(200) % 20
    frame = pd.DataFrame({"d": pd.Series(pd.Timestamp("2020-01-01") + pd.to_timedelta(days, unit="D")).astype(
        "datetime64[ns]"), "label": days % 2})
    model = Estimator(model={"name": "lr"}, training={"epochs": 1}, data={"valid_fraction": 0}).fit(frame, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no note of unseen values either
        for other in (frame.astype({"d": f"datetime64[{unit}]"}), frame.assign(d=frame["d"].dt.tz_localize("UTC"))):
            np.testing.assert_array_equal(model.predict(other), model.predict(frame))
    paris = frame.assign(d=frame["d"].dt.tz_localize("Europe/Paris"))  # a named zone: its text holds an offset
    zoned = Estimator(model={"name": "lr"}, training={"epochs": 1}, data={"valid_fraction": 0}).fit(paris, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(zoned.predict(paris.astype({"d": f"datetime64[{unit}, Europe/Paris]"})),
                                      zoned.predict(paris))


def test_rows_missing_a_field_far_more_often_than_in_training_are_noted(tmp_path):
    """A numeric column emptied by a failed join (every value blank) scored each row as missing without a word."""
    import warnings

    pd = pytest.importorskip("pandas")
    from deepfm import Estimator
    from deepfm.errors import DataWarning

    rng = np.random.default_rng(0)
    age = rng.uniform(18, 80, 200)
    age[::20] = np.nan
    frame = pd.DataFrame({"label": [0, 1] * 100, "age": age, "city": [f"c{i % 7}" for i in range(200)]})
    est = Estimator(model={"name": "fm", "embed_dim": 4}, training={"epochs": 1}).fit(frame, progress=False)
    shares = {spec.name: spec.missing_share for spec in est.encoder.fields}  # of the rows not held out to validate
    assert shares["age"] == pytest.approx(0.05, abs=0.01) and shares["city"] == 0.0 and type(shares["age"]) is float
    frame.assign(age=np.nan, city=None).drop(columns="label").to_csv(tmp_path / "rows.csv", index=False)
    with pytest.warns(DataWarning) as warned:
        est.predict(tmp_path / "rows.csv")
    notes = [str(w.message) for w in warned]
    assert any(f"column 'age': 100% of these rows have no value (in training: {shares['age']:.0%})" in note
               for note in notes), notes
    assert any("column 'city': 100% of these rows have no value (in training: 0%)" in note for note in notes), notes
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        est.predict(frame)
        est.predict(frame.assign(age=np.nan)[:49])  # too few rows to tell
    older = est.encoder.to_dict()
    for field in older["fields"]:
        field.pop("missing_share")  # a model saved before the share was kept: nothing to compare with
    assert FeatureEncoder.from_dict(older).scoring_notes(est.encode(tmp_path / "rows.csv")) == []
