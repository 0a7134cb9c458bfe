"""A trained model made lean for serving: the same function with fewer operations per forward pass.

In evaluation, batch normalisation is an affine map per unit, y = γ (x − μ) / √(σ² + ε) + β, so a
``Linear`` followed by a ``BatchNorm1d`` is one ``Linear`` with rows scaled by s = γ / √(σ² + ε) and
bias s (b − μ) + β (computed in float64); dropout is the identity. For one row of the paper's
400-400-400 DeepFM this removes six of the MLP's thirteen modules; predictions move by float32
rounding only (the tests compare them with ``deepfm predict``).
"""

from __future__ import annotations

import torch
from torch import nn


def for_inference(model: nn.Module) -> nn.Module:
    """``model`` in evaluation mode with every ``Sequential``'s Linear → BatchNorm1d pairs folded and its
    dropout layers removed (in place; the model must not be trained afterwards)."""
    model.eval()
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            _fold(module)
    return model


def _fold(sequence: nn.Sequential) -> None:
    layers: list[nn.Module] = []
    for layer in sequence:
        if isinstance(layer, nn.Dropout):
            continue
        if isinstance(layer, nn.BatchNorm1d) and layers and isinstance(layers[-1], nn.Linear) and layer.track_running_stats:
            layers[-1] = _folded(layers[-1], layer)
            continue
        layers.append(layer)
    for name in list(sequence._modules):
        del sequence._modules[name]
    for i, layer in enumerate(layers):
        sequence.add_module(str(i), layer)


@torch.no_grad()
def _folded(linear: nn.Linear, norm: nn.BatchNorm1d) -> nn.Linear:
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    bias = linear.bias.double() if linear.bias is not None else torch.zeros(linear.out_features, dtype=torch.float64)
    shift = -norm.running_mean.double()
    if norm.affine:
        scale = scale * norm.weight.double()
    folded = nn.Linear(linear.in_features, linear.out_features, dtype=linear.weight.dtype)
    folded.weight.copy_(linear.weight.double() * scale[:, None])
    folded.bias.copy_((bias + shift) * scale + (norm.bias.double() if norm.affine else 0.0))
    return folded.eval()
