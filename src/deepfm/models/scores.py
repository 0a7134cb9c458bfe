"""The MLP's output layer on CPU while training with ``--precision bf16``: a few float32 scores from a
wide bfloat16 hidden layer.

``nn.Linear(H, 1)`` there casts the (B, H) layer to float32 (a copy, so that the score is summed and
kept in float32), forms ∂L/∂x as a rank-1 product (B, 1)·(1, H) and casts it back to bfloat16. Here one
compiled pass forward (each row's dot products in float32, reading the bfloat16 row as it is) and one
backward (∂L/∂x = ∂L/∂y·W written as bfloat16, and Σ_b ∂L/∂y·x for W), a block of rows per torch thread
(``models.mlp_passes``). (4096, 400) → 1, forward and backward, medians of 200 interleaved: 3.35-3.58 →
2.26-2.54 ms. A float32 layer keeps ``nn.Linear``: the same memory traffic, and there the BLAS path
measured faster (2.1 against 2.5 ms).
"""

from __future__ import annotations

import torch

from deepfm.compiled import in_row_blocks, numpy_view

MAX_OUTPUTS = 8  # more scores than this: the BLAS product pays


class _LinearScores(torch.autograd.Function):
    """y = x·Wᵀ + b in float32; ∂L/∂x = ∂L/∂y·W, ∂L/∂W = ∂L/∂yᵀ·x, ∂L/∂b = Σ_b ∂L/∂y."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        from deepfm.models import mlp_passes

        scores = torch.empty(len(x), len(weight), dtype=torch.float32)
        in_row_blocks(mlp_passes.linear_scores, [numpy_view(x), scores.numpy()], numpy_view(weight.contiguous()),
                      numpy_view(bias))
        ctx.save_for_backward(x, weight)
        return scores

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        from deepfm.models import mlp_passes

        x, weight = ctx.saved_tensors
        grad = grad.float().contiguous()
        grad_x = torch.empty_like(x)
        partial = in_row_blocks(mlp_passes.linear_scores_backward, [grad.numpy(), numpy_view(x), numpy_view(grad_x)],
                                numpy_view(weight.contiguous()))
        return grad_x, torch.from_numpy(sum(partial)).to(weight.dtype), grad.sum(0)


def fusable(output: torch.nn.Linear, x: torch.Tensor) -> bool:
    """Whether ``linear_scores`` can take ``output`` on ``x``: a (B, H) bfloat16 CPU batch, a plain
    ``nn.Linear`` (not a subclass) of 1 to ``MAX_OUTPUTS`` scores with a float32 weight and bias. (The caller
    checks for hooks.) Its backward is once differentiable: no ``create_graph`` through it."""
    return (x.device.type == "cpu" and x.dim() == 2 and x.is_contiguous() and x.dtype == torch.bfloat16
            and type(output) is torch.nn.Linear and output.bias is not None
            and output.weight.dtype == output.bias.dtype == torch.float32 and 1 <= output.out_features <= MAX_OUTPUTS)


def linear_scores(x: torch.Tensor, output: torch.nn.Linear) -> torch.Tensor:
    """``output(x.float())`` (float32 scores) as one compiled pass each way; see ``fusable``."""
    return _LinearScores.apply(x, output.weight, output.bias)
