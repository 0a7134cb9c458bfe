"""The FM term's compiled CPU passes over a batch's field vectors (numba; imported on first use).

The field vectors of a row, v_f x_f for F fields of k, are one contiguous run of F·k floats. Forward, one
read of that run gives Σ_f v_f x_f (k sums), Σ_f |v_f x_f|² and so Rendle's pairwise term
½ (|Σ_f v_f x_f|² − Σ_f |v_f x_f|²), and, where the MLP computes in bfloat16, the run rounded to bfloat16
for its first Linear. Backward, one pass writes ∂L/∂(v_f x_f) = g_flat + (Σ_j v_j x_j − v_f x_f)·g_fm:
the MLP's gradient plus the FM term's, without the (B, F, k) temporaries of the same sum in ATen ops.
Each pass runs over a block of rows per torch thread (``compiled.in_row_blocks``, which hands each pass its
block's ``first_row``: unused here, each row stands alone).
"""

from __future__ import annotations

import numpy as np

from deepfm.compiled import compiled
from deepfm.models.mlp_passes import float_row_copy, put_row


@compiled(inline="always")
def add_halves(fields, into, num_fields, k):  # pragma: no cover - compiled
    """into[f] = fields[f] + fields[f + h] for f < h = num_fields // 2 (k floats each), the odd field out
    copied after them: ⌈num_fields / 2⌉ fields to add up. Contiguous runs: the loops vectorise."""
    half = (num_fields // 2) * k
    for i in range(half):
        into[i] = fields[i] + fields[half + i]
    if num_fields % 2:
        for c in range(k):
            into[half + c] = fields[2 * half + c]
    return num_fields - num_fields // 2


@compiled(fastmath={"reassoc", "contract"})
def pairwise_of_fields(fields, flat, total, pairwise, first_row, k):  # pragma: no cover - compiled
    """Per row r of ``fields`` (B, F·k float32): total[r] = Σ_f v_f x_f, pairwise[r] the FM pairwise term,
    and ``flat[r]`` the row as bfloat16 bits when ``flat`` is uint16 (nothing when it is the float32 fields).
    The field sums add halves into two scratch rows in turn (a k-long loop per field would run scalar)."""
    rows, width = fields.shape
    one, two = np.empty(width, np.float32), np.empty(width, np.float32)
    for r in range(rows):
        row = fields[r]
        squares = np.float32(0.0)
        for i in range(width):
            squares += row[i] * row[i]
        left, into_one = width // k, True
        if left > 1:
            left = add_halves(row, one, left, k)
        while left > 1:
            left = add_halves(one, two, left, k) if into_one else add_halves(two, one, left, k)
            into_one = not into_one
        sums = row if width == k else (one if into_one else two)
        row_total, total_squared = total[r], np.float32(0.0)
        for c in range(k):
            row_total[c] = sums[c]
            total_squared += sums[c] * sums[c]
        pairwise[r] = np.float32(0.5) * (total_squared - squares)
        put_row(row, flat, r)


@compiled
def fields_gradient(fields, grad_flat, grad_fields, total, grad_fm, first_row, k):  # pragma: no cover - compiled
    """grad_fields[r] = grad_flat[r] + (total[r] tiled over the fields − fields[r])·grad_fm[r], in float32
    (``grad_flat`` float32 or bfloat16 bits; ``grad_fields`` may be ``grad_flat`` itself when float32)."""
    rows, width = fields.shape
    tiled, buffer = np.empty(width, np.float32), np.empty(width, np.float32)
    for r in range(rows):
        sums, g = total[r], grad_fm[r]
        for c in range(k):
            tiled[c] = sums[c]
        done = k
        while done < width:  # doubling copies: contiguous, they vectorise (a k-long loop per field would not)
            more = min(done, width - done)
            source, target = tiled[:more], tiled[done:done + more]
            for i in range(more):
                target[i] = source[i]
            done += more
        row, grad_row, result = fields[r], float_row_copy(grad_flat, r, buffer), grad_fields[r]
        for i in range(width):
            result[i] = grad_row[i] + (tiled[i] - row[i]) * g
