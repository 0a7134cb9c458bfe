"""Batch norm over the global batch: every rank's rows, as one process would normalise them."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from deepfm.distributed.process import active
from deepfm.models.layers import WarmStartBatchNorm1d


class _SumOverRanks(torch.autograd.Function):
    """y = Σ_ranks x; the gradient of a sum is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm1d(WarmStartBatchNorm1d):
    """``BatchNorm1d`` whose training statistics are those of the global batch (all ranks' rows),
    on CPU (gloo) as on GPU; ``nn.SyncBatchNorm`` needs a GPU. The all-reduces are differentiable,
    so the gradient is that of one process normalising the global batch. Running statistics are
    therefore the same on every rank. Evaluation uses them, as ``BatchNorm1d`` does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C) -> (B, C)
        if not (self.training and active()):
            return super().forward(x)
        x = x.float()  # under bf16 autocast: statistics, counts and running buffers stay fp32
        all_reduce = _SumOverRanks.apply
        sums = all_reduce(torch.cat([x.sum(0), x.new_tensor([x.shape[0]])]))  # (C + 1,)
        count = sums[-1]
        mean = sums[:-1] / count  # (C,)
        var = all_reduce(((x - mean) ** 2).sum(0)) / count  # biased, as batch norm normalises
        with torch.no_grad():
            momentum = self.warm_momentum()
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean.detach(), momentum)
            self.running_var.lerp_(var.detach() * count / (count - 1).clamp(min=1), momentum)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


def global_batch_norm(model: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm1d`` of ``model`` by a ``GlobalBatchNorm1d`` with the same state
    (same parameter and buffer names, so the saved model loads as usual). No-op in one process."""
    if not active():
        return model
    for name, child in model.named_children():
        if type(child) in (nn.BatchNorm1d, WarmStartBatchNorm1d):
            if not (child.affine and child.track_running_stats):
                raise ValueError("distributed batch norm needs affine=True and track_running_stats=True")
            replacement = GlobalBatchNorm1d(child.num_features, child.eps, child.momentum)
            replacement.load_state_dict(child.state_dict())
            setattr(model, name, replacement.to(child.weight.device))
        else:
            global_batch_norm(child)
    return model
