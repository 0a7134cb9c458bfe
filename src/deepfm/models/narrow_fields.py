"""The MLP's first Linear with its narrow fields' columns as a product over their few distinct rows.

The first Linear reads the flattened field vectors, h = b + Σ_f W_f e_f, with W_f the k columns of field f
and e_bf = x_bf v_u. A field whose slots in a batch read only a few table rows, a numeric field (a row for
missing, one for present, times the value) or a small vocabulary, costs B·k·H products there each way. Over
its w distinct rows R_f (w × k) the same sum is X_f P_f with P_f = R_f W_fᵀ (w × H) and X_f the batch's
(B × w) design of that field: B·w·H products, and the input gradient (B·k·H) becomes Xᵀ g (w·B·H). So with
N the narrow fields and D the rest:

    h = b + flat_D W_Dᵀ + X_N (blockdiag(R_f) W_Nᵀ)

the same sum in another order. A field is narrow where its rows in the batch span at most
``MAX_ROWS_PER_WIDTH`` · k distinct ids (as positions in the sorted distinct ids, so the blocks are slices
whatever the table's layout; ids of other fields inside a span are zero columns of X). DeepFM's FM term
still reads every field vector; their gradient and the narrow blocks' meet on the distinct rows.

Measured with ``benchmarks/profile_step.py --narrow-fields`` (Criteo's shape: 13 numeric fields of 2 rows,
k 10).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from deepfm.data.batch import Batch
from deepfm.data.design import DistinctIds
from deepfm.models.autocast import autocast_enabled
from deepfm.models.first_layer import distinct_rows, field_vectors_of_rows
from deepfm.models.layers import (EmbeddedFields, FeaturesEmbedding, MultiLayerPerceptron, fm_pairwise_and_mlp_input,
                                  without_hooks)

MAX_ROWS_PER_WIDTH = 0.5  # a field is narrow where its rows span ≤ 0.5·k distinct ids (Criteo's numeric fields: 2 of k 10)


class NarrowFieldsPlan(NamedTuple):
    """A batch's distinct ids and its narrow fields, each with the span [first, last] of the distinct rows it reads."""

    distinct: DistinctIds
    narrow: list[int]  # field indices
    spans: list[tuple[int, int]]  # (first, last) positions in distinct.unique, one a narrow field
    wide: list[int]  # the other fields


def narrow_fields_plan(embedding: FeaturesEmbedding, mlp: MultiLayerPerceptron, batch: Batch,
                       outputs: int = 1) -> NarrowFieldsPlan | None:
    """The narrow fields of this batch while the table trains, or None where the form does not apply: not training
    the table sparsely on CPU in fp32 outside autocast; C outputs; multi-valued fields; values other than constant
    fp32; hooks on the embedding, the MLP or its first Linear (their own calls run); no hidden layer or an input it
    does not read whole; no rows; tracing; or no narrow field. Predicting keeps the dense layer."""
    if torch.jit.is_tracing() or getattr(torch.compiler, "is_compiling", lambda: False)():
        return None
    first, table = mlp.first_linear, embedding.weight
    if (first is None or outputs != 1 or not without_hooks(first, embedding, mlp) or not embedding.trains_sparsely()
            or table.device.type != "cpu" or table.dtype != torch.float32 or autocast_enabled("cpu")
            or batch.bags or batch.size == 0
            or (batch.values is not None and (batch.values.requires_grad or batch.values.dtype != table.dtype))):
        return None
    distinct = batch.distinct()
    fields, width = distinct.inverse.shape[1], table.shape[1]
    if fields * width != first.in_features:
        return None
    low, high = distinct.inverse.aminmax(dim=0)
    spans = list(zip(low.tolist(), high.tolist()))
    narrow = [f for f, (a, b) in enumerate(spans) if b - a + 1 <= MAX_ROWS_PER_WIDTH * width]
    if not narrow:
        return None
    wide = sorted(set(range(fields)) - set(narrow))
    return NarrowFieldsPlan(distinct, narrow, [spans[f] for f in narrow], wide)


def _columns(x: torch.Tensor, fields: list[int], width: int) -> torch.Tensor:
    """The columns of ``fields`` (k = ``width`` each) of a (n, F·k) matrix: a view where they are one run."""
    if fields == list(range(fields[0], fields[-1] + 1)):
        return x[:, fields[0] * width:(fields[-1] + 1) * width]
    return x.view(len(x), -1, width)[:, fields].reshape(len(x), -1)


def _narrow_design(batch: Batch, plan: NarrowFieldsPlan) -> torch.Tensor:
    """X_N (B × Σ w_f): row b holds x_bf at its narrow field f's row, columns in blocks of the fields' spans."""
    inverse = _columns(plan.distinct.inverse, plan.narrow, 1)
    widths = [b - a + 1 for a, b in plan.spans]
    block_starts = torch.tensor([0] + widths[:-1]).cumsum(0)
    shift = block_starts - torch.tensor([a for a, _ in plan.spans])
    values = _columns(batch.values, plan.narrow, 1) if batch.values is not None else torch.ones(inverse.shape)
    return values.new_zeros(len(inverse), sum(widths)).scatter_(1, inverse + shift, values)


def fm_and_mlp_with_narrow_fields(embedding: FeaturesEmbedding, mlp: MultiLayerPerceptron, batch: Batch,
                                  plan: NarrowFieldsPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """(FM's pairwise term (B,), ``mlp``'s output) with the first Linear's narrow columns on the narrow fields'
    distinct rows; the bias left out where a fused batch norm cancels it, as ``mlp_on_distinct_rows``."""
    rows = distinct_rows(embedding.weight, plan.distinct.unique, copy_for_optimiser=False)  # (U, k)
    width, first = rows.shape[1], mlp.first_linear
    pairwise, flat = fm_pairwise_and_mlp_input(EmbeddedFields(field_vectors_of_rows(rows, plan.distinct, batch.values)))
    narrow_rows = rows.index_select(0, torch.cat([torch.arange(a, b + 1) for a, b in plan.spans]))  # one gradient (U, k)
    blocks = narrow_rows.split([b - a + 1 for a, b in plan.spans])
    projected = torch.block_diag(*blocks) @ _columns(first.weight, plan.narrow, width).t()  # P (Σ w_f, H)
    design = _narrow_design(batch, plan)
    if plan.wide:  # flat_D W_Dᵀ + X_N P
        wide = F.linear(_columns(flat, plan.wide, width), _columns(first.weight, plan.wide, width))
        hidden = wide.addmm_(design, projected)  # (mm saves its inputs, not its output)
    else:
        hidden = design @ projected
    bias_cancels = mlp.first_bias_cancels(len(hidden), torch.float32, "cpu")
    if not bias_cancels and first.bias is not None:
        hidden = hidden + first.bias
    return pairwise, mlp(hidden, after_first_linear=True, first_bias_left_out=bias_cancels)
