"""Files larger than memory: chunked reading, a streaming encoder fit and a streaming BatchSource."""

from __future__ import annotations

import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

from deepfm import Estimator
from deepfm.config import DataConfig
from deepfm.data.encoders import FeatureEncoder
from deepfm.data.readers import read_frame
from deepfm.data.stream import ChunkedFile, StreamSource, assemble, count_rows, encode_file, fit_streaming
from deepfm.data.synthetic import SyntheticSpec, make_ctr_table
from deepfm.errors import DataError
from deepfm.training.trainer import Trainer

SPEC = SyntheticSpec(rows=3000, categorical=5, numeric=2, vocabulary=400, seed=3)
CONFIG = DataConfig(numeric=("I1", "I2"))
CHUNK = 8 << 10  # about 250 rows of this CSV: a dozen chunks


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory):
    table, _ = make_ctr_table(SPEC)
    path = tmp_path_factory.mktemp("stream") / "train.csv"
    pacsv.write_csv(table.append_column("row", pa.array(np.arange(table.num_rows).astype(str))), path)
    return path


def test_a_small_chunk_size_really_gives_many_chunks_with_their_line_numbers(csv_file):
    chunks = ChunkedFile(csv_file, chunk_bytes=CHUNK).chunks()
    assert len(chunks) > 8
    assert chunks[0].first_line == 2  # after the header
    rows = count_rows(ChunkedFile(csv_file, chunk_bytes=CHUNK))
    assert [c.first_line for c in chunks] == list(2 + np.concatenate([[0], np.cumsum(rows)[:-1]]))
    assert sum(rows) == SPEC.rows


@pytest.mark.parametrize("merge_from", [0, 10**9], ids=["counts merged during the stream", "counts merged at the end"])
def test_streaming_fit_gives_the_same_encoder_as_fitting_in_memory(csv_file, merge_from, monkeypatch):
    import deepfm.data.encoders as encoders

    monkeypatch.setattr(encoders, "MERGE_COUNTS_ROWS", merge_from)
    streamed, rows = fit_streaming(ChunkedFile(csv_file, chunk_bytes=CHUNK), CONFIG)
    whole = FeatureEncoder.fit([read_frame(csv_file)], CONFIG)
    assert sum(rows) == SPEC.rows
    assert streamed.num_features == whole.num_features and streamed.task == whole.task
    for a, b in zip(streamed.fields, whole.fields):
        assert (a.name, a.kind, a.offset, a.size, a.vocabulary) == (b.name, b.kind, b.offset, b.size, b.vocabulary)
        assert a.mean == pytest.approx(b.mean, rel=1e-12) and a.std == pytest.approx(b.std, rel=1e-12)


def test_chunked_encoding_equals_encoding_the_whole_file(csv_file):
    file = ChunkedFile(csv_file, chunk_bytes=CHUNK)
    encoder, rows = fit_streaming(file, CONFIG)
    chunked, whole = encode_file(file, encoder, rows), encoder.transform(read_frame(csv_file))
    np.testing.assert_array_equal(chunked.ids, whole.ids)
    np.testing.assert_array_equal(chunked.values, whole.values)
    np.testing.assert_array_equal(chunked.labels, whole.labels)


def test_only_fields_whose_values_can_differ_from_one_are_stored(csv_file):
    file = ChunkedFile(csv_file, chunk_bytes=CHUNK)
    encoder, rows = fit_streaming(file, CONFIG)
    data = encode_file(file, encoder, rows)
    names = [f.name for f in encoder.single_fields]
    assert [names[j] for j in data.value_fields] == ["I1", "I2"]
    assert data.values.shape == (SPEC.rows, 2)  # not (rows, 8): the 6 categorical columns are all 1
    dense = data.dense_values()
    assert dense.shape == (SPEC.rows, len(names)) and (np.delete(dense, data.value_fields, axis=1) == 1).all()
    batch = data.take(np.array([5, 0, 9])).to_batch()
    np.testing.assert_array_equal(batch.values.numpy(), dense[[5, 0, 9]])


def test_weights_that_first_appear_in_a_later_chunk_are_kept(tmp_path):
    lines = [f"{i % 2} 0:1 {3 + i % 4}:1" for i in range(400)] + [f"{i % 2} 1:1 {3 + i % 4}:2.5" for i in range(400)]
    path = tmp_path / "late_weights.libfm"
    path.write_text("\n".join(lines) + "\n")
    file = ChunkedFile(path, chunk_bytes=2 << 10)
    encoder, rows = fit_streaming(file, DataConfig())
    assert len(rows) > 2
    data = encode_file(file, encoder, rows)
    whole = encoder.transform(read_frame(path))
    assert encoder.value_fields == (1,)  # a later chunk's values make that field weighted (serving takes them)
    np.testing.assert_array_equal(data.dense_values(), whole.dense_values())
    assert (data.dense_values()[400:, 1] == 2.5).all()  # not lost


def _row_numbers(encoder: FeatureEncoder, batch) -> list[str]:
    spec = next(f for f in encoder.fields if f.name == "row")
    return [spec.vocabulary[i - spec.offset - 2] for i in batch.ids[:, encoder.fields.index(spec)]]


@pytest.mark.parametrize("window", [1, 3])
def test_streamed_batches_hold_every_row_exactly_once_per_epoch(csv_file, window):
    file = ChunkedFile(csv_file, chunk_bytes=CHUNK)
    encoder, rows = fit_streaming(file, CONFIG)
    source = StreamSource(file, encoder, rows, window=window)
    epochs = []
    for epoch in range(2):
        batches = list(source.batches(256, seed=5, epoch=epoch))
        assert len(batches) == source.steps_per_epoch(256)
        assert all(len(b) == 256 for b in batches[:-1])
        seen = [r for b in batches for r in _row_numbers(encoder, b)]
        assert sorted(seen, key=int) == [str(i) for i in range(SPEC.rows)]
        epochs.append(seen)
    assert epochs[0] != epochs[1], "each epoch is shuffled anew"
    again = [r for b in source.batches(256, seed=5, epoch=1) for r in _row_numbers(encoder, b)]
    assert again == epochs[1], "the order depends only on (seed, epoch)"
    skipped = [r for b in source.batches(256, seed=5, epoch=1, skip=3) for r in _row_numbers(encoder, b)]
    assert skipped == epochs[1][3 * 256:]


def test_rows_far_apart_in_the_file_share_batches(csv_file):
    """Chunks are visited in a shuffled order and mixed within the window, not read front to back."""
    file = ChunkedFile(csv_file, chunk_bytes=CHUNK)
    encoder, rows = fit_streaming(file, CONFIG)
    first = _row_numbers(encoder, next(StreamSource(file, encoder, rows, window=3).batches(256, seed=0, epoch=0)))
    assert len({int(r) // rows[0] for r in first}) >= 2


def test_an_error_in_a_late_chunk_names_its_line_in_the_file(tmp_path, csv_file):
    lines = csv_file.read_text().splitlines(keepends=True)
    bad_line = 2801
    fields = lines[bad_line - 1].split(",")
    fields[1] = "lots"  # I1 is numeric
    lines[bad_line - 1] = ",".join(fields)
    path = tmp_path / "bad.csv"
    path.write_text("".join(lines))
    file = ChunkedFile(path, chunk_bytes=CHUNK)
    with pytest.raises(DataError) as error:
        fit_streaming(file, CONFIG)
    assert (error.value.line, error.value.column) == (bad_line, 2)

    lines[bad_line - 1] = "1,2\n"  # a ragged row
    path.write_text("".join(lines))
    with pytest.raises(DataError) as error:
        fit_streaming(ChunkedFile(path, chunk_bytes=CHUNK), CONFIG)
    assert error.value.line == bad_line and "fields" in error.value.message


def test_libfm_error_in_a_late_chunk_names_its_line(tmp_path):
    lines = [f"{i % 2} {i % 7}:1 {10 + i % 5}:1\n" for i in range(2000)]
    lines[1733] = "1 3:1 12-1\n"
    path = tmp_path / "data.libfm"
    path.write_text("".join(lines))
    with pytest.raises(DataError) as error:
        fit_streaming(ChunkedFile(path, chunk_bytes=2 << 10), DataConfig())
    assert error.value.line == 1734


def test_gzip_and_parquet_stream_the_same_rows(tmp_path, csv_file):
    import gzip

    gz, upper = tmp_path / "train.csv.gz", tmp_path / "TRAIN.CSV.GZ"
    gz.write_bytes(gzip.compress(csv_file.read_bytes()))
    upper.write_bytes(gz.read_bytes())
    parquet = tmp_path / "train.parquet"
    pq.write_table(pacsv.read_csv(csv_file), parquet, row_group_size=700)
    expected = sorted(str(i) for i in range(SPEC.rows))
    for path, config in ((gz, CONFIG), (upper, CONFIG), (parquet, DataConfig(categorical=("row",)))):
        file = ChunkedFile(path, chunk_bytes=CHUNK)
        encoder, rows = fit_streaming(file, config)
        assert len(file.chunks()) > 1
        seen = [r for b in StreamSource(file, encoder, rows).batches(500, seed=1, epoch=0) for r in _row_numbers(encoder, b)]
        assert sorted(seen) == expected


def _streaming(extra=None):
    return {"data": {"numeric": ["I1", "I2"], "stream": "on", "chunk_rows": 300, "shuffle_window": 2, "valid_fraction": 0},
            "model": {"mlp": (16,), "dropout": 0.1},
            "training": {"batch_size": 128, "epochs": 2, "seed": 3, **(extra or {})}}


def test_estimator_streams_a_file_and_learns(csv_file):
    est = Estimator(**_streaming()).fit(csv_file, progress=False)
    assert est.metrics["rows"] == SPEC.rows
    assert est.result.samples_seen == 2 * SPEC.rows
    assert est.evaluate(csv_file)["auc"] > 0.65


def test_interrupted_streaming_run_resumes_to_the_same_weights(csv_file, tmp_path, monkeypatch):
    config = _streaming({"checkpoint_every": 5})
    full = Estimator(**config).fit(csv_file, out=tmp_path / "full", progress=False)
    original_step, calls = Trainer._step, {"n": 0}

    def crash(self, batch):
        calls["n"] += 1
        if calls["n"] > 31:  # epoch 2, step 8: the last checkpoint was after its step 5
            raise KeyboardInterrupt
        return original_step(self, batch)

    monkeypatch.setattr(Trainer, "_step", crash)
    with pytest.raises(KeyboardInterrupt):
        Estimator(**config).fit(csv_file, out=tmp_path / "cut", progress=False)
    monkeypatch.setattr(Trainer, "_step", original_step)
    resumed = Estimator(**config).fit(csv_file, out=tmp_path / "cut", resume=True, progress=False)
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(value, resumed.model.state_dict()[key], rtol=0, atol=0)


def test_a_streaming_run_resumed_on_another_file_is_refused(csv_file, tmp_path):
    from deepfm.errors import ConfigError

    config = _streaming()
    Estimator(**config).fit(csv_file, out=tmp_path / "m", progress=False)
    other = tmp_path / "other.csv"
    other.write_bytes(csv_file.read_bytes())  # the same rows in another file: not what the checkpoint trained on
    with pytest.raises(ConfigError, match=f"other data \\(train {other.parent.parent}.* → {other}\\)"):
        Estimator(**config).fit(other, out=tmp_path / "m", resume=True, progress=False)


def test_cli_trains_with_stream_and_chunk_rows(csv_file, tmp_path, capsys):
    from deepfm.cli import main

    code = main(["train", "--train", str(csv_file), "--out", str(tmp_path / "m"), "--stream", "--chunk-rows", "400",
                 "--numeric", "I1,I2", "--epochs", "1", "--mlp", "16", "--valid-fraction", "0", "--json", "--quiet"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows"] == SPEC.rows
    assert json.loads((tmp_path / "m" / "config.json").read_text())["run"]["data"]["stream"] == "on"


def test_a_file_that_changed_between_the_counting_and_the_reading_pass_is_a_clear_error(csv_file):
    file = ChunkedFile(csv_file, chunk_bytes=CHUNK)
    encoder, rows = fit_streaming(file, CONFIG)
    for wrong in ([*rows[:-1], rows[-1] + 3], [*rows[:-1], rows[-1] - 3]):
        with pytest.raises(DataError, match="changed while being read"):
            encode_file(file, encoder, wrong)
        source = StreamSource(file, encoder, wrong, window=100)
        with pytest.raises(DataError, match="changed while being read"):
            list(source.batches(256, seed=0, epoch=0))


@pytest.mark.parametrize("one_pass", [True, False])
def test_each_chunk_writes_its_ids_into_the_whole_files_array_and_none_is_copied(csv_file, one_pass, monkeypatch):
    from deepfm.data import stream

    seen = []
    in_place = stream.written_in_place
    monkeypatch.setattr(stream, "written_in_place", lambda *a: seen.append(in_place(*a)) or seen[-1])
    file = ChunkedFile(csv_file, chunk_bytes=CHUNK)
    if one_pass:
        _, _, data = stream.fit_and_encode(file, CONFIG)
    else:
        encoder, rows = fit_streaming(file, CONFIG)
        data = encode_file(file, encoder, rows)
    assert len(seen) == len(file.chunks()) > 5 and all(seen)
    assert len(data) == SPEC.rows


def test_a_part_is_in_place_only_where_it_is_the_very_rows_of_the_whole():
    from deepfm.data.stream import written_in_place

    whole = np.zeros((10, 3), np.int32)
    assert written_in_place(whole[4:7], whole, 4)
    assert not written_in_place(whole[4:7], whole, 3)  # other rows
    assert not written_in_place(whole[4:7].copy(), whole, 4)  # a copy
    assert not written_in_place(whole[4:7, :2], whole, 4)  # fewer columns
    assert not written_in_place(whole[4:7].astype(np.int64), whole, 4)


def test_parts_of_their_own_are_copied_into_the_array_given_and_those_in_place_are_kept():
    from types import SimpleNamespace

    from deepfm.data.batch import EncodedData

    encoder = SimpleNamespace(single_fields=[SimpleNamespace()] * 2, multi_fields=[], value_fields=())
    whole = np.full((4, 2), -1, np.int32)
    whole[:2] = [[1, 2], [3, 4]]  # the first part wrote itself there
    parts = [EncodedData(whole[:2], None), EncodedData(np.array([[5, 6], [7, 8]], np.int32), None)]
    data = assemble(iter(parts), 4, encoder, ids=whole)
    assert data.ids is whole
    np.testing.assert_array_equal(whole, [[1, 2], [3, 4], [5, 6], [7, 8]])


def test_a_chunk_with_more_value_columns_than_the_first_widens_what_is_stored():
    from types import SimpleNamespace

    from deepfm.data.batch import EncodedData

    ids = np.zeros((2, 3), np.int32)
    parts = [EncodedData(ids, np.array([[2.0], [3.0]], np.float32), value_fields=(1,)),
             EncodedData(ids, None),
             EncodedData(ids, np.array([[4, 5, 6], [7, 8, 9]], np.float32))]  # every column
    fields = [SimpleNamespace()] * 3
    encoder = SimpleNamespace(single_fields=fields, multi_fields=[], value_fields=(1,), new_ids=lambda rows: np.empty((rows, 3), np.int32))
    data = assemble(iter(parts), 6, encoder)
    assert data.value_fields is None
    np.testing.assert_array_equal(data.values, [[1, 2, 1], [1, 3, 1], [1, 1, 1], [1, 1, 1], [4, 5, 6], [7, 8, 9]])


def test_concatenating_parts_without_values_keeps_the_narrow_layout():
    from deepfm.data.batch import EncodedData

    ids = np.zeros((2, 3), np.int32)
    narrow = EncodedData(ids, np.array([[2.0], [3.0]], np.float32), value_fields=(1,))
    joined = EncodedData.concat([EncodedData(ids, None), narrow])
    assert joined.value_fields == (1,) and joined.values.shape == (4, 1)
    np.testing.assert_array_equal(joined.dense_values()[:, 1], [1, 1, 2, 3])


def test_the_held_out_rows_of_a_rank_keep_their_sample_weights(tmp_path):
    """A rank's share of the streamed held-out rows starts from an empty part; its rows' weights must
    survive the concatenation, as one process's held-out rows keep theirs (early stopping is weighted)."""
    from deepfm.config import build_config
    from deepfm.data.batch import EncodedData
    from deepfm.data.filelist import open_chunked
    from deepfm.data.holdout import encode_hashed
    from deepfm.distributed.process import Context
    from deepfm.distributed.sharding import encode_held_out_share

    rng = np.random.default_rng(0)
    path = tmp_path / "weighted.csv"
    pacsv.write_csv(pa.table({"label": rng.integers(0, 2, 400), "u": [f"u{i}" for i in rng.integers(0, 9, 400)],
                              "w": rng.uniform(0.5, 5, 400)}), path)
    config = build_config({"data": {"weight": "w"}}).data
    file = open_chunked(path, config, 1 << 20)
    encoder, rows = fit_streaming(file, config)
    one_process = encode_hashed(file, encoder, 0.2, 0)
    share = encode_held_out_share(file, encoder, rows, 0.2, 0, Context(0, 1))
    assert share.weights is not None
    np.testing.assert_array_equal(share.weights, one_process.weights)
    ids = np.zeros((1, 1), np.int32)
    joined = EncodedData.concat([EncodedData(ids[:0], None), EncodedData(ids, None, weights=np.array([2.0], np.float32))])
    np.testing.assert_array_equal(joined.weights, [2.0])


def test_auto_streams_only_when_the_encoded_file_would_take_over_half_the_free_memory(csv_file, monkeypatch):
    from deepfm.data import stream

    size = csv_file.stat().st_size  # text: about 1.5 × this once encoded, with the chunk being parsed

    def free_bytes(available):
        monkeypatch.setattr(stream.os, "sysconf", lambda name: {"SC_AVPHYS_PAGES": available // 4096, "SC_PAGE_SIZE": 4096}[name])

    free_bytes(4 * size)
    assert not stream.should_stream(csv_file, "auto")  # 1.5 × size < half of 4 × size
    free_bytes(2 * size)
    assert stream.should_stream(csv_file, "auto")  # 1.5 × size > half of 2 × size
    assert stream.should_stream(csv_file, "on") and not stream.should_stream(csv_file, "off")


@pytest.mark.parametrize("terminal, progress, shown", [(True, True, True), (False, True, False), (True, False, False)],
                         ids=["terminal", "not a terminal", "quiet"])
def test_fitting_and_encoding_a_chunked_file_show_a_bar_only_on_a_terminal_and_not_when_quiet(
        csv_file, capsys, monkeypatch, terminal, progress, shown):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    file = ChunkedFile(csv_file, chunk_bytes=CHUNK)
    encoder, rows = fit_streaming(file, CONFIG, progress=progress)
    encode_file(file, encoder, rows, progress=progress)
    err = capsys.readouterr().err
    assert (f"fitting {csv_file.name}" in err and f"encoding {csv_file.name}" in err) == shown


def test_parquet_row_groups_written_by_pandas_leave_the_index_out(tmp_path, csv_file):
    frame = pacsv.read_csv(csv_file).to_pandas()
    shuffled = frame.iloc[np.random.default_rng(0).permutation(len(frame))]
    path = tmp_path / "shuffled.parquet"
    shuffled.to_parquet(path, row_group_size=700)
    file = ChunkedFile(path, chunk_bytes=CHUNK)
    assert len(file.chunks()) > 1
    assert all("__index_level_0__" not in chunk.columns for chunk in file.frames())


def test_a_parquet_row_group_of_many_chunks_rows_is_read_in_chunks_of_chunk_rows(tmp_path, csv_file):
    """pyarrow writes row groups of up to 1M rows: streaming read each whole, whatever --chunk-rows said, and held a
    window of them (2.3 GB against 1.6 GB in memory, a scale tester's 2M-row file)."""
    frame = pacsv.read_csv(csv_file).to_pandas()
    path = tmp_path / "one_group.parquet"
    frame.iloc[np.random.default_rng(0).permutation(len(frame))].to_parquet(path, row_group_size=2000)  # groups of
    file = ChunkedFile(path, chunk_rows=300)  # 2000 and 1000 rows, a pandas index to leave out
    assert [(c.start, c.size, c.first_line) for c in file.chunks()][:8] == [
        (0, 0, 1), (0, 300, 301), (0, 600, 601), (0, 900, 901), (0, 1200, 1201), (0, 1500, 1501), (0, 1800, 1801),
        (1, 0, 2001)]
    assert file.chunk_runs() == [list(range(7)), list(range(7, 11))]
    frames = list(file.frames())
    assert [f.num_rows for f in frames] == [300] * 6 + [200] + [300] * 3 + [100]
    assert all("__index_level_0__" not in f.columns for f in frames)
    whole = pa.concat_tables(pa.table(f.columns) for f in frames).to_pandas()
    assert whole["row"].astype(str).tolist() == frame["row"].iloc[np.random.default_rng(0).permutation(len(frame))
                                                                   ].astype(str).tolist()
    later = list(file.frames([3, 4, 9]))  # a run begun in a group's middle, and one in another group
    assert [pa.table(f.columns)["row"].to_pylist() for f in later] == [
        pa.table(frames[n].columns)["row"].to_pylist() for n in (3, 4, 9)]
    assert [f.first_line for f in later] == [901, 1201, 2601]
    encoder, rows = fit_streaming(file, DataConfig(categorical=("row",)))
    source = StreamSource(file, encoder, rows, window=2)
    order = source.chunk_order(seed=1, epoch=0)
    assert sorted(order) == list(range(11)) and order.tolist() in ([*range(7), *range(7, 11)], [*range(7, 11), *range(7)])
    seen = [r for b in source.batches(500, seed=1, epoch=0) for r in _row_numbers(encoder, b)]
    assert sorted(seen, key=int) == [str(i) for i in range(SPEC.rows)]
    assert len(ChunkedFile(path).chunks()) == 2  # no chunk_rows: a chunk a group, as before


@pytest.mark.parametrize("stream", ["off", "on"])
def test_a_decimal_after_the_chunk_that_read_a_column_as_whole_number_ids_is_an_error_naming_both_flags(tmp_path, stream):
    """The first chunk decides a column's kind (``looks_float``); a decimal number in a later chunk would have made it
    numeric had it come first, so the fit stops at it rather than read it as an id, whatever the chunk size."""
    rows = 300
    x = [str(i % 7 - 3) for i in range(rows)]
    x[250] = "6.37"
    path = tmp_path / "kinds.csv"
    path.write_text("label,x,c\n" + "".join(f"{i % 2},{v},c{i % 5}\n" for i, v in enumerate(x)))
    with pytest.raises(DataError, match=r"kinds\.csv:252:2: column 'x' held whole numbers in the first \d+ rows, so it "
                                        r"was read as ids \(categorical\), but this row has the decimal number '6\.37': say "
                                        r"which it is, --numeric x \(numbers\) or --categorical x"):
        Estimator(model={"name": "lr"}, data={"stream": stream, "chunk_rows": 100},
                  training={"epochs": 1}).fit(str(path), progress=False)
    for flag in ("numeric", "categorical"):
        est = Estimator(model={"name": "lr"}, data={"stream": stream, "chunk_rows": 100, flag: ("x",)},
                        training={"epochs": 1}).fit(str(path), progress=False)
        assert {spec.name: spec.kind for spec in est.encoder.fields}["x"] == flag


def test_a_decimal_in_a_later_chunk_of_integer_ids_is_found_while_the_columns_are_counted_side_by_side(tmp_path):
    """Chunks of 10,000 rows count their columns on torch's threads (``columns.each_column``), where each integer-id
    column's distinct values are checked: a decimal is still located at its row, the first column's (in the file's
    order, as one column after the other) if two hold one."""
    rows = 30_000
    lines = [f"{i % 2},{i % 7 - 3},{i % 11},c{i % 5}" for i in range(rows)]
    lines[25_000] = "1,2,6.37,c1"
    lines[25_001] = "0,4.5,3,c2"
    path = tmp_path / "kinds.csv"
    path.write_text("label,x,y,c\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"kinds\.csv:25003:2: column 'x' held whole numbers in the first [\d,]+ rows, so "
                                        r"it was read as ids \(categorical\), but this row has the decimal number '4\.5'"):
        Estimator(model={"name": "lr"}, data={"chunk_rows": 10_000}, training={"epochs": 1}).fit(str(path), progress=False)


@pytest.mark.parametrize("chunk_rows", [1_000, 10_000])  # columns one after the other, and side by side
def test_a_decimal_in_an_integer_id_column_is_said_before_the_chunks_other_errors(tmp_path, chunk_rows):
    """The integer-id columns were checked before any column was counted: a decimal there is the error said, before
    text in a numeric column further down the same chunk, and the columns that held ids from the first chunk come
    before those whose first values came later (a new user's two cases, found against the checks made side by side)."""
    lines = [f"{i % 2},{(i % 13) / 10:.2f},{i % 500},{'' if i < 12_000 else i % 9},c{i % 5}" for i in range(40_000)]
    lines[35_000] = "1,0.5,6.37,3,c1"
    lines[35_010] = "0,0.5,7,-0.5,c2"
    lines[35_050] = "1,abc,7,3,c3"
    path = tmp_path / "kinds.csv"
    path.write_text("label,num,id,late,c\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"kinds\.csv:35002:3: column 'id' held whole numbers in the first [\d,]+ rows"):
        Estimator(model={"name": "lr"}, data={"chunk_rows": chunk_rows}, training={"epochs": 1}).fit(str(path),
                                                                                                   progress=False)


@pytest.mark.parametrize("stream", ["off", "on"])
@pytest.mark.parametrize("later, error", [("6.37", True), ("17", False), ("abc", False)])
def test_a_column_without_a_value_in_the_chunk_that_decided_the_kinds_is_read_by_its_first_values(tmp_path, stream,
                                                                                                  later, error):
    """A column empty in the first chunk was read as ids whatever followed: 150,000 empty rows then prices made a
    categorical column of prices without a word. Its first values decide: decimals are an error naming both flags,
    whole numbers or text keep it ids (and a decimal after whole numbers is the error above)."""
    rows = 300
    x = [""] * 200 + [later] * 100
    path = tmp_path / "late.csv"
    path.write_text("label,x,c\n" + "".join(f"{i % 2},{v},c{i % 5}\n" for i, v in enumerate(x)))
    fit = lambda **data: Estimator(model={"name": "lr"}, data={"stream": stream, "chunk_rows": 100, **data},  # noqa: E731
                                   training={"epochs": 1}).fit(str(path), progress=False)
    if error:
        with pytest.raises(DataError, match=r"late\.csv:202:2: column 'x' held no value in the first \d+ rows, so it was "
                                            r"read as ids \(categorical\), but its values from here on are numbers such "
                                            r"as '6\.37': say which it is, --numeric x \(numbers\) or --categorical x"):
            fit()
        assert {spec.name: spec.kind for spec in fit(numeric=("x",)).encoder.fields}["x"] == "numeric"
    else:
        assert {spec.name: spec.kind for spec in fit().encoder.fields}["x"] == "categorical"


@pytest.mark.parametrize("first", ["NA", ""])
def test_a_decimal_after_missing_values_and_whole_numbers_is_an_error_naming_both_flags(tmp_path, first):
    """'NA' is missing to the kind inference: a column of 'NA' and whole numbers is integer ids, as with empty cells
    (with 'NA' a later decimal was read as an id without a word); the message says what the rows held."""
    x = [first] * 300 + [str(i % 7) for i in range(400)] + ["6.37"] * 50
    path = tmp_path / "late.csv"
    path.write_text("label,x,c\n" + "".join(f"{i % 2},{v},c{i % 5}\n" for i, v in enumerate(x)))
    with pytest.raises(DataError, match=r"late\.csv:702:2: column 'x' held no value in the first \d+ rows, then whole "
                                        r"numbers, so it was read as ids \(categorical\), but this row has the decimal "
                                        r"number '6\.37'"):
        Estimator(model={"name": "lr"}, data={"chunk_rows": 100}, training={"epochs": 1}).fit(str(path), progress=False)


def test_a_streamed_run_and_a_bf16_run_say_so_in_the_log(tmp_path):
    from deepfm import Estimator
    from deepfm.data.synthetic import SyntheticSpec, make_ctr_table
    import pyarrow.csv as pacsv

    path = tmp_path / "train.csv"
    pacsv.write_csv(make_ctr_table(SyntheticSpec(rows=600, seed=2))[0], path)
    lines: list[str] = []
    Estimator(data={"stream": "on", "chunk_rows": 200}, model={"mlp": (8,), "embed_dim": 4},
              training={"epochs": 1, "precision": "bf16"}).fit(path, progress=False, log=lines.append)
    [streaming] = [line for line in lines if line.startswith("streaming: ")]
    rows, chunks = int(streaming.split()[1].replace(",", "")), int(streaming.split("(")[1].split()[0])
    assert f"{rows:,} training rows read chunk by chunk every epoch" in streaming and 500 < rows <= 600  # (held out)
    assert f"chunks of about {round(rows / chunks):,} rows" in streaming, "the rows the chunks hold, not --chunk-rows"
    assert any(line.startswith("precision bf16: ") for line in lines), lines


def test_a_streamed_file_of_one_chunk_is_one_chunk_in_the_log(tmp_path):
    """'(1 chunks of about 46,801 rows, ...)' (a new user's log)."""
    from deepfm import Estimator
    from deepfm.data.synthetic import SyntheticSpec, make_ctr_table
    import pyarrow.csv as pacsv

    path = tmp_path / "train.csv"
    pacsv.write_csv(make_ctr_table(SyntheticSpec(rows=300, seed=2))[0], path)
    lines: list[str] = []
    Estimator(data={"stream": "on"}, model={"mlp": (8,), "embed_dim": 4},
              training={"epochs": 1}).fit(path, progress=False, log=lines.append)
    [streaming] = [line for line in lines if line.startswith("streaming: ")]
    assert "every epoch (1 chunk of about " in streaming


def test_reading_from_the_tail_chunk_of_a_split_row_group_decodes_in_chunks_of_chunk_rows(tmp_path, monkeypatch):
    """Its own 1-row size had been the batch size: the whole group decoded a row at a time to reach it (a reviewer's
    20.8 s against 0.03 s for 400,001 rows)."""
    path = tmp_path / "tail.parquet"
    pq.write_table(pa.table({"label": [0, 1] * 500 + [1], "x": [str(i) for i in range(1001)]}), path,
                   row_group_size=2000)
    file = ChunkedFile(path, chunk_rows=250)
    assert [f.num_rows for f in file.frames()] == [250, 250, 250, 250, 1]
    sizes = []
    real = pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", lambda self, **kw: sizes.append(kw["batch_size"]) or real(
        self, **kw))
    assert pa.table(next(file.frames([4])).columns)["x"].to_pylist() == ["1000"]
    assert sizes == [250]


def test_a_resume_inside_an_epoch_compares_every_chunks_rows_not_the_first_alone():
    from deepfm.training.trainer import chunk_layout

    assert chunk_layout([150, 100, 100, 100]) != chunk_layout([150, 90, 90, 90, 90, 40])  # the same first and total
    assert chunk_layout([150, 100]) == chunk_layout([150, 100])
