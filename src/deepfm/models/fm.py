"""Factorization Machine (Rendle 2010).

y = w0 + Σ_i w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j
"""

from __future__ import annotations

import torch
from torch import nn

from deepfm.data.batch import Batch
from deepfm.models.layers import FeaturesEmbedding, FeaturesLinear


class FactorizationMachine(nn.Module):
    def __init__(self, num_features: int, embed_dim: int):
        super().__init__()
        self.linear = FeaturesLinear(num_features)
        self.embedding = FeaturesEmbedding(num_features, embed_dim)

    def forward(self, batch: Batch) -> torch.Tensor:  # logits (B,)
        return self.linear(batch) + self.embedding.pairwise(batch)
