"""benchmarks/accuracy.py: the click suites made from MovieLens ratings (AutoInt/AFN's binarisation)."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import accuracy  # noqa: E402


def test_a_rating_of_four_or_more_is_a_click_two_or_less_is_not_and_three_is_dropped():
    ratings = pa.table({"user": ["a", "b", "c", "d", "e"], "label": [5.0, 4.0, 3.0, 2.0, 1.0]})

    clicks = accuracy.as_clicks(ratings)

    assert clicks["user"].to_pylist() == ["a", "b", "d", "e"]
    assert clicks["label"].to_pylist() == [1, 1, 0, 0]


def test_a_click_suite_keeps_the_ratings_splits_and_features_and_is_scored_by_auc():
    split = pa.table({"user": ["a", "b", "c"], "genres": ["x|y", "y", "x"], "label": [4.0, 3.0, 1.0]})
    ratings = accuracy.Suite(split, split, split, {"task": "regression", "categorical": ["user"], "multi": ["genres"]},
                             "rmse", {"fm": "RMSE 0.9"})

    suite = accuracy.clicks(ratings)

    assert suite.metric == "auc" and suite.references == {}
    assert suite.data == {"task": "binary", "categorical": ["user"], "multi": ["genres"]}
    assert all(part["user"].to_pylist() == ["a", "c"] for part in (suite.train, suite.valid, suite.test))


def test_the_run_line_shows_the_data_rules_statistic():
    ids = {"rows": 1000, "occurrences": 10000, "distinct": 100, "ids_per_row": 0.1, "shape": "recurring ids"}

    assert accuracy.ids_text(ids) == "  ids 100 in 1,000 rows: 0.1000 per row (10 rows per id), recurring ids"
    assert accuracy.ids_text(None) == ""


def test_the_candidate_table_has_a_row_per_candidate_and_seed_when_run_over_seeds():
    def run(candidate, seed, auc):
        return {"candidate": candidate, "seed": seed, "dataset": "frappe", "model": "deepfm", "metric": "auc",
                "valid": {"auc": auc}}

    table = accuracy.candidate_table([run("defaults", 2026, 0.95), run("defaults", 7, 0.94), run("recipe", 2026, 0.96)])

    assert "| defaults s2026 | 0.9500 |" in table
    assert "| defaults s7 | 0.9400 |" in table
    assert "| recipe s2026 | 0.9600 |" in table


def test_the_candidate_table_names_a_candidate_alone_when_run_once():
    table = accuracy.candidate_table([{"candidate": "defaults", "seed": None, "dataset": "adult", "model": "fm",
                                       "metric": "auc", "valid": {"auc": 0.9}}])

    assert "| defaults | 0.9000 |" in table
