"""Deterministic benchmark data in three shapes, from ``deepfm.data.synthetic`` (a hidden FM-like
model, so labels carry real signal).

    python benchmarks/make_data.py [DIR] [--shape criteo|longtail|onehot] [--rows N] [--test-rows N] [--parquet]

- ``criteo`` (the default, DIR itself): 13 numeric + 26 categorical fields (header
  ``label,I1..I13,C1..C26``; empty = missing); 1M training rows hold ~978k distinct categorical ids
  in fields of 681 to 204,538 values.
- ``longtail`` (DIR/longtail): Criteo's 39 columns with a long tail: the 13 integer columns are read
  as categorical (as ``deepfm train`` does without ``--numeric``), the 26 string fields share 30M
  possible ids, so most ids of 300k rows occur once or twice.
- ``onehot`` (DIR/onehot): Frappe/MovieLens-sized one-hot data, 10 categorical fields over ~5.4k
  ids (9 string fields and one small integer field read as categorical), 288k training rows.

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


# shape: (spec, training rows, test rows, whether the I columns are numeric, sub-folder)
SHAPES = {
    "criteo": (criteo_spec(), 1_000_000, 100_000, True, ""),
    "longtail": (SyntheticSpec(categorical=26, numeric=13, vocabulary=30_000_000, seed=1), 300_000, 50_000, False,
                 "longtail"),
    "onehot": (SyntheticSpec(categorical=9, numeric=1, vocabulary=5_400, seed=2), 288_000, 30_000, False, "onehot"),
}


def shape_dir(directory: Path, shape: str) -> Path:
    """Where ``shape``'s train.csv and test.csv live under the benchmark data folder."""
    return directory / SHAPES[shape][4]


def write_split(directory: Path, name: str, rows: int, part: int, parquet: bool, spec: SyntheticSpec) -> Path:
    path = directory / f"{name}.csv"
    if path.exists() and (not parquet or path.with_suffix(".parquet").exists()):
        return path
    table, _ = make_ctr_table(spec, rows=rows, part=part)
    pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="needed"))
    if parquet:
        pq.write_table(table, path.with_suffix(".parquet"))
    return path


def make_data(directory: Path, rows: int | None = None, test_rows: int | None = None, parquet: bool = False,
              vocabulary: int | None = None, shape: str = "criteo") -> tuple[Path, Path]:
    """(train.csv, test.csv) of ``shape`` under ``directory``, generated once."""
    spec, default_rows, default_test_rows, _, _ = SHAPES[shape]
    if vocabulary is not None:
        spec = criteo_spec(vocabulary) if shape == "criteo" else SyntheticSpec(**{**spec.__dict__, "vocabulary": vocabulary})
    directory = shape_dir(directory, shape)
    directory.mkdir(parents=True, exist_ok=True)
    return (write_split(directory, "train", rows or default_rows, 0, parquet, spec),
            write_split(directory, "test", test_rows or default_test_rows, 1, parquet, spec))


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
    parser.add_argument("--shape", choices=sorted(SHAPES), default="criteo")
    parser.add_argument("--rows", type=int, help="training rows (default: the shape's)")
    parser.add_argument("--test-rows", type=int)
    parser.add_argument("--vocabulary", type=int, help="distinct ids over the categorical fields (default: the shape's)")
    parser.add_argument("--parquet", action="store_true", help="also write .parquet copies")
    parser.add_argument("--big", type=int, default=0, help="also write big-BIG.csv with BIG rows (for streaming)")
    args = parser.parse_args()
    if args.big:
        path = write_big(Path(args.dir), args.big, args.vocabulary or 1_000_000)
        print(f"{path}  {path.stat().st_size / 1e6:.1f} MB")
        return
    for path in make_data(Path(args.dir), args.rows, args.test_rows, args.parquet, args.vocabulary, args.shape):
        print(f"{path}  {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
