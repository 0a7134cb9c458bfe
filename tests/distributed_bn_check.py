"""Run by tests/test_distributed.py under torchrun (2 gloo ranks): ``GlobalBatchNorm1d`` on each
rank's half of a batch gives the outputs, gradients and running statistics that the models' batch
norm (``WarmStartBatchNorm1d``) gives on the whole batch in one process."""

import sys

import torch
import torch.distributed as dist

from deepfm.distributed import GlobalBatchNorm1d, cleanup, setup
from deepfm.models.layers import WarmStartBatchNorm1d

setup("cpu")  # gloo, as training joins it
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
x = torch.randn(8 * world, 5) * 3 + 1  # the same global batch on every rank
weights = torch.randn(8 * world, 5)  # a loss that weighs every output differently
reference = WarmStartBatchNorm1d(5)
with torch.no_grad():
    reference.weight.uniform_(0.5, 2), reference.bias.uniform_(-1, 1)
norm = GlobalBatchNorm1d(5)
norm.load_state_dict(reference.state_dict())

whole = x.clone().requires_grad_()
(reference(whole) * weights).sum().div(len(x)).backward()  # mean loss over the global batch

part = x[rank::world].clone().requires_grad_()
(norm(part) * weights[rank::world]).sum().div(len(part)).backward()  # this rank's mean loss
for p in norm.parameters():  # what average_gradients does
    dist.all_reduce(p.grad)
    p.grad /= world

checks = {
    "output": (norm(part), reference(whole)[rank::world]),  # a second forward: both update stats once more
    # each rank differentiates its own mean loss, world × its share of the global mean loss
    "input gradient": (part.grad / world, whole.grad[rank::world]),
    "weight gradient": (norm.weight.grad, reference.weight.grad),
    "bias gradient": (norm.bias.grad, reference.bias.grad),
    "running mean": (norm.running_mean, reference.running_mean),
    "running var": (norm.running_var, reference.running_var),
}
failed = [name for name, (a, b) in checks.items() if not torch.allclose(a, b, atol=1e-5, rtol=1e-5)]
with torch.autocast("cpu", dtype=torch.bfloat16):  # --precision bf16: the layer before gives bf16
    out = norm(part.detach().to(torch.bfloat16))
if out.dtype != torch.float32 or norm.running_mean.dtype != torch.float32:
    failed.append("bf16 input")
print(f"rank {rank}: {'mismatch in ' + ', '.join(failed) if failed else 'all equal'}")
cleanup()
sys.exit(1 if failed else 0)
