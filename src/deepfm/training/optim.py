"""Optimisers that touch only the embedding rows a batch uses.

Embedding tables produce sparse gradients. With ``adam`` they go to ``RowWiseAdam`` (``SparseAdam``'s lazy update without its sorts:
the moments of unseen rows are not rewritten) and dense weights to ``Adam``; ``adagrad``
and ``sgd`` handle sparse gradients themselves. L2 on embeddings is applied lazily to
the rows of the batch (grad += λ·v), the usual practice for large tables.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from deepfm.config import TrainingConfig
from deepfm.models.layers import FeaturesEmbedding
from deepfm.training.rowwise import RowWiseAdam


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(sparse embedding tables, everything else)."""
    sparse_ids = {id(m.weight) for m in model.modules() if isinstance(m, FeaturesEmbedding) and m.sparse}
    sparse = [p for p in model.parameters() if id(p) in sparse_ids]
    dense = [p for p in model.parameters() if id(p) not in sparse_ids]
    return sparse, dense


class ModelOptimizer:
    """One ``step``/``zero_grad``/``state_dict`` over the sparse and the dense optimiser."""

    def __init__(self, model: nn.Module, config: TrainingConfig):
        self.sparse_params, self.dense_params = split_parameters(model)
        self.config = config
        self.embed_l2 = config.embed_l2
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        if config.optimizer == "adam":
            if self.sparse_params:
                self.optimizers["sparse"] = RowWiseAdam(self.sparse_params, lr=config.lr, row_l2=config.embed_l2)
            if self.dense_params:
                self.optimizers["dense"] = torch.optim.Adam(self.dense_params, lr=config.lr, weight_decay=config.weight_decay)
        elif config.optimizer == "adagrad":
            self.optimizers["sparse"] = torch.optim.Adagrad(self.sparse_params, lr=config.lr)
            if self.dense_params:
                self.optimizers["dense"] = torch.optim.Adagrad(self.dense_params, lr=config.lr, weight_decay=config.weight_decay)
        else:
            self.optimizers["sparse"] = torch.optim.SGD(self.sparse_params, lr=config.lr)
            if self.dense_params:
                self.optimizers["dense"] = torch.optim.SGD(self.dense_params, lr=config.lr, weight_decay=config.weight_decay)

    def zero_grad(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        if self.embed_l2 and not isinstance(self.optimizers.get("sparse"), RowWiseAdam):  # it applies L2 itself
            for param in self.sparse_params:
                if param.grad is not None and param.grad.is_sparse:
                    grad = param.grad.coalesce()
                    grad.values().add_(param.detach()[grad.indices()[0]], alpha=self.embed_l2)
                    param.grad = grad
        for optimizer in self.optimizers.values():
            optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore moments and step counts; the hyperparameters stay this run's (a resumed run with a
        new ``lr``, ``embed_l2`` or ``weight_decay`` trains with the new values, as config.json says)."""
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])
        self.apply_settings()

    def apply_settings(self) -> None:
        """Write the config's lr, weight decay and row L2 into every parameter group."""
        for name, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = self.config.lr
                if "weight_decay" in group and name == "dense":
                    group["weight_decay"] = self.config.weight_decay
                if "row_l2" in group:
                    group["row_l2"] = self.config.embed_l2
