"""FM's two terms over a batch's design matrix as compiled CPU passes (numba; imported on first use).

X is the batch over its U distinct features (``data.design.DesignMatrix``: CSR, B × U, with its transpose and the
squares of its slot values). Forward, one pass over the rows of X gives each row's

    y_b = Σ_i x_i w_i + ½ (‖Σ_i x_i v_i‖² − Σ_i x_i² ‖v_i‖²)

and keeps Σ_i x_i v_i (B, k) for the backward; backward, one pass over the rows of Xᵀ (a distinct feature's
entries) gives ∂L/∂w_i = Σ_b g_b x_bi and Rendle's ∂L/∂v_i = Σ_b g_b x_bi (Σ_j x_bj v_j) − v_i Σ_b g_b x_bi².
The same sums as the sparse products of ``models.layers`` (``_DesignTimesTable``, ``_PairwiseOfDesign``), in two
passes instead of a dozen ATen calls and their temporaries. Each pass runs a block of rows per torch thread
(``compiled.in_row_blocks``; ``first_row`` is the block's first row of X or Xᵀ).
"""

from __future__ import annotations

import numpy as np

from deepfm.compiled import compiled


@compiled(inline="always", fastmath={"reassoc", "contract"})
def add_feature(sums, i, x, x_squared, table, linear):  # pragma: no cover - compiled
    """Feature i with value x in a row: sums += x v_i; returns its shares x w_i and x² ‖v_i‖² of the row's terms."""
    norm = np.float32(0.0)
    for c in range(table.shape[1]):
        v = table[i, c]
        sums[c] += x * v
        norm += v * v
    return x * linear[i, 0], x_squared * norm


@compiled(inline="always", fastmath={"reassoc", "contract"})
def row_terms(sums, first_order, squares):  # pragma: no cover - compiled
    """Σ_i x_i w_i + ½ (‖Σ_i x_i v_i‖² − Σ_i x_i² ‖v_i‖²) from the row's sums."""
    total = np.float32(0.0)
    for c in range(sums.size):
        total += sums[c] * sums[c]
    return first_order + np.float32(0.5) * (total - squares)


@compiled(fastmath={"reassoc", "contract"})
def fm_rows(out, xv, first_row, pointers, columns, x, x_squared, unique, table, linear):  # pragma: no cover - compiled
    """out[r] = y of row ``first_row + r`` of X (CSR ``pointers``, ``columns`` into ``unique``, values ``x`` and
    ``x_squared``); xv[r] = Σ_i x_i v_i. ``table`` (n, k) holds V, ``linear`` (n, 1) w."""
    for r in range(out.size):
        b = first_row + r
        sums = xv[r]
        sums[:] = 0.0
        first_order, squares = np.float32(0.0), np.float32(0.0)
        for e in range(pointers[b], pointers[b + 1]):
            linear_share, square_share = add_feature(sums, unique[columns[e]], x[e], x_squared[e], table, linear)
            first_order += linear_share
            squares += square_share
        out[r] = row_terms(sums, first_order, squares)


@compiled(fastmath={"reassoc", "contract"})
def fm_gradients(grad_table, grad_linear, first_row, pointers, rows, x, x_squared, unique, table, xv,
                 grad):  # pragma: no cover - compiled
    """For distinct feature u = ``first_row + r`` (row u of Xᵀ: CSR ``pointers``, batch ``rows``, values ``x`` and
    ``x_squared``): grad_linear[r] = Σ_b g_b x_bu and grad_table[r] = Σ_b g_b x_bu xv_b − v_u Σ_b g_b x_bu²."""
    k = table.shape[1]
    for r in range(grad_table.shape[0]):
        u = first_row + r
        out = grad_table[r]
        out[:] = 0.0
        first_order, shrink = np.float32(0.0), np.float32(0.0)
        for e in range(pointers[u], pointers[u + 1]):
            b = rows[e]
            g = grad[b]
            weighted = g * x[e]
            first_order += weighted
            shrink += g * x_squared[e]
            sums = xv[b]
            for c in range(k):
                out[c] += weighted * sums[c]
        i = unique[u]
        for c in range(k):
            out[c] -= shrink * table[i, c]
        grad_linear[r, 0] = first_order
