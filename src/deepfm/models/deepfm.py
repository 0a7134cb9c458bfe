"""DeepFM (Guo et al. 2017): an FM part and a deep part over ONE shared embedding layer.

ŷ = sigmoid(y_FM + y_DNN); y_FM = w0 + Σ w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j,
y_DNN = MLP([e_1, …, e_m]) where e_f = Σ_{i∈f} v_i x_i are the same latent vectors V.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from deepfm.data.batch import Batch
from deepfm.models.layers import FeaturesEmbedding, FeaturesLinear, MultiLayerPerceptron, fm_pairwise


class DeepFM(nn.Module):
    def __init__(
        self,
        num_features: int,
        num_fields: int,
        embed_dim: int = 10,
        mlp: Sequence[int] = (400, 400, 400),
        dropout: float = 0.5,
        activation: str = "relu",
        batch_norm: bool = False,
    ):
        super().__init__()
        self.linear = FeaturesLinear(num_features)
        self.embedding = FeaturesEmbedding(num_features, embed_dim)
        self.dnn = MultiLayerPerceptron(num_fields * embed_dim, mlp, dropout, activation, batch_norm)

    def forward(self, batch: Batch) -> torch.Tensor:  # logits (B,)
        embedded = self.embedding(batch)  # shared by both parts
        y_fm = self.linear(batch) + fm_pairwise(embedded)  # from the field vectors the DNN needs anyway (FM alone
        # uses FeaturesEmbedding.pairwise, which can skip them)
        y_dnn = self.dnn(embedded.fields.flatten(1)).squeeze(-1)
        return y_fm + y_dnn
