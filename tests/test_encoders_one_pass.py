"""Fitting and encoding a file in one reading pass gives the ids of fitting and then encoding it,
which are the id rules themselves: a vocabulary of the values seen ``min_count`` times in id order
(most frequent first, ties by value), 0 missing, 1 unseen or rare; hashed fields by bucket."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import deepfm.data.counting as counting
import deepfm.data.encoders as encoders
from deepfm.config import DataConfig
from deepfm.data.counting import ChunkCodes, HashedCounts
from deepfm.data.encoders import MISSING, UNSEEN, FeatureEncoder
from deepfm.data.readers import ChunkedFile
from deepfm.data.sparse import LEFT_OUT
from deepfm.data.stream import encode_file, fit_and_encode, fit_streaming
from deepfm.errors import DataError


def long_tail(rows: int, seed: int = 0) -> dict[str, list]:
    """Columns of a long tail (most values once or twice), a few recurring values with gaps, numbers and tag sets."""
    rng = np.random.default_rng(seed)
    tail = rng.zipf(1.3, rows) % 5000
    few = rng.integers(0, 12, rows)
    return {
        "label": rng.integers(0, 2, rows).tolist(),
        "tail": [str(v) for v in tail],
        "few": [None if v == 0 else f"v{v}" for v in few],
        "price": [f"{v:.2f}" for v in rng.random(rows) * 10],
        "tags": ["|".join(f"t{t}" for t in rng.integers(0, 30, rng.integers(0, 3))) or None for _ in range(rows)],
    }


def reference_ids(values: list, train: list, min_count: int) -> np.ndarray:
    """Field-local ids by the rules, from Python's Counter over the whole training column."""
    counts = Counter(v for v in train if v is not None)
    kept = sorted((v for v, c in counts.items() if c >= min_count), key=lambda v: (-counts[v], v.encode()))
    position = {v: i for i, v in enumerate(kept)}
    return np.array([MISSING if v is None else position[v] + 2 if v in position else UNSEEN for v in values])


@pytest.fixture
def chunked(write_table, monkeypatch):
    """A training file of many small chunks, counted with merges after every few of them."""
    monkeypatch.setattr(encoders, "MERGE_COUNTS_ROWS", 300)
    columns = long_tail(4000)
    path = write_table("train.csv", columns)
    return columns, lambda: ChunkedFile(path, multi=("tags",), chunk_bytes=4 << 10)


def two_passes(file: ChunkedFile, config: DataConfig):
    encoder, rows = fit_streaming(file, config)
    return encoder, encode_file(file, encoder, rows)


@pytest.mark.parametrize("min_count", [1, 3])
def test_two_passes_follow_the_id_rules(chunked, min_count):
    columns, file = chunked
    assert len(file().chunks()) > 10
    encoder, data = two_passes(file(), DataConfig(multi=("tags",), min_count=min_count))
    for j, name in enumerate(["tail", "few"]):
        local = data.ids[:, j] - encoder.fields[j].offset
        np.testing.assert_array_equal(local, reference_ids(columns[name], columns[name], min_count))


@pytest.mark.parametrize("options", [{}, {"min_count": 3}, {"hash_buckets": 100}, {"hash_buckets": 100, "min_count": 2}])
def test_one_pass_encodes_as_two_passes(chunked, options):
    _, file = chunked
    config = DataConfig(multi=("tags",), **options)
    encoder, data = two_passes(file(), config)
    encoder_once, _, data_once = fit_and_encode(file(), config)
    assert encoder_once.to_dict() == encoder.to_dict()
    assert options.get("hash_buckets") is None or encoder.fields[0].hash_buckets == 100
    np.testing.assert_array_equal(data_once.ids, data.ids)
    np.testing.assert_array_equal(data_once.values, data.values)
    np.testing.assert_array_equal(data_once.labels, data.labels)
    for bag, bag_once in zip(data.bags, data_once.bags):
        np.testing.assert_array_equal(bag_once.offsets, bag.offsets)
        np.testing.assert_array_equal(bag_once.ids, bag.ids)


@pytest.mark.parametrize("options", [{}, {"hash_buckets": 100, "min_count": 2}])
def test_columns_counted_and_encoded_side_by_side_give_the_one_after_the_other_encoding(chunked, monkeypatch, options):
    import deepfm.data.columns as columns

    _, file = chunked
    config = DataConfig(multi=("tags",), **options)
    monkeypatch.setattr(columns, "_threads", lambda: 2)
    monkeypatch.setattr(columns, "MIN_ROWS", 10**9)
    encoder, data = two_passes(file(), config)
    monkeypatch.setattr(columns, "MIN_ROWS", 1)  # every chunk's columns on the pool
    pooled = []
    monkeypatch.setattr(columns, "_pool", lambda threads, real=columns._pool: pooled.append(threads) or real(threads))
    for encoder_side, data_side in [two_passes(file(), config), fit_and_encode(file(), config)[::2]]:
        assert encoder_side.to_dict() == encoder.to_dict()
        for got, want in [(data_side.ids, data.ids), (data_side.values, data.values), (data_side.labels, data.labels)]:
            np.testing.assert_array_equal(got, want)
        for bag, bag_side in zip(data.bags, data_side.bags, strict=True):
            np.testing.assert_array_equal(bag_side.offsets, bag.offsets)
            np.testing.assert_array_equal(bag_side.ids, bag.ids)
            np.testing.assert_array_equal(bag_side.weights, bag.weights)
    assert pooled, "the columns went to the pool"


def test_values_unseen_in_training_stay_unseen(chunked, write_table):
    _, file = chunked
    encoder, _, _ = fit_and_encode(file(), DataConfig(multi=("tags",)))
    other = long_tail(500, seed=1) | {"tail": ["never-seen"] * 499 + [None]}
    valid = encoder.transform(ChunkedFile(write_table("valid.csv", other), multi=("tags",)).whole())
    assert (valid.ids[:-1, 0] - encoder.fields[0].offset == UNSEEN).all()
    assert valid.ids[-1, 0] - encoder.fields[0].offset == MISSING


def weak_hash(strings: pa.Array) -> np.ndarray:
    """A hash that makes every field of more than 7 values collide."""
    return np.array([len(s) % 7 for s in strings.to_pylist()], dtype=np.uint64)


def test_values_that_share_a_hash_are_counted_apart(monkeypatch):
    monkeypatch.setattr(counting, "fnv1a64_unique", weak_hash)
    counts = HashedCounts(merge_rows=4)
    chunks = [["a", "bb", "a", None, "cc"], ["bb", "dd", "eeeeeee", "a"], ["h", "cc", "cc"]]
    for chunk in chunks:
        counts.add(ChunkCodes.of(pa.array(chunk, pa.string())))
    table = counts.table()
    assert counts.collided
    assert dict(zip(table["value"].to_pylist(), table["count"].to_pylist())) == Counter(
        v for chunk in chunks for v in chunk if v is not None)


def test_a_field_with_colliding_values_is_read_again(chunked, monkeypatch):
    _, file = chunked
    config = DataConfig(multi=("tags",), min_count=2)
    encoder, data = two_passes(file(), config)
    monkeypatch.setattr(counting, "fnv1a64_unique", weak_hash)
    reads = []
    frames = ChunkedFile.frames
    monkeypatch.setattr(ChunkedFile, "frames", lambda self, *a, **k: reads.append(1) or frames(self, *a, **k))
    encoder_once, _, data_once = fit_and_encode(file(), config)
    assert len(reads) == 2
    assert encoder_once.to_dict() == encoder.to_dict()
    np.testing.assert_array_equal(data_once.ids, data.ids)


def test_the_digit_test_agrees_with_the_number_pattern_on_integers():
    from deepfm.data.frame import FLOAT_MARK, NUMBER_PATTERN, all_digits

    for value in ["007", "12", " 3", "+1", "", "1.5", "1e3", "٣", "nan", "x1"]:
        column = pa.array([value, "42", None])
        by_pattern = pc.all(pc.match_substring_regex(column, NUMBER_PATTERN)).as_py() and not pc.any(
            pc.match_substring_regex(column, FLOAT_MARK)).as_py()
        assert not all_digits(column) or by_pattern, value
        assert all_digits(column) == (value.isascii() and value.isdigit()), value


def test_the_one_pass_hands_freed_memory_back_after_reading_and_again_before_encoding(chunked, monkeypatch):
    """Not after every chunk (each would page-fault its memory in afresh): once the chunks are read, before the
    count tables' last merges (else the parsed chunks' free memory adds to the fit's peak), and once the vocabularies
    are made, before the encoded columns are allocated (else the merges' free memory adds to the pass's peak)."""
    import deepfm.data.encoders as encoders
    import deepfm.data.stream as stream

    _, file = chunked
    events: list[str] = []
    monkeypatch.setattr(encoders, "release_free_memory", lambda: events.append("release before the merges"))
    monkeypatch.setattr(stream, "release_free_memory", lambda: events.append("release before encoding"))
    update, table = encoders._Fitter.update, encoders.HashedCounts.table
    monkeypatch.setattr(encoders._Fitter, "update", lambda self, frame: events.append("read") or update(self, frame))
    monkeypatch.setattr(encoders.HashedCounts, "table", lambda self: events.append("merge") or table(self))
    transform = FeatureEncoder.transform
    monkeypatch.setattr(FeatureEncoder, "transform", lambda self, *a, **k: events.append("encode") or transform(self, *a, **k))
    fit_and_encode(file(), DataConfig(multi=("tags",)))
    chunks = len(file().chunks())
    assert [e for e in events if e != "merge"] == (["read"] * chunks + ["release before the merges", "release before encoding"]
                                                   + ["encode"] * chunks)
    assert events.index("merge") > events.index("release before the merges")


def test_row_codes_write_each_rows_id_into_a_column_of_a_larger_array_and_nulls_get_the_missing_id():
    codes = ChunkCodes.of(pa.array(["b", None, "a", "b", None], pa.string())).rows(None, hashes=False)
    whole = np.full((5, 3), -7, np.int32)
    codes.take(np.array([10, 11]), 99, whole[:, 1])  # ids of the distinct values "b", "a"
    np.testing.assert_array_equal(whole[:, 1], [10, 99, 11, 10, 99])
    assert (whole[:, [0, 2]] == -7).all()


def test_transform_writes_the_ids_into_the_array_it_is_given(chunked):
    from deepfm.data.readers import read_frame

    _, file = chunked
    encoder, _ = fit_streaming(file(), DataConfig(multi=("tags",)))
    frame = read_frame(file().path, multi=("tags",))
    out = np.zeros((frame.num_rows + 2, len(encoder.single_fields)), np.int32)
    data = encoder.transform(frame, ids=out[1:-1])
    assert np.shares_memory(data.ids, out) and (out[[0, -1]] == 0).all()
    fresh = encoder.transform(frame)
    np.testing.assert_array_equal(out[1:-1], fresh.ids)
    np.testing.assert_array_equal(data.values, fresh.values)
    with pytest.raises(ValueError, match="int64"):
        encoder.transform(frame, ids=out[1:-1].astype(np.int64))  # not this table's id type
    with pytest.raises(ValueError):
        encoder.transform(frame, ids=out[2:-1])  # a row short


def test_the_kept_frames_are_encoded_once(chunked):
    _, file = chunked
    encoder, encode_into = FeatureEncoder.fit_and_transform(file().frames(), DataConfig(multi=("tags",)))
    rows = sum(frame.num_rows for frame in file().frames())
    assert sum(len(part) for part in encode_into(encoder.new_ids(rows))) == rows
    with pytest.raises(RuntimeError, match="encoded already"):
        next(encode_into(encoder.new_ids(rows)))


def libfm_lines(rows: int, seed: int = 0, libffm: bool = False) -> list[str]:
    """Positional libFM rows (field j's indices in a range of their own, a long tail in the first field, values not
    all 1 in the third), or libFFM rows of the same fields."""
    rng = np.random.default_rng(seed)
    tail, few, valued = rng.zipf(1.3, rows) % 3000, 5000 + rng.integers(0, 12, rows), 6000 + rng.integers(0, 4, rows)
    lines = []
    for r in range(rows):
        tokens = [(0, tail[r], "1"), (1, few[r], "1"), (2, valued[r], f"{rng.random():.3f}")]
        shown = [f"{field}:{index}:{value}" if libffm else f"{index}:{value}" for field, index, value in tokens]
        lines.append(" ".join([str(int(rng.integers(0, 2)))] + [shown[i] for i in rng.permutation(3)]))
    return lines


def reads_of(monkeypatch) -> list[int]:
    reads: list[int] = []
    frames = ChunkedFile.frames
    monkeypatch.setattr(ChunkedFile, "frames", lambda self, *a, **k: reads.append(1) or frames(self, *a, **k))
    return reads


@pytest.mark.parametrize("options", [{}, {"min_count": 3}, {"ignore": ("f2",)}, {"hash_buckets": 100}])
@pytest.mark.parametrize("fmt", ["libfm", "libffm"])
def test_a_libfm_file_of_one_layout_is_read_once_and_encoded_as_two_passes_encode_it(tmp_path, monkeypatch, fmt, options):
    """Its chunks' positional (libFM) or one-per-row (libFFM) fields are kept as codes, as a table's columns are; the
    ids, values and labels are those of reading it again with the encoder's layout."""
    if fmt == "libffm" and "ignore" in options:
        options = {"ignore": ("field1",)}
    path = tmp_path / f"train.{fmt}"
    path.write_text("\n".join(libfm_lines(4000, libffm=fmt == "libffm")) + "\n")
    file = lambda: ChunkedFile(path, chunk_bytes=4 << 10)  # noqa: E731
    config = DataConfig(**options)
    encoder, data = two_passes(file(), config)
    reads = reads_of(monkeypatch)
    encoder_once, _, data_once = fit_and_encode(file(), config)
    assert len(file().chunks()) > 10 and len(reads) == 1
    assert encoder_once.to_dict() == encoder.to_dict()
    assert data.values is not None and all(kind == "categorical" for kind in encoder.layout.values() if kind != LEFT_OUT)
    for got, want in [(data_once.ids, data.ids), (data_once.values, data.values), (data_once.labels, data.labels)]:
        np.testing.assert_array_equal(got, want)


def test_a_libfm_row_of_another_width_is_refused_at_its_line_in_the_one_pass(tmp_path):
    """Later chunks are read with the first chunk's layout (``ChunkedFile``), so such a row is refused while the file is
    fitted, at its line, saying how to read rows of varying width."""
    lines = libfm_lines(4000)
    lines[3000] += " 7000:1"  # a fourth feature
    path = tmp_path / "train.libfm"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="first rows read hold 3 features each, read as positional fields f1..f3, but this "
                                        "row has 4: rows of varying width are one multi-valued field 'features' when "
                                        r"the file is read in one piece \(a --chunk-rows above its rows") as error:
        fit_and_encode(ChunkedFile(path, chunk_bytes=4 << 10), DataConfig())
    assert error.value.line == 3001


@pytest.mark.parametrize("late", ["wider", "overlapping"])
def test_a_fit_in_memory_reads_a_libfm_file_whose_later_rows_are_not_positional_again_in_one_piece(tmp_path, late):
    """A valid libFM file whose row of another width (or of indices in another position's range) comes after the first
    chunk was refused, where libFM reads it: the rows are in memory anyway, so the fit reads it again in one piece and
    its features are one multi-valued field, and the log says why. Streamed, it stays a located error."""
    from deepfm import Estimator

    lines = libfm_lines(4000)
    label = lines[3000].split()[0]
    lines[3000] = f"{label} 5001:1 5002:1 6001:0.5" if late == "overlapping" else lines[3000] + " 7000:1"
    path = tmp_path / "train.libfm"
    path.write_text("\n".join(lines) + "\n")
    settings = {"model": {"name": "lr"}, "data": {"chunk_rows": 500}, "training": {"epochs": 1, "portfolio": "off"}}
    logged: list[str] = []
    estimator = Estimator(**settings).fit(str(path), progress=False, log=logged.append)
    assert list(estimator.encoder.layout) == ["features"]
    assert any(line.startswith(f"{path}: read again in one piece, where its rows are one multi-valued field 'features': "
                               "line 3001: ") for line in logged)
    assert estimator.evaluate(str(path))["rows"] == 4000
    with pytest.raises(DataError, match="one multi-valued field 'features'") as error:
        Estimator(**{**settings, "data": {"chunk_rows": 500, "stream": "on"}}).fit(str(path), progress=False)
    assert error.value.line == 3001


def test_a_multi_valued_libfm_file_is_read_again(tmp_path, monkeypatch):
    """Rows of varying width make one multi-valued field, kept as text until encoded were it kept: it is read again."""
    lines = [line + (" 7000:1" if i % 3 == 0 else "") for i, line in enumerate(libfm_lines(2000))]
    path = tmp_path / "train.libfm"
    path.write_text("\n".join(lines) + "\n")
    file = lambda: ChunkedFile(path, chunk_bytes=4 << 10)  # noqa: E731
    encoder, data = two_passes(file(), DataConfig())
    reads = reads_of(monkeypatch)
    encoder_once, _, data_once = fit_and_encode(file(), DataConfig())
    assert list(encoder.layout) == ["features"] and len(reads) == 2
    np.testing.assert_array_equal(data_once.bags[0].ids, data.bags[0].ids)


@pytest.mark.parametrize("dictionary, indices", [
    (["b", "a", "c"], [0, 1, None, 0, 2]),  # each value once, each used: its codes as they are
    (["b", "a", "c", "unused"], [0, 1, None, 0, 2]),  # a value no row holds
    (["b", "a", "b", "c"], [0, 1, None, 2, 3]),  # a value twice
])
def test_a_dictionary_encoded_column_is_counted_as_its_text(dictionary, indices):
    """libFM ids come dictionary-encoded (each distinct id cast to text once), as Parquet's text may: counted, they
    give each row the code and each value the count that the column's plain text gives."""
    column = pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), pa.array(dictionary))
    text = column.cast(pa.string())
    got, want = ChunkCodes.of(column), ChunkCodes.of(text)
    value_of = lambda codes: [None if i < 0 else codes.distinct[int(i)].as_py() for i in codes.indices]  # noqa: E731
    assert value_of(got) == value_of(want) == text.to_pylist()
    assert dict(zip(got.distinct.to_pylist(), got.counts)) == dict(zip(want.distinct.to_pylist(), want.counts))
    assert set(got.distinct.to_pylist()) == {"a", "b", "c"}


def test_a_dictionary_encoded_column_is_looked_up_as_its_text(chunked):
    _, file = chunked
    encoder, _, _ = fit_and_encode(file(), DataConfig(multi=("tags",), min_count=2))
    spec = encoder.fields[0]
    values = pa.array(["never-seen", None, *spec.vocabulary.values.to_pylist()[:5]] * 2)
    encoded = pc.dictionary_encode(values)
    np.testing.assert_array_equal(FeatureEncoder._lookup(encoded, spec), FeatureEncoder._lookup(values, spec))
