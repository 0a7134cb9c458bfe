"""examples/: the scripts the README points to run, and what they write trains."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from deepfm import Estimator

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def movielens(tmp_path):
    """GroupLens-shaped u1.base / u1.test: user, item, rating, timestamp, tab-separated."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    for name, rows in (("u1.base", 400), ("u1.test", 100)):
        lines = [f"{rng.integers(1, 21)}\t{rng.integers(1, 41)}\t{rng.integers(1, 6)}\t{880_000_000 + rng.integers(0, 10**6)}"
                 for _ in range(rows)]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def test_the_fm_papers_movielens_features_are_built_from_the_training_ratings_alone(movielens, tmp_path):
    out = tmp_path / "features"
    subprocess.run([sys.executable, str(EXAMPLES / "movielens_fm_paper.py"), str(movielens), str(out)], check=True)
    train, test = pq.read_table(out / "train.parquet").to_pylist(), pq.read_table(out / "test.parquet").to_pylist()
    assert (len(train), len(test)) == (400, 100)
    base = [[int(v) for v in line.split("\t")] for line in (movielens / "u1.base").read_text().splitlines()]
    asked = [[int(v) for v in line.split("\t")] for line in (movielens / "u1.test").read_text().splitlines()]
    for row, (user, item, _, timestamp) in zip(test, asked):  # in the file's order, each with its own rating's time
        assert (row["user"], row["item"]) == (user, item)
        mine = sorted((t, i) for u, i, _, t in base if u == user)  # the user's training ratings, by time
        rated = row["rated"].split("|") if row["rated"] else []
        assert sorted(int(cell.split(":")[0]) for cell in rated) == sorted(i for _, i in mine)  # weighted 1/count
        assert all(float(cell.split(":")[1]) == pytest.approx(1 / len(mine), rel=1e-3) for cell in rated)
        earlier = [(t, i) for t, i in mine if t < timestamp]  # the last movie rated in training before this rating
        assert row["last"] == (earlier[-1][1] if earlier else None) or (earlier and row["last"] in
                                                                        [i for t, i in earlier if t == earlier[-1][0]])
    both = tmp_path / "both"  # --rated all: the paper's set, every movie the user rated in either file
    subprocess.run([sys.executable, str(EXAMPLES / "movielens_fm_paper.py"), str(movielens), str(both), "--rated", "all"],
                   check=True)
    for row in pq.read_table(both / "test.parquet").to_pylist()[:20]:
        movies = [i for u, i, _, _ in base + asked if u == row["user"]]
        assert sorted(int(cell.split(":")[0]) for cell in row["rated"].split("|")) == sorted(movies)
    model = Estimator(data={"label": "rating", "categorical": ["user", "item", "last"], "multi": ["rated"],
                            "numeric": ["days"]}, model={"name": "fm"}, training={"epochs": 1})
    model.fit(str(out / "train.parquet"), progress=False)
    assert model.evaluate(str(out / "test.parquet"))["rows"] == 100
