"""Row-wise Adam and AdaGrad for embedding tables with sparse gradients.

The same update as ``torch.optim.SparseAdam`` (moments and weights change only on the rows a
batch touched; bias correction uses the table's step count), with no sort when the gradient's rows
are already distinct and sorted (as ``FeaturesEmbedding`` produces them). On fp32 CPU tables each is
one compiled pass over the U touched rows, a block of them per torch thread (``training.adam_pass``,
``training.adagrad_pass``: each row's weights and state read and written in place; Adam 2.1× the tensor form's
speed on 30k-100k rows of a 364k × 10 table on one thread); otherwise one gather, a few element-wise ops and one
scatter per state tensor (``put_rows``).
State names match ``SparseAdam`` (``step``, ``exp_avg``, ``exp_avg_sq``).

Both take the per-occurrence L2 of a step (``defer_occurrence_l2``) into their own update, from the
table rows they gather anyway: one random gather of the touched rows a table a step fewer than adding
it to the gradient first (``add_occurrence_l2``, which several processes need: before averaging).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from deepfm.compiled import in_row_blocks
from deepfm.data.design import noted_index, put_rows, recall_rows, same_tensor, take_rows
from deepfm.training.eager import EagerOptimizer

Occurrences = tuple[torch.Tensor, torch.Tensor, int]  # a batch's sorted distinct ids, their counts, its size


def _rows_of(param: torch.nn.Parameter, rows: torch.Tensor) -> torch.Tensor:
    """A copy of ``param``'s ``rows`` to update: the ones the batch's lookup gathered (``recall_rows``), else gathered now."""
    recalled = recall_rows(param, rows)
    return recalled if recalled is not None else take_rows(param, rows)


def distinct_rows(grad: torch.Tensor, known_distinct: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows (U,), values (U, k)) of a sparse row gradient, summing duplicate rows if any. A gradient
    marked coalesced (as ``FeaturesEmbedding`` makes them), or whose rows are the very tensor ``known_distinct``
    (the lookup's sorted distinct ids, ``noted_index``), is taken at its word, as torch does: autograd drops the
    mark when it keeps a gradient, and checking the rows' order on a GPU makes the host wait for it."""
    rows, values = grad._indices()[0], grad._values()
    if known_distinct is not None and same_tensor(rows, known_distinct):
        return rows, values
    if rows.numel() > 1 and not grad.is_coalesced() and not bool((rows[1:] > rows[:-1]).all()):
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
    return rows, values


class _OccurrenceL2AtStep:
    """Per-occurrence L2 handed to a row-wise optimiser for its next step (``defer_occurrence_l2``)."""

    def defer_occurrence_l2(self, param: torch.nn.Parameter, occurrences: Occurrences, strength: float) -> None:
        """Add 2λ·c_i/B·v_i (``add_occurrence_l2``) to ``param``'s gradient rows in the next step, from the
        rows that step gathers. Only where nothing reads the gradient in between (one process)."""
        self.__dict__.setdefault("_occurrence_l2", {})[param] = (occurrences, strength)

    def _with_occurrence_l2(self, param: torch.nn.Parameter, rows: torch.Tensor, g: torch.Tensor,
                            weights: torch.Tensor) -> torch.Tensor:
        pending = self.__dict__.get("_occurrence_l2", {}).pop(param, None)
        if pending is None or rows.numel() == 0:
            return g
        return occurrence_l2_gradient(rows, g, weights, *pending)

    def _l2_per_row(self, param: torch.nn.Parameter, rows: torch.Tensor, row_l2: float) -> torch.Tensor:
        """(U,) float32: each touched row's L2 coefficient d_i, its gradient being g_i + d_i·v_i (the
        per-occurrence L2 handed over for this step, 2λ·c_i/B, plus ``row_l2``)."""
        pending = self.__dict__.get("_occurrence_l2", {}).pop(param, None)
        if pending is None:
            return torch.full((len(rows),), float(row_l2))
        return occurrence_l2_scale(rows, *pending).add_(row_l2)

    def _forget_occurrence_l2(self) -> None:
        self.__dict__.get("_occurrence_l2", {}).clear()  # tables without a gradient this step


class RowWiseAdam(_OccurrenceL2AtStep, EagerOptimizer, torch.optim.Optimizer):
    """Adam on the touched rows of sparse-gradient tables (lazy, as ``SparseAdam``); ``row_l2``
    adds λ·v to the gradient of each touched row."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, row_l2: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, row_l2=row_l2))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if not param.grad.is_sparse:
                    raise RuntimeError("RowWiseAdam takes sparse gradients; use Adam for dense tensors")
                state = self.state[param]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                step = float(state["step"])
                rows, g = distinct_rows(param.grad, noted_index(param))
                step_size = group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step)
                if _fusable(param, rows, g, state["exp_avg"], state["exp_avg_sq"]):
                    recall_rows(param, rows)  # not needed: the pass reads the table's rows itself
                    decay = self._l2_per_row(param, rows, group["row_l2"])
                    from deepfm.training.adam_pass import adam_rows  # (loads numba: the first fused step)

                    in_row_blocks(adam_rows, [rows.numpy(), g.numpy(), decay.numpy()], param.detach().numpy(),
                                  state["exp_avg"].numpy(), state["exp_avg_sq"].numpy(), beta1, beta2, group["eps"],
                                  step_size)  # distinct rows: the blocks write apart
                    torch.autograd.graph.increment_version(param)  # a write, as put_rows's (see ``recall_rows``)
                    continue
                weights = _rows_of(param, rows)  # (U, k)
                g = self._with_occurrence_l2(param, rows, g, weights)
                if group["row_l2"]:
                    g = g.add(weights, alpha=group["row_l2"])  # lazy L2: only the rows of the batch
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                m = take_rows(exp_avg, rows)  # (U, k)
                v = take_rows(exp_avg_sq, rows)
                m.lerp_(g, 1 - beta1)  # m + (g - m)(1 - β1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                put_rows(exp_avg, rows, m)
                put_rows(exp_avg_sq, rows, v)
                weights.addcdiv_(m, v.sqrt_().add_(group["eps"]), value=-step_size)
                put_rows(param, rows, weights)  # rows are distinct: a copy, not an add
        self._forget_occurrence_l2()
        return None


class LazyAdagrad(_OccurrenceL2AtStep, EagerOptimizer, torch.optim.Optimizer):
    """AdaGrad on the touched rows of sparse-gradient tables (lazy: untouched rows and their state
    stay as they are). Per coordinate (``per_row=False``, the same update as ``torch.optim.Adagrad``
    with its defaults, without its sort): G += g², v -= lr · g / (√G + eps). Row-wise (``per_row=True``,
    as in FBGEMM/DLRM): one accumulator per row, G_i += mean_k g_ik², at a state of one number per
    row. Either way a row's step shrinks with how often and how strongly it was updated: frequent ids
    take small steps, rare ids large ones. ``row_l2`` adds λ·v to the gradient of each touched row.

    ``initial_accumulator`` (G₀, TensorFlow's ``initial_accumulator_value``) starts every accumulator
    above zero. With G₀ = 0 the first step of a coordinate is lr·g/|g| = ±lr whatever the size of g:
    an id seen once or twice moves as far as a frequent one, and in a long tail those sign-sized steps
    of many rare ids add up to over-confident logits. With G₀ > 0 a rarely updated coordinate takes
    an SGD-like step lr·g/√G₀, in proportion to its gradient."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 0.1, eps: float = 1e-10, row_l2: float = 0.0,
                 per_row: bool = False, initial_accumulator: float = 0.0):
        super().__init__(params, dict(lr=lr, eps=eps, row_l2=row_l2, per_row=per_row,
                                      initial_accumulator=initial_accumulator))

    def accumulator(self, param: torch.nn.Parameter, group: dict) -> torch.Tensor:
        """``param``'s accumulator G (``state["sum"]``: the table's shape, or one number a row with ``per_row``),
        made at G₀ on first use."""
        state = self.state[param]
        if not state:
            shape = param.shape[:1] if group.get("per_row", False) else param.shape  # (none: restored from torch's)
            state["sum"] = torch.full(shape, group.get("initial_accumulator", 0.0), dtype=param.dtype,
                                      device=param.device)
        return state["sum"]

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if not param.grad.is_sparse:
                    raise RuntimeError("LazyAdagrad takes sparse gradients; use Adam or Adagrad for dense tensors")
                state = self.state[param]
                per_row = group.get("per_row", False)  # a group restored from torch.optim.Adagrad has none
                self.accumulator(param, group)
                rows, g = distinct_rows(param.grad, noted_index(param))
                if _fusable(param, rows, g, state["sum"]):
                    recall_rows(param, rows)  # not needed: the pass reads the table's rows itself
                    decay = self._l2_per_row(param, rows, group.get("row_l2", 0.0))
                    total = state["sum"].view(-1, 1) if state["sum"].dim() == 1 else state["sum"]
                    from deepfm.training.adagrad_pass import adagrad_rows  # (loads numba: the first fused step)

                    in_row_blocks(adagrad_rows, [rows.numpy(), g.numpy(), decay.numpy()], param.detach().numpy(),
                                  total.numpy(), group["lr"], group["eps"])  # distinct rows: the blocks write apart
                    torch.autograd.graph.increment_version(param)  # a write, as put_rows's (see ``recall_rows``)
                    continue
                weights = _rows_of(param, rows)  # (U, k)
                g = self._with_occurrence_l2(param, rows, g, weights)
                if group.get("row_l2"):
                    g = g.add(weights, alpha=group["row_l2"])
                squares = g.square().mean(1) if per_row else g.square()  # (U,) or (U, k)
                total = take_rows(state["sum"], rows).add_(squares)
                put_rows(state["sum"], rows, total)
                scale = total.sqrt_().add_(group["eps"])
                weights.addcdiv_(g, scale.unsqueeze(1) if per_row else scale, value=-group["lr"])
                put_rows(param, rows, weights)
        self._forget_occurrence_l2()
        return None


def add_occurrence_l2(param: torch.nn.Parameter, rows: torch.Tensor, counts: torch.Tensor, batch_size: int,
                      strength: float) -> None:
    """Add the gradient of λ · (1/B) Σ_b Σ_f ‖v_{x_bf}‖² to ``param.grad`` (sparse): 2λ · c_i / B · v_i
    for each touched row i, where c_i is how often row i occurs in the batch (``rows``: the batch's
    sorted distinct ids, ``counts``: their occurrences)."""
    grad_rows, g = distinct_rows(param.grad, noted_index(param))
    if grad_rows.numel() == 0:
        return
    g = occurrence_l2_gradient(grad_rows, g, take_rows(param, grad_rows), (rows, counts, batch_size), strength)
    param.grad = torch.sparse_coo_tensor(grad_rows.unsqueeze(0), g, param.shape, is_coalesced=True,
                                         check_invariants=False)


def occurrence_l2_gradient(grad_rows: torch.Tensor, g: torch.Tensor, weights: torch.Tensor, occurrences: Occurrences,
                           strength: float) -> torch.Tensor:
    """``g`` (the gradient of the distinct table rows ``grad_rows``, whose values are ``weights``) plus
    2λ · c_i / B · v_i, with c_i row i's count among the batch's ``occurrences`` (0 if it has none)."""
    return g.addcmul(weights, occurrence_l2_scale(grad_rows, occurrences, strength).to(weights.dtype).unsqueeze(1))


def occurrence_l2_scale(grad_rows: torch.Tensor, occurrences: Occurrences, strength: float) -> torch.Tensor:
    """(U,) float32: 2λ · c_i / B for each of ``grad_rows``, c_i its count among ``occurrences`` (0 if none)."""
    rows, counts, batch_size = occurrences
    if same_tensor(grad_rows, rows):  # the gradient of a distinct-row lookup (``FeaturesEmbedding``): no search
        scale = counts.to(torch.float32, copy=True)  # scaled in place below: never the caller's counts
    else:
        where = torch.searchsorted(rows, grad_rows).clamp_(max=len(rows) - 1)
        found = rows[where] == grad_rows
        scale = torch.where(found, counts[where].to(torch.float32), torch.zeros(()))
    return scale.mul_(2 * strength / batch_size)


def _fusable(param: torch.nn.Parameter, rows: torch.Tensor, g: torch.Tensor, *state: torch.Tensor) -> bool:
    """Whether a compiled pass (``adam_pass``, ``adagrad_pass``) can step ``param`` with its ``state`` tensors: fp32
    CPU tensors, contiguous, a 2-d table, int64 rows."""
    tensors = (param, g, *state)
    if not (rows.dtype == torch.int64 and param.dim() == 2 and
            all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors)):
        return False  # (asked first: reading a GPU tensor's rows below would wait for the GPU each step)
    return rows.numel() == 0 or (int(rows[0]) >= 0 and int(rows[-1]) < len(param))  # sorted; no bounds checks there
