"""What a model reads: a ``Batch`` of tensors, with the model-side caches every table of a model
shares (the batch's distinct ids and its sparse design matrix), computed once per batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from deepfm.data.design import DesignMatrix, DistinctIds, design_with_bags

if TYPE_CHECKING:
    from deepfm.data.encoded import EncodedData


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

    def distinct(self, counting: bool = False) -> DistinctIds:
        """The batch's distinct ids. Computed once per batch (by the prefetch thread when
        training, ``counting`` where that pays: ``DistinctIds.of``) and shared by every table the model reads."""
        if self._distinct is None:
            self._distinct = DistinctIds.of(self.ids, counting)
        return self._distinct

    def design(self) -> DesignMatrix | None:
        """The batch as a sparse design matrix (multi-valued fields' entries included), where sparse
        products beat gathers: CPU, ids repeating across rows (see ``deepfm.data.design``). None
        otherwise. Computed once per batch (a batch must not change once it is prepared)."""
        if not self._design_built:
            if self.bags:
                self._design = design_with_bags(self.ids, self.values, self.bags)
            elif self.distinct().design_pays:
                self._design = self.distinct().design(self.values)
            self._design_built = True
        return self._design

    def prepare(self) -> "Batch":
        """Find the distinct ids and the design matrix now (the prefetch thread does, while the
        model computes on the previous batch; training: by counting where that pays)."""
        self.distinct(counting=True)
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
