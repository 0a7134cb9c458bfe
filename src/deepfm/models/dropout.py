"""ReLU followed by inverted dropout, cheap on CPU.

``nn.Dropout`` on CPU draws its mask with ``bernoulli_`` (~15 ns an element here) into a float
tensor and multiplies twice; in DeepFM's MLP that cost more than a third of a training step.
Here one compiled pass (numba, ``models.mlp_passes``; a block of rows per torch thread) over the
layer's output draws each element's 16 random bits from SplitMix64 (a 64-bit word for state
seed + (⌊i/4⌋ + 1)·γ, a quarter of it each to elements 4⌊i/4⌋ … 4⌊i/4⌋ + 3, so element i's bits depend on the
seed and i alone) and zeroes the element if it is negative or dropped: dropped when its bits fall under
round(p·2¹⁶), i.e. with probability p to 2⁻¹⁷. The pass reads the element's sign from its bits (a NaN
passes, as through ``torch.relu``), so
fp32 and bfloat16 outputs (``--precision bf16``) take the same path with no cast; the kept elements
are then scaled by 1 / (1 − p), as ``nn.Dropout`` does. The seed comes from the running fit's generator
(``deepfm.randomness``), outside a fit from torch's default one, so ``torch.manual_seed`` fixes the masks.

After a ReLU, the output alone tells which elements passed both (out > 0), so the backward
pass reads the output (which the next linear layer keeps anyway) and saves no mask.
"""

from __future__ import annotations

import numpy as np
import torch

from deepfm import randomness
from deepfm.compiled import in_row_blocks

_threshold = torch.ops.aten.threshold_backward  # (x, s, t) ↦ x where s > t, else 0: one vectorised pass
# a float's bits read as a signed integer, and the least such integer of a NaN with its sign bit set: every
# value ≤ it is a negative number (or −0, −∞) and every value in (it, 0) a NaN, which ReLU passes on as torch's does
_SIGNED_BITS = {torch.float32: (torch.int32, -(2**23)), torch.bfloat16: (torch.int16, -(2**7)),
                torch.float16: (torch.int16, -(2**10)), torch.float64: (torch.int64, -(2**52))}


def relu_dropout_(z: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """In place: ``z`` (contiguous) ↦ relu(z) ∘ m / (1 − p), m the keep mask that ``seed`` draws (see the module)."""
    from deepfm.models import mlp_passes

    assert z.is_contiguous(), "relu_dropout_ writes in place: z must be contiguous"
    if z.numel() == 0:
        return z
    signed, negative_up_to = _SIGNED_BITS[z.dtype]
    bits = z.detach().view(signed).reshape(len(z) if z.dim() > 1 else 1, -1).numpy()  # a view: the pass writes into z
    in_row_blocks(mlp_passes.zero_unkept, [bits], np.uint64(seed & (2**64 - 1)), mlp_passes.drop_threshold(p),
                  negative_up_to)
    return z.mul_(1.0 / (1.0 - p))


def draw_seed() -> int:
    """A mask's seed from the running fit's generator (``deepfm.randomness``), else torch's default one."""
    return int(torch.randint(0, 2**62, (), dtype=torch.int64, generator=randomness.generator(), device="cpu"))


def dropout_from(z: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """``nn.Dropout(p)`` on a CPU tensor in training (0 < p < 1), its mask drawn from ``generator``: the steps of
    torch's own CPU dropout (noise ~ Bernoulli(1 − p), divided by 1 − p, times ``z``), so the same state of the
    same numbers gives the same output and gradient as ``nn.Dropout`` drawing from torch's default generator."""
    noise = torch.empty_like(z).bernoulli_(1.0 - p, generator=generator)
    return z * noise.div_(1.0 - p)


def keep_mask(shape: torch.Size, p: float, seed: int) -> torch.Tensor:
    """The keep mask (bool) that ``relu_dropout`` draws for an all-positive output of ``shape`` with ``seed``."""
    return relu_dropout_(torch.ones(shape), p, seed) > 0


class _ReluDropout(torch.autograd.Function):
    """relu(z) ∘ m / (1 − p); ∂/∂z = g / (1 − p) where the output is > 0, else 0.
    With ``overwrite_grad`` the backward writes into the incoming gradient g instead of a new tensor."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, p: float, seed: int, overwrite_grad: bool) -> torch.Tensor:
        out = relu_dropout_(z, p, seed)
        ctx.mark_dirty(out)
        ctx.save_for_backward(out)
        ctx.scale, ctx.overwrite_grad = 1.0 / (1.0 - p), overwrite_grad
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        if ctx.overwrite_grad and grad.is_contiguous():
            return _threshold.grad_input(grad, out, 0, grad_input=grad).mul_(ctx.scale), None, None, None
        return _threshold(grad, out, 0).mul_(ctx.scale), None, None, None


def relu_dropout(z: torch.Tensor, p: float, seed: int | None = None, overwrite_grad: bool = False) -> torch.Tensor:
    """``dropout(relu(z), p)`` in training, in place on ``z`` (a layer's fresh, contiguous CPU output):
    each element kept with probability 1 − p and scaled by 1 / (1 − p). ``seed`` fixes the mask
    (``keep_mask`` gives it); by default it is drawn with ``draw_seed``.

    ``overwrite_grad``: the backward overwrites the gradient it receives (no new (B, H) tensor, whose
    fresh pages cost more than the pass itself). Only for a caller whose output feeds a layer that
    makes a new input gradient no one else reads, as ``nn.Linear`` does (``MultiLayerPerceptron``);
    never where a user's tensor may arrive as the gradient (``out.backward(grad)``)."""
    if not z.is_contiguous():
        z = z.contiguous()
    return _ReluDropout.apply(z, p, draw_seed() if seed is None else seed, overwrite_grad)
