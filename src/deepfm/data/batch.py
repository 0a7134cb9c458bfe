"""Encoded data and the tensors a model reads.

``EncodedData`` holds contiguous NumPy columns for a whole file or chunk; a ``Batch``
is a slice of it as tensors. Ids are global rows of the model's fused embedding table:
int32 in memory while the table has fewer than 2³¹ rows (half the memory of int64), int64
in a batch, as the lookups take them.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Protocol

import numpy as np
import torch

from deepfm.data.design import DesignMatrix, DistinctIds, design_with_bags


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
        return EncodedData(
            ids=self.ids[rows],
            values=None if self.values is None else self.values[rows],
            bags=[bag.take(rows) for bag in self.bags],
            labels=None if self.labels is None else self.labels[rows],
            value_fields=self.value_fields,
            weights=None if self.weights is None else self.weights[rows],
        )

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
            weights=None if first.weights is None else np.concatenate([p.weights for p in parts]),
        )

    def to_batch(self, device: torch.device | str = "cpu") -> "Batch":
        return Batch.from_numpy(self, device)


def id_dtype(num_features: int) -> type:
    """The narrowest integer type that holds every id of a table of ``num_features`` rows."""
    return np.int32 if num_features < 2**31 else np.int64


@dataclass
class BagTensor:
    """A multi-valued field as tensors; ``rows[j]`` is the batch row of ``ids[j]``."""

    ids: torch.Tensor  # (nnz,) int64
    weights: torch.Tensor  # (nnz,) float32
    rows: torch.Tensor  # (nnz,) int64


@dataclass
class Batch:
    """What every model's ``forward`` takes: a batch of B rows."""

    ids: torch.Tensor  # (B, F) int64
    values: torch.Tensor | None  # (B, F) float32, or None for all-ones
    bags: list[BagTensor]
    labels: torch.Tensor | None  # (B,) float32
    weights: torch.Tensor | None = None  # (B,) float32 sample weights, or None for all 1
    _distinct: DistinctIds | None = field(default=None, repr=False, compare=False)
    _design: DesignMatrix | None = field(default=None, repr=False, compare=False)
    _design_built: bool = field(default=False, repr=False, compare=False)

    @property
    def size(self) -> int:
        return self.ids.shape[0]

    def distinct(self) -> DistinctIds:
        """The batch's distinct ids. Computed once per batch (by the prefetch thread when
        training) and shared by every table the model reads."""
        if self._distinct is None:
            self._distinct = DistinctIds.of(self.ids)
        return self._distinct

    def design(self) -> DesignMatrix | None:
        """The batch as a sparse design matrix (multi-valued fields' entries included), where sparse
        products beat gathers: CPU, ids repeating across rows (see ``deepfm.data.design``). None
        otherwise. Computed once per batch (a batch must not change once it is prepared)."""
        if not self._design_built:
            if self.bags:
                self._design = design_with_bags(self.ids, self.values, self.bags)
            elif self.distinct().slot_rows is not None:
                self._design = self.distinct().design(self.values)
            self._design_built = True
        return self._design

    def prepare(self) -> "Batch":
        """Find the distinct ids and the design matrix now (the prefetch thread does, while the
        model computes on the previous batch)."""
        self.distinct()
        self.design()
        return self

    @staticmethod
    def from_numpy(data: EncodedData, device: torch.device | str = "cpu") -> "Batch":
        def tensor(array: np.ndarray | None) -> torch.Tensor | None:
            return None if array is None else torch.from_numpy(np.ascontiguousarray(array)).to(device, non_blocking=True)

        bags = []
        for bag in data.bags:
            rows = np.repeat(np.arange(len(bag.offsets) - 1, dtype=np.int64), np.diff(bag.offsets))
            bags.append(BagTensor(tensor(bag.ids), tensor(bag.weights), tensor(rows)))
        return Batch(tensor(data.ids).long(), tensor(data.dense_values()), bags, tensor(data.labels), tensor(data.weights))


def prefetch(batches: Iterable[EncodedData], device: torch.device | str = "cpu", depth: int = 2,
             distinct: bool = True) -> Iterator[tuple[int, Batch]]:
    """``(rows, Batch)`` pairs made by a background thread while the caller computes.

    The thread gathers/reads the next batches, turns them into tensors and (``distinct``) finds
    their distinct ids and design matrices, ``depth`` batches ahead; an error there is raised here, in order.
    Leaving the loop early stops the thread. ``depth=0`` does the same work inline: better when
    a batch is a cheap in-memory gather, since handing the GIL between threads costs more.
    """
    if depth == 0:
        for chunk in batches:
            batch = chunk.to_batch(device)
            if distinct:
                batch.prepare()
            yield len(chunk), batch
        return
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in batches:
                batch = chunk.to_batch(device)
                if distinct:
                    batch.prepare()
                if not put((len(chunk), batch)):
                    return
            put(done)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            put(error)

    thread = threading.Thread(target=produce, name="deepfm-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def iterate_batches(
    data: EncodedData, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0, skip: int = 0
) -> Iterator[EncodedData]:
    """Batches as slices (or shuffled gathers) of contiguous columns: no per-row Python.

    The order depends only on ``(seed, epoch)``, so a resumed run sees the same batches;
    ``skip`` drops the first batches of the epoch (resuming mid-epoch).
    """
    n = len(data)
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else None
    for number, start in enumerate(range(0, n, batch_size)):
        if number < skip:
            continue
        stop = min(start + batch_size, n)
        yield data.take(order[start:stop]) if order is not None else data.slice(start, stop)


class BatchSource(Protocol):
    """Where a trainer gets its batches: in memory, streamed from files, or one rank's shard."""

    @property
    def num_rows(self) -> int: ...

    def steps_per_epoch(self, batch_size: int) -> int: ...

    def batches(self, batch_size: int, seed: int, epoch: int, skip: int = 0) -> Iterator[EncodedData]:
        """The epoch's batches in an order fixed by ``(seed, epoch)``, after skipping ``skip``."""
        ...


@dataclass
class InMemorySource:
    """A whole encoded dataset in memory, shuffled as a permutation per epoch."""

    data: EncodedData

    @property
    def num_rows(self) -> int:
        return len(self.data)

    def steps_per_epoch(self, batch_size: int) -> int:
        return -(-len(self.data) // batch_size)

    def batches(self, batch_size: int, seed: int, epoch: int, skip: int = 0) -> Iterator[EncodedData]:
        return iterate_batches(self.data, batch_size, shuffle=True, seed=seed, epoch=epoch, skip=skip)
