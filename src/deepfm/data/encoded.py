"""Encoded data as NumPy columns: ``EncodedData`` for a whole file or chunk, ``Bag`` for a
multi-valued field. Ids are global rows of the model's fused embedding table: int32 in memory
while the table has fewer than 2³¹ rows (half the memory of int64).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from deepfm.data.tensors import Batch


@dataclass
class Bag:
    """A multi-valued field for N rows, jagged: row r owns ``ids[offsets[r]:offsets[r+1]]``."""

    offsets: np.ndarray  # (N + 1,) int64
    ids: np.ndarray  # (nnz,) int64
    weights: np.ndarray  # (nnz,) float32

    def take(self, rows: np.ndarray) -> "Bag":
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lengths = ends - starts
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        positions = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return Bag(offsets, self.ids[positions], self.weights[positions])

    def slice(self, start: int, stop: int) -> "Bag":
        lo, hi = self.offsets[start], self.offsets[stop]
        return Bag(self.offsets[start : stop + 1] - lo, self.ids[lo:hi], self.weights[lo:hi])

    @staticmethod
    def concat(bags: list["Bag"]) -> "Bag":
        offsets = [np.zeros(1, dtype=np.int64)]
        total = 0
        for bag in bags:
            offsets.append(bag.offsets[1:] + total)
            total += int(bag.offsets[-1])
        return Bag(np.concatenate(offsets), np.concatenate([b.ids for b in bags]), np.concatenate([b.weights for b in bags]))


@dataclass
class EncodedData:
    """Model-ready columns for N rows: F single-valued fields plus jagged multi-valued fields.

    Values are 1 for one-hot fields, so only the columns that can differ are stored: with
    ``value_fields`` set, ``values`` holds those F' columns (N, F') and every other value is 1
    (Criteo: 13 numeric of 39 fields, a third of the memory); without it, ``values`` is (N, F).
    """

    ids: np.ndarray  # (N, F) int32, or int64 for tables of 2³¹ rows or more (see ``id_dtype``)
    values: np.ndarray | None  # (N, F) or (N, len(value_fields)) float32; None when every value is 1
    bags: list[Bag] = field(default_factory=list)
    labels: np.ndarray | None = None  # (N,) float32
    value_fields: tuple[int, ...] | None = None  # the field columns ``values`` holds, if not all F
    weights: np.ndarray | None = None  # (N,) float32 sample weights (``--weight``), or None for all 1

    def __len__(self) -> int:
        return len(self.ids)

    def dense_values(self) -> np.ndarray | None:
        """Every field's value, (N, F) float32; None when every value is 1."""
        if self.values is None or self.value_fields is None:
            return self.values
        dense = np.ones(self.ids.shape, dtype=np.float32)
        dense[:, list(self.value_fields)] = self.values
        return dense

    def take(self, rows: np.ndarray) -> "EncodedData":
        """The rows at positions ``rows`` (or where a boolean ``rows`` is True), in that order. ``np.take`` copies
        a row at a time: 4096 random rows of (1M, 39) ids and (1M, 13) values in 0.33 ms, indexing 1.23 ms."""
        rows = np.asarray(rows)
        if rows.dtype == np.bool_:
            if rows.shape != (len(self),):
                raise ValueError(f"a mask of {rows.shape} for {len(self)} rows")
            rows = np.flatnonzero(rows)
        elif rows.size == 0:
            rows = rows.astype(np.intp)  # (an empty list reads as floats)

        def picked(array: np.ndarray | None) -> np.ndarray | None:
            return None if array is None else np.take(array, rows, axis=0)

        return EncodedData(ids=picked(self.ids), values=picked(self.values), bags=[bag.take(rows) for bag in self.bags],
                           labels=picked(self.labels), value_fields=self.value_fields, weights=picked(self.weights))

    def slice(self, start: int, stop: int) -> "EncodedData":
        return EncodedData(
            ids=self.ids[start:stop],
            values=None if self.values is None else self.values[start:stop],
            bags=[bag.slice(start, stop) for bag in self.bags],
            labels=None if self.labels is None else self.labels[start:stop],
            value_fields=self.value_fields,
            weights=None if self.weights is None else self.weights[start:stop],
        )

    @staticmethod
    def concat(parts: list["EncodedData"]) -> "EncodedData":
        first = parts[0]
        valued = [p for p in parts if p.values is not None]  # parts without values fit any layout
        same = all(p.value_fields == valued[0].value_fields for p in valued)
        values, value_fields = None, (valued[0].value_fields if valued and same else None)
        if valued:
            width = len(value_fields) if value_fields is not None else first.ids.shape[1]
            values = np.concatenate([
                (p.values if same else p.dense_values()) if p.values is not None
                else np.ones((len(p), width), np.float32) for p in parts])
        return EncodedData(
            ids=np.concatenate([p.ids for p in parts]),
            values=values,
            bags=[Bag.concat([p.bags[i] for p in parts]) for i in range(len(first.bags))],
            labels=None if first.labels is None else np.concatenate([p.labels for p in parts]),
            value_fields=value_fields,
            weights=(None if all(p.weights is None for p in parts)  # e.g. an empty first part made without them
                     else np.concatenate([p.weights if p.weights is not None else np.ones(len(p), np.float32) for p in parts])),
        )

    def to_batch(self, device: torch.device | str = "cpu") -> "Batch":
        return Batch.from_numpy(self, device)


def id_dtype(num_features: int) -> type:
    """The narrowest integer type that holds every id of a table of ``num_features`` rows."""
    return np.int32 if num_features < 2**31 else np.int64
