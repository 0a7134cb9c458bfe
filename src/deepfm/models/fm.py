"""Factorization Machine (Rendle 2010).

y = w0 + Σ_i w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j

With C outputs (``output_dim``), C such FMs over the same features: w0, w_i are C-vectors and
each feature has C latent vectors of size k (one table of width C·k).
"""

from __future__ import annotations

import torch
from torch import nn

from deepfm.data.batch import Batch
from deepfm.models.layers import FeaturesEmbedding, FeaturesLinear, fm_terms_of_design


class FactorizationMachine(nn.Module):
    def __init__(self, num_features: int, embed_dim: int, output_dim: int = 1):
        super().__init__()
        self.output_dim = output_dim
        self.linear = FeaturesLinear(num_features, output_dim=output_dim)
        self.embedding = FeaturesEmbedding(num_features, embed_dim * output_dim)

    def forward(self, batch: Batch) -> torch.Tensor:  # logits (B,), or (B, C) for C outputs
        both = fm_terms_of_design(self.linear, self.embedding, batch)  # training on CPU: one compiled pass
        if both is not None:
            return self.linear.bias + both
        return self.linear(batch) + self.embedding.pairwise(batch, self.output_dim)
