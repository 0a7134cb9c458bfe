"""Product-based Neural Networks (Qu et al. 2016): IPNN, OPNN and PNN*.

A product layer feeds the MLP two signals: z, the field embeddings themselves, and p, their
pairwise products. Its output l_1 = relu(l_z + l_p + b_1) with l_z = W_z ⊙ z, l_p = W_p ⊙ p is
exactly a linear layer over [z, p], so it is the first hidden layer of the MLP here (with the library's
default batch norm, l_1 = relu(BN(l_z + l_p)); ``batch_norm=False`` is the paper's form).

- inner (IPNN): p_ij = <f_i, f_j> for every pair of fields i < j: F(F−1)/2 numbers.
- outer (OPNN): the paper's sum-pooling, p = f_Σ f_Σᵀ with f_Σ = Σ_i f_i: one k×k matrix,
  O(k²) instead of the O(F²k²) of all pairwise outer products f_i f_jᵀ.
- both (PNN*): [z, p_inner, p_outer].
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from deepfm.data.batch import Batch
from deepfm.models.layers import FeaturesEmbedding, MultiLayerPerceptron, squeeze_output

Product = Literal["inner", "outer", "both"]


def inner_products(fields: torch.Tensor) -> torch.Tensor:
    """p_ij = <f_i, f_j> for i < j (row-major pair order). (B, F, k) -> (B, F(F−1)/2)."""
    pairs = torch.triu_indices(fields.shape[1], fields.shape[1], offset=1, device=fields.device)  # (2, P)
    return (fields[:, pairs[0]] * fields[:, pairs[1]]).sum(-1)


def outer_product_of_sum(fields: torch.Tensor) -> torch.Tensor:
    """p = f_Σ f_Σᵀ with f_Σ = Σ_i f_i (flattened). (B, F, k) -> (B, k²)."""
    f_sum = fields.sum(dim=1)  # (B, k)
    return (f_sum.unsqueeze(2) * f_sum.unsqueeze(1)).flatten(1)  # (B, k, k) -> (B, k²)


class PNN(nn.Module):
    def __init__(
        self,
        num_features: int,
        num_fields: int,
        embed_dim: int = 10,
        mlp: Sequence[int] = (400, 400, 400),
        dropout: float = 0.5,
        activation: str = "relu",
        batch_norm: bool = False,
        product: Product = "inner",
        output_dim: int = 1,
    ):
        super().__init__()
        self.product = product
        self.output_dim = output_dim
        self.embedding = FeaturesEmbedding(num_features, embed_dim)
        width = num_fields * embed_dim
        if product in ("inner", "both"):
            width += num_fields * (num_fields - 1) // 2
        if product in ("outer", "both"):
            width += embed_dim * embed_dim
        self.dnn = MultiLayerPerceptron(width, mlp, dropout, activation, batch_norm, output_dim)

    def product_layer(self, fields: torch.Tensor) -> torch.Tensor:
        """[z, p]: the signals whose weighted sum is the first hidden layer. (B, F, k) -> (B, width)."""
        signals = [fields.flatten(1)]  # z
        if self.product in ("inner", "both"):
            signals.append(inner_products(fields))
        if self.product in ("outer", "both"):
            signals.append(outer_product_of_sum(fields))
        return torch.cat(signals, dim=1)

    def forward(self, batch: Batch) -> torch.Tensor:  # logits (B,), or (B, C) for C outputs
        return squeeze_output(self.dnn(self.product_layer(self.embedding(batch).fields)), self.output_dim)
