"""A field's value counts over a stream of chunks, keyed by the values' 64-bit FNV-1a hashes.

Counting by string (Arrow's group-by over each chunk's counts and the table so far) hashed every
value again at every merge. Here each chunk's distinct values are found and hashed once
(``ChunkCodes``) and merges sort and add 64-bit keys. The keys are exact: a merge compares the
strings of every key seen more than once, and from a field's first pair of different values that
share a hash on (about 1 in 10⁶ for a field of 6·10⁶ values), it is counted by string (``collided``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfm.data.hashing import fnv1a64_unique


@dataclass
class ChunkCodes:
    """One chunk's column as codes: each row's index into the chunk's distinct values (-1: null),
    the distinct values, their FNV-1a 64 hashes and how often each occurs."""

    indices: np.ndarray  # (rows,) int32, -1 for null
    distinct: pa.Array  # (d,) string
    hashes: np.ndarray  # (d,) uint64
    counts: np.ndarray  # (d,) int64

    @classmethod
    def of(cls, text: pa.Array, counted: np.ndarray | None = None) -> "ChunkCodes":
        """Codes of a string column (one hash pass over its rows, then one over its distinct values), or of one
        dictionary-encoded already (libFM ids, Parquet); ``counted``: the (rows,) bool mask of the rows whose values
        count (None: every row). A value only rows left out hold is among the distinct values with a count of 0."""
        encoded = text if is_distinct_dictionary(text) else pc.dictionary_encode(plain_text(text))
        indices = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
        present = indices if counted is None else indices[counted]
        present = present if encoded.indices.null_count == 0 else present[present >= 0]
        distinct = encoded.dictionary
        return cls(indices, distinct, fnv1a64_unique(distinct), np.bincount(present, minlength=len(distinct)))

    def rows(self, placement: "Placement | None", hashes: bool) -> "RowCodes":
        """What encoding the chunk needs once the vocabulary is known: not the values themselves, and
        their hashes only with ``hashes`` (for a field that may be hashed)."""
        return RowCodes(self.indices, self.hashes if hashes else None, placement)


def is_distinct_dictionary(column: pa.Array) -> bool:
    """A dictionary-encoded text column whose rows hold each of its dictionary's values, each once in it: its
    codes as they are (a dictionary of unused or repeated values would be counted as values of no row, or twice)."""
    if not (pa.types.is_dictionary(column.type) and pa.types.is_string(column.type.value_type)):
        return False
    dictionary, indices = column.dictionary, pc.fill_null(column.indices, -1).to_numpy(zero_copy_only=False)
    used = np.bincount(indices[indices >= 0] if column.null_count else indices, minlength=len(dictionary))
    return bool(used.all()) and pc.count_distinct(dictionary).as_py() == len(dictionary) and dictionary.null_count == 0


def plain_text(column: pa.Array) -> pa.Array:
    """A column as plain strings (a dictionary-encoded one decoded; numbers, booleans and times as text)."""
    return column if pa.types.is_string(column.type) else pc.cast(column, pa.string())


@dataclass
class RowCodes:
    """A chunk's column as each row's index into its distinct values (-1: null), their hashes and
    where they went in the field's counts (``HashedCounts.add``)."""

    indices: np.ndarray  # (rows,) int32
    hashes: np.ndarray | None  # (d,) uint64
    placement: "Placement | None"

    def take(self, ids_of_distinct: np.ndarray, missing: int, out: np.ndarray) -> None:
        """Write each row's id into ``out`` (rows,), contiguous (a field's row of ``encoders.lay_rows``' block), from
        the id of each distinct value; ``missing`` for null rows."""
        table = np.append(ids_of_distinct, missing).astype(out.dtype)
        np.take(table, self.indices, mode="wrap", out=out)  # a null's -1 wraps to the last entry (missing)


class Placement:
    """Where a chunk's distinct values went in a field's table of counts: rows ``index`` of the table
    as it was after merge number ``generation`` (filled in by that merge)."""

    __slots__ = ("generation", "index")

    def __init__(self) -> None:
        self.generation, self.index = -1, np.zeros(0, np.int64)


class HashedCounts:
    """How often each value of one field occurs, chunk after chunk (``add``), as a table (``table``).

    Chunk counts wait until they reach ``merge_rows`` entries or a quarter of the merged table
    before one merge adds them in, so the merges stay linear in the number of chunks. With ``track``,
    ``add`` tells where each chunk's values went (``row_of``), as Arrow's ``unify_dictionaries`` would."""

    def __init__(self, merge_rows: int, track: bool = False):
        self.merge_rows, self.track = merge_rows, track
        self.generation = 0  # merges so far
        self.remaps: list[np.ndarray] = []  # remaps[g]: row of the table after merge g -> row after merge g + 1
        self.keys = np.zeros(0, np.uint64)  # sorted, distinct (None once collided)
        self.values: pa.Array = pa.array([], pa.string())  # the value of each key
        self.counts = np.zeros(0, np.int64)
        self.pending: list[tuple[np.ndarray, pa.Array, np.ndarray, Placement]] = []
        self.collided = False  # two different values shared a hash: counted by string since

    def add(self, codes: ChunkCodes) -> Placement:
        placement = Placement()
        self.pending.append((codes.hashes, codes.distinct, codes.counts, placement))
        if sum(len(keys) for keys, _, _, _ in self.pending) > max(self.merge_rows, len(self.counts) // 4):
            self._merge()
        return placement

    def row_of(self, placement: Placement) -> np.ndarray:
        """The row of ``table()`` of each of the chunk's distinct values (``track``, and not ``collided``)."""
        assert self.track and not self.collided and not self.pending and placement.generation >= 0
        rows = placement.index
        for remap in self.remaps[placement.generation :]:
            rows = remap[rows]
        return rows

    def table(self) -> pa.Table:
        """(value, count), one row per distinct value, in no particular order."""
        self._merge()
        return pa.table({"value": self.values, "count": pa.array(self.counts, pa.int64())})

    def _merge(self) -> None:
        if not self.pending:
            return
        keys = np.concatenate([self.keys if self.keys is not None else np.zeros(0, np.uint64)]
                              + [keys for keys, _, _, _ in self.pending])
        values = pa.chunked_array([self.values] + [values for _, values, _, _ in self.pending], pa.string())
        counts = np.concatenate([self.counts] + [counts for _, _, counts, _ in self.pending])
        pending, self.pending = self.pending, []
        if not self.collided and not len(keys):  # only empty chunks (every value null)
            for _, _, _, placement in pending:
                placement.generation = self.generation
            return
        if not self.collided:
            order = np.argsort(keys)  # equal keys hold one value, so their order is not needed: not ``stable``'s timsort
            sorted_keys = keys[order]
            first = np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]])
            starts = np.flatnonzero(first)
            run = np.cumsum(first) - 1  # the merged row of each sorted entry
            again = np.flatnonzero(~first)  # a key met before: the same value, unless two values collided
            if not len(again) or pc.all(pc.equal(values.take(order[again]), values.take(order[starts[run[again]]]))).as_py():
                if self.track:
                    self._place(pending, order, run)
                self.keys, self.counts = sorted_keys[starts], np.add.reduceat(counts[order], starts)
                self.values = values.take(order[starts]).combine_chunks()
                return
            self.collided, self.keys = True, None
        merged = pa.table({"value": values, "count": counts}).group_by("value").aggregate([("count", "sum")])
        self.values, self.counts = merged[0].combine_chunks(), merged[1].to_numpy()

    def _place(self, pending: list, order: np.ndarray, run: np.ndarray) -> None:
        """Record where this merge put the rows of the table before it and each pending chunk's values."""
        row = np.empty(len(order), np.int32 if len(order) < 2**31 else np.int64)
        row[order] = run
        start = len(self.counts)
        self.remaps.append(row[:start])
        self.generation += 1
        for keys, _, _, placement in pending:
            placement.generation, placement.index = self.generation, row[start : start + len(keys)]
            start += len(keys)
