"""A batch's distinct ids, and the batch as Rendle's sparse design matrix over them.

The models gather each batch's U distinct embedding rows once. Summing over the batch's B·F
slots per distinct row (the embedding backward) is one bag of slots per distinct id, the slots
grouped by id: on CPU it beats ``index_add_`` ~6× once a distinct id fills several slots on
average (Frappe: U≈3k rows for 41k slots), and still ~1.4-4× on a long tail (a Criteo-like batch
of 4096 rows: 105k distinct ids in 160k slots, 2026-12-01, shared machine, one thread and two),
so the grouping is built for every CPU batch. ``embedding_bag`` sums the bags 2-4× faster than the
CSR product with the (U × B·F) 0/1 matrix did (0.2-0.5 against 0.5-1.5 ms; 2026-12-02, quiet). FM's sums
Σ_i x_i v_i as products with the (B × U) design matrix X pay only above
``SLOTS_PER_ROW_FOR_PRODUCTS`` (huge tables: 66k rows for 160k slots on the Criteo-shaped
benchmark are no faster), so ``design_pays`` says when to build X.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from deepfm.data import slot_grouping

SLOTS_PER_ROW_FOR_PRODUCTS = 4
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)  # (torch's
# own warning, raised from torch's module: a filter on this module's name let it reach users)


def take_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table.index_select(0, index)`` without autograd: NumPy's ``take`` for fp32/fp64 tables on CPU.

    One thread, and at the sizes of a batch faster than ATen's kernel on one or two: 100k sorted rows of a
    3.9M × 10 table in 3.0 ms CPU time against 5.0 ms; 160k slots from 107k rows in 0.9-1.8 ms against
    3.8-4.5 ms (and 12-20 ms wall with two threads on a busy machine); 2026-12-01, shared machine.
    """
    if table.device.type != "cpu" or table.dtype not in (torch.float32, torch.float64) or index.dtype != torch.int64:
        return table.index_select(0, index)
    return torch.from_numpy(np.take(table.detach().numpy(), index.numpy(), axis=0))


# id(table) -> (a weak reference to the table, index, rows, the table's version): tensors compare by value, so
# no WeakKeyDictionary; an entry goes with its table
_gathered: dict[int, tuple[weakref.ref, torch.Tensor, torch.Tensor, int]] = {}


def remember_rows(table: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> None:
    """Note that ``rows`` are ``table``'s rows ``index`` as of now (a lookup's gather), for ``recall_rows``.
    ``rows`` must be a tensor no one else reads once the caller is done with it; ``index`` sorted distinct ids that
    nothing changes in place (``distinct_rows`` takes a gradient over that very tensor as distinct: ``noted_index``)."""
    key = id(table)
    _gathered[key] = (weakref.ref(table, lambda _: _gathered.pop(key, None)), index, rows, table._version)


def recall_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor | None:
    """The rows ``remember_rows`` noted for ``table`` if they are its rows ``index`` (the same index tensor) and
    nothing wrote to the table since (its version is the same; ``put_rows`` counts as a write); else None.
    Each note is taken once. The row-wise optimisers start from them: one random gather of U rows a table a
    step fewer (~3 ms for 96k rows of a 3.9M × 10 table)."""
    noted = _gathered.pop(id(table), None)
    if noted is None or noted[0]() is not table:
        return None
    _, noted_index, rows, version = noted
    return rows if same_tensor(noted_index, index) and version == table._version else None


def noted_index(table: torch.Tensor) -> torch.Tensor | None:
    """The index of the rows ``remember_rows`` noted for ``table`` (a lookup's sorted distinct ids), if any; the
    note stays for ``recall_rows``."""
    noted = _gathered.get(id(table))
    return noted[1] if noted is not None and noted[0]() is table else None


def same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` are views of the same elements (no comparison of values)."""
    return (a.data_ptr() == b.data_ptr() and a.device == b.device and a.shape == b.shape and a.stride() == b.stride()
            and a.dtype == b.dtype)


def put_rows(table: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``table.index_copy_(0, index, rows)`` for distinct ``index``, without autograd: NumPy's ``put`` for
    contiguous fp32/fp64 tables on CPU, each row of k > 1 values moved as one record. Returns ``table``.

    Row-wise optimisers write their U touched rows back with it: 96k rows into a 3.9M × 10 table in
    2.3 ms CPU against 5.6 ms (one thread; 3.7 against 8.1 ms with two), one-value rows 0.9 against
    1.2 ms (medians of 20 long-tail batches, 2026-12-02, shared machine).
    """
    if (table.device.type != "cpu" or table.dtype not in (torch.float32, torch.float64) or index.dtype != torch.int64
            or rows.dtype != table.dtype or not table.is_contiguous() or table.dim() not in (1, 2)):
        return table.index_copy_(0, index, rows)
    target, values = table.detach().numpy(), rows.detach().contiguous().numpy()
    if table.dim() == 2 and table.shape[1] > 1:  # one opaque record a row: a single copy each, not k element moves
        record = np.dtype((np.void, table.shape[1] * table.element_size()))
        target, values = target.view(record), values.view(record)
    np.put(target.reshape(-1), index.numpy(), values.reshape(-1))
    torch.autograd.graph.increment_version(table)  # a write, as index_copy_'s (see ``recall_rows``)
    return table


def distinct_ids(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(unique, inverse)``: the sorted distinct ids and each id's position among them.

    Ids from a small range are marked in a bitmap (linear time); otherwise they are sorted.
    """
    flat = ids.reshape(-1)
    size = int(flat.max()) + 1 if flat.numel() else 0
    if size > 16 * flat.numel():
        return torch.unique(ids, sorted=True, return_inverse=True)
    present = torch.zeros(size, dtype=torch.bool, device=ids.device)
    present[flat] = True
    unique = present.nonzero().squeeze(1)
    position = torch.empty(size, dtype=torch.int64, device=ids.device)
    position[unique] = torch.arange(len(unique), device=ids.device)
    return unique, position[flat].view_as(ids)


@dataclass(frozen=True)
class DistinctIds:
    """A batch's ids as U sorted distinct ids: ``unique[inverse] == ids``.

    On CPU (see the module), the slots are also grouped by distinct id:
    ``slot_rows``/``slot_columns`` are the CSR indices (int32) of the (U, B·F) 0/1 matrix whose
    row u marks the slots that hold ``unique[u]``.
    """

    unique: torch.Tensor  # (U,) int64
    inverse: torch.Tensor  # (B, F) int64
    slot_rows: torch.Tensor | None = None  # (U + 1,) int32
    slot_columns: torch.Tensor | None = None  # (B·F,) int32: slots, grouped by distinct id
    design_pays: bool = False  # ≥ SLOTS_PER_ROW_FOR_PRODUCTS slots per distinct id: FM as products with X

    @staticmethod
    def of(ids: torch.Tensor, counting: bool = False) -> "DistinctIds":
        """The distinct ids of a batch's (B, F) ``ids``; on CPU with the slot grouping, found by counting
        where ``counting`` (compiled passes: training) and the ids' range pays (``slot_grouping``)."""
        flat = ids.reshape(-1)
        if ids.device.type != "cpu" or not 0 < flat.numel() < 2**31:
            return DistinctIds(*distinct_ids(ids))
        low, high = (int(v) for v in torch.aminmax(flat)) if counting else (0, int(flat.max()))
        if high >= 2**31:
            return DistinctIds(*distinct_ids(ids))
        if counting and low >= 0 and ids.dtype == torch.int64 and slot_grouping.counting_pays(flat.numel(), high + 1):
            return DistinctIds._with_grouping(ids, *slot_grouping.group_by_counting(ids, high + 1))
        return DistinctIds._grouped(ids)

    @staticmethod
    def _with_grouping(ids: torch.Tensor, unique: torch.Tensor, inverse: torch.Tensor, slot_rows: torch.Tensor,
                       slot_columns: torch.Tensor) -> "DistinctIds":
        pays = inverse.numel() >= SLOTS_PER_ROW_FOR_PRODUCTS * len(unique)
        return DistinctIds(unique, inverse.view_as(ids), slot_rows, slot_columns, pays)

    @staticmethod
    def _grouped(ids: torch.Tensor) -> "DistinctIds":
        """The distinct ids and the slot grouping from one stable sort of the ids as int32 keys (~2× faster to
        sort than int64): equal keys are adjacent, in slot order, so the sort's order is ``slot_columns``, the
        first slot of each run starts a row of ``slot_rows`` and a slot's run number is its ``inverse``.
        A 4096-row batch of 39 fields, medians of 25 batches, one thread: 4.4 against 8.3 ms CPU for
        ``torch.unique`` + a second sort (long tail), 4.1 against 9.8 ms (Criteo shape, whose ids took the
        bitmap path); same tensors (2026-12-02, shared machine)."""
        flat = ids.reshape(-1)
        keys, order = torch.sort(flat.int(), stable=True)
        starts = torch.empty(len(keys), dtype=torch.bool)
        starts[0] = True
        torch.ne(keys[1:], keys[:-1], out=starts[1:])
        first = torch.from_numpy(np.flatnonzero(starts.numpy()))  # each run's first slot (3× faster than nonzero)
        unique = keys.index_select(0, first).long()
        inverse = torch.empty(len(keys), dtype=torch.int64).scatter_(0, order, torch.cumsum(starts, 0).sub_(1))
        slot_rows = torch.empty(len(unique) + 1, dtype=torch.int32)
        slot_rows[:-1], slot_rows[-1] = first, len(keys)
        return DistinctIds._with_grouping(ids, unique, inverse, slot_rows, order.int())

    @cached_property
    def slot_batch_rows(self) -> torch.Tensor:
        """The batch row of each slot in ``slot_columns``' order (int64; needs the slot grouping)."""
        return self.slot_columns.long() // self.inverse.shape[1]

    @cached_property
    def slot_row_starts(self) -> torch.Tensor:
        """Where each distinct id's slots start in ``slot_columns`` (int64; needs the slot grouping)."""
        return self.slot_rows[:-1].long()

    def sum_by_row(self, per_slot: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """(U, k) sums of the (B·F, k) ``per_slot`` rows that belong to each distinct id, each times its
        slot's value where ``values`` (B, F) are given."""
        if self.slot_rows is None:
            summed = per_slot.new_zeros(len(self.unique), per_slot.shape[1])
            weighted = per_slot if values is None else per_slot * values.reshape(-1, 1).to(per_slot.dtype)
            return summed.index_add_(0, self.inverse.reshape(-1), weighted)
        weights = None if values is None else values.reshape(-1).to(per_slot.dtype)[self.slot_columns]
        return F.embedding_bag(self.slot_columns, per_slot, self.slot_rows[:-1], mode="sum",  # a bag of slots a row
                               per_sample_weights=weights)

    def design(self, values: torch.Tensor | None) -> "DesignMatrix":
        """The batch as a ``DesignMatrix`` over these distinct ids (needs the slot grouping)."""
        assert self.slot_rows is not None and self.slot_columns is not None, "built only where products pay"
        batch_size, fields = self.inverse.shape
        shape, columns = (batch_size, len(self.unique)), self.inverse.reshape(-1).int()
        rows = torch.arange(0, len(columns) + 1, fields, dtype=torch.int32)
        x_values = values.reshape(-1) if values is not None else torch.ones(len(columns))
        x_t_values = x_values[self.slot_columns] if values is not None else x_values
        batch_rows = self.slot_columns // fields
        x, x_t = _csr(rows, columns, x_values, shape), _csr(self.slot_rows, batch_rows, x_t_values, shape[::-1])
        if values is None:  # one-hot: x² = x
            return DesignMatrix(self.unique, x, x_t, x, x_t)
        return DesignMatrix(self.unique, x, x_t, _csr(rows, columns, x_values.square(), shape),
                            _csr(self.slot_rows, batch_rows, x_t_values.square(), shape[::-1]))


def design_with_bags(ids: torch.Tensor, values: torch.Tensor | None, bags: list) -> "DesignMatrix | None":
    """The design matrix of a batch with multi-valued fields (``bags``, of ``BagTensor``): row b
    holds its F single-valued features and its bags' weighted entries. None off the CPU, or where
    sparse products do not pay (see the module)."""
    if ids.device.type != "cpu":
        return None
    batch_size, fields = ids.shape
    row = torch.cat([torch.arange(batch_size).repeat_interleave(fields), *(bag.rows for bag in bags)])
    feature = torch.cat([ids.reshape(-1), *(bag.ids for bag in bags)])
    x = torch.cat([values.reshape(-1) if values is not None else torch.ones(ids.numel()), *(bag.weights for bag in bags)])
    if len(feature) >= 2**31:
        return None
    unique, column = distinct_ids(feature)
    if len(feature) < SLOTS_PER_ROW_FOR_PRODUCTS * len(unique):
        return None
    x_squared = x.square()
    by_row = _sorted_csr(row, column, batch_size, len(unique), x, x_squared)
    by_column = _sorted_csr(column, row, len(unique), batch_size, x, x_squared)
    return DesignMatrix(unique, by_row[0], by_column[0], by_row[1], by_column[1])


def _sorted_csr(major: torch.Tensor, minor: torch.Tensor, rows: int, columns: int,
                *values: torch.Tensor) -> list[torch.Tensor]:
    """CSR matrices (rows × columns) of the entries (major[i], minor[i]) with each of ``values``."""
    order = torch.sort(major * columns + minor, stable=True).indices  # by row, then by column
    pointers = torch.zeros(rows + 1, dtype=torch.int32)
    torch.cumsum(torch.bincount(major, minlength=rows), 0, out=pointers[1:])
    indices = minor[order].int()
    return [_csr(pointers, indices, v[order], (rows, columns)) for v in values]


def _csr(rows: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return torch.sparse_csr_tensor(rows, columns, values, shape, check_invariants=False)


@dataclass(frozen=True)
class DesignMatrix:
    """A batch as Rendle's design matrix over its U distinct features: ``x[b, u]`` is the value
    of feature ``unique[u]`` in row b (sparse CSR, B × U), with its transpose and the squares of
    its slot values (``x_squared[b, u] = Σ x²`` over the slots of row b holding ``unique[u]``:
    the same tensors as ``x`` for one-hot rows)."""

    unique: torch.Tensor  # (U,) rows of the embedding table
    x: torch.Tensor  # (B, U)
    x_t: torch.Tensor  # (U, B)
    x_squared: torch.Tensor  # (B, U)
    x_squared_t: torch.Tensor  # (U, B)

    def to(self, dtype: torch.dtype) -> "DesignMatrix":
        """The same matrices with values of ``dtype`` (the table's), built as fp32."""
        if self.x.dtype == dtype:
            return self
        return replace(self, x=self.x.to(dtype), x_t=self.x_t.to(dtype), x_squared=self.x_squared.to(dtype),
                       x_squared_t=self.x_squared_t.to(dtype))


def design_of_data(data: "EncodedData", num_features: int) -> "scipy.sparse.csr_matrix":
    """A whole dataset as Rendle's design matrix (N × num_features, float64 CSR): row n holds its
    single-valued fields' values (1 for one-hot fields) and its bags' weighted entries; an id that
    occurs several times in a row holds the sum of its values. The input of the array-level
    solvers (``deepfm.solvers``)."""
    import numpy as np
    import scipy.sparse

    num_rows, num_fields = data.ids.shape
    values = data.dense_values()
    rows = [np.repeat(np.arange(num_rows, dtype=np.int64), num_fields)]
    columns = [data.ids.reshape(-1).astype(np.int64)]
    entries = [np.ones(rows[0].size) if values is None else values.reshape(-1).astype(np.float64)]
    for bag in data.bags:
        rows.append(np.repeat(np.arange(num_rows, dtype=np.int64), np.diff(bag.offsets)))
        columns.append(bag.ids.astype(np.int64))
        entries.append(bag.weights.astype(np.float64))
    coo = scipy.sparse.coo_matrix((np.concatenate(entries), (np.concatenate(rows), np.concatenate(columns))),
                                  shape=(num_rows, num_features))
    design = coo.tocsr()  # sums repeated (row, column) entries
    design.sum_duplicates()
    return design
