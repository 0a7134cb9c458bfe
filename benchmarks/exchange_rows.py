"""The tables' exchange alone, on 2+ gloo ranks: rows to their owners, the owners' update, updated rows shared.

    OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node 2 benchmarks/exchange_rows.py [--rows 4000000] \\
        [--touched 20000] [--steps 150]
    DEEPFM_SHARED_TABLES=0 OMP_NUM_THREADS=1 torchrun ...   # private tables, the rows through gloo

Synthetic sparse gradients (``--touched`` distinct rows per rank and step, sorted, as ``FeaturesEmbedding``
makes them) for a (rows, 10) and a (rows, 1) table, as DeepFM's V and w; the owner's update is a plain
SGD step on its rows. Prints per rank the CPU milliseconds per step of each phase (this thread), of the
whole process (gloo's threads included) and the wall time per step, and whether the tables are equal
on every rank at the end.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.distributed as dist
from torch import nn

from deepfm.data.design import take_rows
from deepfm.distributed.rows import average_rows
from deepfm.distributed.shared_tables import share_tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--touched", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    tables = [nn.Parameter(torch.randn(args.rows, 10) * 0.01), nn.Parameter(torch.zeros(args.rows, 1))]
    shared = share_tables(tables)
    generator = torch.Generator().manual_seed(rank + 1)
    batches = [torch.unique(torch.randint(0, args.rows, (args.touched,), generator=generator)) for _ in range(8)]
    phases = dict.fromkeys(["to owners", "update", "share"], 0.0)

    def step(number: int) -> None:
        rows = batches[number % 8]
        for table in tables:
            values = torch.randn(len(rows), table.shape[1], generator=generator)
            table.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), values, table.shape, is_coalesced=True)
        began = time.thread_time()
        owned = average_rows(tables)
        averaged = time.thread_time()
        with torch.no_grad():
            for table, mine in zip(owned.tables, owned.rows):
                table.index_copy_(0, mine, take_rows(table, mine) - 0.01 * table.grad._values())
        updated = time.thread_time()
        owned.share()
        phases["to owners"] += averaged - began
        phases["update"] += updated - averaged
        phases["share"] += time.thread_time() - updated

    for number in range(10):  # warm-up
        step(number)
    phases.update(dict.fromkeys(phases, 0.0))
    cpu, wall = time.process_time(), time.perf_counter()
    for number in range(args.steps):
        step(number)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    sums = torch.tensor([float(t.detach().double().sum()) for t in tables], dtype=torch.float64)
    everyone = [torch.empty_like(sums) for _ in range(world)]
    dist.all_gather(everyone, sums)
    per_step = ", ".join(f"{name} {seconds / args.steps * 1e3:.2f}" for name, seconds in phases.items())
    print(f"rank {rank}, shared tables {shared}, {args.touched} rows touched per rank and step: CPU ms per step "
          f"{per_step}; process {cpu / args.steps * 1e3:.2f}; wall {wall / args.steps * 1e3:.2f} ms; "
          f"tables equal on every rank: {all(torch.equal(everyone[0], other) for other in everyone)}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
