"""The lookup's gather of each slot's row times its value, as one compiled pass (numba; imported on first use).

A batch with numeric or weighted fields looks up (B, F, k) rows and multiplies each by its slot's value:
``np.take`` then a multiply go over the (B, F, k) tensor twice, this pass once (a block of slots per torch
thread, ``compiled.in_row_blocks``).
"""

from __future__ import annotations

import numpy as np
import torch

from deepfm.compiled import compiled, in_row_blocks


@compiled
def _gather_scaled(index, values, out, first_slot, rows):  # pragma: no cover - compiled
    """out[s] = rows[index[s]]·values[s] for each slot s of the block."""
    for s in range(index.size):
        source, value = rows[index[s]], values[s]
        for j in range(out.shape[1]):
            out[s, j] = source[j] * value


def gather_scaled(rows: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``rows[index] * values[..., None]``: (*index.shape, k), from (U, k) float32/float64 CPU ``rows``, int64
    ``index`` and ``values`` of index's shape, in the rows' dtype (a batch's values are float32)."""
    flat_index = index.reshape(-1).contiguous()
    flat_values = values.reshape(-1).to(rows.dtype).contiguous()
    out = torch.empty(len(flat_index), rows.shape[1], dtype=rows.dtype)
    in_row_blocks(_gather_scaled, [flat_index.numpy(), flat_values.numpy(), out.numpy()], rows.detach().contiguous().numpy())
    return out.view(*index.shape, rows.shape[1])
