"""Training across processes and machines: ``torchrun`` ranks (gloo on CPU, nccl on GPU).

How a run is split, and why it equals one process with a global batch of ``batch_size × world``:

- Rank 0 fits the encoders on the whole training file (one pass, as a single process would) and
  broadcasts them as JSON: every rank encodes with the same vocabularies, and no rank needs to
  agree with another on floating-point statistics computed from a different order of chunks.
- Rank ``r`` keeps rows ``r, r + world, r + 2·world, …`` of the training file, cut to
  ``⌊N / world⌋`` rows on every rank (at most ``world − 1`` rows are left out), so every rank
  takes the same number of steps and no collective waits forever.
- After each backward pass gradients are averaged over ranks: dense ones with one all-reduce;
  the embedding tables' rows by their owners (row i: rank ``i % world``): every rank sends each
  owner its rows of the sparse gradient (one all-to-all), the owner averages them, steps the
  row-wise optimiser on its rows only and sends the new rows to every rank (one all-gather), so
  the tables' update is split between the ranks, not repeated (``rows``). Rank 0 collects the
  other ranks' rows of the optimiser state before writing a checkpoint. ``DistributedDataParallel``
  is not used because it only recognises sparse gradients of ``nn.Embedding`` modules; the fused
  table here produces its own (see ``FeaturesEmbedding``). The cost per step is O(rows touched × k)
  of exchange and O(rows touched × k / world) of update per rank, never O(table).
- Batch norm layers normalise over the global batch (``GlobalBatchNorm1d``), as one process would.
- Validation rows are predicted in contiguous blocks, one per rank, and all-gathered: every
  rank computes the same metrics from the same predictions, so early stopping and the choice
  of the best epoch are identical everywhere.
- Only rank 0 writes checkpoints and the model directory; on resume every rank reads them
  (multi-machine runs need the output directory on a shared file system). When torchrun restarts
  the ranks after a failure (``--max-restarts``), they resume from the last checkpoint.

One module per job: ``process`` (the process group and this rank's place in it, broadcasting),
``batchnorm`` (batch norm over the global batch), ``sharding`` (each rank its rows), ``gather``
(collecting tensors from every rank: validation blocks), ``gradients`` (averaging over ranks), ``rows``
(the tables' rows, each averaged and updated by its owner), ``shared_tables`` (one copy of each table
in shared memory for the ranks of one machine) and
``launch`` (starting ranks from the CLI). Everything is importable from ``deepfm.distributed``.
"""

from deepfm.distributed.batchnorm import GlobalBatchNorm1d, global_batch_norm
from deepfm.distributed.gather import block_of, gather_blocks, gather_padded, gather_rows
from deepfm.distributed.gradients import average_gradients
from deepfm.distributed.launch import launch, restart_count, restarts_of_the_run, under_torchrun, without_flag
from deepfm.distributed.rows import OwnedRows, average_rows, gather_row_state
from deepfm.distributed.process import (
    Context, active, broadcast_model, broadcast_text, cleanup, comm_device, context, is_main, launched, rank_device, setup,
)
from deepfm.distributed.shared_tables import is_shared, share_tables
from deepfm.distributed.sharding import encode_held_out_share, encode_shard, encode_shard_and_held_out, shard_mask

__all__ = [
    "Context", "GlobalBatchNorm1d", "OwnedRows", "active", "average_rows", "average_gradients", "block_of", "broadcast_model", "broadcast_text",
    "cleanup", "comm_device", "context", "encode_held_out_share", "encode_shard", "encode_shard_and_held_out", "gather_blocks",
    "gather_padded", "gather_row_state", "gather_rows", "global_batch_norm",
    "is_main", "is_shared", "launch", "launched", "rank_device", "restart_count", "restarts_of_the_run", "setup", "shard_mask", "share_tables",
    "under_torchrun", "without_flag",
]
