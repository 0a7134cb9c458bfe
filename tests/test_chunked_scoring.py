"""``predict`` and ``evaluate`` read a file a chunk at a time: the same predictions and metrics as the file read
whole, errors at the file's own lines, and no output file from a run that fails."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import stat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from deepfm import Estimator
from deepfm.cli import main
from deepfm.data.synthetic import SyntheticSpec, make_ctr_table
from deepfm.errors import ConfigError, DataWarning

TINY = ["--epochs", "1", "--mlp", "16,16", "--batch-size", "64", "--embed-dim", "4", "--quiet"]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A tiny DeepFM and a 600-row labelled file to score, with an id column."""
    root = tmp_path_factory.mktemp("chunked")
    spec = SyntheticSpec(rows=600, seed=3)
    train, rows = root / "train.csv", root / "rows.csv"
    pacsv.write_csv(make_ctr_table(spec, part=0)[0], train)
    table = make_ctr_table(spec, part=1)[0]
    pacsv.write_csv(table.append_column("id", pa.array([f"r{i}" for i in range(len(table))])), rows)
    assert main(["train", "--train", str(train), "--out", str(root / "model"), *TINY]) == 0
    return {"model": root / "model", "rows": rows, "count": len(table)}


def test_predict_chunk_by_chunk_gives_the_whole_files_predictions(scored):
    estimator = Estimator.load(scored["model"])
    chunks = list(estimator.predict_chunks(scored["rows"], chunk_rows=50))
    assert len(chunks) >= 8
    assert sum(frame.num_rows for frame, _ in chunks) == scored["count"]
    assert [len(p) for _, p in chunks] == [frame.num_rows for frame, _ in chunks]
    whole = estimator.predict(scored["rows"], chunk_rows=10**6)
    np.testing.assert_allclose(np.concatenate([p for _, p in chunks]), whole, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(estimator.predict(scored["rows"], chunk_rows=50), whole, rtol=1e-5, atol=1e-7)


def test_each_chunk_knows_its_lines_in_the_file(scored):
    frames = list(Estimator.load(scored["model"]).frames(scored["rows"], require_label=False, chunk_rows=50))
    first_lines = [frame.first_line for frame in frames]
    assert first_lines[0] == 2  # below the header
    assert first_lines == list(np.cumsum([2] + [f.num_rows for f in frames[:-1]]))


def test_evaluate_chunk_by_chunk_gives_the_whole_files_metrics(scored):
    estimator = Estimator.load(scored["model"])
    whole, chunked = estimator.evaluate(scored["rows"]), estimator.evaluate(scored["rows"], chunk_rows=50)
    assert chunked["rows"] == whole["rows"] == scored["count"]
    assert chunked["auc"] == pytest.approx(whole["auc"], abs=1e-6)
    assert chunked["logloss"] == pytest.approx(whole["logloss"], rel=1e-5)


@pytest.mark.parametrize("name", ["p.csv", "p.parquet", "p.tsv.gz"])
def test_the_cli_writes_every_chunk_once_in_input_order(scored, tmp_path, name):
    whole, chunked = tmp_path / "whole" / name, tmp_path / "chunked" / name
    for out, chunk_rows in ((whole, "100000"), (chunked, "64")):
        assert main(["predict", str(scored["model"]), str(scored["rows"]), "--out", str(out), "--keep", "id,label",
                     "--chunk-rows", chunk_rows]) == 0
    read = (lambda path: pq.read_table(path)) if name.endswith(".parquet") else (
        lambda path: pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter="\t" if ".tsv" in name else ",")))
    a, b = read(whole), read(chunked)
    assert b.column_names == ["id", "label", "prediction"] and b.schema == a.schema
    assert b["id"].to_pylist() == [f"r{i}" for i in range(scored["count"])] == a["id"].to_pylist()
    assert b["label"].to_pylist() == a["label"].to_pylist()
    np.testing.assert_allclose(b["prediction"].to_numpy(), a["prediction"].to_numpy(), rtol=1e-5, atol=1e-7)
    assert sorted(p.name for p in chunked.parent.iterdir()) == [name]  # no temporary file left beside it


def test_a_bad_row_in_a_later_chunk_names_its_line_and_leaves_the_earlier_output_as_it_was(scored, tmp_path, capsys):
    lines = scored["rows"].read_text().splitlines(keepends=True)
    lines[500] = "1,2\n"  # line 501 of the file
    bad = tmp_path / "bad.csv"
    bad.write_text("".join(lines))
    out = tmp_path / "p.csv"
    out.write_text("yesterday's predictions\n")
    assert main(["predict", str(scored["model"]), str(bad), "--out", str(out), "--chunk-rows", "64"]) == 2
    assert capsys.readouterr().err.startswith(f"{bad}:501:")
    assert out.read_text() == "yesterday's predictions\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "p.csv"]
    assert main(["evaluate", str(scored["model"]), str(bad), "--chunk-rows", "64"]) == 2
    assert capsys.readouterr().err.startswith(f"{bad}:501:")


def test_a_kept_column_of_numbers_that_turns_to_text_in_a_later_chunk_is_refused_in_parquet(scored, tmp_path, capsys):
    table = pacsv.read_csv(scored["rows"])
    ids = [str(1000 + i) for i in range(len(table))]
    ids[400] = "007"  # text: as a number it would lose its zeros
    with_ids = tmp_path / "rows.csv"
    pacsv.write_csv(table.set_column(table.column_names.index("id"), "id", pa.array(ids)), with_ids)
    out = tmp_path / "p.parquet"
    assert main(["predict", str(scored["model"]), str(with_ids), "--out", str(out), "--keep", "id", "--chunk-rows", "64"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"{with_ids}:") and "--keep id" in error and "write a .csv file" in error
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv"]
    assert main(["predict", str(scored["model"]), str(with_ids), "--out", str(out), "--keep", "id"]) == 0  # one chunk
    assert pq.read_table(out)["id"].to_pylist() == ids  # all text, as written


def test_text_in_the_first_chunk_keeps_a_column_text_in_every_chunk(scored, tmp_path):
    table = pacsv.read_csv(scored["rows"])
    ids = ["007"] + [f"{i}.50" for i in range(1, len(table))]  # later chunks alone would read as numbers (1.5)
    with_ids = tmp_path / "rows.csv"
    pacsv.write_csv(table.set_column(table.column_names.index("id"), "id", pa.array(ids)), with_ids)
    out = tmp_path / "p.parquet"
    assert main(["predict", str(scored["model"]), str(with_ids), "--out", str(out), "--keep", "id", "--chunk-rows", "64"]) == 0
    assert pq.read_table(out)["id"].to_pylist() == ids


def test_a_gzipped_file_is_scored_chunk_by_chunk_too(scored, tmp_path):
    packed = tmp_path / "rows.csv.gz"
    with open(scored["rows"], "rb") as source, gzip.open(packed, "wb") as target:
        shutil.copyfileobj(source, target)
    estimator = Estimator.load(scored["model"])
    chunks = list(estimator.predict_chunks(packed, chunk_rows=100))
    assert len(chunks) >= 5
    np.testing.assert_allclose(np.concatenate([p for _, p in chunks]), estimator.predict(scored["rows"]),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_chunk_rows_must_be_a_whole_number_of_rows(scored, value, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(scored["model"]), str(scored["rows"]), "--chunk-rows", value])
    assert stop.value.code == 2
    assert "--chunk-rows" in capsys.readouterr().err


def split_into_parts(source, folder, parts: int = 3) -> list:
    """``source``'s rows in ``parts`` CSV files with its header, named so that name order is row order."""
    table = pacsv.read_csv(source)
    folder.mkdir()
    bounds = np.linspace(0, len(table), parts + 1).astype(int)
    paths = [folder / f"part-{i:02d}.csv" for i in range(parts)]
    for path, start, stop in zip(paths, bounds[:-1], bounds[1:]):
        pacsv.write_csv(table.slice(start, stop - start), path)
    return paths


def test_a_glob_pattern_is_scored_as_its_files_one_after_the_other_in_name_order(scored, tmp_path, capsys):
    split_into_parts(scored["rows"], tmp_path / "parts")
    pattern = str(tmp_path / "parts" / "part-*.csv")
    estimator = Estimator.load(scored["model"])
    np.testing.assert_allclose(estimator.predict(pattern, chunk_rows=64), estimator.predict(scored["rows"]),
                               rtol=1e-5, atol=1e-7)
    assert main(["evaluate", str(scored["model"]), pattern, "--json"]) == 0
    assert main(["evaluate", str(scored["model"]), str(scored["rows"]), "--json"]) == 0
    by_pattern, whole = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert by_pattern["rows"] == whole["rows"] == scored["count"]
    assert by_pattern["auc"] == pytest.approx(whole["auc"], abs=1e-6)
    out = tmp_path / "p.csv"
    assert main(["predict", str(scored["model"]), pattern, "--out", str(out), "--keep", "id"]) == 0
    assert pacsv.read_csv(out)["id"].to_pylist() == [f"r{i}" for i in range(scored["count"])]


def test_an_error_in_a_later_file_of_a_pattern_names_that_file_and_its_line(scored, tmp_path, capsys):
    paths = split_into_parts(scored["rows"], tmp_path / "parts")
    lines = paths[1].read_text().splitlines(keepends=True)
    lines[5] = "1,2\n"
    paths[1].write_text("".join(lines))
    assert main(["predict", str(scored["model"]), str(tmp_path / "parts" / "*.csv"), "--out", str(tmp_path / "p.csv")]) == 2
    assert capsys.readouterr().err.startswith(f"{paths[1]}:6:")
    assert not (tmp_path / "p.csv").exists()
    assert main(["evaluate", str(scored["model"]), str(tmp_path / "none-*.csv")]) == 2
    assert "no file matches this pattern" in capsys.readouterr().err


def test_files_of_a_pattern_without_rows_are_left_out_with_a_note_as_spark_writes_empty_partitions(
        scored, tmp_path, capsys):
    """A header-only CSV, an empty .gz or a Parquet file of no rows among a pattern's files stopped train, predict
    and evaluate ("file has no data rows"); a truncated Parquet file was a traceback (a scale tester's finds)."""
    paths = split_into_parts(scored["rows"], tmp_path / "parts")
    header = paths[0].read_text().splitlines(keepends=True)[0]
    (tmp_path / "parts" / "part-00a.csv").write_text(header)  # a header alone, between two files
    (tmp_path / "parts" / "part-99.csv.gz").write_bytes(gzip.compress(b""))
    pattern = str(tmp_path / "parts" / "part-*")
    with pytest.warns(DataWarning, match=r"part-\*: 2 of its files have no data rows, left out: part-00a.csv, "
                                         r"part-99.csv.gz"):
        predictions = Estimator.load(scored["model"]).predict(pattern)
    np.testing.assert_allclose(predictions, Estimator.load(scored["model"]).predict(scored["rows"]), rtol=1e-5, atol=1e-7)
    out = tmp_path / "model"
    assert main(["train", "--train", pattern, "--out", str(out), "--model", "lr", "--epochs", "1", "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["rows"] + json.loads(
        (out / "metrics.json").read_text())["valid_rows"] == scored["count"]
    assert "2 of its files have no data rows, left out" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    pq.write_table(pa.table({"id": pa.array([], pa.string())}), empty / "a.parquet")
    assert main(["evaluate", str(scored["model"]), str(empty / "*.parquet")]) == 2
    assert "no file of this pattern has a data row (1 file(s))" in capsys.readouterr().err
    (empty / "b.parquet").write_bytes((empty / "a.parquet").read_bytes()[:20])
    pq.write_table(pacsv.read_csv(scored["rows"]), empty / "c.parquet")
    assert main(["predict", str(scored["model"]), str(empty / "*.parquet"), "--out", str(tmp_path / "p.csv")]) == 2
    assert capsys.readouterr().err.startswith(f"{empty / 'b.parquet'}: cannot read Parquet:")


def test_the_files_of_a_pattern_to_score_need_the_models_columns_not_the_same_columns(scored, tmp_path, capsys):
    """A part without the label, or with one more column, stopped predict: "its columns differ from those of ...",
    though the model reads neither (a scale tester's find); a part without a column the model reads still stops it."""
    paths = split_into_parts(scored["rows"], tmp_path / "parts")
    table = pacsv.read_csv(paths[1])
    pacsv.write_csv(table.drop_columns(["label"]).append_column("note", pa.array(["x"] * len(table))), paths[1])
    estimator = Estimator.load(scored["model"])
    np.testing.assert_allclose(estimator.predict(str(tmp_path / "parts" / "part-*.csv")),
                               estimator.predict(scored["rows"]), rtol=1e-5, atol=1e-7)
    read = next(spec.name for spec in estimator.encoder.fields)
    pacsv.write_csv(table.drop_columns([read]), paths[2])
    assert main(["predict", str(scored["model"]), str(tmp_path / "parts" / "part-*.csv"), "--out",
                 str(tmp_path / "p.csv")]) == 2
    assert capsys.readouterr().err == (f"{paths[2]}:1: lacks column(s) {read}, which the model reads (a file of "
                                       f"'{tmp_path / 'parts' / 'part-*.csv'}')\n")


def test_the_weights_of_a_pattern_to_evaluate_are_in_every_file_or_in_none(tmp_path, capsys):
    """One part without the weight column crashed in the join of weights, a traceback (a reviewer's find)."""
    table, _ = make_ctr_table(SyntheticSpec(rows=600, seed=3), part=0)
    table = table.append_column("w", pa.array(np.linspace(0.5, 2.0, table.num_rows)))
    Estimator(data={"weight": "w"}, model={"name": "fm", "embed_dim": 4}, training={"epochs": 1}).fit(
        table, out=tmp_path / "m", progress=False)
    (tmp_path / "parts").mkdir()
    pacsv.write_csv(table.slice(0, 300), tmp_path / "parts" / "a.csv")
    pacsv.write_csv(table.slice(300).drop_columns(["w"]), tmp_path / "parts" / "b.csv")
    pattern = str(tmp_path / "parts" / "*.csv")
    assert main(["evaluate", str(tmp_path / "m"), pattern]) == 2
    assert capsys.readouterr().err == (f"{tmp_path / 'parts' / 'b.csv'}:1: lacks column 'w', which a.csv of "
                                       f"'{pattern}' holds: the files of a pattern hold it all or none\n")


def test_a_validation_set_written_as_parts_is_given_as_a_pattern_as_the_training_files_are(scored, tmp_path):
    """--valid 'valid/part-*' was "--valid file not found" (a scale tester's Spark output)."""
    split_into_parts(scored["rows"], tmp_path / "parts")
    whole, parts = tmp_path / "whole", tmp_path / "from-parts"
    common = ["--train", str(scored["rows"]), "--model", "lr", "--epochs", "2", "--quiet"]
    assert main(["train", *common, "--valid", str(scored["rows"]), "--out", str(whole)]) == 0
    assert main(["train", *common, "--valid", str(tmp_path / "parts" / "part-*.csv"), "--out", str(parts)]) == 0
    by_parts, by_file = (json.loads((out / "metrics.json").read_text()) for out in (parts, whole))
    assert by_parts["valid_rows"] == by_file["valid_rows"] == scored["count"]
    assert by_parts["best_valid"]["auc"] == pytest.approx(by_file["best_valid"]["auc"], abs=1e-6)
    assert [Path(f["path"]).name for f in by_parts["data"]["valid"]] == ["part-00.csv", "part-01.csv", "part-02.csv"]


def test_the_output_file_gets_the_mode_a_new_file_gets_or_the_mode_of_the_file_it_replaces(scored, tmp_path):
    saved = os.umask(0o022)
    try:
        assert main(["predict", str(scored["model"]), str(scored["rows"]), "--out", str(tmp_path / "new.csv")]) == 0
        kept = tmp_path / "kept.parquet"
        kept.write_text("old")
        kept.chmod(0o640)
        assert main(["predict", str(scored["model"]), str(scored["rows"]), "--out", str(kept)]) == 0
    finally:
        os.umask(saved)
    assert stat.S_IMODE((tmp_path / "new.csv").stat().st_mode) == 0o644
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and len(pq.read_table(kept)) == scored["count"]


def test_sigterm_ends_predict_as_ctrl_c_does_leaving_no_partial_file(scored, tmp_path, monkeypatch):
    original = Estimator.predict_chunks

    def terminated_after_the_first_chunk(self, *args, **kwargs):
        for number, chunk in enumerate(original(self, *args, **kwargs)):
            if number == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            yield chunk

    monkeypatch.setattr(Estimator, "predict_chunks", terminated_after_the_first_chunk)
    out = tmp_path / "new" / "deeper" / "p.csv"
    (tmp_path / "old.csv").write_text("yesterday\n")
    for target in (out, tmp_path / "old.csv"):
        with pytest.raises(SystemExit) as stop:
            main(["predict", str(scored["model"]), str(scored["rows"]), "--out", str(target), "--chunk-rows", "64"])
        assert stop.value.code == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.csv"]  # no .part, no folder made for the output
    assert (tmp_path / "old.csv").read_text() == "yesterday\n"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the command's handler is gone with it


def test_a_parquet_file_of_one_row_group_is_scored_chunk_rows_at_a_time(scored, tmp_path):
    table = pacsv.read_csv(scored["rows"])
    one_group = tmp_path / "rows.parquet"
    pq.write_table(table, one_group, row_group_size=10**6)
    assert pq.ParquetFile(one_group).num_row_groups == 1
    estimator = Estimator.load(scored["model"])
    chunks = list(estimator.predict_chunks(one_group, chunk_rows=100))
    assert [frame.num_rows for frame, _ in chunks] == [100] * 6
    assert [frame.first_line for frame, _ in chunks] == [1, 101, 201, 301, 401, 501]
    np.testing.assert_allclose(np.concatenate([p for _, p in chunks]), estimator.predict(scored["rows"]),
                               rtol=1e-5, atol=1e-7)


def test_parquet_output_gathers_small_chunks_into_large_row_groups(scored, tmp_path):
    out = tmp_path / "p.parquet"
    assert main(["predict", str(scored["model"]), str(scored["rows"]), "--out", str(out), "--chunk-rows", "20"]) == 0
    assert pq.ParquetFile(out).num_row_groups == 1 and len(pq.read_table(out)) == scored["count"]


def test_a_kept_column_empty_in_a_whole_chunk_keeps_its_type_and_a_refusal_names_the_row(scored, tmp_path, capsys):
    table = pacsv.read_csv(scored["rows"])
    ids = [str(1000 + i) for i in range(len(table))]
    ids[200:300] = [""] * 100  # whole chunks of nothing
    with_gaps = tmp_path / "gaps.csv"
    pacsv.write_csv(table.set_column(table.column_names.index("id"), "id", pa.array(ids)), with_gaps)
    out = tmp_path / "p.parquet"
    assert main(["predict", str(scored["model"]), str(with_gaps), "--out", str(out), "--keep", "id", "--chunk-rows", "16"]) == 0
    scored_ids = pq.read_table(out)["id"]
    assert scored_ids.type == pa.int64() and scored_ids.null_count == 100
    capsys.readouterr()
    ids[450] = "x-9"  # line 452 of the file
    pacsv.write_csv(table.set_column(table.column_names.index("id"), "id", pa.array(ids)), with_gaps)
    assert main(["predict", str(scored["model"]), str(with_gaps), "--out", str(out), "--keep", "id", "--chunk-rows", "64"]) == 2
    assert capsys.readouterr().err.startswith(f"{with_gaps}:452: --keep id:")


def test_unseen_values_are_noted_over_the_first_rows_whatever_the_chunks(scored, tmp_path):
    table = pacsv.read_csv(scored["rows"])
    name = "C1"
    values = [None if v is None else str(v) for v in table[name].to_pylist()]
    values[100:] = [f"never-{i}" for i in range(len(values) - 100)]  # from the second chunk on
    drifted = tmp_path / "drifted.csv"
    pacsv.write_csv(table.set_column(table.column_names.index(name), name, pa.array(values, pa.string())), drifted)
    for chunk_rows in (50, 10**6):
        with pytest.warns(DataWarning, match=f"column '{name}': .* not seen in training"):
            Estimator.load(scored["model"]).predict(drifted, chunk_rows=chunk_rows)


@pytest.mark.parametrize("chunk_rows", [0, -1, "7", 2.5, True])
def test_chunk_rows_in_python_is_a_whole_number_of_rows_too(scored, chunk_rows):
    with pytest.raises(ConfigError, match="chunk_rows"):
        Estimator.load(scored["model"]).predict(scored["rows"], chunk_rows=chunk_rows)


def test_a_file_whose_first_row_follows_many_blank_lines_holds_rows_and_a_folders_hint_names_its_ending(tmp_path):
    from deepfm.data.formats import _pattern_hint
    from deepfm.data.readers import ChunkedFile

    path = tmp_path / "late.csv"
    path.write_text("label,x\n" + "\n" * 70_000 + "1,a\n")  # past the first 64 KiB
    assert ChunkedFile(path).holds_rows()
    folder = tmp_path / "days"
    folder.mkdir()
    for day in (1, 2, 3):
        (folder / f"clicks.2024-01-0{day}.csv").write_text("label\n1\n")
    assert _pattern_hint(folder).endswith(f"'{folder}/*.csv'")
