"""Bad input found by a new user's tour of Parquet, libFM/libFFM, weights and model directories (2026-12-05):
each gave a traceback, a silent wrong answer or an unlocated message before its fix."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepfm.api import Estimator
from deepfm.errors import DataError, DataWarning, ModelDirError

ROWS = 400


def clicks(rows: int = ROWS, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, 30, rows), rng.integers(0, 20, rows)
    label = ((user + item) % 3 == 0).astype(np.int64)
    return pa.table({"label": label, "user": [f"u{u}" for u in user], "item": [f"i{i}" for i in item],
                     "w": np.ones(rows)})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> tuple:
    root = tmp_path_factory.mktemp("bad2")
    pq.write_table(clicks(), root / "train.parquet")
    Estimator(model={"name": "fm", "embed_dim": 4}, data={"weight": "w"},
              training={"epochs": 1, "portfolio": "off"}).fit(root / "train.parquet", out=root / "m", progress=False)
    return root, root / "m"


@pytest.mark.parametrize("cells, said", [
    (lambda items: pa.array([[i] for i in items]), "holds lists (list<item: string>), but the model reads it as a "
                                                   "categorical field"),
    (lambda items: pa.array([{"a": i} for i in items]), "holds struct<a: string> values"),
], ids=["list", "struct"])
def test_a_column_of_another_type_than_in_training_is_a_located_error_when_scoring(cells, said, model_dir):
    root, model = model_dir
    table = clicks(seed=1)
    table = table.set_column(table.schema.get_field_index("item"), "item", cells(table["item"].to_pylist()))
    pq.write_table(table, root / "odd.parquet")
    with pytest.raises(DataError, match=f"odd.parquet:1:3: column 'item' {said}".replace("(", r"\(").replace(")", r"\)")):
        Estimator.load(model).evaluate(root / "odd.parquet")


def test_a_bytes_column_reads_as_its_text_and_bytes_that_are_not_utf8_are_located(model_dir):
    root, model = model_dir
    table = clicks(seed=1)
    as_bytes = table.set_column(2, "item", pa.array([i.encode() for i in table["item"].to_pylist()]))
    pq.write_table(table, root / "text.parquet")
    pq.write_table(as_bytes, root / "bytes.parquet")
    loaded = Estimator.load(model)
    assert loaded.evaluate(root / "bytes.parquet") == loaded.evaluate(root / "text.parquet")
    broken = as_bytes.set_column(2, "item", pa.array([b"i1"] * 250 + [b"\xff\x00"] + [b"i2"] * (ROWS - 251)))
    pq.write_table(broken, root / "broken.parquet")
    with pytest.raises(DataError, match=r"broken.parquet:251:3: column 'item' holds bytes that are not UTF-8 text"):
        loaded.evaluate(root / "broken.parquet")


def test_sample_weights_that_are_all_zero_are_refused_in_training_and_evaluation(model_dir, tmp_path):
    root, model = model_dir
    zero = clicks().set_column(3, "w", pa.array(np.zeros(ROWS)))
    pq.write_table(zero, tmp_path / "zero.parquet")
    with pytest.raises(DataError, match="every sample weight of the rows to evaluate is 0"):
        Estimator.load(model).evaluate(tmp_path / "zero.parquet")
    with pytest.raises(DataError, match="every sample weight of the training rows is 0"):
        Estimator(model={"name": "fm"}, data={"weight": "w"}, training={"epochs": 1}).fit(tmp_path / "zero.parquet",
                                                                                          progress=False)


def test_a_ragged_csv_row_with_a_byte_that_is_not_utf8_is_located(tmp_path):
    lines = [b"label,user,item"] + [f"{i % 2},u{i % 5},i{i % 7}".encode() for i in range(20)]
    lines[8] = b"1,caf\xe9"  # line 9: too few fields, and not UTF-8
    (tmp_path / "bad.csv").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match=r"bad.csv:9:2: not UTF-8 text \(byte 0xe9\)"):
        Estimator(model={"name": "fm"}, training={"epochs": 1}).fit(tmp_path / "bad.csv", progress=False)


@pytest.mark.parametrize("value, said", [(float("nan"), "the label is missing"),
                                         (float("inf"), "the label must be a finite number, got inf")])
def test_a_float_label_that_is_nan_or_infinite_is_no_class(value, said, tmp_path):
    table = clicks()
    labels = table["label"].to_numpy().astype(float)
    labels[6] = value
    pq.write_table(table.set_column(0, "label", pa.array(labels)), tmp_path / "labels.parquet")
    with pytest.raises(DataError, match=f"labels.parquet:7:1: {said}"):
        Estimator(data={"task": "multiclass"}, model={"name": "fm"}, training={"epochs": 1}).fit(
            tmp_path / "labels.parquet", progress=False)


def libfm_lines(labels: list[str], seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return "".join(f"{label} {rng.integers(0, 10)}:1 {10 + rng.integers(0, 10)}:1\n" for label in labels)


def test_a_model_trained_on_0_1_reads_libfm_s_minus_one_plus_one_labels(tmp_path):
    labels = [str(i % 2) for i in range(300)]
    (tmp_path / "train.libfm").write_text(libfm_lines(labels))
    (tmp_path / "test01.libfm").write_text(libfm_lines(labels[:100], seed=1))
    (tmp_path / "test_pm.libfm").write_text(libfm_lines(["+1" if x == "1" else "-1" for x in labels[:100]], seed=1))
    trained = Estimator(model={"name": "fm"}, training={"epochs": 1, "portfolio": "off"}).fit(
        tmp_path / "train.libfm", progress=False)
    assert trained.evaluate(tmp_path / "test_pm.libfm") == trained.evaluate(tmp_path / "test01.libfm")


def test_a_libffm_field_the_model_does_not_know_is_said(tmp_path):
    rows = "".join(f"{i % 2} 0:{i % 7}:1 1:{10 + i % 5}:1\n" for i in range(200))
    (tmp_path / "train.libffm").write_text(rows)
    (tmp_path / "extra.libffm").write_text("1 0:3:1 1:12:1 5:40:1\n" + rows)
    trained = Estimator(model={"name": "fm"}, training={"epochs": 1, "portfolio": "off"}).fit(
        tmp_path / "train.libffm", progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trained.evaluate(tmp_path / "extra.libffm")
    said = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert any("libFFM field(s) 5 of this file are not among the model's (0, 1)" in text for text in said), said


def rewritten(model, tmp_path, name: str, change) -> object:
    """A copy of the model directory with file ``name`` changed and its checksum in manifest.json written for it."""
    copy = tmp_path / "tampered"
    shutil.copytree(model, copy)
    path = copy / name
    path.write_bytes(change(path.read_bytes()))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256(path.read_bytes()).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_a_truncated_weights_file_with_a_matching_checksum_is_a_model_directory_error(model_dir, tmp_path):
    _, model = model_dir
    with pytest.raises(ModelDirError, match="model.safetensors: not a readable safetensors file"):
        Estimator.load(rewritten(model, tmp_path, "model.safetensors", lambda data: data[: len(data) // 2]))


def test_a_schema_naming_one_column_twice_is_a_model_directory_error(model_dir, tmp_path):
    _, model = model_dir

    def second_user(data: bytes) -> bytes:
        schema = json.loads(data)
        schema["fields"][1]["name"] = schema["fields"][0]["name"]
        return json.dumps(schema).encode()

    with pytest.raises(ModelDirError, match=r"a second field of that name"):
        Estimator.load(rewritten(model, tmp_path, "features.json", second_user))


def test_evaluating_a_weighted_model_on_rows_without_their_weights_says_so(model_dir, tmp_path):
    _, model = model_dir
    pq.write_table(clicks(seed=2).drop(["w"]), tmp_path / "unweighted.parquet")
    with pytest.warns(DataWarning, match="no column 'w', the sample weights the model was trained with"):
        result = Estimator.load(model).evaluate(tmp_path / "unweighted.parquet")
    assert "weighted_by" not in result


def test_libfm_labels_are_one_convention_a_file_however_it_is_chunked(tmp_path):
    labels = [str(i % 2) for i in range(300)]
    (tmp_path / "train.libfm").write_text(libfm_lines(labels))
    trained = Estimator(model={"name": "fm"}, training={"epochs": 1, "portfolio": "off"}).fit(
        tmp_path / "train.libfm", progress=False)
    mixed = ["+1" if i % 2 else "-1" for i in range(100)] + [str(i % 2) for i in range(100)]
    (tmp_path / "mixed.libfm").write_text(libfm_lines(mixed, seed=1))
    for chunk_rows in (None, 50):  # the whole file, and chunks that never hold -1 and 0 together
        with pytest.raises(DataError, match=r"mixed.libfm:10[12]:1: label 0: this file's labels are 0/1 and libFM's"):
            trained.evaluate(tmp_path / "mixed.libfm", chunk_rows=chunk_rows)


def test_dictionary_encoded_bytes_read_as_text_and_are_located_when_not_utf8(tmp_path):
    from deepfm.data.tables import frame_from_table

    good = pa.array([b"i1", b"i2", b"i1"]).dictionary_encode()
    frame = frame_from_table(pa.table({"label": [0, 1, 0], "item": good}), "t.parquet", fmt="parquet")
    assert frame.columns["item"].dictionary.to_pylist() == ["i1", "i2"]
    bad = pa.array([b"i1", b"i2", b"\xff", b"i1"]).dictionary_encode()
    with pytest.raises(DataError, match=r"t.parquet:3:2: column 'item' holds bytes that are not UTF-8 text"):
        frame_from_table(pa.table({"label": [0, 1, 0, 1], "item": bad}), "t.parquet", fmt="parquet")


def test_a_parquet_file_repeating_a_column_name_says_so_at_its_header(tmp_path):
    table = pa.table([pa.array([0, 1, 0, 1]), pa.array(["a", "b", "a", "b"]), pa.array(["x", "y", "x", "y"])],
                     names=["label", "user", "user"])
    pq.write_table(table, tmp_path / "dup.parquet")  # (Arrow's own message listed its dataset's internal fields)
    with pytest.raises(DataError, match=r"dup.parquet:1: duplicate column names: \['user'\]"):
        Estimator(model={"name": "fm"}, training={"epochs": 1}).fit(tmp_path / "dup.parquet", progress=False)


def test_a_parquet_decimal_column_is_a_number_in_training_and_scoring(tmp_path):
    """decimal128 prices were trained as categorical ids without a word, and with --numeric gave a traceback."""
    import decimal

    table = clicks()
    prices = pa.array([decimal.Decimal(f"{p:.2f}") for p in np.linspace(0.5, 9.5, ROWS)], pa.decimal128(6, 2))
    pq.write_table(table.append_column("price", prices), tmp_path / "decimal.parquet")
    pq.write_table(table.append_column("price", prices.cast(pa.float64())), tmp_path / "float.parquet")
    for numeric in ([], ["price"]):
        estimator = Estimator(model={"name": "lr"}, data={"numeric": numeric},
                              training={"epochs": 1, "portfolio": "off"}).fit(tmp_path / "decimal.parquet", progress=False)
        assert [f.kind for f in estimator.encoder.fields if f.name == "price"] == ["numeric"]
        np.testing.assert_allclose(estimator.predict(tmp_path / "decimal.parquet"),
                                   estimator.predict(tmp_path / "float.parquet"), rtol=1e-6)
    accounts = [12345678901234567890 + 7 * (i % 31) for i in range(ROWS)]  # whole decimals: ids, every digit kept
    pq.write_table(table.append_column("account", pa.array([decimal.Decimal(a) for a in accounts], pa.decimal128(20, 0))),
                   tmp_path / "accounts.parquet")
    estimator = Estimator(model={"name": "lr"}, training={"epochs": 1, "portfolio": "off"}).fit(
        tmp_path / "accounts.parquet", progress=False)
    field = next(f for f in estimator.encoder.fields if f.name == "account")
    assert field.kind == "categorical" and sorted(field.vocabulary) == sorted({str(a) for a in accounts})


def test_sample_weights_that_leave_one_class_without_weight_are_refused(tmp_path):
    """The labels' check counts rows: with every click weighted 0 a model trained on the non-clicks alone and was
    saved (validation AUC undefined)."""
    table = clicks()
    weights = np.where(np.asarray(table["label"]) == 1, 0.0, 1.0)
    pq.write_table(table.set_column(3, "w", pa.array(weights)), tmp_path / "weighted.parquet")
    with pytest.raises(DataError, match="every training row of class 1 has sample weight 0"):
        Estimator(model={"name": "lr"}, data={"weight": "w"}, training={"epochs": 1}).fit(tmp_path / "weighted.parquet",
                                                                                          progress=False)
