"""At most ``limit`` values spread evenly over a stream of chunks, for quantiles of a column larger than memory.

The first million values of a file sorted by time (a Criteo day, a log) are its first hour: quantile edges from them
describe the start of the file only. Here the value at position i of the stream (its finite values, in file order) is
kept while frac(i·φ) < 1/stride (φ the golden ratio, as Fibonacci hashing computes it in 64 bits), and the stride doubles,
halving what is kept, whenever more than ``limit`` values are held: about 1/stride of the whole stream, the same however
it was chunked, and every value where it holds at most ``limit``. Not every stride-th position: a file whose rows repeat
a pattern (24 hours an entity) kept hours 0, 8 and 16 alone at a stride of 8; the pairs (i mod 24, frac(i·φ)) are
spread evenly, so every hour keeps its share.
"""

from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2⁶⁴/φ, odd


def position_keys(first: int, count: int) -> np.ndarray:
    """frac(i·φ)·2⁶⁴ of the positions ``first`` .. ``first + count - 1`` (uint64, wrapping)."""
    with np.errstate(over="ignore"):
        return np.arange(first, first + count, dtype=np.uint64) * GOLDEN


class EvenSample:
    """The values of the stream so far whose position's key is under 2⁶⁴/``stride`` (``add``), at most ``limit`` of
    them (``values``)."""

    def __init__(self, limit: int = 1_000_000):
        self.limit, self.stride, self.seen = limit, 1, 0
        self.kept: list[tuple[np.ndarray, np.ndarray]] = []  # (values, their positions' keys), chunk by chunk
        self.size = 0

    def _under(self, keys: np.ndarray) -> np.ndarray:
        return keys < np.uint64(2**64 // self.stride) if self.stride > 1 else np.ones(len(keys), bool)

    def add(self, values: np.ndarray) -> None:
        keys = position_keys(self.seen, len(values))
        self.seen += len(values)
        keep = self._under(keys)
        self.kept.append((values[keep], keys[keep]))  # copies: a chunk's whole array is not held
        self.size += len(self.kept[-1][0])
        while self.size > self.limit:
            self.stride *= 2
            self.kept = [(v[under], k[under]) for v, k in self.kept for under in (self._under(k),)]
            self.size = sum(len(v) for v, _ in self.kept)

    def values(self) -> np.ndarray:
        return np.concatenate([v for v, _ in self.kept]) if self.kept else np.zeros(0)
