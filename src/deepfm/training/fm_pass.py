"""FM's whole training step as one compiled pass (numba; this module is imported on first use).

For a batch of B rows of F slots (feature ids, optional values x), with g_b = ∂L/∂y_b:

    forward   y_b = w0 + Σ_i x_i w_i + ½ (‖Σ_i x_i v_i‖² − Σ_i x_i² ‖v_i‖²),   kept: Σ_i x_i v_i (k)
    backward  ∂L/∂w_i = Σ_b g_b x_bi,   ∂L/∂v_i = Σ_b g_b x_bi Σ_j x_bj v_j − v_i Σ_b g_b x_bi²   (Rendle 2010)
    update    AdaGrad on each touched row, its L2 coefficient d_i folded in: g ← g + d_i v_i, G += g², v −= lr g / (√G + ε)

The sums over a feature's entries run in batch-row order, as ``models.design_passes`` sums them, and every row's
gradient is taken before any row moves, as in the autograd step. One thread: FM trains on one
(``deepfm.defaults``), and the gradient's scatter into the touched rows is sequential. The loops over a row's
entries are written out: with the scatter's body as an inline helper the pass took 3.5× as long (0.15 → 0.52 ms,
k 10, batch 512, 2026-12-05). numba's cache of this pass does not see edits to the helpers it inlines from
``models.design_passes`` or ``row_prefetch``: clear its cache (``__pycache__/fm_pass.*.nb[ic]``) after one.
The update prefetches each touched row ``PREFETCH_AHEAD`` rows before its turn: on the 1M-row Criteo-shaped long tail
(FM's defaults, one epoch, 3 alternated runs) 110k-126k → 128k-144k samples/s; prefetching the next row's table rows in
the forward pass as well gained nothing (118k-138k against 124k-141k).
"""

from __future__ import annotations

import numpy as np

from deepfm.compiled import compiled
from deepfm.models.design_passes import add_feature, row_terms
from deepfm.row_prefetch import prefetch_row
from deepfm.training.adam_pass import PREFETCH_AHEAD

SQUARED_ERROR, LOGISTIC = 0, 1


@compiled(fastmath={"reassoc", "contract"})
def fm_adagrad_step(ids, values, bag_starts, bag_ids, bag_weights, labels, weights, loss_kind, bias, linear, table,
                    linear_sum, table_sum, per_row, lrs, epsilons, l2_per_occurrence, l2_per_row, position, touched,
                    counts, grad_linear, grad_table, shrink, xv, g):  # pragma: no cover - compiled
    """One step on a batch of B rows: (B, F) ``ids`` (int64, rows of ``table`` (n, k) and ``linear`` (n, 1)) with
    their ``values`` ((B, F) float32, or (0, 0) for all ones), then each row's multi-valued entries ``bag_ids`` and
    ``bag_weights`` [bag_starts[b], bag_starts[b + 1]) (``bag_starts`` (B + 1,), or (0,) for none); ``labels`` (B,)
    and sample ``weights`` (B,) (or (0,) for none); ``loss_kind`` LOGISTIC (binary cross-entropy on logits) or
    SQUARED_ERROR, averaged over the batch (weighted: Σ w ℓ / Σ w). AdaGrad's accumulators: ``linear_sum`` and
    ``table_sum``, each (n, k) per coordinate or (n, 1) with ``per_row``; ``lrs`` and ``epsilons`` (the linear table's,
    the factors'); the L2 coefficient of a touched row of table t (0 linear, 1 factors) is
    ``l2_per_occurrence[t]``·2·c/B + ``l2_per_row[t]`` for a row seen c times. ``position`` (n,) int32 is −1 everywhere
    on entry and on return; the rest are scratch of ≥ the batch's entries (``touched``, ``counts``, ``grad_linear``,
    ``grad_table`` (·, k), ``shrink``) and ≥ B rows (``xv`` (·, k), ``g``).
    Returns (the batch's mean loss, ∂L/∂w0); the tables and accumulators are updated in place."""
    rows, fields = ids.shape
    n, k = table.shape
    bags, ones = bag_starts.size > 0, values.size == 0
    weighted = weights.size > 0
    total_weight = np.float64(rows)
    if weighted:
        total_weight = 0.0
        for b in range(rows):
            total_weight += weights[b]
        total_weight = max(total_weight, 1.1754943508222875e-38)  # float32's tiny, as the loss clamps
    loss, bias_grad = 0.0, 0.0
    for b in range(rows):
        sums = xv[b]
        sums[:] = 0.0
        first_order, squares = np.float32(0.0), np.float32(0.0)
        for e in range(fields + (bag_starts[b + 1] - bag_starts[b] if bags else 0)):
            if e < fields:
                i, x = ids[b, e], np.float32(1.0) if ones else values[b, e]
            else:
                i, x = bag_ids[bag_starts[b] + e - fields], bag_weights[bag_starts[b] + e - fields]
            if i < 0 or i >= n:
                raise IndexError("a feature id outside the table")
            linear_share, square_share = add_feature(sums, i, x, x * x, table, linear)
            first_order += linear_share
            squares += square_share
        y = bias + row_terms(sums, first_order, squares)
        t = labels[b]
        if loss_kind == LOGISTIC:
            row_loss = max(y, 0.0) - y * t + np.log1p(np.exp(-abs(y)))
            slope = 1.0 / (1.0 + np.exp(-y)) - t
        else:
            row_loss = (y - t) * (y - t)
            slope = 2.0 * (y - t)
        share = (weights[b] if weighted else 1.0) / total_weight
        loss += row_loss * share
        g[b] = np.float32(slope * share)
        bias_grad += g[b]
    touched_rows = 0
    for b in range(rows):
        gb, sums = g[b], xv[b]
        for e in range(fields + (bag_starts[b + 1] - bag_starts[b] if bags else 0)):
            if e < fields:
                i, x = ids[b, e], np.float32(1.0) if ones else values[b, e]
            else:
                i, x = bag_ids[bag_starts[b] + e - fields], bag_weights[bag_starts[b] + e - fields]
            u = position[i]
            if u < 0:
                u = touched_rows
                position[i], touched[u], counts[u] = u, i, 0
                grad_linear[u], shrink[u] = 0.0, 0.0
                grad_table[u, :] = 0.0
                touched_rows += 1
            weighted_x = gb * x
            counts[u] += 1
            grad_linear[u] += weighted_x
            shrink[u] += weighted_x * x
            out = grad_table[u]
            for c in range(k):
                out[c] += weighted_x * sums[c]
    occurrence_scale = (np.float32(2.0 * l2_per_occurrence[0] / rows), np.float32(2.0 * l2_per_occurrence[1] / rows))
    lr_linear, lr_table = np.float32(lrs[0]), np.float32(lrs[1])
    eps_linear, eps = np.float32(epsilons[0]), np.float32(epsilons[1])
    for u in range(touched_rows):
        if u + PREFETCH_AHEAD < touched_rows:  # the misses of the rows to come overlap this row's work
            ahead = touched[u + PREFETCH_AHEAD]
            prefetch_row(table, ahead)
            prefetch_row(table_sum, ahead)
        i = touched[u]
        position[i] = -1
        seen = np.float32(counts[u])
        decay = seen * occurrence_scale[0] + np.float32(l2_per_row[0])
        step = grad_linear[u] + decay * linear[i, 0]
        linear_sum[i, 0] += step * step
        linear[i, 0] -= lr_linear * step / (np.sqrt(linear_sum[i, 0]) + eps_linear)
        decay = seen * occurrence_scale[1] + np.float32(l2_per_row[1])
        weights_row, gradient, accumulated = table[i], grad_table[u], table_sum[i]
        for c in range(k):  # Rendle's −v_i Σ_b g_b x_bi², then the row's L2
            gradient[c] = gradient[c] - shrink[u] * weights_row[c] + decay * weights_row[c]
        if per_row:
            mean_square = np.float32(0.0)
            for c in range(k):
                mean_square += gradient[c] * gradient[c]
            accumulated[0] += mean_square / np.float32(k)
            scale = lr_table / (np.sqrt(accumulated[0]) + eps)
            for c in range(k):
                weights_row[c] -= scale * gradient[c]
        else:
            for c in range(k):
                accumulated[c] += gradient[c] * gradient[c]
                weights_row[c] -= lr_table * gradient[c] / (np.sqrt(accumulated[c]) + eps)
    return loss, bias_grad
