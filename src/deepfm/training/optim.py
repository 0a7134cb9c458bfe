"""Optimisers that touch only the embedding rows a batch uses.

Embedding tables produce sparse gradients. With ``adam`` they go to ``RowWiseAdam`` (``SparseAdam``'s
lazy update without its sorts: the moments of unseen rows are not rewritten) and dense weights to
``Adam``; with ``rowwise_adagrad`` to ``LazyAdagrad`` with one accumulator per row and dense weights to
``Adam``; with ``adagrad`` to ``LazyAdagrad`` per coordinate and dense weights to ``Adagrad``; ``sgd``
handles sparse gradients itself. ``dense_optimizer`` and ``dense_lr`` set the dense weights' optimiser
and step apart (e.g. AdaGrad lr 0.1 for the tables, Adam lr 1e-3 for the MLP, as production CTR systems do). L2 on the tables (``embed_reg``; ``embed_l2`` for latent factors,
``linear_l2`` for first-order weights) is either applied lazily to the distinct rows of the batch
(``rows``: grad += λ·v, the usual practice for large tables) or per occurrence (``occurrences``: the
gradient of λ·mean_b Σ_f ‖v_f‖², libFM's regularisation of each feature in each example, so each id
is held back in proportion to how often it occurs, as its data gradient is).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from deepfm.config import TrainingConfig
from deepfm.data.tensors import Batch
from deepfm.distributed.process import active as several_processes
from deepfm.models.layers import FeaturesEmbedding, FeaturesLinear
from deepfm.training import eager
from deepfm.training.rowwise import LazyAdagrad, RowWiseAdam, add_occurrence_l2


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(sparse embedding tables, everything else)."""
    sparse_ids = {id(m.weight) for m in model.modules() if isinstance(m, FeaturesEmbedding) and m.sparse}
    sparse = [p for p in model.parameters() if id(p) in sparse_ids]
    dense = [p for p in model.parameters() if id(p) not in sparse_ids]
    return sparse, dense


def first_order_tables(model: nn.Module) -> set[int]:
    """The ids of the first-order weight tables (w of Σ w_i x_i), as opposed to latent factor tables (V)."""
    return {id(m.weights.weight) for m in model.modules() if isinstance(m, FeaturesLinear)}


def fused_kernel_fits(params: list[nn.Parameter]) -> bool | None:
    """Whether Adam's fused kernel (one pass per tensor) can update ``params``: floating point, on CUDA, or on CPU
    where this torch has the kernel (2.4 on). On CPU it made the MLP's Adam step ~5× cheaper (1.1 against 5.9 ms CPU,
    390→400³→1, one thread) and a DeepFM step at the defaults 2-8% (benchmarks/README.md, issue 13); the update is
    Adam's, to rounding."""
    devices = fused_kernel_devices()
    fits = all(p.dtype.is_floating_point and p.device.type in devices for p in params)
    return True if fits else None


def fused_kernel_devices() -> tuple[str, ...]:
    """The device types this torch's fused optimiser kernels run on (torch 2.3: not the CPU)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:
        return ("cuda",)
    return tuple(_get_fused_kernels_supported_devices())


# The dense weights' optimiser that goes with each ``optimizer`` (``dense_optimizer`` unset).
PAIRED_DENSE_OPTIMIZER = {"adam": "adam", "adagrad": "adagrad", "sgd": "sgd", "rowwise_adagrad": "adam"}


def sparse_optimizer(groups: list[dict[str, Any]], config: TrainingConfig) -> torch.optim.Optimizer:
    """The tables' optimiser: ``optimizer`` at ``lr``."""
    if config.optimizer == "adam":
        return RowWiseAdam(groups, lr=config.lr)
    if config.optimizer in ("adagrad", "rowwise_adagrad"):
        return LazyAdagrad(groups, lr=config.lr, per_row=config.optimizer == "rowwise_adagrad",
                           initial_accumulator=config.adagrad_init)
    return eager.SGD(groups, lr=config.lr)


def dense_lr_of(config: TrainingConfig) -> float:
    """The dense weights' learning rate: ``dense_lr``, or ``lr`` when that is unset."""
    return config.dense_lr if config.dense_lr is not None else config.lr


def dense_optimizer(params: list[nn.Parameter], config: TrainingConfig) -> torch.optim.Optimizer:
    """The dense weights' optimiser: ``dense_optimizer`` (unset: the one paired with ``optimizer``) at
    ``dense_lr`` (unset: ``lr``), with ``weight_decay``."""
    kind = config.dense_optimizer or PAIRED_DENSE_OPTIMIZER[config.optimizer]
    lr = dense_lr_of(config)
    if kind == "adam":
        return eager.Adam(params, lr=lr, weight_decay=config.weight_decay, fused=fused_kernel_fits(params))
    if kind == "adagrad":
        return eager.Adagrad(params, lr=lr, weight_decay=config.weight_decay,
                             initial_accumulator_value=config.adagrad_init)
    return eager.SGD(params, lr=lr, weight_decay=config.weight_decay)


class ModelOptimizer:
    """One ``step``/``zero_grad``/``state_dict`` over the sparse and the dense optimiser.

    The sparse tables form two parameter groups, each with its L2 strength: latent factors
    (``embed_l2``) and first-order weights (``linear_l2``, or ``embed_l2`` when that is unset)."""

    def __init__(self, model: nn.Module, config: TrainingConfig):
        self.sparse_params, self.dense_params = split_parameters(model)
        linear = first_order_tables(model)
        self.config = config
        self.per_occurrence = config.embed_reg == "occurrences"
        groups = [{"params": [p for p in self.sparse_params if id(p) not in linear], "table": "factors"},
                  {"params": [p for p in self.sparse_params if id(p) in linear], "table": "linear"}]
        groups = [group for group in groups if group["params"]]
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        if groups:
            self.optimizers["sparse"] = sparse_optimizer(groups, config)
        if self.dense_params:
            self.optimizers["dense"] = dense_optimizer(self.dense_params, config)
        self.lr_scale = 1.0  # the learning-rate schedule's factor (``scale_lr``)
        self.apply_settings()

    def l2_of(self, table: str) -> float:
        """The L2 strength of the ``factors`` or the ``linear`` (first-order) tables."""
        linear_l2 = self.config.linear_l2
        return linear_l2 if table == "linear" and linear_l2 is not None else self.config.embed_l2

    def lr_of(self, optimizer: str) -> float:
        """The configured learning rate of the ``sparse`` or the ``dense`` optimiser."""
        return dense_lr_of(self.config) if optimizer == "dense" else self.config.lr

    def zero_grad(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)

    def add_occurrence_penalty(self, occurrences: tuple[torch.Tensor, torch.Tensor, int]) -> None:
        """For ``embed_reg = occurrences``: add the penalty's gradient to the tables' gradients.
        ``occurrences`` = (the batch's sorted distinct ids, their counts, batch size), from
        ``batch_occurrences``. Called before gradients are averaged over processes: each process's
        share, 2λ·c_i/B_local·v_i, averages to the global batch's 2λ·c_i/B·v_i. In one process a row-wise
        optimiser adds it in its step instead, from the rows it gathers there (the same numbers)."""
        sparse = self.optimizers.get("sparse")
        at_step = isinstance(sparse, (RowWiseAdam, LazyAdagrad)) and not several_processes()
        for group in sparse.param_groups if sparse is not None and self.per_occurrence else ():
            strength = self.l2_of(group["table"])
            for param in group["params"] if strength else ():
                if param.grad is not None and param.grad.is_sparse:
                    if at_step:
                        sparse.defer_occurrence_l2(param, occurrences, strength)
                    else:
                        add_occurrence_l2(param, *occurrences, strength)

    def step(self) -> None:
        """One update (lazy L2 on a batch's distinct rows, where the optimiser does not apply it itself)."""
        sparse = self.optimizers.get("sparse")
        lazy_outside = not isinstance(sparse, (RowWiseAdam, LazyAdagrad)) and not self.per_occurrence
        for group in sparse.param_groups if sparse is not None and lazy_outside else ():
            strength = self.l2_of(group["table"])
            for param in group["params"] if strength else ():
                if param.grad is not None and param.grad.is_sparse:
                    grad = param.grad.coalesce()
                    grad.values().add_(param.detach()[grad.indices()[0]], alpha=strength)
                    param.grad = grad
        for optimizer in self.optimizers.values():
            optimizer.step()

    def scale_lr(self, factor: float) -> None:
        """Multiply every learning rate by ``factor`` (the plateau schedule)."""
        self.lr_scale *= factor
        self.apply_settings()

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()} | {"lr_scale": self.lr_scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore moments and step counts; the hyperparameters stay this run's (a resumed run with a
        new ``lr``, ``embed_l2`` or ``weight_decay`` trains with the new values, as config.json says)."""
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])
        self.lr_scale = float(state.get("lr_scale", 1.0))  # absent in checkpoints of older versions
        self.apply_settings()

    def apply_settings(self) -> None:
        """Write the config's lr, weight decay and row L2 into every parameter group (a row-wise
        optimiser applies lazy L2 itself; per-occurrence L2 is added to the gradients in ``step``)."""
        for name, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = self.lr_of(name) * self.lr_scale
                if "weight_decay" in group and name == "dense":
                    group["weight_decay"] = self.config.weight_decay
                if name == "sparse":
                    group.setdefault("table", "factors")  # groups restored from checkpoints of older versions
                    if isinstance(opt, (RowWiseAdam, LazyAdagrad)):
                        group["row_l2"] = 0.0 if self.per_occurrence else self.l2_of(group["table"])


def batch_occurrences(batch: Batch) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(sorted distinct feature ids of ``batch``, how often each occurs, batch size), bags included."""
    if not batch.bags:
        distinct = batch.distinct()
        if distinct.slot_rows is not None:  # each distinct id's run of slots: its count, with no pass over the slots
            return distinct.unique, torch.diff(distinct.slot_rows).long(), batch.size
        slots = distinct.inverse.reshape(-1)
        if slots.device.type == "cpu":
            return distinct.unique, torch.bincount(slots, minlength=len(distinct.unique)), batch.size
        counts = torch.zeros(len(distinct.unique), dtype=torch.int64, device=slots.device)  # a GPU's bincount waits for
        return distinct.unique, counts.index_add_(0, slots, torch.ones_like(slots)), batch.size  # it (to size its output)
    ids = torch.cat([batch.ids.reshape(-1), *(bag.ids for bag in batch.bags)])
    rows, counts = torch.unique(ids, sorted=True, return_counts=True)
    return rows, counts, batch.size
