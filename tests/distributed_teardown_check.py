"""Run by tests/test_distributed.py under torchrun (2 gloo ranks): ``cleanup`` frees the process group
that ``setup`` joined, so gloo's threads end then, with the interpreter alive, and not while it exits.

In between, what training does first: an optimiser (torch's first one imports ``torch._dynamo``,
which imports ``torch.distributed.nn.functional`` and its ``group=group.WORLD`` defaults) and a
collective. Prints "freed" on every rank where the group and its threads are gone."""

import os
import weakref

import torch
import torch.distributed as dist

from deepfm.distributed import cleanup, setup


def gloo_threads() -> list[str]:
    names = [open(f"/proc/self/task/{task}/comm").read().strip() for task in os.listdir("/proc/self/task")]
    return [name for name in names if "gloo" in name]


rank = setup("cpu").rank
torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))])
total = torch.ones(3)
dist.all_reduce(total)
group = weakref.ref(dist.group.WORLD)
cleanup()
alive = gloo_threads()
print("freed" if group() is None and not alive else f"rank {rank}: group alive {group() is not None}, threads {alive}")
