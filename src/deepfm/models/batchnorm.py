"""Training-mode batch norm of a (B, C) batch, cheap on CPU.

ATen's CPU batch norm treats a (B, C) input as (B, C, 1) images and loops over B·C one-pixel
planes: in DeepFM's MLP (B = 4096, C = 400) its forward and backward cost about as much as the
layer's matrix product. Here the same function is written as column reductions and two fused
passes: forward y = z·a + b with a = γ / √(σ² + ε) and b = β − μ·a; backward, from g = ∂L/∂y,
∂L/∂β = Σ g, ∂L/∂γ = Σ g·ẑ and ∂L/∂z = a·g + c₁·z + c₀ (the usual batch-norm gradient,
a·(g − Σg/B − ẑ·Σgẑ/B), with its per-column constants gathered).
"""

from __future__ import annotations

import torch


class _BatchNormOfRows(torch.autograd.Function):
    """Batch norm over the rows of z (B, C) with the batch's biased variance; returns (y, μ, σ²)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float):
        z32 = z if z.dtype == torch.float32 else z.float()  # statistics in fp32 (bf16 under autocast)
        mean = z32.mean(0)  # column reductions vectorise across C; var_mean(dim=0) does not
        var = torch.linalg.vector_norm(z32 - mean, dim=0).square_().div_(z.shape[0])  # two passes, stable
        invstd = torch.rsqrt(var + eps)
        scale = weight * invstd  # a
        shift = torch.addcmul(bias, mean, scale, value=-1)  # b = β − μ·a
        y = torch.addcmul(shift, z32, scale)
        ctx.save_for_backward(z, mean, invstd, weight)
        ctx.mark_non_differentiable(mean, var)
        return y.to(z.dtype), mean, var

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor, _mean, _var):
        z, mean, invstd, weight = ctx.saved_tensors
        g = grad if grad.dtype == torch.float32 else grad.float()
        z32 = z if z.dtype == torch.float32 else z.float()
        rows = z.shape[0]
        grad_bias = g.sum(0)  # Σ g
        grad_weight = (torch.linalg.vecdot(g, z32, dim=0) - mean * grad_bias) * invstd  # Σ g·ẑ
        scale = weight * invstd
        c1 = -scale * invstd * grad_weight / rows
        c0 = -scale * grad_bias / rows - c1 * mean
        grad_z = torch.addcmul(c0, z32, c1).addcmul_(g, scale)
        return grad_z.to(z.dtype), grad_weight, grad_bias, None


def batch_norm_of_rows(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(γ·(z − μ)/√(σ² + ε) + β, μ, σ²) over the rows of z (B, C), σ² biased: what ``F.batch_norm``
    computes in training, without updating running statistics (the caller does)."""
    return _BatchNormOfRows.apply(z, weight, bias, eps)


def batch_norm_folded(z: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Evaluation-mode batch norm of (B, C) rows as one pass, z·a + b, with a = γ / √(running σ² + ε) and
    b = β − running μ·a folded per column (ATen's CPU kernel loops over B·C one-pixel planes here too)."""
    scale = weight * torch.rsqrt(running_var + eps)
    shift = torch.addcmul(bias, running_mean, scale, value=-1)
    z32 = z if z.dtype == torch.float32 else z.float()
    return torch.addcmul(shift, z32, scale).to(z.dtype)
