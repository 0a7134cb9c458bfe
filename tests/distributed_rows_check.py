"""Run by tests/test_distributed.py under torchrun (2 gloo ranks): the tables' row-wise update is
split between the ranks, not repeated, and still equals one process's steps on the global batch.

For each optimiser: three ``Trainer._step`` calls on this rank's half of each global batch, against
one process's steps on the whole batches (the same model, the same config). Checked on every rank:
the weights equal the one process's; every row a step touches is updated by exactly one rank (the
rows each rank's table optimiser saw are disjoint and together are the rows the global batch
touched); after ``Trainer._save``, the checkpoint (written by rank 0) holds the one process's
optimiser state on every row."""

import copy
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from deepfm.config import TrainingConfig
from deepfm.data.batch import InMemorySource
from deepfm.data.encoded import EncodedData
from deepfm.distributed import cleanup, is_shared, setup
from deepfm.models.deepfm import DeepFM
from deepfm.training.checkpoint import complete_checkpoint, load_checkpoint
from deepfm.training.optim import ModelOptimizer, batch_occurrences
from deepfm.training.trainer import Trainer, TrainResult

if sys.argv[2:] == ["no-room"]:  # /dev/shm without room for the tables: they stay private
    from deepfm.distributed import shared_tables
    shared_tables.has_room = lambda tables, directory: False
setup("cpu")  # gloo, as training joins it
rank, world = dist.get_rank(), dist.get_world_size()
FEATURES, FIELDS, ROWS = 200, 5, 32 * world
torch.set_num_threads(1)


def global_batch(step: int) -> EncodedData:
    rng = np.random.default_rng(step)
    ids = rng.integers(0, FEATURES // FIELDS, size=(ROWS, FIELDS)) + np.arange(FIELDS) * (FEATURES // FIELDS)
    return EncodedData(ids=ids.astype(np.int32), values=None, labels=rng.integers(0, 2, ROWS).astype(np.float32))


def one_process_step(model, optimizer: ModelOptimizer, data: EncodedData) -> None:
    batch = data.to_batch()
    optimizer.zero_grad()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch.labels)
    loss.backward()
    if optimizer.per_occurrence:
        optimizer.add_occurrence_penalty(batch_occurrences(batch))
    optimizer.step()


def seen_rows(optimizer: torch.optim.Optimizer, log: list[set[int]]) -> None:
    """Record the rows of every table gradient ``optimizer`` steps on."""
    original = optimizer.step

    def step(*args, **kwargs):
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    log.append(set(param.grad.coalesce().indices()[0].tolist()))
        return original(*args, **kwargs)

    optimizer.step = step


failed = []
for name, settings in {"adam, L2 per occurrence": dict(optimizer="adam", embed_reg="occurrences", embed_l2=0.01),
                       "row-wise AdaGrad, lazy L2": dict(optimizer="rowwise_adagrad", embed_l2=0.01)}.items():
    config = TrainingConfig(batch_size=ROWS // world, lr=0.05, **settings)
    torch.manual_seed(0)
    reference = DeepFM(FEATURES, FIELDS, embed_dim=4, mlp=(8,), dropout=0.0)
    model = copy.deepcopy(reference)
    reference_optimizer = ModelOptimizer(reference, config)
    checkpoints = Path(sys.argv[1]) / name.split(",")[0].replace(" ", "-")  # the same directory on every rank
    trainer = Trainer(model, "binary", config, checkpoint_dir=checkpoints, progress=False)
    seen: list[set[int]] = []
    seen_rows(trainer.optimizer.optimizers["sparse"], seen)
    touched = []
    for step in range(3):
        data = global_batch(step)
        one_process_step(reference, reference_optimizer, data)
        trainer._step(data.slice(rank * ROWS // world, (rank + 1) * ROWS // world).to_batch())
        touched.append(set(np.unique(data.ids).tolist()))
    for key, value in reference.state_dict().items():
        if not torch.allclose(model.state_dict()[key], value, atol=1e-5, rtol=1e-4):  # Adam magnifies rounding
            difference = float((model.state_dict()[key] - value).abs().max())
            failed.append(f"{name}: weights {key} (max difference {difference:.2g})")
    everyone: list = [None] * world
    dist.all_gather_object(everyone, seen)
    per_table = len(seen) // 3
    for step in range(3):
        for table in range(per_table):
            parts = [ranks_seen[step * per_table + table] for ranks_seen in everyone]
            if sum(len(p) for p in parts) != len(set().union(*parts)) or set().union(*parts) != touched[step]:
                failed.append(f"{name}: step {step + 1}, table {table}: rows updated by "
                              f"{[len(p) for p in parts]} rows on the ranks, {len(touched[step])} touched")
    trainer._source = InMemorySource(global_batch(0))  # what the checkpoint's settings describe
    trainer._save(TrainResult(), 0, 3, None, 0)
    trainer._writer.wait()  # (written on a thread of its own while training goes on)
    dist.barrier()
    if rank == 0:
        saved = load_checkpoint(complete_checkpoint(checkpoints, print))[1]["sparse"]["state"]
        expected = reference_optimizer.state_dict()["sparse"]["state"]
        for param, state in expected.items():
            for key, value in state.items():
                if not torch.allclose(saved[param][key], value, atol=1e-6, rtol=1e-5):
                    failed.append(f"{name}: checkpointed state {key} of table {param}")
    dist.barrier()
    tables = trainer.optimizer.sparse_params
    shared = all(is_shared(table) for table in tables)
    if shared:
        with torch.no_grad():
            if rank == 0:
                tables[0][1, 0] = 12345.0
            dist.barrier()
            if float(tables[0][1, 0]) != 12345.0:
                failed.append(f"{name}: rank {rank} does not see rank 0's write into the shared table")
            dist.barrier()
    print(f"rank {rank}: {name}: shared tables {shared}")

print(f"rank {rank}: {'mismatch in ' + '; '.join(failed) if failed else 'all equal'}")
cleanup()
sys.exit(1 if failed else 0)
