"""Logistic (or linear) regression: y = w0 + Σ_i w_i x_i."""

from __future__ import annotations

import torch
from torch import nn

from deepfm.data.batch import Batch
from deepfm.models.layers import FeaturesLinear


class LogisticRegression(nn.Module):
    def __init__(self, num_features: int, output_dim: int = 1):
        super().__init__()
        self.linear = FeaturesLinear(num_features, output_dim=output_dim)

    def forward(self, batch: Batch) -> torch.Tensor:  # logits (B,), or (B, C) for C outputs
        return self.linear(batch)
