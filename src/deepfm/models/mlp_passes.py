"""The MLP's compiled CPU training passes (numba; this module is imported on first use).

Each pass runs on one thread over a block of rows (``compiled.in_row_blocks`` gives each of torch's
threads a block) and reads float32 arrays, or bfloat16 ones as their uint16 bits: a row of those is
widened into a float32 buffer, computed in float32 and rounded back to nearest even, so
``--precision bf16`` takes the same passes with no cast of the whole tensor.

Dropout's mask: element i (row-major, counted over the whole tensor) is dropped when its 16-bit part of
SplitMix64's word for state seed + (⌊i/4⌋ + 1)·γ (part i mod 4) falls under round(p·2¹⁶); the word depends on
the seed and i alone, so any split into blocks draws the same mask. One word for four elements: the
word's two 64-bit products cost more than the rest of the pass.
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.extending import overload

from deepfm.compiled import compiled

GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
ROUNDS = 64  # rows summed in float32 before the float64 totals take them


@compiled(inline="always")
def splitmix64(state):  # pragma: no cover - compiled
    """SplitMix64's output function: a well-mixed 64-bit word of ``state``."""
    word = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    word = (word ^ (word >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return word ^ (word >> np.uint64(31))


@compiled(inline="always")
def random_lanes(seed, first_element, width, words):  # pragma: no cover - compiled
    """Dropout's 16-bit random parts of elements first_element … first_element + width − 1 (a view of
    ``words``, a uint64 scratch of ≥ width/4 + 2): element i takes part i mod 4 of the word for ⌊i/4⌋, its
    bits 16·(i mod 4) … 16·(i mod 4) + 15 on a little-endian machine (the parts of a uint16 view in memory
    order: a big-endian machine draws other masks, as repeatable)."""
    first_word = first_element >> np.uint64(2)
    offset = np.int64(first_element - (first_word << np.uint64(2)))
    for w in range((offset + width + 3) >> 2):
        words[w] = splitmix64(seed + (first_word + np.uint64(w + 1)) * GOLDEN_GAMMA)
    return words.view(np.uint16)[offset:offset + width]


def drop_threshold(p: float) -> np.uint32:
    """The 16-bit part under which an element is dropped: round(p·2¹⁶) (p is taken to 2⁻¹⁷)."""
    return np.uint32(round(p * 2**16))


def float_row(values, r, buffer):  # pragma: no cover - replaced by the overload in compiled code
    """Row ``r`` of ``values`` as float32: the row itself, or its bfloat16 bits widened into ``buffer``."""


def float_row_copy(values, r, buffer):  # pragma: no cover - replaced by the overload in compiled code
    """Row ``r`` of ``values`` as float32 in ``buffer`` (a copy: a pass may then write over the row)."""


def row_to_write(values, r, buffer):  # pragma: no cover - replaced by the overload in compiled code
    """Where to compute row ``r`` of ``values``: the row itself (float32), or ``buffer`` (then ``put_row``)."""


def put_row(row, values, r):  # pragma: no cover - replaced by the overload in compiled code
    """Row ``r`` of ``values`` from ``row_to_write``'s buffer: nothing for float32, rounded to bfloat16 bits."""


def store_row(row, values, r):  # pragma: no cover - replaced by the overload in compiled code
    """Row ``r`` of ``values`` from a float32 buffer: copied, or rounded to bfloat16 bits."""


@overload(float_row, inline="always")
def _float_row(values, r, buffer):
    if values.dtype == types.float32:
        return lambda values, r, buffer: values[r]

    def widened(values, r, buffer):  # pragma: no cover - compiled
        bits = buffer.view(np.uint32)
        for c in range(buffer.size):
            bits[c] = np.uint32(values[r, c]) << np.uint32(16)
        return buffer

    return widened


@overload(float_row_copy, inline="always")
def _float_row_copy(values, r, buffer):
    if values.dtype == types.float32:

        def copied(values, r, buffer):  # pragma: no cover - compiled
            buffer[:] = values[r]
            return buffer

        return copied
    return _float_row(values, r, buffer)


@overload(row_to_write, inline="always")
def _row_to_write(values, r, buffer):
    if values.dtype == types.float32:
        return lambda values, r, buffer: values[r]
    return lambda values, r, buffer: buffer


@overload(put_row, inline="always")
def _put_row(row, values, r):
    if values.dtype == types.float32:
        return lambda row, values, r: None

    def rounded(row, values, r):  # pragma: no cover - compiled
        bits = row.view(np.uint32)
        for c in range(row.size):
            u = bits[c]
            nearest_even = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
            quiet_nan = (u >> np.uint32(16)) | np.uint32(0x40)
            values[r, c] = np.uint16(quiet_nan if (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000) else nearest_even)

    return rounded


@overload(store_row, inline="always")
def _store_row(row, values, r):
    if values.dtype == types.float32:

        def copied(row, values, r):  # pragma: no cover - compiled
            for c in range(row.size):
                values[r, c] = row[c]

        return copied
    return lambda row, values, r: put_row(row, values, r)


@compiled(inline="always")
def add_runs(run_first, run_second, first, second):  # pragma: no cover - compiled
    """Add the float32 running column sums into the float64 totals and restart them."""
    for c in range(first.size):
        first[c] += run_first[c]
        second[c] += run_second[c]
        run_first[c] = 0.0
        run_second[c] = 0.0


@compiled
def column_sums(z, first_row, origin):  # pragma: no cover - compiled
    """(Σ_r (z_rc − origin_c), Σ_r (z_rc − origin_c)²) per column, in float64 (float32 within 64 rows)."""
    rows, width = z.shape
    buffer = np.empty(width, np.float32)
    first, second = np.zeros(width, np.float64), np.zeros(width, np.float64)
    run_first, run_second = np.zeros(width, np.float32), np.zeros(width, np.float32)
    for r in range(rows):
        row = float_row(z, r, buffer)
        for c in range(width):
            d = row[c] - origin[c]
            run_first[c] += d
            run_second[c] += d * d
        if r % ROUNDS == ROUNDS - 1 or r == rows - 1:
            add_runs(run_first, run_second, first, second)
    return first, second


@compiled
def batch_norm_coefficients(first, second, origin, rows, eps, weight, bias, keep_scale, momentum, shift,
                            running_mean, running_var, mean, inv_std, gain, a, b):  # pragma: no cover - compiled
    """From ``column_sums``' totals about ``origin``: the batch's mean μ, 1/√(σ² + ε) (σ² biased) and γ/√(σ² + ε),
    in float64, stored into ``mean`` and ``gain`` (float32) and ``inv_std`` (float64: the backward's slope is
    computed from it); ``affine_relu_dropout``'s a and b (float32; dropout's
    ``keep_scale`` = 1/(1 − p) in them); the running statistics moved by ``momentum`` (μ + ``shift``, the
    unbiased σ²), in place. One call for what took ~20 NumPy and torch calls on 400 numbers each (each slowed
    ~3× by the caches the passes had just filled)."""
    for c in range(origin.size):
        offset = first[c] / rows
        mu = origin[c] + offset
        variance = max(second[c] / rows - offset * offset, 0.0)
        inv = 1.0 / np.sqrt(variance + eps)
        g = weight[c] * inv
        mean[c], inv_std[c], gain[c] = mu, inv, g
        a[c] = g * keep_scale
        b[c] = (bias[c] - mu * g) * keep_scale
        running_mean[c] = running_mean[c] * (1.0 - momentum) + (mu + shift[c]) * momentum
        running_var[c] = running_var[c] * (1.0 - momentum) + variance * rows / (rows - 1) * momentum


@compiled
def batch_norm_gradient_coefficients(bias_grad, centred_grad, inv_std, rows, weight_grad, bias_grad_out, shift,
                                     slope):  # pragma: no cover - compiled
    """From ``kept_gradient_sums``' totals (Σ g, Σ g·(z − μ)): ∂L/∂γ = Σ g·x̂ and ∂L/∂β = Σ g (into ``weight_grad``
    and ``bias_grad_out``), and ``batch_norm_input_gradient``'s shift = ∂L/∂β / B and slope = ∂L/∂γ·(1/√(σ² + ε)) / B."""
    for c in range(inv_std.size):
        gamma_grad = centred_grad[c] * inv_std[c]
        weight_grad[c], bias_grad_out[c] = gamma_grad, bias_grad[c]
        shift[c] = bias_grad[c] / rows
        slope[c] = gamma_grad * inv_std[c] / rows


@compiled
def affine_relu_dropout(z, out, first_row, a, b, seed, drop_below):  # pragma: no cover - compiled
    """out = relu(z·a + b) where kept, else 0 (a and b per column; dropout's 1/(1 − p) already in them).
    A NaN passes, as through ``torch.relu``."""
    rows, width = z.shape
    buffer, out_buffer, words = np.empty(width, np.float32), np.empty(width, np.float32), np.empty(width // 4 + 2, np.uint64)
    for r in range(rows):
        row, result = float_row(z, r, buffer), row_to_write(out, r, out_buffer)
        if drop_below == 0:
            for c in range(width):
                y = row[c] * a[c] + b[c]
                result[c] = np.float32(0.0) if y <= 0 else y
        else:
            lanes = random_lanes(seed, np.uint64((first_row + r) * width), width, words)
            for c in range(width):
                y = row[c] * a[c] + b[c]
                result[c] = np.float32(0.0) if (y <= 0) | (np.uint32(lanes[c]) < drop_below) else y
        put_row(result, out, r)


@compiled
def kept_gradient_sums(grad, out, z, first_row, mean, scale):  # pragma: no cover - compiled
    """(Σ_r g_rc, Σ_r g_rc·(z_rc − mean_c)) per column, in float64, of g = 0 where out ≤ 0, else grad·scale."""
    rows, width = z.shape
    z_buffer, grad_buffer, out_buffer = np.empty(width, np.float32), np.empty(width, np.float32), np.empty(width, np.float32)
    first, second = np.zeros(width, np.float64), np.zeros(width, np.float64)
    run_first, run_second = np.zeros(width, np.float32), np.zeros(width, np.float32)
    for r in range(rows):
        z_row, grad_row, out_row = float_row(z, r, z_buffer), float_row(grad, r, grad_buffer), float_row(out, r, out_buffer)
        for c in range(width):
            g = np.float32(0.0) if out_row[c] <= 0 else grad_row[c] * scale  # a NaN passes, as in threshold_backward
            run_first[c] += g
            run_second[c] += g * (z_row[c] - mean[c])
        if r % ROUNDS == ROUNDS - 1 or r == rows - 1:
            add_runs(run_first, run_second, first, second)
    return first, second


@compiled
def batch_norm_input_gradient(grad, out, z, dz, first_row, mean, scale, a, shift, slope):  # pragma: no cover - compiled
    """dz = a·(g − shift − (z − mean)·slope) with g = 0 where out ≤ 0, else grad·scale (per column a,
    shift, slope). ``dz`` may be ``grad`` itself: each row is computed into a buffer, then stored (the loop
    writing into a row of the arrays it reads ran 2.2× slower in float32: LLVM's check of whether the
    written row overlaps what is read picked the loop's scalar form)."""
    rows, width = z.shape
    z_buffer, grad_buffer, out_buffer, dz_buffer = (np.empty(width, np.float32), np.empty(width, np.float32),
                                                    np.empty(width, np.float32), np.empty(width, np.float32))
    for r in range(rows):
        z_row, grad_row, out_row = float_row(z, r, z_buffer), float_row(grad, r, grad_buffer), float_row(out, r, out_buffer)
        for c in range(width):
            g = np.float32(0.0) if out_row[c] <= 0 else grad_row[c] * scale
            dz_buffer[c] = a[c] * (g - shift[c] - (z_row[c] - mean[c]) * slope[c])
        store_row(dz_buffer, dz, r)


@compiled
def zero_unkept(bits, first_row, seed, drop_below, negative_up_to):  # pragma: no cover - compiled
    """bits[r, c] = 0 where the float is negative (its bits as a signed integer ≤ negative_up_to) or
    dropout drops it (rows counted from ``first_row``)."""
    rows, width = bits.shape
    words = np.empty(width // 4 + 2, np.uint64)
    for r in range(rows):
        if drop_below == 0:
            for c in range(width):
                if bits[r, c] <= negative_up_to:
                    bits[r, c] = 0
            continue
        lanes = random_lanes(seed, np.uint64((first_row + r) * width), width, words)
        for c in range(width):
            if (bits[r, c] <= negative_up_to) | (np.uint32(lanes[c]) < drop_below):
                bits[r, c] = 0


@compiled(fastmath={"reassoc", "contract"})
def linear_scores(x, y, first_row, weight, bias):  # pragma: no cover - compiled
    """y[r, o] = bias[o] + Σ_c x[r, c]·weight[o, c] in float32 (a few outputs o: the MLP's score layer)."""
    rows, width = x.shape
    buffer = np.empty(width, np.float32)
    for r in range(rows):
        row = float_row(x, r, buffer)
        for o in range(weight.shape[0]):
            total, weight_row = np.float32(0.0), weight[o]
            for c in range(width):
                total += row[c] * weight_row[c]
            y[r, o] = bias[o] + total


@compiled
def linear_scores_backward(grad_y, x, grad_x, first_row, weight):  # pragma: no cover - compiled
    """grad_x = grad_y·weight, and Σ_r grad_y[r, o]·x[r, c] (weight's gradient, float64) returned."""
    rows, width = x.shape
    outputs = weight.shape[0]
    buffer, grad_buffer = np.empty(width, np.float32), np.empty(width, np.float32)
    total, run = np.zeros((outputs, width), np.float64), np.zeros((outputs, width), np.float32)
    for r in range(rows):
        row, result = float_row(x, r, buffer), row_to_write(grad_x, r, grad_buffer)
        for o in range(outputs):
            g, weight_row, run_row = grad_y[r, o], weight[o], run[o]
            if o == 0:
                for c in range(width):
                    result[c] = g * weight_row[c]
            else:
                for c in range(width):
                    result[c] += g * weight_row[c]
            for c in range(width):
                run_row[c] += g * row[c]
        put_row(result, grad_x, r)
        if r % ROUNDS == ROUNDS - 1 or r == rows - 1:
            for o in range(outputs):
                for c in range(width):
                    total[o, c] += run[o, c]
                    run[o, c] = 0.0
    return total
