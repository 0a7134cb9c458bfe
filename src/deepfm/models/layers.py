"""Building blocks shared by the models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepfm import randomness
from deepfm.compiled import in_row_blocks, numpy_view
from deepfm.data.batch import Batch
from deepfm.data.design import DesignMatrix, DistinctIds, remember_rows, take_rows
from deepfm.models.batchnorm import FUSED_DTYPES, batch_norm_folded, batch_norm_relu_dropout, fusable_parameters
from deepfm.models import scores
from deepfm.models.dropout import dropout_from, relu_dropout
from deepfm.models.autocast import autocast_dtype, autocast_enabled
from deepfm.models.padded_linear import linear_without_bias


@dataclass
class EmbeddedFields:
    """Field vectors of a batch and what the FM identity needs.

    ``fields[b, f] = Σ_{i∈f} v_i x_i`` (one vector per field, whatever its width) and
    ``squares[b] = Σ_i (v_i x_i)²`` over every non-zero feature; ``squares`` is None when every
    field holds one feature (no multi-valued fields), since it is then ``Σ_f fields[b, f]²``.
    """

    fields: torch.Tensor  # (batch_size, num_fields, embed_dim)
    squares: torch.Tensor | None = None  # (batch_size, embed_dim)


def row_gradient(unique: torch.Tensor, table_shape: torch.Size, grad_rows: torch.Tensor) -> torch.Tensor:
    """The sparse (num_features, k) gradient of a table whose U distinct rows ``unique`` got ``grad_rows``."""
    return torch.sparse_coo_tensor(unique.unsqueeze(0), grad_rows, table_shape, is_coalesced=True, check_invariants=False)


def slots_of_rows(rows: torch.Tensor, inverse: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
    """``rows[inverse]`` (B, F, k), times each slot's value where ``values`` (B, F) are given: on CPU one compiled
    pass (``gather_scaled``), not a gather and a product."""
    if values is not None and rows.device.type == "cpu" and rows.dtype in (torch.float32, torch.float64):
        from deepfm.models.gather_pass import gather_scaled  # (loads numba)

        return gather_scaled(rows, inverse, values)
    slots = take_rows(rows, inverse.reshape(-1)).view(*inverse.shape, rows.shape[1])
    return slots if values is None else slots * values.unsqueeze(-1)


class _LookupDistinctRows(torch.autograd.Function):
    """``weight[unique][inverse]``, times each slot's value when ``values`` (B, F) are given: gather the U
    distinct rows once, expand them to (B, F, k).

    The gradient w.r.t. the table is sparse with U sorted, distinct rows (each row's slots, times their
    values, summed by ``DistinctIds.sum_by_row``), so a row-wise optimiser needs no sort and touches
    only those rows. The values are constants here (no gradient).
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, distinct: DistinctIds, values: torch.Tensor | None) -> torch.Tensor:
        ctx.distinct, ctx.table_shape = distinct, weight.shape
        ctx.save_for_backward(values)  # (None without values); changed in place before the backward: an error
        rows = take_rows(weight, distinct.unique)  # (U, k)
        remember_rows(weight, distinct.unique, rows)  # the row-wise step starts from them (not saved here)
        return slots_of_rows(rows, distinct.inverse, values)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        distinct, k = ctx.distinct, ctx.table_shape[1]
        (values,) = ctx.saved_tensors
        grad_rows = distinct.sum_by_row(grad_out.reshape(-1, k), values)  # (U, k)
        return row_gradient(distinct.unique, ctx.table_shape, grad_rows), None, None


class _DesignTimesTable(torch.autograd.Function):
    """``X V``: Σ_i x_i v_i for every row of the batch, from the U distinct rows of V. Shape (B, k)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, design: DesignMatrix) -> torch.Tensor:
        design = design.to(weight.dtype)
        ctx.design, ctx.table_shape = design, weight.shape
        with torch.autocast("cpu", enabled=False):  # in the table's dtype, not bf16 (designs are CPU-only)
            return design.x @ take_rows(weight, design.unique)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        return row_gradient(ctx.design.unique, ctx.table_shape, ctx.design.x_t @ grad), None  # Xᵀ g


class _PairwiseOfDesign(torch.autograd.Function):
    """``fm_pairwise`` in Rendle's matrix form, from the table and the batch's design matrix X:
    y = ½ (‖X V‖² − (X∘X)(V∘V) 1), and ∂y/∂v_if = x_i Σ_j v_jf x_j − v_if x_i², i.e.
    ∂y/∂V = Xᵀ (g ∘ X V) − ((X∘X)ᵀ g) ∘ V. Four sparse products on (B, k) and (U, k); no (B, F, k) tensor."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, design: DesignMatrix) -> torch.Tensor:
        design = design.to(weight.dtype)
        rows = take_rows(weight, design.unique)  # (U, k)
        with torch.autocast("cpu", enabled=False):  # in the table's dtype, as the FM term always is
            xv = design.x @ rows  # (B, k)  Σ_i v_i x_i
            squares = design.x_squared @ rows.square().sum(1, keepdim=True)  # (B, 1)  Σ_i ‖v_i‖² x_i²
        ctx.save_for_backward(rows, xv)
        ctx.design, ctx.table_shape = design, weight.shape
        return 0.5 * (xv.square().sum(1) - squares.squeeze(1))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        rows, xv = ctx.saved_tensors
        design, g = ctx.design, grad.unsqueeze(1)  # (B, 1)
        grad_rows = (design.x_t @ (xv * g)).sub_(rows * (design.x_squared_t @ g))  # (U, k)
        return row_gradient(design.unique, ctx.table_shape, grad_rows), None


class _FMOfDesign(torch.autograd.Function):
    """Both FM terms of every row, X w + ``_PairwiseOfDesign``'s, from the two tables and the batch's design matrix
    X in one compiled pass forward and one backward (``models.design_passes``): shape (B,). CPU, fp32 tables."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, linear: torch.Tensor, design: DesignMatrix) -> torch.Tensor:
        from deepfm.models import design_passes  # (loads numba)

        rows = design.x.shape[0]
        out, xv = table.new_empty(rows), table.new_empty(rows, table.shape[1])
        in_row_blocks(design_passes.fm_rows, [out.numpy(), xv.numpy()], *_csr_arrays(design.x),
                      design.x_squared.values().numpy(), design.unique.numpy(), table.detach().numpy(),
                      linear.detach().numpy())
        ctx.save_for_backward(table, linear, xv)  # the tables as read: an update before the backward is an error
        ctx.design = design
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        from deepfm.models import design_passes

        table, linear, xv = ctx.saved_tensors
        unique = ctx.design.unique
        grad_table, grad_linear = table.new_empty(len(unique), table.shape[1]), linear.new_empty(len(unique), 1)
        in_row_blocks(design_passes.fm_gradients, [grad_table.numpy(), grad_linear.numpy()], *_csr_arrays(ctx.design.x_t),
                      ctx.design.x_squared_t.values().numpy(), unique.numpy(), table.detach().numpy(), xv.numpy(),
                      grad.float().contiguous().numpy())
        return row_gradient(unique, table.shape, grad_table), row_gradient(unique, linear.shape, grad_linear), None


def _csr_arrays(matrix: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A CSR tensor's row pointers, column indices and values as arrays (views)."""
    return matrix.crow_indices().numpy(), matrix.col_indices().numpy(), matrix.values().numpy()


class FeaturesEmbedding(nn.Module):
    """One fused table V (num_features × embed_dim) for all fields, looked up once per batch.

    Rows a batch does not touch get no gradient (``sparse=True``), so an update costs
    O(rows seen), not O(table). While training, the batch's distinct ids are gathered once
    (U rows) and expanded to (B, F); the sparse gradient then has U coalesced rows instead of
    B·F duplicates.
    """

    def __init__(self, num_features: int, embed_dim: int, sparse: bool = True, init_std: float = 0.01):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_features, embed_dim) * init_std)
        self.sparse = sparse

    def trains_sparsely(self) -> bool:
        """Whether this step's gradient of the table is sparse (training, ``sparse``, not frozen)."""
        return self.sparse and torch.is_grad_enabled() and self.weight.requires_grad

    def lookup(self, batch: Batch, values: torch.Tensor | None = None) -> torch.Tensor:
        """(B, F, k): each slot's row, times its value when ``values`` (B, F) are given."""
        if not self.trains_sparsely():
            rows = F.embedding(batch.ids, self.weight)
        elif values is None or not values.requires_grad:  # constant values: the product inside the lookup
            return _LookupDistinctRows.apply(self.weight, batch.distinct(), values)
        else:  # values with a gradient (attribution): the product stays outside, differentiable
            rows = _LookupDistinctRows.apply(self.weight, batch.distinct(), None)
        return rows if values is None else rows * values.unsqueeze(-1)

    def design_of(self, batch: Batch) -> DesignMatrix | None:
        """The batch's design matrix when this table trains through sparse products (see ``Batch.design``).
        None when the input values need a gradient (attribution): the design holds them as constants."""
        if not self.trains_sparsely() or (batch.values is not None and batch.values.requires_grad):
            return None
        return batch.design()

    def pairwise(self, batch: Batch, outputs: int = 1) -> torch.Tensor:
        """Σ_{i<j} <v_i, v_j> x_i x_j of every row, shape (B,): ``fm_pairwise(self(batch))``, computed
        in matrix form when the batch has a design matrix. With C ``outputs``, one FM per output over
        its own k = embed_dim / C latent columns: shape (B, C)."""
        design = self.design_of(batch) if outputs == 1 else None
        return fm_pairwise(self(batch), outputs) if design is None else _PairwiseOfDesign.apply(self.weight, design)

    def forward(self, batch: Batch) -> EmbeddedFields:
        vx = self.lookup(batch, batch.values)  # (B, F, k)
        if not batch.bags:
            return EmbeddedFields(vx)
        pooled, squares = [vx], vx.pow(2).sum(1)
        for bag in batch.bags:
            v = F.embedding(bag.ids, self.weight, sparse=self.sparse) * bag.weights.unsqueeze(-1)  # (nnz, k)
            zeros = v.new_zeros(batch.size, v.shape[1])
            pooled.append(zeros.index_add(0, bag.rows, v).unsqueeze(1))
            squares = squares + zeros.index_add(0, bag.rows, v.pow(2))
        return EmbeddedFields(torch.cat(pooled, dim=1), squares)


class FeaturesLinear(nn.Module):
    """First-order term w0 + Σ_i w_i x_i."""

    def __init__(self, num_features: int, sparse: bool = True, output_dim: int = 1):
        super().__init__()
        self.output_dim = output_dim
        self.weights = FeaturesEmbedding(num_features, output_dim, sparse=sparse, init_std=0.0)
        self.bias = nn.Parameter(torch.zeros(() if output_dim == 1 else (output_dim,)))

    def forward(self, batch: Batch) -> torch.Tensor:  # (B,), or (B, C) for C outputs
        design = self.weights.design_of(batch)
        if design is not None:
            xw = _DesignTimesTable.apply(self.weights.weight, design)  # X w, (B, C)
        else:
            xw = self.weights(batch).fields.sum(dim=1)  # (B, C)
        return self.bias + (xw.squeeze(1) if self.output_dim == 1 else xw)


def fm_terms_of_design(linear: FeaturesLinear, embedding: FeaturesEmbedding, batch: Batch) -> torch.Tensor | None:
    """Σ_i w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j of every row (B,), both terms in one compiled pass over the batch's
    design matrix (``_FMOfDesign``) where it applies: training through design matrices (CPU), contiguous fp32 tables,
    one output. None elsewhere (the terms apart: ``FeaturesLinear``, ``FeaturesEmbedding.pairwise``)."""
    tables = (embedding.weight, linear.weights.weight)
    if linear.output_dim != 1 or not all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous()
                                         for t in tables):
        return None
    design = embedding.design_of(batch)
    if design is None or linear.weights.design_of(batch) is None or design.x.dtype != torch.float32:
        return None
    return _FMOfDesign.apply(embedding.weight, linear.weights.weight, design)


def fm_pairwise(embedded: EmbeddedFields, outputs: int = 1) -> torch.Tensor:
    """Σ_{i<j} <v_i, v_j> x_i x_j = ½ Σ_c [(Σ_i v_ic x_i)² − Σ_i v_ic² x_i²] over the k latent columns c, in O(k·n).
    Shape (B,).
    With C ``outputs``, the latent columns are C groups of k, one FM each: shape (B, C)."""
    if embedded.squares is None and outputs == 1:
        return _PairwiseOfFields.apply(embedded.fields, _use_fm_passes(embedded.fields))
    fields = embedded.fields
    squares = embedded.squares if embedded.squares is not None else fields.pow(2).sum(dim=1)
    terms = 0.5 * (fields.sum(dim=1).pow(2) - squares)  # (B, C·k)
    return terms.sum(dim=1) if outputs == 1 else terms.view(terms.shape[0], outputs, terms.shape[1] // outputs).sum(dim=2)


def squeeze_output(logits: torch.Tensor, output_dim: int) -> torch.Tensor:
    """A model's (B, C) output as (B,) when C is 1: one logit per row."""
    return logits.squeeze(-1) if output_dim == 1 else logits


def _use_fm_passes(fields: torch.Tensor) -> bool:
    """Whether the FM term of these (B, F, k) field vectors takes ``models.fm_passes``: in training (a
    gradient to come; prediction keeps ATen ops and never loads numba), contiguous float32 on CPU."""
    return (torch.is_grad_enabled() and fields.requires_grad and fields.device.type == "cpu"
            and fields.dtype == torch.float32 and fields.is_contiguous() and fields.numel() > 0)


def _pairwise_of_fields(fields: torch.Tensor, use_passes: bool, flat_dtype: torch.dtype | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Σ_{i<j} <v_i x_i, v_j x_j> of each row (B,), Σ_f v_f x_f (B, k), the fields flattened to (B, F·k) in
    ``flat_dtype``) for one feature per field; ``use_passes``: one pass over the fields (``models.fm_passes``)."""
    flat_dtype = flat_dtype or fields.dtype
    if use_passes and flat_dtype in FUSED_DTYPES:
        from deepfm.models import fm_passes

        rows, _, k = fields.shape
        flat = fields.detach().flatten(1)
        cast = flat if flat_dtype == fields.dtype else torch.empty(flat.shape, dtype=flat_dtype)
        total, pairwise = fields.new_empty((rows, k)), fields.new_empty(rows)
        in_row_blocks(fm_passes.pairwise_of_fields, [flat.numpy(), numpy_view(cast), total.numpy(), pairwise.numpy()], k)
        return pairwise, total, fields.flatten(1) if cast is flat else cast
    total = fields.sum(dim=1)  # (B, k)
    squares = torch.linalg.vector_norm(fields.flatten(1), dim=1).square()  # Σ_f,k (v x)², no (B, F, k) temporary
    return 0.5 * (total.square().sum(dim=1) - squares), total, fields.flatten(1).to(flat_dtype)


def _pairwise_gradient(fields: torch.Tensor, total: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Rendle's ∂y/∂(v_i x_i) = Σ_j v_j x_j − v_i x_i, times each row's ``grad``: (B, F, k), two passes."""
    return (total.unsqueeze(1) - fields).mul_(grad.view(-1, 1, 1))


def _fields_gradient(fields: torch.Tensor, total: torch.Tensor, grad_fm: torch.Tensor, grad_flat: torch.Tensor,
                     use_passes: bool) -> torch.Tensor:
    """``grad_flat`` (the MLP's gradient of the flat fields) plus the FM term's ``_pairwise_gradient``, (B, F, k)
    in the fields' dtype, written into ``grad_flat`` where it has that dtype: the first Linear's fresh gradient,
    which no one else reads (a hook on the flat fields that kept it would see the sum; autograd's version
    counter does not see the compiled write). ``use_passes``: one pass, which also widens a bf16 ``grad_flat``."""
    if use_passes and grad_flat.dtype in FUSED_DTYPES and grad_fm.dtype == torch.float32:
        from deepfm.models import fm_passes

        grad_flat = grad_flat.contiguous()
        out = grad_flat if grad_flat.dtype == fields.dtype else torch.empty(grad_flat.shape, dtype=fields.dtype)
        in_row_blocks(fm_passes.fields_gradient, [fields.detach().flatten(1).numpy(), numpy_view(grad_flat),
                                                  out.numpy(), total.numpy(), grad_fm.contiguous().numpy()], fields.shape[2])
        return out.view_as(fields)
    grad = grad_flat.to(fields.dtype).contiguous().view_as(fields)  # the Linear's fresh gradient, or one copy
    return grad.add_(_pairwise_gradient(fields, total, grad_fm))  # the sum autograd made, bit for bit, in place


class _PairwiseOfFields(torch.autograd.Function):
    """``fm_pairwise`` when each field is one feature, with its gradient written out
    (``_pairwise_gradient``): two passes over (B, F, k) backward instead of autograd's six."""

    @staticmethod
    def forward(ctx, fields: torch.Tensor, use_passes: bool) -> torch.Tensor:
        pairwise, total, _ = _pairwise_of_fields(fields, use_passes)
        ctx.save_for_backward(fields, total)
        return pairwise

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _pairwise_gradient(*ctx.saved_tensors, grad), None


class _PairwiseAndFlatFields(torch.autograd.Function):
    """(``_PairwiseOfFields``, fields.flatten(1) in ``flat_dtype``) with one gradient:
    g_flat + (Σ_j v_j x_j − v_i x_i)·g_fm (``_fields_gradient``)."""

    @staticmethod
    def forward(ctx, fields: torch.Tensor, use_passes: bool, flat_dtype: torch.dtype | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        pairwise, total, flat = _pairwise_of_fields(fields, use_passes, flat_dtype)
        ctx.save_for_backward(fields, total)
        ctx.use_passes = use_passes
        ctx.set_materialize_grads(False)  # an unused output's gradient is None, not a tensor of zeros
        return pairwise, flat

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_fm: torch.Tensor | None, grad_flat: torch.Tensor | None) -> tuple[torch.Tensor, None, None]:
        fields, total = ctx.saved_tensors
        if grad_fm is None:
            return None if grad_flat is None else grad_flat.to(fields.dtype).reshape(fields.shape), None, None
        if grad_flat is None:
            return _pairwise_gradient(fields, total, grad_fm), None, None
        return _fields_gradient(fields, total, grad_fm, grad_flat, ctx.use_passes), None, None


def fm_pairwise_and_mlp_input(embedded: EmbeddedFields, outputs: int = 1, mlp_dtype: torch.dtype | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepFM's two reads of the field vectors: ``fm_pairwise(embedded, outputs)`` and the fields flattened
    to (B, F·k) for an MLP whose first layer is a Linear, in ``mlp_dtype`` where given (bf16: the Linear's
    dtype under autocast, so that in training the cast happens in the pass that reads the fields for the
    FM term). When each field is one feature, the backward adds the FM term's gradient into the gradient
    that Linear hands back in one pass instead of autograd summing the two into a new (B, F, k) tensor."""
    fields = embedded.fields
    if embedded.squares is None and outputs == 1:
        return _PairwiseAndFlatFields.apply(fields, _use_fm_passes(fields), mlp_dtype)
    flat = fields.flatten(1)
    return fm_pairwise(embedded, outputs), flat if mlp_dtype is None else flat.to(mlp_dtype)


class WarmStartBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` whose running statistics start from the data: step t (from 0) moves them by
    max(momentum, 1/(t+1)), a plain average of the first batches, then the usual moving average.
    ``BatchNorm1d`` blends its placeholder start (mean 0, variance 1) away at 0.9ᵗ, which on a small
    file (10 steps an epoch) leaves evaluation far off the batch statistics. Same state as
    ``BatchNorm1d``, so saved models load either way."""

    _steps: int | None = None  # training steps seen, mirrored from num_batches_tracked (no read per step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and self.track_running_stats and self.affine and x.dim() == 2 and x.device.type == "cpu":
            return batch_norm_folded(x, self.running_mean, self.running_var, self.weight, self.bias, self.eps)
        if not (self.training and self.track_running_stats):
            return super().forward(x)
        self._check_input_dim(x)
        momentum = self.warm_momentum()
        self.num_batches_tracked.add_(1)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True, momentum, self.eps)

    def fusable_with_relu(self, x: torch.Tensor) -> bool:
        """Whether ``with_relu_dropout`` can take ``x``: training on CPU, a (B ≥ 2, C) float32 or bfloat16 batch."""
        return self.fusable_for(x.shape, x.dtype, x.device.type)

    def fusable_for(self, shape: torch.Size, dtype: torch.dtype, device_type: str) -> bool:
        """``fusable_with_relu`` of a batch of this shape, dtype and device (before it is computed)."""
        return (self.training and self.track_running_stats and self.affine and device_type == "cpu" and len(shape) == 2
                and shape[0] > 1 and dtype in FUSED_DTYPES
                and fusable_parameters(self.weight, self.bias, self.running_mean, self.running_var))

    def with_relu_dropout(self, x: torch.Tensor, p: float, overwrite_grad: bool = False,
                          input_shift: torch.Tensor | None = None) -> torch.Tensor:
        """dropout(relu(self(x + input_shift)), p) in training, as one function (``batch_norm_relu_dropout``)."""
        momentum = self.warm_momentum()
        self.num_batches_tracked.add_(1)
        return batch_norm_relu_dropout(x, self.weight, self.bias, self.running_mean, self.running_var, momentum,
                                       self.eps, p, overwrite_grad=overwrite_grad, input_shift=input_shift)

    def warm_momentum(self) -> float:
        """The factor of this training step (read before ``num_batches_tracked`` counts it)."""
        if self._steps is None:
            self._steps = int(self.num_batches_tracked)  # once per run (or after loading a state)
        self._steps += 1
        return max(self.momentum if self.momentum is not None else 0.0, 1.0 / self._steps)

    def _load_from_state_dict(self, *args, **kwargs):
        self._steps = None
        super()._load_from_state_dict(*args, **kwargs)

    def reset_running_stats(self) -> None:
        self._steps = None
        super().reset_running_stats()


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def _dropout_rate(group: list[nn.Module]) -> float:
    """The rate of a training Dropout ending ``group``, else 0."""
    dropout = group[-1] if type(group[-1]) is nn.Dropout else None
    return dropout.p if dropout is not None and dropout.training else 0.0


def without_hooks(*modules: nn.Module) -> bool:
    """Whether calling ``modules`` runs their ``forward`` and nothing else (no forward or backward hooks of
    their own, none global): only then may a fused form stand in for them."""
    from torch.nn.modules import module as hooks

    if hooks._global_forward_hooks or hooks._global_forward_pre_hooks or hooks._global_backward_hooks or \
            hooks._global_backward_pre_hooks:
        return False
    return not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
                   for m in modules)


def _call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``; a training Dropout on the CPU in a fit draws its mask from the fit's generator
    (``deepfm.randomness``; the same numbers torch's default generator gave in its place)."""
    fit = randomness.generator()
    if (type(module) is nn.Dropout and module.training and not module.inplace and 0 < module.p < 1 and fit is not None
            and x.device.type == "cpu" and x.numel() and without_hooks(module)):
        return dropout_from(x, module.p, fit)
    return module(x)


class MultiLayerPerceptron(nn.Module):
    """Linear → [BatchNorm] → activation → Dropout per hidden layer, then a linear output.

    On CPU while training, a BatchNorm, the ReLU and the Dropout after it run as one function
    (``batch_norm_relu_dropout``), and without batch norm a ReLU and its Dropout (``relu_dropout``): a
    cheaper mask, same distribution; their backward overwrites the next Linear's fresh input gradient.
    The modules stay as they are (same state, same slots)."""

    def __init__(
        self,
        input_dim: int,
        hidden: Sequence[int],
        dropout: float = 0.0,
        activation: str = "relu",
        batch_norm: bool = False,
        output_dim: int | None = 1,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers.append(nn.Linear(input_dim, width))
            if batch_norm:
                layers.append(WarmStartBatchNorm1d(width))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            input_dim = width
        self.has_output = output_dim is not None
        if self.has_output:
            layers.append(nn.Linear(input_dim, output_dim))
        self.output_dim = output_dim if output_dim is not None else input_dim
        self.layers = nn.Sequential(*layers)

    def _fused(self, hidden: list[nn.Module], i: int, x: torch.Tensor) -> tuple[torch.Tensor, int] | None:
        """``hidden[i:]``'s next modules as one function, where one applies: [Linear →] BatchNorm → ReLU
        [→ Dropout] (``batch_norm_relu_dropout``) or ReLU → Dropout (``relu_dropout``); (the output, the index
        after them), else None. Modules with hooks keep their own calls.

        A Linear before a fused batch norm runs without its bias: batch norm subtracts the batch's mean, so in
        training neither the output nor any other gradient depends on that bias, and its own gradient is
        zero (given as zeros, not summed over the batch); the running mean counts the bias in, so evaluation,
        which runs the Linear whole, normalises the same numbers."""
        linear = (hidden[i] if type(hidden[i]) is nn.Linear and hidden[i].bias is not None and x.dim() == 2
                  and fusable_parameters(hidden[i].bias) else None)
        if linear is not None:
            shape = torch.Size([len(x), linear.out_features])
            group = self._batch_norm_group(hidden, i + 1, shape, autocast_dtype(x.device.type) or x.dtype,
                                           x.device.type)
            if group is None or not without_hooks(linear):
                return None
            z = linear_without_bias(x, linear.weight)
            return self._run(group, z, i + 1, hidden, input_shift=linear.bias)
        group = self._group(hidden, i, x.shape, x.dtype, x.device.type)
        return None if group is None else self._run(group, x, i, hidden)

    @staticmethod
    def _group(hidden: list[nn.Module], i: int, shape: torch.Size, dtype: torch.dtype, device_type: str
               ) -> list[nn.Module] | None:
        """The modules at ``hidden[i:]`` that one fused function can take for an input like this, or None."""
        layer, following, after = (hidden[i : i + 3] + [None, None])[:3]
        if type(layer) is WarmStartBatchNorm1d and type(following) is nn.ReLU and layer.fusable_for(shape, dtype,
                                                                                                       device_type):
            group = [layer, following] + ([after] if type(after) is nn.Dropout else [])
        elif type(layer) is nn.ReLU and type(following) is nn.Dropout and following.training and following.p > 0:
            group = [layer, following]
        else:
            return None
        return group if _dropout_rate(group) < 1 and without_hooks(*group) else None

    @classmethod
    def _batch_norm_group(cls, hidden: list[nn.Module], i: int, shape: torch.Size, dtype: torch.dtype,
                          device_type: str) -> list[nn.Module] | None:
        """``_group`` where it starts with a batch norm (which a Linear's bias before it cancels in), else None."""
        group = cls._group(hidden, i, shape, dtype, device_type)
        return group if group is not None and type(group[0]) is WarmStartBatchNorm1d else None

    def _run(self, group: list[nn.Module], x: torch.Tensor, i: int, hidden: list[nn.Module],
             input_shift: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        end = i + len(group)
        feeds_linear = end < len(hidden) or self.has_output  # else the caller reads the gradient too
        if type(group[0]) is nn.ReLU:
            return relu_dropout(x, _dropout_rate(group), overwrite_grad=feeds_linear), end
        return group[0].with_relu_dropout(x, _dropout_rate(group), overwrite_grad=feeds_linear,
                                          input_shift=input_shift), end

    @property
    def first_linear(self) -> nn.Linear | None:
        """The first hidden layer's Linear (None without hidden layers)."""
        return self.layers[0] if len(self.layers) > int(self.has_output) else None

    def first_bias_cancels(self, rows: int, dtype: torch.dtype, device_type: str) -> bool:
        """Whether, in this training step, the first Linear's output (``rows`` of it, in ``dtype``) goes straight
        into a fused batch norm, which makes that Linear's bias cancel: a caller that computes the first Linear
        itself may then leave the bias out (``forward(..., first_bias_left_out=True)``; see ``_fused``)."""
        first, hidden = self.first_linear, list(self.layers)
        if (first is None or first.bias is None or not self.training or device_type != "cpu"
                or not fusable_parameters(first.bias)):
            return False
        return self._batch_norm_group(hidden, 1, torch.Size([rows, first.out_features]), dtype, device_type) is not None

    def forward(self, x: torch.Tensor, *, after_first_linear: bool = False, first_bias_left_out: bool = False
                ) -> torch.Tensor:
        """``after_first_linear``: ``x`` is already the first Linear's output (see ``models.first_layer``), without
        its bias where ``first_bias_left_out`` (only where ``first_bias_cancels`` said so)."""
        *hidden, output = self.layers if self.has_output else (*self.layers, None)
        fuse = self.training and x.device.type == "cpu"
        i = 1 if after_first_linear else 0
        if first_bias_left_out:
            if not after_first_linear:
                raise ValueError("first_bias_left_out is for a first Linear's output (after_first_linear=True)")
            group = self._batch_norm_group(hidden, 1, x.shape, x.dtype, x.device.type) if fuse else None
            if group is not None:
                x, i = self._run(group, x, 1, hidden, input_shift=self.first_linear.bias)
            else:  # no longer fusable (a hook since, say): the bias back, and on as usual
                x = x + self.first_linear.bias
        while i < len(hidden):
            fused = self._fused(hidden, i, x) if fuse else None
            x, i = fused if fused is not None else (_call(hidden[i], x), i + 1)
        if output is None:
            return x
        if not autocast_enabled(x.device.type):
            return output(x)
        if fuse and scores.fusable(output, x) and without_hooks(output):
            return scores.linear_scores(x, output)
        with torch.autocast(x.device.type, enabled=False):  # the logit (or rating) in fp32, not bf16
            return output(x.float())
