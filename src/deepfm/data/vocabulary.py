"""A field's vocabulary: its values in id order, held as one Arrow string array.

A Python list holds each value as its own object (about 60 bytes for a short string); one
Arrow array holds the bytes and an offset (about 12 bytes). For Criteo-sized fields (10⁶
values and more) that is the difference between ~60 MB and ~10 MB per million values. It
reads like a list of ``str``: ``len``, iteration, indexing, ``in``, ``index`` and ``==``.

``positions`` encodes whole columns. Arrow's ``index_in`` rebuilds its hash set from the
vocabulary on every call: fine for small vocabularies, but for a chunk of 65k rows it took
125-191 ms at a million values. From ``HASHED_LOOKUP_FROM`` values on, a sorted table of the
values' 64-bit hashes, built once, answers instead (21-24 ms there, 16-18 ms against 36-57 ms
at 300k values). Measured again on the long-tail benchmark's fields, chunks of 65k rows, CPU
time in one process: index_in 3.4 / 11.3 / 15.2 / 17.1 / 24.1 / 50.0 / 86.9 ms at 20k / 49k /
59k / 71k / 98k / 153k / 226k values, the hashed table 8.6 / 13.1 / 15.0 / 15.0 / 16.7 / 34.6 /
52.9 ms: they cross near 64k values. That table costs 12 more bytes per value (8 of hash, 4 of
position) for as long as the vocabulary lives.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfm.data.hashing import fnv1a64_unique

HASHED_LOOKUP_FROM = 65_536


class Vocabulary:
    def __init__(self, values: Iterable[str] | pa.Array | pa.ChunkedArray):
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if not isinstance(values, pa.Array):
            values = pa.array(list(values), pa.string())
        self.values: pa.Array = values if values.type == pa.string() else values.cast(pa.string())
        self._hash_index: tuple[np.ndarray, np.ndarray] | None = None  # (sorted hashes, their positions)

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[str]:
        return iter(self.values.to_pylist())

    def __getitem__(self, position: int | slice) -> str | list[str]:
        if isinstance(position, slice):
            return self.values[position].to_pylist()
        return self.values[position].as_py()

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and self.index(value, missing=-1) >= 0

    def index(self, value: str, missing: int | None = None) -> int:
        """Position of ``value`` (its id is ``RESERVED + position``); ``ValueError`` if absent,
        unless ``missing`` says what to return."""
        found = pc.index(self.values, pa.scalar(value, pa.string())).as_py() if isinstance(value, str) else -1
        if found < 0 and missing is None:
            raise ValueError(f"{value!r} is not in the vocabulary")
        return found if found >= 0 else missing

    def positions(self, text: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Position of every value of a string column in the vocabulary; -1 where absent or null.

        Below ``HASHED_LOOKUP_FROM`` values this is Arrow's ``index_in``. From there on, the
        column's distinct values are hashed (FNV-1a 64), found by binary search among the
        vocabulary's sorted hashes and confirmed by comparing the strings, so a hash collision
        can never map a value to another's id. Shape (n,), int64."""
        if isinstance(text, pa.ChunkedArray):
            text = text.combine_chunks()
        if len(self) < HASHED_LOOKUP_FROM:
            return self._index_in(text)
        encoded = pc.dictionary_encode(text)
        distinct = encoded.dictionary
        indices = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        if len(self) == 0 or len(distinct) == 0:
            return np.full(len(text), -1, dtype=np.int64)
        sorted_hashes, order = self._hashes()
        if sorted_hashes is None:  # two values share a hash: look them up as Arrow does
            found = self._index_in(distinct)
        else:
            hashes = fnv1a64_unique(distinct)
            at = np.minimum(np.searchsorted(sorted_hashes, hashes), len(order) - 1)
            candidate = order[at]
            same = pc.equal(self.values.take(pa.array(candidate)), distinct).to_numpy(zero_copy_only=False)
            found = np.where((sorted_hashes[at] == hashes) & same, candidate, -1)
        found = np.append(found.astype(np.int64), -1)  # index -1 (null) reads the appended -1
        return found[indices]

    def _index_in(self, text: pa.Array) -> np.ndarray:
        return pc.fill_null(pc.index_in(text, value_set=self.values), -1).to_numpy(zero_copy_only=False).astype(np.int64)

    def _hashes(self) -> tuple[np.ndarray | None, np.ndarray]:
        if self._hash_index is None:
            hashes = fnv1a64_unique(self.values)
            order = np.argsort(hashes, kind="stable").astype(np.int32 if len(hashes) < 2**31 else np.int64)
            sorted_hashes = hashes[order]
            unique = len(sorted_hashes) < 2 or bool((sorted_hashes[1:] != sorted_hashes[:-1]).all())
            self._hash_index = (sorted_hashes if unique else None, order)
        return self._hash_index

    def to_list(self) -> list[str]:
        return self.values.to_pylist()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Vocabulary):
            return self.values.equals(other.values)
        if isinstance(other, (list, tuple)):
            return self.to_list() == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        head = ", ".join(repr(v) for v in self.values[:5].to_pylist())
        return f"Vocabulary([{head}{', ...' if len(self) > 5 else ''}], {len(self)} values)"
