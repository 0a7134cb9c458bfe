"""Deterministic Criteo-shaped benchmark data: 13 numeric + 26 categorical fields.

    python benchmarks/make_data.py [DIR] [--rows 1000000] [--test-rows 100000] [--parquet]

Writes DIR/train.csv and DIR/test.csv (header ``label,I1..I13,C1..C26``; empty = missing)
from ``deepfm.data.synthetic`` (a hidden FM-like model, so labels carry real signal):
1M training rows hold ~978k distinct categorical ids in fields of 681 to 204,538 values.
The same arguments always give the same bytes; existing files are kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from deepfm.data.synthetic import SyntheticSpec, make_ctr_table

DEFAULT_DIR = Path(__file__).resolve().parent / ".data"


def criteo_spec(vocabulary: int = 1_000_000) -> SyntheticSpec:
    return SyntheticSpec(categorical=26, numeric=13, vocabulary=vocabulary, seed=0)


def write_split(directory: Path, name: str, rows: int, part: int, parquet: bool, vocabulary: int) -> Path:
    path = directory / f"{name}.csv"
    if path.exists() and (not parquet or path.with_suffix(".parquet").exists()):
        return path
    table, _ = make_ctr_table(criteo_spec(vocabulary), rows=rows, part=part)
    pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="needed"))
    if parquet:
        pq.write_table(table, path.with_suffix(".parquet"))
    return path


def make_data(directory: Path, rows: int = 1_000_000, test_rows: int = 100_000, parquet: bool = False,
              vocabulary: int = 1_000_000) -> tuple[Path, Path]:
    """(train.csv, test.csv) in ``directory``, generated once."""
    directory.mkdir(parents=True, exist_ok=True)
    return (write_split(directory, "train", rows, 0, parquet, vocabulary),
            write_split(directory, "test", test_rows, 1, parquet, vocabulary))


def write_big(directory: Path, rows: int, vocabulary: int = 1_000_000, part_rows: int = 1_000_000) -> Path:
    """``big-ROWS.csv``: the same hidden model, written a million rows at a time (parts 100, 101, ...)
    so that generating it never holds more than one part in memory."""
    path = directory / f"big-{rows}.csv"
    if path.exists():
        return path
    partial = path.with_suffix(".partial")
    writer = None
    for number, start in enumerate(range(0, rows, part_rows)):
        table, _ = make_ctr_table(criteo_spec(vocabulary), rows=min(part_rows, rows - start), part=100 + number)
        if writer is None:
            writer = pacsv.CSVWriter(partial, table.schema, write_options=pacsv.WriteOptions(quoting_style="needed"))
        writer.write_table(table)
    writer.close()
    partial.rename(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", default=str(DEFAULT_DIR))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--test-rows", type=int, default=100_000)
    parser.add_argument("--vocabulary", type=int, default=1_000_000)
    parser.add_argument("--parquet", action="store_true", help="also write .parquet copies")
    parser.add_argument("--big", type=int, default=0, help="also write big-BIG.csv with BIG rows (for streaming)")
    args = parser.parse_args()
    if args.big:
        path = write_big(Path(args.dir), args.big, args.vocabulary)
        print(f"{path}  {path.stat().st_size / 1e6:.1f} MB")
        return
    for path in make_data(Path(args.dir), args.rows, args.test_rows, args.parquet, args.vocabulary):
        print(f"{path}  {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
