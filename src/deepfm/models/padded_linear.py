"""``x Wᵀ`` (a Linear without its bias) whose input gradient ``g W`` runs over a padded width.

DeepFM's first Linear reads the flattened field vectors, F·k wide (390 on Criteo-shaped data), and its input
gradient ``g W`` (B × H times H × F·k) is a product with that odd width as its output. MKL ran it at ~75-80% of
the rate of the same product 400 wide (AMD EPYC host, batch 4096, H 400, interleaved: 12.3-13.0 against 9.5 ms).
As ``g [W 0]``, over a width padded to a multiple of ``PAD_TO``, the first F·k columns kept: 10.3-10.7 ms. The
trainer's step at the defaults on the Criteo shape was 0.7-4.3 ms faster in five runs of 30-40 interleaved steps
(``benchmarks/profile_step.py --padded-input-gradient``). The zero columns add no term to the kept ones (the
results were bit-identical here).

``MultiLayerPerceptron`` takes it for a Linear whose output goes into its fused batch norm (the training step at
the defaults on CPU); without batch norm, and under the distributed global batch norm, its Linears stay torch's.
Only widths of at least ``MIN_WIDTH`` are padded (at most 15 zero columns on 256: < 6% more products); the gain
was measured at 390. Like the other fused passes it has no double backward.
"""

from __future__ import annotations

import torch

from deepfm.models.autocast import autocast_enabled

PAD_TO = 16  # columns
MIN_WIDTH = 256  # narrower inputs are not padded


def pads(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``linear_without_bias`` takes the padded input gradient here: an fp32 CPU product outside
    autocast whose input needs a gradient and whose width, at least ``MIN_WIDTH``, is not a multiple of ``PAD_TO``."""
    return (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and x.dim() == 2
            and weight.shape[1] >= MIN_WIDTH and weight.shape[1] % PAD_TO != 0
            and x.requires_grad and torch.is_grad_enabled()
            and not autocast_enabled("cpu"))


def linear_without_bias(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight)``, with the padded input gradient where ``pads``."""
    return _PaddedInputGradient.apply(x, weight) if pads(x, weight) else torch.nn.functional.linear(x, weight)


class _PaddedInputGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x if weight.requires_grad else None, weight)  # x only for the weight's gradient
        return x.mm(weight.t())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            width = weight.shape[1]
            padded = weight.new_zeros(weight.shape[0], width + (-width) % PAD_TO)
            padded[:, :width] = weight
            grad_x = grad.mm(padded)[:, :width].contiguous()
        if ctx.needs_input_grad[1]:
            grad_weight = grad.t().mm(x)
        return grad_x, grad_weight
