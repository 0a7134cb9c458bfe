"""At most ``limit`` values spread evenly over a stream of chunks, for quantiles of a column larger than memory.

The first million values of a file sorted by time (a Criteo day, a log) are its first hour: quantile edges from them
describe the start of the file only. Here the value at position i of the stream (its finite values, in file order) is
kept while i is a multiple of the stride, and the stride doubles, halving what is kept, whenever more than ``limit``
values are held: the sample is every stride-th value of the whole stream, the same however the stream was chunked,
and every value where the stream holds at most ``limit``.
"""

from __future__ import annotations

import numpy as np


class EvenSample:
    """Every ``stride``-th value of the stream so far (``add``), at most ``limit`` of them (``values``)."""

    def __init__(self, limit: int = 1_000_000):
        self.limit, self.stride, self.seen = limit, 1, 0
        self.kept: list[np.ndarray] = []
        self.size = 0

    def add(self, values: np.ndarray) -> None:
        first = (-self.seen) % self.stride  # the chunk's first position that is a multiple of the stride
        taken = values[first :: self.stride]
        self.seen += len(values)
        self.kept.append(taken)
        self.size += len(taken)
        while self.size > self.limit:
            held = np.concatenate(self.kept)[::2]  # positions 0, s, 2s, ... → 0, 2s, 4s, ...
            self.stride *= 2
            self.kept, self.size = [held], len(held)

    def values(self) -> np.ndarray:
        return np.concatenate(self.kept) if self.kept else np.zeros(0)
