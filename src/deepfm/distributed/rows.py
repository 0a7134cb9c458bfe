"""Embedding tables across ranks, each row updated by one rank: row i belongs to rank ``i % world``.

Every rank holds the whole table, but each touched row is averaged and updated on its owner only,
so the row-wise optimiser's work is split instead of repeated:

1. ``average_rows``: each rank sends every owner the rows of its sparse gradient that the owner owns
   (one all-to-all for all tables); the owner sums what it received over ranks and divides by
   ``world``: the gradient of the global batch on the rows it owns (sorted, distinct).
2. The optimiser steps on those rows (moments and weights of the owned rows only).
3. ``OwnedRows.share``: every owner sends its updated rows to every rank (one all-gather), so the
   tables are the same everywhere again. Tables that every rank maps (``shared_tables``: all ranks
   on one machine) already are: every rank only waits for the owners' writes (one barrier).

A rank's optimiser state is therefore current on its own rows only; ``gather_row_state`` collects
every row's state on rank 0 before a checkpoint. The cost per step is O(rows touched × k / world)
of optimiser work per rank, and two collectives of the touched rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from deepfm.data.design import take_rows
from deepfm.distributed.gather import gather_padded
from deepfm.distributed.process import active, comm_device
from deepfm.distributed.shared_tables import mailboxes_of

STATE_BLOCK_ROWS = 1 << 18  # rows of a table's optimiser state sent at once: no copy of a whole table


def owned_by(rows: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Which of ``rows`` (table row ids) rank ``rank`` owns: a bool mask of the same shape."""
    return rows % world == rank


@dataclass
class OwnedRows:
    """The sparse tables and the rows of each that this rank updates in this step."""

    tables: list[nn.Parameter] = field(default_factory=list)
    rows: list[torch.Tensor] = field(default_factory=list)  # (U_t,) sorted, distinct, owned by this rank
    shared: bool = False  # the tables are memory every rank maps (``shared_tables``): nothing to send

    def share(self) -> None:
        """Copy every rank's updated rows into this rank's tables (after the optimiser's step); for
        shared tables, wait until every owner has written its rows."""
        if not self.tables:
            return
        if self.shared:
            dist.barrier()
            return
        world, rank = dist.get_world_size(), dist.get_rank()
        mine = _pack([(rows, take_rows(table, rows)) for table, rows in zip(self.tables, self.rows)])
        for source, payload in enumerate(gather_padded(mine.to(comm_device()), world)):
            if source == rank:
                continue
            for table, (rows, values) in zip(self.tables, _unpack(payload, self.tables)):
                with torch.no_grad():
                    table.index_copy_(0, rows.to(table.device), values.to(table.device))


def average_rows(tables: list[nn.Parameter]) -> OwnedRows:
    """Replace each table's sparse gradient by the mean over ranks of its rows that this rank owns
    (coalesced: sorted, distinct). Returns those rows, for ``OwnedRows.share`` after the step.
    Tables whose gradients have the same rows (FM's w and V, from one batch) share their row ids in
    the exchange and one merge."""
    if not tables:
        return OwnedRows()
    world = dist.get_world_size()
    grads = [table.grad.coalesce() for table in tables]
    rows = _one_tensor_per_rows([grad.indices()[0] for grad in grads])
    mailboxes = mailboxes_of(tables)
    if mailboxes is not None:  # ranks on one machine: through shared memory
        unpacked = _through_mailboxes([(r, grad.values()) for r, grad in zip(rows, grads)], tables, mailboxes)
    else:
        unpacked = _to_owners(rows, grads, tables)
    owned, merged = OwnedRows(shared=mailboxes is not None), {}
    for position, table in enumerate(tables):
        parts = [from_source[position] for from_source in unpacked]  # (rows, values) from each rank
        key = tuple(id(r) for r, _ in parts)  # the same row tensors from every rank: merged once
        if key not in merged:
            ids = torch.cat([r for r, _ in parts]).to(table.device)
            merged[key] = torch.unique(ids, sorted=True, return_inverse=True)
        distinct, inverse = merged[key]
        values = torch.cat([v for _, v in parts]).to(table.device) / world
        summed = values.new_zeros((len(distinct), *values.shape[1:])).index_add_(0, inverse, values)
        table.grad = torch.sparse_coo_tensor(distinct.unsqueeze(0), summed, table.shape, is_coalesced=True,
                                             check_invariants=False)
        owned.tables.append(table)
        owned.rows.append(distinct)
    return owned


def _to_owners(rows: list[torch.Tensor], grads: list[torch.Tensor], tables: list[nn.Parameter]) -> list[list]:
    """Each rank's (rows, values) of every table that this rank owns, in rank order (one all-to-all)."""
    world = dist.get_world_size()
    outgoing = []
    for destination in range(world):
        picked = {id(r): torch.nonzero(owned_by(r, destination, world)).squeeze(1) for r in rows}
        chosen = {id(r): r[picked[id(r)]] for r in rows}  # one tensor for tables with the same rows
        outgoing.append(_pack([(chosen[id(r)], grad.values()[picked[id(r)]]) for r, grad in zip(rows, grads)]))
    return [_unpack(payload, tables) for payload in _all_to_all([part.to(comm_device()) for part in outgoing])]


def _through_mailboxes(parts: list[tuple[torch.Tensor, torch.Tensor]], tables: list[nn.Parameter],
                       mailboxes: list[torch.Tensor]) -> list[list]:
    """``_to_owners`` for ranks on one machine: this rank writes all its ``parts`` into its mailbox,
    the ranks all-gather their byte counts (after which every mailbox is written), and this rank
    copies out the rows it owns from every mailbox. A rank writes its mailbox again only in the next
    step, after ``OwnedRows.share``'s barrier, when every owner has read it."""
    world, rank = dist.get_world_size(), dist.get_rank()
    written = torch.tensor([_pack(parts, into=mailboxes[rank]).numel()], dtype=torch.int64)
    sizes = [torch.empty_like(written) for _ in range(world)]
    dist.all_gather(sizes, written)
    received = []
    for source, size in enumerate(sizes):
        chosen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # rows tensor -> (its owned ids, their positions)
        out = []
        for rows, values in _unpack(mailboxes[source][: int(size)], tables):
            if id(rows) not in chosen:
                picked = torch.nonzero(owned_by(rows, rank, world)).squeeze(1)
                chosen[id(rows)] = (rows[picked], picked)
            mine, picked = chosen[id(rows)]
            out.append((mine, values[picked]))  # copies: nothing refers to the mailbox after this step
        received.append(out)
    return received


def gather_row_state(optimizer: torch.optim.Optimizer | None) -> None:
    """Make rank 0's state of the tables' ``optimizer`` current on every row, from each row's owner,
    so that rank 0 can checkpoint it. Row-shaped tensors only (moments, accumulators); the other
    ranks' states are left as they were. Every rank calls it (collectives); no-op in one process."""
    if not active() or optimizer is None:
        return
    world, rank, device = dist.get_world_size(), dist.get_rank(), comm_device()
    for table in (param for group in optimizer.param_groups for param in group["params"]):
        state = optimizer.state.get(table, {})
        for name in sorted(state):
            tensor = state[name]
            if not (torch.is_tensor(tensor) and tensor.dim() >= 1 and tensor.shape[0] == table.shape[0]):
                continue
            for start in range(0, tensor.shape[0], STATE_BLOCK_ROWS):
                block = tensor[start : start + STATE_BLOCK_ROWS]
                rows = torch.arange(start, start + len(block), device=block.device)
                mine = torch.where(owned_by(rows, rank, world).view(-1, *([1] * (block.dim() - 1))), block,
                                   torch.zeros((), dtype=block.dtype, device=block.device)).to(device)
                dist.reduce(mine, dst=0)  # every row: its owner's value plus zeros
                if rank == 0:
                    block.copy_(mine)


def _one_tensor_per_rows(rows: list[torch.Tensor]) -> list[torch.Tensor]:
    """``rows``, where tensors that hold the same ids are replaced by the first of them."""
    out: list[torch.Tensor] = []
    for r in rows:
        same = (o for o in out if o.shape == r.shape and (o.data_ptr() == r.data_ptr() or torch.equal(o, r)))
        out.append(next(same, r))
    return out


def _pack(parts: list[tuple[torch.Tensor, torch.Tensor]], into: torch.Tensor | None = None) -> torch.Tensor:
    """One byte buffer of several tables' (rows (n_t,) int64, values (n_t, k_t)): a header (for each
    table, the first table with the same rows tensor; then each table's n_t), then the rows of each
    distinct rows tensor once and every table's values, each piece padded to 8 bytes (so that it can
    be viewed as its dtype again). Bytes, so that one collective carries every table. ``into``: a byte
    buffer to write them at the start of (returned: the part written), instead of a new tensor."""
    first = [next(u for u, (other, _) in enumerate(parts) if other is rows) for rows, _ in parts]
    device = parts[0][0].device
    header = torch.tensor(first + [len(rows) for rows, _ in parts], dtype=torch.int64, device=device)
    pieces = [_bytes(header)]
    for t, (rows, values) in enumerate(parts):
        pieces += ([_bytes(rows.to(torch.int64))] if first[t] == t else []) + [_bytes(values)]
    if into is None:
        return torch.cat(pieces)
    return torch.cat(pieces, out=into[: sum(len(piece) for piece in pieces)])


def _unpack(payload: torch.Tensor, tables: list[nn.Parameter]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``_pack``'s (rows, values) of each table (``tables``: their dtypes and widths); tables that
    were sent with one rows tensor get the same tensor back."""
    count = len(tables)
    header = payload[: 16 * count].view(torch.int64).tolist()
    first, sizes = header[:count], header[count:]
    position, out = 16 * count, []
    for t, (table, n) in enumerate(zip(tables, sizes)):
        if first[t] == t:
            rows = payload[position : position + 8 * n].view(torch.int64)
            position += 8 * n
        else:
            rows = out[first[t]][0]
        width = table.shape[1:].numel() * table.element_size()
        values = payload[position : position + width * n].view(table.dtype).view(n, *table.shape[1:])
        position += _aligned(width * n)
        out.append((rows, values))
    return out


def _aligned(size: int) -> int:
    return -(-size // 8) * 8


def _bytes(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``'s bytes, padded with zeros to a multiple of 8."""
    raw = tensor.contiguous().view(-1).view(torch.uint8)
    padding = _aligned(len(raw)) - len(raw)
    return torch.cat([raw, raw.new_zeros(padding)]) if padding else raw


def _all_to_all(parts: list[torch.Tensor]) -> list[torch.Tensor]:
    """``parts[r]`` (1-D, one dtype) sent to rank r; what every rank sent to this one, in rank order."""
    device = parts[0].device
    sent = torch.tensor([len(p) for p in parts], dtype=torch.int64, device=device)
    sizes = torch.empty_like(sent)
    dist.all_to_all_single(sizes, sent)
    received = parts[0].new_empty(int(sizes.sum()))
    dist.all_to_all_single(received, torch.cat(parts), sizes.tolist(), sent.tolist())
    return list(received.split(sizes.tolist()))
