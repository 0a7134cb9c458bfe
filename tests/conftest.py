"""Shared fixtures: every data file a test reads is generated into ``tmp_path`` by the test itself."""

from __future__ import annotations

import csv
import gzip
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pyarrow.csv as pacsv
import pytest

from deepfm.data.formats import CRITEO_COLUMNS
from deepfm.data.synthetic import SyntheticSpec, make_ctr_table


def _write_rows(path: Path, header: Sequence[str] | None, rows: Sequence[Sequence[Any]], delimiter: str) -> Path:
    """Write delimited text; ``None`` becomes an empty field (a missing value)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        if header is not None:
            writer.writerow(header)
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])
    return path


@pytest.fixture
def in_forked_child() -> Callable[[Callable[[], bool]], None]:
    """``in_forked_child(check)``: run ``check`` in a forked child and fail unless it returns True within 60 s
    (a child waiting on threads of its parent, which it does not have, would hang)."""

    def run(check: Callable[[], bool]) -> None:
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            os._exit(0 if check() else 1)
        for _ in range(600):
            done, status = os.waitpid(child, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(status) == 0, "the check failed in the forked child"
                return
            time.sleep(0.1)
        os.kill(child, 9)
        os.waitpid(child, 0)
        pytest.fail("the forked child never finished")

    return run


@pytest.fixture
def write_text(tmp_path: Path) -> Callable[[str, str], Path]:
    """``write_text("a.libfm", "1 0:1\\n")`` -> path of that file under tmp_path (``.gz`` is gzipped)."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".gz":
            with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
                handle.write(text)
        else:
            path.write_text(text, encoding="utf-8", newline="")
        return path

    return write


@pytest.fixture
def write_table(tmp_path: Path) -> Callable[..., Path]:
    """``write_table("a.csv", {"label": [1, 0], "c": ["x", None]})`` -> a CSV (or TSV with ``delimiter="\\t"``)
    with a header row, one line per row, in column order."""

    def write(name: str, columns: Mapping[str, Sequence[Any]], delimiter: str = ",") -> Path:
        lengths = {len(v) for v in columns.values()}
        assert len(lengths) == 1, "all columns need the same length"
        rows = list(zip(*columns.values()))
        return _write_rows(tmp_path / name, list(columns), rows, delimiter)

    return write


@pytest.fixture
def write_criteo(tmp_path: Path) -> Callable[[str, Sequence[Sequence[Any]]], Path]:
    """Criteo raw TSV: no header, 40 tab-separated fields per row (label, I1..I13, C1..C26)."""

    def write(name: str, rows: Sequence[Sequence[Any]]) -> Path:
        for row in rows:
            assert len(row) == len(CRITEO_COLUMNS), "a Criteo row has 40 fields"
        return _write_rows(tmp_path / name, None, rows, "\t")

    return write


def _criteo_row(label: int, seed: int = 0, missing: Sequence[str] = ()) -> list[Any]:
    """One Criteo row: I_k = seed + k, C_k = 'c{k}_{seed % 3}'; names in ``missing`` are left empty."""
    row: list[Any] = [label]
    row += [None if f"I{k}" in missing else seed + k for k in range(1, 14)]
    row += [None if f"C{k}" in missing else f"c{k}_{seed % 3}" for k in range(1, 27)]
    return row


@pytest.fixture
def criteo_row() -> Callable[..., list[Any]]:
    """``criteo_row(label, seed=0, missing=("I3",))``: one 40-field Criteo row, I_k = seed + k, C_k = 'c{k}_{seed % 3}'."""
    return _criteo_row


@pytest.fixture
def ctr_csv(tmp_path: Path) -> Callable[..., Path]:
    """A synthetic Criteo-shaped CTR table (label, I1..I3, C1..C8) written as CSV.

    ``part`` draws a different sample from the same hidden model (0/1/2 for train/valid/test).
    """

    def write(name: str = "train.csv", rows: int = 300, seed: int = 0, part: int = 0) -> Path:
        table, _ = make_ctr_table(SyntheticSpec(rows=rows, seed=seed), part=part)
        path = tmp_path / name
        pacsv.write_csv(table, path)
        return path

    return write

