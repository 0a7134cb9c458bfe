"""The DeepFM paper's two "wide & deep" baselines; unlike DeepFM, their parts share nothing.

- LR&DNN (Wide & Deep, Cheng et al. 2016, with the raw features as the wide part):
  ŷ = sigmoid(w0 + Σ_i w_i x_i + MLP([e_1, …, e_m]))
- FM&DNN (FM as the wide part): ŷ = sigmoid(y_FM(V) + MLP([e_1, …, e_m] from a second table E)),
  so the FM's latent vectors V and the DNN's embeddings E are learned separately.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from deepfm.data.batch import Batch
from deepfm.models.first_layer import first_layer_plan, mlp_on_distinct_rows
from deepfm.models.layers import FeaturesEmbedding, FeaturesLinear, MultiLayerPerceptron, fm_pairwise, squeeze_output


class _DeepPart(nn.Module):
    """MLP([e_1, …, e_m]) over its own embedding table."""

    def __init__(self, num_features: int, num_fields: int, embed_dim: int, mlp: Sequence[int], dropout: float,
                 activation: str, batch_norm: bool, output_dim: int = 1):
        super().__init__()
        self.embedding = FeaturesEmbedding(num_features, embed_dim)
        self.mlp = MultiLayerPerceptron(num_fields * embed_dim, mlp, dropout, activation, batch_norm, output_dim)

    def forward(self, batch: Batch) -> torch.Tensor:  # (B,), or (B, C) for C outputs
        first = self.mlp.first_linear
        plan = first_layer_plan(self.embedding, self.mlp, batch)
        if plan is not None:  # the first Linear on the batch's distinct rows (same sums, fewer products)
            return squeeze_output(mlp_on_distinct_rows(self.embedding, self.mlp, batch, plan)[1], self.mlp.output_dim)
        return squeeze_output(self.mlp(self.embedding(batch).fields.flatten(1)), self.mlp.output_dim)


class WideAndDeep(nn.Module):
    """LR&DNN: a linear model on the raw features plus a DNN on embeddings."""

    def __init__(self, num_features: int, num_fields: int, embed_dim: int = 10, mlp: Sequence[int] = (400, 400, 400),
                 dropout: float = 0.5, activation: str = "relu", batch_norm: bool = False, output_dim: int = 1):
        super().__init__()
        self.output_dim = output_dim
        self.wide = FeaturesLinear(num_features, output_dim=output_dim)
        self.deep = _DeepPart(num_features, num_fields, embed_dim, mlp, dropout, activation, batch_norm, output_dim)

    def forward(self, batch: Batch) -> torch.Tensor:  # logits (B,), or (B, C) for C outputs
        return self.wide(batch) + self.deep(batch)


class FMAndDNN(nn.Module):
    """FM&DNN: an FM (its own latent vectors V) plus a DNN on a separate embedding table E."""

    def __init__(self, num_features: int, num_fields: int, embed_dim: int = 10, mlp: Sequence[int] = (400, 400, 400),
                 dropout: float = 0.5, activation: str = "relu", batch_norm: bool = False, output_dim: int = 1):
        super().__init__()
        self.output_dim = output_dim
        self.linear = FeaturesLinear(num_features, output_dim=output_dim)
        self.fm_embedding = FeaturesEmbedding(num_features, embed_dim * output_dim)  # V: one FM per output
        self.deep = _DeepPart(num_features, num_fields, embed_dim, mlp, dropout, activation, batch_norm, output_dim)  # E

    def forward(self, batch: Batch) -> torch.Tensor:  # logits (B,), or (B, C) for C outputs
        y_fm = self.linear(batch) + fm_pairwise(self.fm_embedding(batch), self.output_dim)
        return y_fm + self.deep(batch)
