"""A stable, vectorised string hash (64-bit FNV-1a) for hashed vocabularies.

Stable across processes, platforms and library versions, so a saved model keeps its
meaning; simple enough for a non-Python service to reproduce.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)


def fnv1a64_unique(strings: pa.Array) -> np.ndarray:
    """FNV-1a of each UTF-8 string of a string array (one numpy pass per byte position). Shape (n,), uint64."""
    strings = pc.cast(strings, pa.large_string())
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)[strings.offset : strings.offset + len(strings) + 1]
    data = np.frombuffer(strings.buffers()[2], dtype=np.uint8) if strings.buffers()[2] is not None else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    hashes = np.full(len(strings), FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for position in range(int(lengths.max()) if len(lengths) else 0):
            active = lengths > position
            byte = data[starts[active] + position].astype(np.uint64)
            hashes[active] = (hashes[active] ^ byte) * FNV_PRIME
    return hashes


def hash_bucket(strings: pa.Array, buckets: int) -> np.ndarray:
    """Bucket in ``[0, buckets)`` of every value of a string array (nulls get 0; mask them yourself)."""
    encoded = pc.dictionary_encode(strings).combine_chunks() if isinstance(strings, pa.ChunkedArray) else pc.dictionary_encode(strings)
    unique = fnv1a64_unique(encoded.dictionary) % np.uint64(buckets)
    indices = pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False)
    if len(unique) == 0:
        return np.zeros(len(strings), dtype=np.int64)
    return unique[indices].astype(np.int64)
