"""A frame's columns worked on side by side: the loop's results and the loop's first error, on the pool's
threads only for frames worth it."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

import deepfm.data.columns as columns
from deepfm.data.columns import MIN_ROWS, each_column
from deepfm.runtime import preserved


def test_big_frames_run_on_the_pool_and_give_results_in_column_order(monkeypatch):
    monkeypatch.setattr(columns, "_threads", lambda: 2)
    threads = set()

    def work(column: int) -> int:
        threads.add(threading.current_thread().name)
        time.sleep(0.01 * (5 - column))  # the first columns end last
        return column * column

    assert each_column(work, range(5), MIN_ROWS) == [0, 1, 4, 9, 16]
    assert threads and all(name.startswith("deepfm-columns") for name in threads)


@pytest.mark.parametrize("rows, side_by_side, cores", [(MIN_ROWS - 1, True, 2), (MIN_ROWS, False, 2), (MIN_ROWS, True, 1)])
def test_small_frames_one_thread_or_training_alongside_stay_on_the_callers_thread(monkeypatch, rows, side_by_side, cores):
    monkeypatch.setattr(columns, "_threads", lambda: cores)
    names = each_column(lambda _: threading.current_thread().name, range(3), rows, side_by_side)
    assert names == [threading.current_thread().name] * 3


def test_the_first_error_in_column_order_is_raised_once_every_column_has_ended(monkeypatch):
    monkeypatch.setattr(columns, "_threads", lambda: 2)
    ended = []

    def work(column: int) -> None:
        time.sleep({1: 0.2, 3: 0.05}.get(column, 0.0))  # column 3 fails first; column 1 is first in order
        ended.append(column)
        if column in (1, 3):
            raise ValueError(f"column {column}")

    with pytest.raises(ValueError, match="column 1"):
        each_column(work, range(4), MIN_ROWS)
    assert sorted(ended) == [0, 1, 2, 3]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_works_on_columns_with_its_own_pool(monkeypatch, in_forked_child):
    monkeypatch.setattr(columns, "_threads", lambda: 2)
    assert each_column(lambda c: c + 1, range(4), MIN_ROWS) == [1, 2, 3, 4]  # the parent's pool started
    in_forked_child(lambda: each_column(lambda c: c + 1, range(4), MIN_ROWS) == [1, 2, 3, 4])


def test_the_pool_follows_torchs_thread_count_and_work_on_it_calls_each_column_one_column_after_the_other():
    def inner(column: int) -> set[str]:
        return set(each_column(lambda _: threading.current_thread().name, range(3), MIN_ROWS))

    with preserved():
        torch.set_num_threads(1)
        assert each_column(lambda _: threading.current_thread().name, range(3), MIN_ROWS) == ["MainThread"] * 3
        torch.set_num_threads(2)
        names = each_column(inner, range(4), MIN_ROWS)
    assert all(len(n) == 1 and next(iter(n)).startswith("deepfm-columns") for n in names)  # each on its own thread
