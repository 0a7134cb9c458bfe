"""AdaGrad on a block of a table's touched rows as one compiled pass (numba; this module is imported on first use).

As ``adam_pass`` for Adam: each row's weights, accumulator and gradient are read and written once, with no gathered
copies, and each row is prefetched ``PREFETCH_AHEAD`` rows before its turn. ``LazyAdagrad`` runs a block per torch
thread.
"""

from __future__ import annotations

import numpy as np

from deepfm.compiled import compiled
from deepfm.row_prefetch import prefetch_row
from deepfm.training.adam_pass import PREFETCH_AHEAD


@compiled(fastmath={"reassoc", "contract"})
def adagrad_rows(rows, grad, decay, first_row, table, total, lr, eps):  # pragma: no cover - compiled
    """AdaGrad with the L2 coefficient ``decay[u]`` on table rows ``rows`` (distinct), gradients ``grad``, in place:
    per coordinate where ``total`` has the table's shape (G += g², v -= lr·g / (√G + eps)), one accumulator per row
    where it is one column (G += mean_j g_j²; the same update where the table is one column too)."""
    k = table.shape[1]
    per_row = total.shape[1] == 1
    lr, eps = np.float32(lr), np.float32(eps)  # float32 throughout, as the tensor ops (float64 would not vectorise)
    for u in range(rows.size):
        if u + PREFETCH_AHEAD < rows.size:  # the misses of the rows to come overlap this row's work
            ahead = rows[u + PREFETCH_AHEAD]
            prefetch_row(table, ahead)
            prefetch_row(total, ahead)
        r = rows[u]
        weights, gradient, accumulated, d = table[r], grad[u], total[r], decay[u]
        if per_row:
            squares = np.float32(0.0)
            for j in range(k):
                g = gradient[j] + d * weights[j]
                squares += g * g
            accumulated[0] += squares / np.float32(k)
            scale = lr / (np.sqrt(accumulated[0]) + eps)
            for j in range(k):
                weights[j] -= scale * (gradient[j] + d * weights[j])
        else:
            for j in range(k):
                g = gradient[j] + d * weights[j]
                accumulated[j] += g * g
                weights[j] -= lr * g / (np.sqrt(accumulated[j]) + eps)
