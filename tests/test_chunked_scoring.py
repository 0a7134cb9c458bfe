"""``predict`` and ``evaluate`` read a file a chunk at a time: the same predictions and metrics as the file read
whole, errors at the file's own lines, and no output file from a run that fails."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from deepfm import Estimator
from deepfm.cli import main
from deepfm.data.synthetic import SyntheticSpec, make_ctr_table

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
