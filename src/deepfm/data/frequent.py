"""Which values of a hashed field were frequent in training, without storing the values.

A hashed field keeps no vocabulary, yet the id rules say that values rarer than ``--min-count``
(and values never seen) get the unseen id 1. ``FrequentSet`` remembers the frequent values as a
Bloom filter over their FNV-1a 64 hashes: ``BITS_PER_VALUE`` bits per value and ``HASHES`` probes,
so about 1% of rare or unseen values still get a bucket (never the reverse: a frequent value is
always found). Probe i of a value with hash h sets bit (lo + i·hi) mod m, with lo = h mod 2³²,
hi = (h >> 32) | 1 and m the number of bits; bit p is bit p mod 8 (least significant first) of
byte p >> 3. Saved as base64 in ``features.json`` (~1.7 bytes per frequent value).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pyarrow as pa

from deepfm.data.hashing import fnv1a64_unique

BITS_PER_VALUE = 10
HASHES = 7


class FrequentSet:
    def __init__(self, bits: np.ndarray, hashes: int = HASHES):
        self.bits = np.asarray(bits, dtype=np.uint8)  # (m / 8,) packed, little bit order
        self.hashes = int(hashes)

    @classmethod
    def of(cls, values: pa.Array) -> "FrequentSet":
        """The set of ``values`` (distinct strings)."""
        size = max(64, -(-BITS_PER_VALUE * len(values) // 8) * 8)
        bits = np.zeros(size, dtype=bool)
        bits[_probes(fnv1a64_unique(values), size, HASHES).ravel()] = True
        return cls(np.packbits(bits, bitorder="little"), HASHES)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """Whether each value, given by its FNV-1a 64 hash, may be in the set. Shape (n,), bool."""
        probes = _probes(hashes, len(self.bits) * 8, self.hashes)
        return ((self.bits[probes >> 3] >> (probes & 7).astype(np.uint8)) & 1).astype(bool).all(axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {"bits": base64.b64encode(self.bits.tobytes()).decode("ascii"), "hashes": self.hashes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FrequentSet":
        return cls(np.frombuffer(base64.b64decode(data["bits"]), dtype=np.uint8), int(data["hashes"]))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FrequentSet) and self.hashes == other.hashes and np.array_equal(self.bits, other.bits)

    def __repr__(self) -> str:
        return f"FrequentSet({len(self.bits) * 8} bits, {self.hashes} hashes)"


def _probes(hashes: np.ndarray, size: int, count: int) -> np.ndarray:
    """Bit positions probed for each hash, shape (n, count)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    low = hashes & np.uint64(0xFFFFFFFF)
    high = (hashes >> np.uint64(32)) | np.uint64(1)
    steps = np.arange(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return ((low[:, None] + steps[None, :] * high[:, None]) % np.uint64(size)).astype(np.int64)
