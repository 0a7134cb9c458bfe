"""DeepFM (Guo et al. 2017): an FM part and a deep part over ONE shared embedding layer.

ŷ = sigmoid(y_FM + y_DNN); y_FM = w0 + Σ w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j,
y_DNN = MLP([e_1, …, e_m]) where e_f = Σ_{i∈f} v_i x_i are the same latent vectors V.
With C outputs, each feature has C latent vectors (one FM per output, ``FactorizationMachine``)
and the MLP, reading all of them, ends in C units.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from deepfm.data.batch import Batch
from deepfm.models.first_layer import field_vectors_of_rows, first_layer_plan, fm_pairwise_of_rows, mlp_on_distinct_rows
from deepfm.models.layers import (EmbeddedFields, FeaturesEmbedding, FeaturesLinear, MultiLayerPerceptron,
                                  autocast_dtype, fm_pairwise, fm_pairwise_and_mlp_input, squeeze_output)
from deepfm.models.narrow_fields import fm_and_mlp_with_narrow_fields, narrow_fields_plan


def mlp_input_dtype(fields: torch.Tensor, first: nn.Linear | None) -> torch.dtype | None:
    """The dtype to hand the MLP its flattened field vectors in: under CPU autocast, the one the first Linear would
    cast them to (None: as they are)."""
    cast = fields.device.type == "cpu" and fields.dtype == torch.float32 and first is not None
    return autocast_dtype("cpu") if cast and first.weight.dtype == torch.float32 else None


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
        output_dim: int = 1,
        start_as_fm: bool = False,
    ):
        """``start_as_fm``: the MLP's output layer starts at 0 (its other layers and the tables as drawn), so y_DNN is 0
        until training moves it and the model starts as its FM part."""
        super().__init__()
        self.output_dim = output_dim
        self.linear = FeaturesLinear(num_features, output_dim=output_dim)
        self.embedding = FeaturesEmbedding(num_features, embed_dim * output_dim)
        self.dnn = MultiLayerPerceptron(num_fields * embed_dim * output_dim, mlp, dropout, activation, batch_norm, output_dim)
        if start_as_fm:
            nn.init.zeros_(self.dnn.layers[-1].weight)
            nn.init.zeros_(self.dnn.layers[-1].bias)

    def forward(self, batch: Batch) -> torch.Tensor:  # logits (B,), or (B, C) for C outputs
        first = self.dnn.first_linear
        plan = first_layer_plan(self.embedding, self.dnn, batch)
        if plan is not None:  # the MLP's first Linear on the batch's distinct rows (same sums, fewer products)
            rows, deep = mlp_on_distinct_rows(self.embedding, self.dnn, batch, plan)
            if self.output_dim == 1:
                pairwise = fm_pairwise_of_rows(rows, batch, plan)
            else:  # one FM per output over its own latent columns
                fields = field_vectors_of_rows(rows, plan.distinct, batch.values)
                pairwise = fm_pairwise(EmbeddedFields(fields), self.output_dim)
            y_fm = self.linear(batch) + pairwise
            return y_fm + squeeze_output(deep, self.output_dim)
        narrow = narrow_fields_plan(self.embedding, self.dnn, batch, self.output_dim)
        if narrow is not None:  # the first Linear's columns of the narrow fields on their few distinct rows
            pairwise, deep = fm_and_mlp_with_narrow_fields(self.embedding, self.dnn, batch, narrow)
            y_fm = self.linear(batch) + pairwise
            return y_fm + squeeze_output(deep, 1)
        embedded = self.embedding(batch)  # shared by both parts
        # the FM term from the field vectors the DNN needs anyway (FM alone uses FeaturesEmbedding.pairwise,
        # which can skip them); one gradient for the fields of both parts
        pairwise, dnn_input = fm_pairwise_and_mlp_input(embedded, self.output_dim, mlp_input_dtype(embedded.fields, first))
        y_fm = self.linear(batch) + pairwise
        y_dnn = squeeze_output(self.dnn(dnn_input), self.output_dim)
        return y_fm + y_dnn
