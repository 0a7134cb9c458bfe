"""The FM paper's MovieLens features (Rendle 2010, figure 1), as Parquet files that ``deepfm train`` reads.

Each rating becomes x = user (one-hot), movie (one-hot), the other movies the user rated (multi-valued,
each weighted 1/count), the time (days since the first rating) and the last movie the user rated before
this one (one-hot); the label is the rating. The "last movie" comes from the training ratings. The "rated" set
does too by default (``--rated train``), so a training row's set holds its own movie and a test row's never does;
``--rated all`` is the paper's figure and SVD++'s implicit feedback: every movie the user rated, the test split's
too (which movies, never their ratings), the same set on all of a user's rows. (Parquet: a user's "rated" cell,
the same on each of their rows, is stored once; as CSV the training file would take 200 MB.)

    python examples/movielens_fm_paper.py MOVIELENS_100K_DIR OUT_DIR [--split u1] [--rated train|all]
    deepfm train --train OUT_DIR/train.parquet --label rating --categorical user,item,last --multi rated \\
        --numeric days --model fm --solver mcmc --out runs/fm-paper    # Bayesian FM; leave out --solver: gradient
    deepfm evaluate runs/fm-paper OUT_DIR/test.parquet

Fewer features: ``--ignore days,last`` (and those names out of --categorical and --numeric), ``--categorical
user,item --ignore rated,days,last`` the ids alone. The README's Results table has each set's test RMSE.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

COLUMNS = ["user", "item", "rating", "timestamp"]


def read_ratings(path: Path) -> dict[str, np.ndarray]:
    """GroupLens' tab-separated ``user item rating timestamp`` lines, as int64 columns."""
    table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=COLUMNS),
                           parse_options=pacsv.ParseOptions(delimiter="\t"))
    return {name: table[name].to_numpy().astype(np.int64) for name in COLUMNS}


def rated_cells(ratings: dict[str, np.ndarray]) -> dict[int, str]:
    """Each user's movies in ``ratings`` as one multi-valued cell, ``item:1/count`` joined by ``|``."""
    order = np.argsort(ratings["user"], kind="stable")
    users, items = ratings["user"][order], ratings["item"][order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    cells = {}
    for user, movies in zip(users[starts], np.split(items, starts[1:])):  # one cell per user (943), not per row
        weight = f"{1 / len(movies):.4g}"
        cells[int(user)] = "|".join(f"{movie}:{weight}" for movie in movies)
    return cells


def last_movie(train: dict[str, np.ndarray], users: np.ndarray, times: np.ndarray) -> pa.Array:
    """For each (user, time), the movie that user rated last in training strictly before that time (null: none)."""
    span = int(max(train["timestamp"].max(), times.max())) + 1
    keys = train["user"] * span + train["timestamp"]
    order = np.argsort(keys, kind="stable")
    keys, movies, owners = keys[order], train["item"][order], train["user"][order]
    before = np.searchsorted(keys, users * span + times, side="left") - 1
    found = (before >= 0) & (owners[np.maximum(before, 0)] == users)
    return pa.array(movies[np.maximum(before, 0)], mask=~found)


def features(ratings: dict[str, np.ndarray], train: dict[str, np.ndarray], cells: dict[int, str],
             first_time: int) -> pa.Table:
    return pa.table({
        "rating": ratings["rating"],
        "user": ratings["user"],
        "item": ratings["item"],
        "rated": pa.array([cells.get(int(user)) for user in ratings["user"]], pa.string()),
        "days": (ratings["timestamp"] - first_time) / 86_400.0,
        "last": last_movie(train, ratings["user"], ratings["timestamp"]),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("movielens", type=Path, help="the ml-100k folder (u1.base, u1.test, ...)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--split", default="u1", help="GroupLens' split: u1 ... u5, ua, ub")
    parser.add_argument("--rated", choices=["train", "all"], default="train",
                        help="the movies of the 'rated' set: the training ratings' (default), or every rating's")
    args = parser.parse_args()
    train = read_ratings(args.movielens / f"{args.split}.base")
    test = read_ratings(args.movielens / f"{args.split}.test")
    rated = train if args.rated == "train" else {name: np.concatenate([train[name], test[name]]) for name in COLUMNS}
    cells, first_time = rated_cells(rated), int(train["timestamp"].min())
    args.out.mkdir(parents=True, exist_ok=True)
    for name, ratings in (("train", train), ("test", test)):
        pq.write_table(features(ratings, train, cells, first_time), args.out / f"{name}.parquet")
        print(f"{args.out / f'{name}.parquet'}: {len(ratings['rating']):,} ratings")


if __name__ == "__main__":
    main()
