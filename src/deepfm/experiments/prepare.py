"""Prepare the shared real datasets for ``deepfm compare`` (splits and joins only; values unchanged).

    python -m deepfm.experiments.prepare DATASETS_DIR WORK_DIR

writes into WORK_DIR (never into the project: the licences forbid redistribution):

- ``ipinyou/{train,valid}.csv``: train.csv split 90/10 by ``numpy.random.default_rng(2026).permutation``
  (as the datasets README says); test.csv is used as shipped.
- ``movielens/{train,valid,test}_{binary,rating}.csv``: GroupLens' u1.base / u1.test joined with
  u.user (age, gender, occupation, zip) and u.item (release year, genres as a ``|`` multi-valued
  field); valid = 10% of u1.base by the same permutation rule. ``binary``: label = rating ≥ 4.
- ``criteo/{train,valid,test}.tsv``: train_head_1000.tsv rows 1–800, 801–900, 901–1000 (chronological).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

SEED = 2026


def split_rows(n: int, valid_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, valid rows) in permutation order: the Frappe split's rule."""
    perm = np.random.default_rng(SEED).permutation(n)
    n_train = int(n * (1 - valid_fraction))
    return perm[:n_train], perm[n_train:]


def _read_strings(path: Path, names: list[str] | None = None, delimiter: str = ",") -> pa.Table:
    """Every column as a string, no NA detection (``null``, ``Na``, ``09`` stay as written)."""
    read = pacsv.ReadOptions(column_names=names, encoding="latin-1") if names else pacsv.ReadOptions()
    if names is None:
        header = path.open(encoding="latin-1").readline().rstrip("\n").split(delimiter)
    else:
        header = names
    convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in header}, strings_can_be_null=False,
                                   quoted_strings_can_be_null=False)
    return pacsv.read_csv(path, read_options=read, parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=delimiter == "," and '"'),
                          convert_options=convert)


def prepare_ipinyou(source: Path, out: Path) -> None:
    table = _read_strings(source / "train.csv")
    table = table.set_column(0, "label", pc.cast(table.column("label"), pa.int64()))
    train, valid = split_rows(table.num_rows)
    out.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(table.take(train), out / "train.csv")
    pacsv.write_csv(table.take(valid), out / "valid.csv")


def _movielens_table(source: Path, ratings: str) -> pa.Table:
    data = _read_strings(source / ratings, ["user", "item", "rating", "time"], "\t")
    users = _read_strings(source / "u.user", ["user", "age", "gender", "occupation", "zip"], "|")
    genres = [line.split("|")[0] for line in (source / "u.genre").read_text(encoding="latin-1").splitlines() if line]
    items = _read_strings(source / "u.item", ["item", "title", "release", "video", "url", *genres], "|")
    flags = np.stack([items.column(g).to_numpy(zero_copy_only=False) == "1" for g in genres], axis=1)
    item_genres = ["|".join(g for g, on in zip(genres, row) if on) for row in flags]
    year = pc.utf8_slice_codeunits(items.column("release"), -4)
    items = pa.table({"item": items.column("item"), "year": year, "genres": item_genres})
    data = data.append_column("row", pa.array(np.arange(data.num_rows)))
    joined = data.join(users, "user").join(items, "item").sort_by("row")  # joins do not keep row order
    return joined.select(["rating", "user", "item", "age", "gender", "occupation", "zip", "year", "genres"])


def prepare_movielens(source: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    base, test = _movielens_table(source, "u1.base"), _movielens_table(source, "u1.test")
    train_rows, valid_rows = split_rows(base.num_rows)
    for name, table in (("train", base.take(train_rows)), ("valid", base.take(valid_rows)), ("test", test)):
        rating = pc.cast(table.column("rating"), pa.int64())
        features = table.drop(["rating"])
        pacsv.write_csv(features.add_column(0, "label", rating), out / f"{name}_rating.csv")
        binary = pc.cast(pc.greater_equal(rating, 4), pa.int64())
        pacsv.write_csv(features.add_column(0, "label", binary), out / f"{name}_binary.csv")


def prepare_criteo(source: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = (source / "train_head_1000.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    for name, (start, stop) in (("train", (0, 800)), ("valid", (800, 900)), ("test", (900, 1000))):
        (out / f"{name}.tsv").write_text("".join(lines[start:stop]), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    datasets, work = Path(args[0]), Path(args[1])
    prepare_ipinyou(datasets / "ipinyou", work / "ipinyou")
    prepare_movielens(datasets / "movielens-100k", work / "movielens")
    prepare_criteo(datasets / "criteo", work / "criteo")
    print(f"prepared {work}/ipinyou, {work}/movielens, {work}/criteo", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
