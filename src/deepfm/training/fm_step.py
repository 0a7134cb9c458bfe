"""FM's training step outside autograd, as libFM and xLearn take theirs.

At FM's defaults (batch 512, one thread) the compiled FM and AdaGrad passes were ~0.3 ms of a 1.1 ms step: autograd,
the loss, the batch's distinct ids and design matrix, and the optimisers' Python took the rest. ``FMStep`` computes the
same step (the same loss, gradients and AdaGrad updates of the same tables and optimiser state) in one compiled pass
over the batch's ids (``training.fm_pass``); the bias takes a plain AdaGrad's step here, any other dense optimiser's
from that optimiser. It takes what it can and says so (``FMStep.of``): an FM with one output, binary or regression,
AdaGrad on fp32 CPU tables in one process, no hooks. Anything else trains through autograd, as before.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deepfm.data.tensors import Batch
from deepfm.distributed.process import active as several_processes
from deepfm.models.fm import FactorizationMachine
from deepfm.models.layers import without_hooks
from deepfm.tasks import BinaryTask, RegressionTask, Task
from deepfm.training import eager
from deepfm.training.optim import ModelOptimizer
from deepfm.training.rowwise import LazyAdagrad

ENABLED = True  # tests compare the two steps by turning this off


class FMStep:
    """One training step of ``model`` (see the module): ``step(batch)`` is the batch's loss, or None for a batch it
    does not take (no labels, ids not int64), which the caller then steps through autograd."""

    def __init__(self, model: FactorizationMachine, task: Task, optimizer: ModelOptimizer):
        from deepfm.training import fm_pass  # (loads numba)

        self.model, self.optimizer, self.fm_pass = model, optimizer, fm_pass
        self.loss_kind = fm_pass.LOGISTIC if type(task) is BinaryTask else fm_pass.SQUARED_ERROR
        self.tables = (model.linear.weights.weight, model.embedding.weight)  # (n, 1) w and (n, k) V
        self.position = np.full(len(model.embedding.weight), -1, dtype=np.int32)  # −1 between steps (the pass's)
        self.scratch: tuple[np.ndarray, ...] = ()

    @classmethod
    def of(cls, model: nn.Module, task: Task, optimizer: ModelOptimizer, device: str, precision: str) -> "FMStep | None":
        """The step for this training set-up, or None where it does not apply (autograd then steps)."""
        sparse, dense = optimizer.optimizers.get("sparse"), optimizer.optimizers.get("dense")
        if not (ENABLED and type(model) is FactorizationMachine and model.output_dim == 1  # (a subclass: its forward)
                and type(task) in (BinaryTask, RegressionTask) and torch.device(device).type == "cpu"
                and precision == "fp32" and not several_processes() and isinstance(sparse, LazyAdagrad)
                and without_hooks(*model.modules()) and not optimiser_hooks(sparse, dense)):
            return None
        tables = (model.linear.weights.weight, model.embedding.weight)
        grouped = [[id(p) for p in group["params"]] for group in sparse.param_groups]
        if (sorted(grouped) != sorted([[id(tables[0])], [id(tables[1])]])
                or [id(p) for p in optimizer.dense_params] != [id(model.linear.bias)]
                or not all(t.requires_grad and t.dtype == torch.float32 and t.is_contiguous() for t in tables)
                or not model.linear.bias.requires_grad or tensor_hooks(*tables, model.linear.bias)
                or not (model.linear.weights.sparse and model.embedding.sparse)):
            return None
        return cls(model, task, optimizer)

    def step(self, batch: Batch) -> torch.Tensor | None:
        if batch.ids.dtype != torch.int64 or batch.labels is None:
            return None
        linear, table = (t.detach().numpy() for t in self.tables)
        bias = self.model.linear.bias
        values = batch.values.contiguous().numpy() if batch.values is not None else np.empty((0, 0), np.float32)
        weights = batch.weights.numpy() if batch.weights is not None else np.empty(0, np.float32)
        bag_starts, bag_ids, bag_weights = bag_entries(batch)
        ids = batch.ids.contiguous().numpy()
        loss, bias_grad = self.fm_pass.fm_adagrad_step(
            ids, values, bag_starts, bag_ids, bag_weights, batch.labels.numpy(), weights, self.loss_kind,
            np.float32(bias.detach()), linear, table, *self._adagrad(), self.position,
            *self._scratch(ids.size + len(bag_ids), len(ids), table.shape[1]))
        for t in self.tables:
            torch.autograd.graph.increment_version(t)  # written in place (see ``data.design.recall_rows``)
        self._step_bias(bias, bias_grad)
        return torch.tensor(loss, dtype=torch.float32)

    def _step_bias(self, bias: torch.nn.Parameter, grad: float) -> None:
        """The dense optimiser's step of w0: torch's own, or, for its plain AdaGrad (FM's default), the same update on
        the 0-d tensors in place (torch's step cost ~30 µs, a tenth of FM's step at k 10; these ops, ~10)."""
        dense = self.optimizer.optimizers["dense"]
        group = dense.param_groups[0]
        plain = (type(dense) is eager.Adagrad and not group["lr_decay"] and not group["weight_decay"]
                 and not group.get("maximize") and not group.get("differentiable") and "sum" in dense.state[bias])
        if not plain:
            bias.grad = torch.tensor(grad, dtype=bias.dtype)
            dense.step()
            return
        state = dense.state[bias]  # torch's own kernels, as its AdaGrad calls them: the same bits on any CPU (NumPy's
        state["step"].add_(1)  # sums had matched them where torch's addcmul_ fused its multiply-add, and not on AVX2)
        g = torch.tensor(grad, dtype=bias.dtype)
        with torch.no_grad():
            state["sum"].addcmul_(g, g, value=1)
            bias.addcdiv_(g, state["sum"].sqrt().add_(group["eps"]), value=-group["lr"])

    def _adagrad(self) -> tuple:
        """The tables' AdaGrad as the pass takes it, read at each step (the plateau schedule scales the rates):
        the accumulators of w and V as 2-d views, per row or not, and the (w, V) rates, ε and L2 coefficients."""
        sparse: LazyAdagrad = self.optimizer.optimizers["sparse"]
        group_of = {id(group["params"][0]): group for group in sparse.param_groups}
        groups = [group_of[id(table)] for table in self.tables]
        sums = [sparse.accumulator(t, g).view(len(t), -1).numpy() for t, g in zip(self.tables, groups)]
        per_occurrence = self.optimizer.per_occurrence
        return (*sums, bool(groups[1].get("per_row", False)), np.array([g["lr"] for g in groups]),
                np.array([g["eps"] for g in groups]),
                np.array([self.optimizer.l2_of(g["table"]) if per_occurrence else 0.0 for g in groups]),
                np.array([g.get("row_l2", 0.0) for g in groups]))

    def _scratch(self, slots: int, rows: int, width: int) -> tuple[np.ndarray, ...]:
        """The pass's scratch arrays for ``slots`` slots of ``rows`` rows, kept between steps."""
        if not self.scratch or len(self.scratch[0]) < slots or len(self.scratch[5]) < rows:
            slots, rows = max(slots, len(self.scratch[0]) if self.scratch else 0), max(rows, 1)
            self.scratch = (np.empty(slots, np.int64), np.empty(slots, np.int64), np.empty(slots, np.float32),
                            np.empty((slots, width), np.float32), np.empty(slots, np.float32),
                            np.empty((rows, width), np.float32), np.empty(rows, np.float32))
        return self.scratch


def bag_entries(batch: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The batch's multi-valued entries by row: (starts (B + 1,), ids, weights), row b's entries at
    [starts[b], starts[b + 1]), every field's of a row together; three empty arrays for a batch without any."""
    if not batch.bags:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    rows = np.concatenate([bag.rows.numpy() for bag in batch.bags])
    ids = np.concatenate([bag.ids.numpy() for bag in batch.bags]).astype(np.int64, copy=False)
    weights = np.concatenate([bag.weights.numpy() for bag in batch.bags]).astype(np.float32, copy=False)
    if len(batch.bags) > 1 or (len(rows) > 1 and (rows[1:] < rows[:-1]).any()):
        order = np.argsort(rows, kind="stable")
        rows, ids, weights = rows[order], ids[order], weights[order]
    starts = np.zeros(batch.size + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=batch.size), out=starts[1:])
    return starts, ids, weights


def tensor_hooks(*tensors: torch.Tensor) -> bool:
    """Whether any of ``tensors`` has a gradient hook (``register_hook``, ``register_post_accumulate_grad_hook``)."""
    return any(getattr(t, "_backward_hooks", None) or getattr(t, "_post_accumulate_grad_hooks", None) for t in tensors)


def optimiser_hooks(*optimisers: torch.optim.Optimizer | None) -> bool:
    """Whether a step of ``optimisers`` would run hooks: their own step hooks, or torch's global ones."""
    from torch.optim import optimizer as torch_optimizer

    if getattr(torch_optimizer, "_global_optimizer_pre_hooks", None) or getattr(
            torch_optimizer, "_global_optimizer_post_hooks", None):
        return True
    return any(getattr(o, "_optimizer_step_pre_hooks", None) or getattr(o, "_optimizer_step_post_hooks", None)
               for o in optimisers if o is not None)
