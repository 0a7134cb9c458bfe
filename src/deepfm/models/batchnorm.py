"""Batch norm of a (B, C) batch on CPU: training fused with the ReLU and dropout after it, evaluation
folded into one pass.

Training (``batch_norm_relu_dropout``): ATen's batch norm with the ReLU + dropout pass after it goes
over a (B, C) tensor 17 times in a forward and backward (11 reads, 6 writes, by our count); here two
compiled passes forward (column moments; then normalise, ReLU and dropout into the output) and two
backward (two column sums; then the input's gradient) go over one 10 times (8 reads, 2 writes), each
pass a block of rows per torch thread (``models.mlp_passes``). DeepFM's step at the defaults, Criteo
shape, the two forms interleaved: fp32 −5%, bf16 −1% (benchmarks/README.md).
Forward, with x̂ = (z − μ)/√(σ² + ε) from the batch's μ and (biased) σ², and m dropout's keep mask:

    out = relu(γ·x̂ + β) ∘ m / (1 − p)

Backward, with g = ∂L/∂out · m/(1 − p) where out > 0 (else 0), the gradient of γ·x̂ + β:

    ∂L/∂β = Σ_b g,   ∂L/∂γ = Σ_b g·x̂,   ∂L/∂z = γ/√(σ² + ε) · (g − ∂L/∂β / B − x̂ · ∂L/∂γ / B)

The running statistics move as ``F.batch_norm``'s do (the unbiased variance). A NaN in a column
makes that column's kept outputs NaN (dropout's zeros stay zeros, where ``nn.Dropout``'s NaN·0 is NaN)
and its gradient passes, as through ``threshold_backward``.
"""

from __future__ import annotations

import numpy as np
import torch

from deepfm.compiled import in_row_blocks, numpy_view
from deepfm.models.dropout import draw_seed

FUSED_DTYPES = (torch.float32, torch.bfloat16)


def batch_norm_folded(z: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Evaluation-mode batch norm of (B, C) rows as one pass, z·a + b, with a = γ / √(running σ² + ε) and
    b = β − running μ·a folded per column (ATen's CPU kernel loops over B·C one-pixel planes here too)."""
    scale = weight * torch.rsqrt(running_var + eps)
    shift = torch.addcmul(bias, running_mean, scale, value=-1)
    z32 = z if z.dtype == torch.float32 else z.float()
    return torch.addcmul(shift, z32, scale).to(z.dtype)


def _column_totals(results: list) -> tuple[np.ndarray, np.ndarray]:
    return sum(first for first, _ in results), sum(second for _, second in results)


class _BatchNormReluDropout(torch.autograd.Function):
    """The module's equations; ``overwrite_grad``: the backward writes ∂L/∂z into the gradient it receives."""

    @staticmethod
    def forward(ctx, z, weight, bias, running_mean, running_var, momentum, eps, p, seed, overwrite_grad, input_shift):
        from deepfm.models import mlp_passes

        rows, width = z.shape
        values = numpy_view(z)
        origin = z[0].detach().float().numpy()  # the moments about the first row: no cancellation where |μ| ≫ σ
        first, second = _column_totals(in_row_blocks(mlp_passes.column_sums, [values], origin))
        mean, inv_std, gain = np.empty(width, np.float32), np.empty(width), np.empty(width, np.float32)
        a, b = np.empty(width, np.float32), np.empty(width, np.float32)
        keep_scale = 1.0 / (1.0 - p)
        shift = np.zeros(width) if input_shift is None else numpy_view(input_shift)  # the batch's mean as if z had it
        mlp_passes.batch_norm_coefficients(first, second, origin, rows, eps, numpy_view(weight), numpy_view(bias),
                                           keep_scale, momentum, shift, numpy_view(running_mean),
                                           numpy_view(running_var), mean, inv_std, gain, a, b)
        torch.autograd.graph.increment_version((running_mean, running_var))  # written in place, as mul_/add_ would
        out = torch.empty_like(z)
        in_row_blocks(mlp_passes.affine_relu_dropout, [values, numpy_view(out)], a, b,
                      np.uint64(seed & (2**64 - 1)), mlp_passes.drop_threshold(p))
        ctx.save_for_backward(z, out)
        ctx.mean, ctx.inv_std, ctx.gain = mean, inv_std, gain
        ctx.keep_scale, ctx.overwrite_grad = np.float32(keep_scale), overwrite_grad
        ctx.shift_like = None if input_shift is None else (input_shift.shape, {"dtype": input_shift.dtype})
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        from deepfm.models import mlp_passes

        z, out = ctx.saved_tensors
        grad = grad.contiguous().to(z.dtype)
        rows, width = z.shape
        arrays = [numpy_view(grad), numpy_view(out), numpy_view(z)]
        bias_totals, centred_totals = _column_totals(in_row_blocks(mlp_passes.kept_gradient_sums, arrays, ctx.mean,
                                                                   ctx.keep_scale))
        weight_grad, bias_grad = torch.empty(width, dtype=torch.float32), torch.empty(width, dtype=torch.float32)
        shift, slope = np.empty(width, np.float32), np.empty(width, np.float32)
        mlp_passes.batch_norm_gradient_coefficients(bias_totals, centred_totals, ctx.inv_std, rows, weight_grad.numpy(),
                                                    bias_grad.numpy(), shift, slope)
        grad_z = grad if ctx.overwrite_grad else torch.empty_like(z)
        in_row_blocks(mlp_passes.batch_norm_input_gradient, [*arrays, numpy_view(grad_z)], ctx.mean, ctx.keep_scale,
                      ctx.gain, shift, slope)
        shift_grad = torch.zeros(ctx.shift_like[0], **ctx.shift_like[1]) if ctx.needs_input_grad[10] else None  # exactly zero
        return grad_z, weight_grad, bias_grad, None, None, None, None, None, None, None, shift_grad


def fusable_parameters(*tensors: torch.Tensor | None) -> bool:
    """Whether ``batch_norm_relu_dropout`` takes these as its weight, bias, running statistics or input
    shift (None: no input shift): float32 and contiguous (the compiled passes read and write them in place)."""
    return all(t is None or (t.dtype == torch.float32 and t.is_contiguous()) for t in tensors)


def batch_norm_relu_dropout(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
                            running_var: torch.Tensor, momentum: float, eps: float, p: float = 0.0,
                            seed: int | None = None, overwrite_grad: bool = False,
                            input_shift: torch.Tensor | None = None) -> torch.Tensor:
    """Training-mode batch norm of a (B, C) CPU batch (float32 or bfloat16, B ≥ 2; float32 parameters), then
    ReLU, then inverted dropout p (0: none), as one function (see the module); the running statistics move by
    ``momentum``. ``seed`` fixes the mask (``dropout.keep_mask`` gives it); by default drawn with
    ``dropout.draw_seed``. ``overwrite_grad`` as in ``dropout.relu_dropout``: only where the output feeds a Linear.
    ``input_shift`` (C,): a constant per column left out of ``z`` (a Linear's bias): the output does not
    depend on it (the batch's mean is subtracted), the running mean counts it in; its gradient is zero."""
    if z.dtype not in FUSED_DTYPES or z.dim() != 2 or len(z) < 2:
        raise ValueError(f"batch_norm_relu_dropout takes a (B ≥ 2, C) float32 or bfloat16 batch, not {z.dtype} "
                         f"{tuple(z.shape)}")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout p must be in [0, 1), not {p}")
    if not fusable_parameters(weight, bias, running_mean, running_var, input_shift):
        raise ValueError("batch_norm_relu_dropout takes float32 (contiguous) weight, bias, running statistics and "
                         "input_shift")
    z = z.contiguous()
    seed = (draw_seed() if seed is None else seed) if p > 0 else 0
    return _BatchNormReluDropout.apply(z, weight, bias, running_mean, running_var, momentum, eps, p, seed, overwrite_grad,
                                       input_shift)
