"""A field's vocabulary: its values in id order, held as one Arrow string array.

A Python list holds each value as its own object (about 60 bytes for a short string); one
Arrow array holds the bytes and an offset (about 12 bytes). For Criteo-sized fields (10⁶
values and more) that is the difference between ~60 MB and ~10 MB per million values. It
reads like a list of ``str``: ``len``, iteration, indexing, ``in``, ``index`` and ``==``.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc


class Vocabulary:
    def __init__(self, values: Iterable[str] | pa.Array | pa.ChunkedArray):
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if not isinstance(values, pa.Array):
            values = pa.array(list(values), pa.string())
        self.values: pa.Array = values if values.type == pa.string() else values.cast(pa.string())

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
