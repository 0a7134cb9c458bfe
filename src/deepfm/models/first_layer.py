"""The MLP's first Linear on a batch's distinct embedding rows instead of its B·F field vectors.

The deep part's first layer reads the field vectors flattened, h = b + Σ_f W_f e_f with W_f the
k columns of field f. Each field vector is a slot value times one table row, e_f = x_bf v_u, so
h = b + X P, where X is the batch's (B × U) design matrix over its U distinct rows and
P[u] = W_f(u) v_u. That is the same sum in another order: U·k·H products for P and B·F·H adds
for X P (bags of rows, ``embedding_bag``), instead of B·F·k·H products. It pays where the rows
recur and k is wide (one-hot data at k 64: a training step ~23% shorter); on a long tail, or with
k 10, the adds cost more than the dense product saves (``pays``). DeepFM's FM term then comes from
the same rows in Rendle's matrix form (``fm_pairwise_of_rows``). Where this form does not pay, DeepFM's
training step still takes its narrow fields' columns (a numeric field's two rows) from their rows:
``models.narrow_fields``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from deepfm.data.batch import Batch
from deepfm.data.design import DistinctIds, remember_rows, take_rows
from deepfm.models.layers import FeaturesEmbedding, MultiLayerPerceptron, row_gradient, slots_of_rows, without_hooks

# measured (benchmarks/first_layer_rule.py: 4096-row batches, H 400, 2 threads; 2026-12-02): the distinct form's
# adds cost about as much as the dense product at k ≈ 24 when a row fills ~9 slots (10 fields: k 64 −10 to −24%
# a forward + backward, k 32 −4%, k 10 +18-20%), and are a toss-up where rows recur less (26 fields, ~3 slots a
# row, k 64: +10% and −9% in two passes)
MIN_WIDTH = 32
MIN_SLOTS_PER_ROW = 4


def pays(batch_size: int, fields: int, distinct_rows: int, width: int) -> bool:
    """Whether h = X P beats the dense (B, F·k) × (F·k, H) product for a batch of B rows and F fields with
    ``distinct_rows`` distinct rows of ``width`` (k) columns."""
    return width >= MIN_WIDTH and batch_size * fields >= MIN_SLOTS_PER_ROW * distinct_rows


def field_blocks(distinct: DistinctIds) -> list[tuple[int, int]] | None:
    """Each field's run [start, end) of the sorted distinct rows, when every row is read by one field only
    and the fields' rows come in field order (a fused table with one id range a field); else None."""
    if distinct.slot_rows is None:
        return None
    fields = distinct.inverse.shape[1]
    field_of_slot = distinct.slot_columns.long() % fields  # slots grouped by distinct row
    field_of_row = field_of_slot[distinct.slot_row_starts]
    counts = torch.diff(distinct.slot_rows.long())
    if not torch.equal(field_of_row.repeat_interleave(counts), field_of_slot):
        return None  # a row shared by two fields
    if len(field_of_row) > 1 and bool((field_of_row[1:] < field_of_row[:-1]).any()):
        return None
    ends = torch.searchsorted(field_of_row, torch.arange(fields), right=True).tolist()
    return list(zip([0] + ends[:-1], ends))


class _DistinctRows(torch.autograd.Function):
    """``weight[unique]`` (U, k); the table's gradient is sparse over those U sorted rows."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, unique: torch.Tensor, copy_for_optimiser: bool) -> torch.Tensor:
        ctx.unique, ctx.table_shape = unique, weight.shape
        rows = take_rows(weight, unique)
        remember_rows(weight, unique, rows.clone() if copy_for_optimiser else rows)  # the row-wise step starts from
        return rows  # them, and writes into them: a copy where the rows are saved for a backward

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_rows: torch.Tensor):
        return row_gradient(ctx.unique, ctx.table_shape, grad_rows), None, None


def distinct_rows(weight: torch.Tensor, unique: torch.Tensor, copy_for_optimiser: bool = True) -> torch.Tensor:
    """``weight[unique]`` (U, k) with a sparse gradient over those rows; ``copy_for_optimiser`` unless no backward
    saves the rows themselves (the row-wise step then writes into them)."""
    return _DistinctRows.apply(weight, unique, copy_for_optimiser)


class _RowsToSlots(torch.autograd.Function):
    """``rows[inverse]`` (B, F, k), times each slot's value where ``values`` (B, F) are given (one pass on CPU,
    ``slots_of_rows``); the gradient sums each row's slots, times their values (``DistinctIds.sum_by_row``)."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, distinct: DistinctIds, values: torch.Tensor | None) -> torch.Tensor:
        ctx.distinct = distinct
        ctx.save_for_backward(values)
        return slots_of_rows(rows, distinct.inverse, values)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_slots: torch.Tensor):
        (values,) = ctx.saved_tensors
        return ctx.distinct.sum_by_row(grad_slots.reshape(-1, grad_slots.shape[-1]), values), None, None


def _sum_over_slots(distinct: DistinctIds, per_row: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
    """X·per_row (B, n): row b sums ``per_row`` over its F slots' distinct rows, each times the slot's value."""
    inverse = distinct.inverse
    if values is None:
        return F.embedding_bag(inverse, per_row, mode="sum")
    starts = torch.arange(0, inverse.numel(), inverse.shape[1])
    return F.embedding_bag(inverse.reshape(-1), per_row, starts, mode="sum", per_sample_weights=values.reshape(-1))


def _sum_over_batch_rows(distinct: DistinctIds, per_batch_row: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
    """Xᵀ·per_batch_row (U, n): distinct row u sums ``per_batch_row`` over the batch rows of its slots, each times
    the slot's value (the slot grouping)."""
    slot_values = values.reshape(-1)[distinct.slot_columns.long()] if values is not None else None
    return F.embedding_bag(distinct.slot_batch_rows, per_batch_row, distinct.slot_row_starts, mode="sum",
                           per_sample_weights=slot_values)


class _PairwiseOfRows(torch.autograd.Function):
    """FM's pairwise term from the distinct rows, Rendle's matrix form with X as bags (as ``_PairwiseOfDesign``):
    y = ½ (‖X V‖² − (X∘X)(V∘V) 1), ∂y/∂V = Xᵀ (g ∘ X V) − ((X∘X)ᵀ g) ∘ V; no (B, F, k) tensor either way."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, distinct: DistinctIds, values: torch.Tensor | None) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            squared_values = values.square() if values is not None else None
            xv = _sum_over_slots(distinct, rows, values)  # (B, k)  Σ_i v_i x_i
            squares = _sum_over_slots(distinct, rows.square().sum(1, keepdim=True), squared_values)  # (B, 1)
            ctx.save_for_backward(rows, xv, values, squared_values)
            ctx.distinct = distinct
            return 0.5 * (xv.square().sum(1) - squares.squeeze(1))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        rows, xv, values, squared_values = ctx.saved_tensors
        g = grad.unsqueeze(1)  # (B, 1)
        grad_rows = _sum_over_batch_rows(ctx.distinct, xv * g, values)
        grad_rows.sub_(rows * _sum_over_batch_rows(ctx.distinct, g.contiguous(), squared_values))
        return grad_rows, None, None


class _FirstLayerOfRows(torch.autograd.Function):
    """h = X P + b, P[u] = W_f(u) v_u; backward ∂P = Xᵀ ∂h, ∂v_u = W_f(u)ᵀ ∂P[u], ∂W_f = Σ_{u∈f} ∂P[u] v_uᵀ.
    X P and Xᵀ ∂h are bags of rows summed (``embedding_bag``): row b sums P over its F slots, row u sums
    ∂h over the batch rows of its slots (the slot grouping), each weighted by the slot's value."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, distinct: DistinctIds,
                values: torch.Tensor | None, blocks: list[tuple[int, int]]) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):  # in fp32 under bf16 autocast too, as the table
            return _FirstLayerOfRows._forward(ctx, rows, weight, bias, distinct, values, blocks)

    @staticmethod
    def _forward(ctx, rows, weight, bias, distinct, values, blocks) -> torch.Tensor:
        k = rows.shape[1]
        projected = rows.new_empty(len(rows), weight.shape[0])  # P (U, H)
        for f, (start, end) in enumerate(blocks):
            torch.mm(rows[start:end], weight[:, f * k:(f + 1) * k].t(), out=projected[start:end])
        ctx.save_for_backward(rows, weight, values)
        ctx.distinct, ctx.blocks = distinct, blocks
        hidden = _sum_over_slots(distinct, projected, values)
        return hidden if bias is None else hidden.add_(bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        rows, weight, values = ctx.saved_tensors
        k = rows.shape[1]
        grad_projected = _sum_over_batch_rows(ctx.distinct, grad.contiguous(), values)  # (U, H)
        grad_rows = torch.empty_like(rows)
        grad_weight = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        for f, (start, end) in enumerate(ctx.blocks):
            columns = slice(f * k, (f + 1) * k)
            torch.mm(grad_projected[start:end], weight[:, columns], out=grad_rows[start:end])
            if grad_weight is not None:
                grad_weight[:, columns] = grad_projected[start:end].t() @ rows[start:end]
        grad_bias = grad.sum(0) if ctx.needs_input_grad[2] else None  # (no bias: no gradient wanted)
        return grad_rows, grad_weight, grad_bias, None, None, None


class FirstLayerPlan(NamedTuple):
    """A batch's distinct ids and each field's run of them (``field_blocks``)."""

    distinct: DistinctIds
    blocks: list[tuple[int, int]]


def first_layer_plan(embedding: FeaturesEmbedding, mlp: MultiLayerPerceptron, batch: Batch) -> FirstLayerPlan | None:
    """What ``first_layer_on_distinct_rows`` needs for this batch, or None where the distinct form does not apply
    (no hidden layer; hooks on the embedding, the MLP or its first Linear, which their own calls run; a table narrower than ``MIN_WIDTH``, decided before the batch's distinct ids are sought, which
    a prediction batch may not have yet; training a table that does not train sparsely; not on CPU in fp32; multi-valued fields; fields sharing rows; a
    batch whose fields do not fill the first Linear's input, which the dense layer then refuses; tracing for export) or does
    not pay. It applies to predicting too (no gradient). Under bf16 autocast the layer stays in fp32 (its products
    are small here; the next layers run in bf16)."""
    if torch.jit.is_tracing() or getattr(torch.compiler, "is_compiling", lambda: False)():
        return None  # first: the checks below turn tensors into Python values, which the tracer warns of
    table, first = embedding.weight, mlp.first_linear
    scoring = not torch.is_grad_enabled()  # predicting: no gradient to keep sparse
    if (first is None or not without_hooks(first, embedding, mlp) or table.shape[1] < MIN_WIDTH or not (scoring or embedding.trains_sparsely())
            or table.device.type != "cpu" or table.dtype != torch.float32
            or batch.bags or (batch.values is not None and batch.values.requires_grad)):
        return None
    distinct = batch.distinct()
    batch_size, fields = distinct.inverse.shape
    if fields * table.shape[1] != first.in_features or not pays(batch_size, fields, len(distinct.unique), table.shape[1]):
        return None
    blocks = field_blocks(distinct)
    return None if blocks is None else FirstLayerPlan(distinct, blocks)


def first_layer_on_distinct_rows(embedding: FeaturesEmbedding, first: nn.Linear, batch: Batch,
                                 plan: FirstLayerPlan, with_bias: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(the batch's U distinct rows of the table (U, k), ``first`` applied to its flattened field vectors (B, H),
    its bias left out unless ``with_bias``). Reads ``embedding.weight`` directly: training takes this path
    instead of ``FeaturesEmbedding.forward``."""
    unique = plan.distinct.unique
    rows = distinct_rows(embedding.weight, unique) if torch.is_grad_enabled() else take_rows(embedding.weight, unique)
    bias = first.bias if with_bias else None
    return rows, _FirstLayerOfRows.apply(rows, first.weight, bias, plan.distinct, batch.values, plan.blocks)


def mlp_on_distinct_rows(embedding: FeaturesEmbedding, mlp: MultiLayerPerceptron, batch: Batch,
                         plan: FirstLayerPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """(the batch's U distinct rows (U, k), ``mlp``'s output), its first Linear on the distinct rows; the bias
    left out where a fused batch norm cancels it (``MultiLayerPerceptron.first_bias_cancels``; fp32, as the table)."""
    bias_cancels = mlp.first_bias_cancels(len(plan.distinct.inverse), torch.float32, "cpu")
    rows, hidden = first_layer_on_distinct_rows(embedding, mlp.first_linear, batch, plan, with_bias=not bias_cancels)
    return rows, mlp(hidden, after_first_linear=True, first_bias_left_out=bias_cancels)


def field_vectors_of_rows(rows: torch.Tensor, distinct: DistinctIds, values: torch.Tensor | None) -> torch.Tensor:
    """e_bf = x_bf v_u (B, F, k) from the batch's distinct ``rows`` (their gradient sums each row's slots)."""
    if values is not None and values.requires_grad:  # (attribution) the product stays outside, differentiable
        return _RowsToSlots.apply(rows, distinct, None) * values.unsqueeze(-1)
    return _RowsToSlots.apply(rows, distinct, values)


def fm_pairwise_of_rows(rows: torch.Tensor, batch: Batch, plan: FirstLayerPlan) -> torch.Tensor:
    """Σ_{i<j} <v_i, v_j> x_i x_j of every row (B,), from the distinct ``rows`` (one FM output)."""
    return _PairwiseOfRows.apply(rows, plan.distinct, batch.values)
