"""Where a trainer gets its batches: the ``BatchSource`` protocol and the in-memory source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

import numpy as np

from deepfm.data.encoded import EncodedData


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
