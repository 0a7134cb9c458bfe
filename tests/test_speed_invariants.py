"""The fast paths compute exactly what the plain ones do (no timing here: benchmarks/ measures speed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepfm.data.batch import Batch, EncodedData, prefetch
from deepfm.data.design import DistinctIds, distinct_ids
from deepfm.models.layers import FeaturesEmbedding
from deepfm.training.rowwise import RowWiseAdam


@pytest.mark.parametrize("table", [50, 10_000_000])  # bitmap path, sort path
def test_distinct_ids_equal_torch_unique(table):
    ids = torch.randint(0, table, (64, 7))
    ids[3, 2] = ids[0, 0]  # a repeat for sure
    unique, inverse = distinct_ids(ids)
    expected_unique, expected_inverse = torch.unique(ids, sorted=True, return_inverse=True)
    assert torch.equal(unique, expected_unique) and torch.equal(inverse, expected_inverse)
    assert torch.equal(unique[inverse], ids)


@pytest.mark.parametrize("table", [30, 1000])  # many slots per distinct id (summed by a product), few (index_add_)
def test_distinct_rows_sum_their_slots_like_index_add(table):
    torch.manual_seed(2)
    ids = torch.randint(0, table, (64, 6))
    distinct = DistinctIds.of(ids)
    assert (distinct.slot_rows is not None) == (table == 30)
    per_slot = torch.randn(ids.numel(), 3)
    expected = torch.zeros(len(distinct.unique), 3).index_add_(0, distinct.inverse.reshape(-1), per_slot)
    torch.testing.assert_close(distinct.sum_by_row(per_slot), expected)


@pytest.mark.parametrize("table", [30, 1000])
def test_distinct_row_lookup_gives_the_same_values_and_gradient_as_a_plain_lookup(table):
    torch.manual_seed(0)
    ids = torch.randint(0, table, (64, 6))
    values = torch.rand(64, 6)
    batch = Batch(ids, values, [], None)
    assert (batch.distinct().slot_rows is not None) == (table == 30)  # summed by a product, or by index_add_
    emb = FeaturesEmbedding(table, 4, init_std=0.5)
    fast = emb(batch)
    (fast.fields.sum() + fast.fields.pow(2).sum()).backward()
    fast_grad = emb.weight.grad.coalesce()

    table = emb.weight.detach().clone().requires_grad_()
    vx = F.embedding(ids, table, sparse=True) * values.unsqueeze(-1)
    (vx.sum(1).sum() + vx.pow(2).sum(1).sum()).backward()
    torch.testing.assert_close(fast.fields, vx.detach())
    torch.testing.assert_close(fast_grad.to_dense(), table.grad.coalesce().to_dense())
    assert fast_grad.indices()[0].tolist() == torch.unique(ids).tolist(), "only the rows the batch used"


@pytest.mark.parametrize("row_l2", [0.0, 0.1])
def test_row_wise_adam_makes_sparse_adams_update_with_lazy_l2(row_l2):
    torch.manual_seed(1)
    start = torch.randn(20, 3)
    ours, reference = start.clone().requires_grad_(), start.clone().requires_grad_()
    fast, slow = RowWiseAdam([ours], lr=0.05, row_l2=row_l2), torch.optim.SparseAdam([reference], lr=0.05)
    for step in range(4):
        rows = torch.tensor([[7, 2, 7, 11][: 2 + step % 3]])  # unsorted, with a repeated row
        grad_values = torch.randn(rows.shape[1], 3)
        ours.grad = torch.sparse_coo_tensor(rows, grad_values, (20, 3), check_invariants=True)
        summed = torch.sparse_coo_tensor(rows, grad_values, (20, 3), check_invariants=True).coalesce()
        touched = summed.indices()[0]
        with_l2 = summed.values() + row_l2 * reference.detach()[touched]  # λ·v on the rows of the batch only
        reference.grad = torch.sparse_coo_tensor(touched.unsqueeze(0), with_l2, (20, 3), check_invariants=True)
        fast.step()
        slow.step()
        torch.testing.assert_close(ours.detach(), reference.detach(), rtol=1e-6, atol=1e-7)
    untouched = [r for r in range(20) if r not in (2, 7, 11)]
    assert torch.equal(ours.detach()[untouched], start[untouched])
    assert torch.count_nonzero(fast.state[ours]["exp_avg"][untouched]) == 0


def test_prefetch_thread_yields_the_same_batches_in_order_and_passes_errors_on():
    data = EncodedData(ids=np.arange(40, dtype=np.int64).reshape(20, 2), values=None,
                       labels=np.arange(20, dtype=np.float32))

    def batches(fail_at=None):
        for start in range(0, 20, 6):
            if start == fail_at:
                raise ValueError("bad chunk")
            yield data.slice(start, min(start + 6, 20))

    inline = [(n, b.ids.tolist()) for n, b in prefetch(batches(), depth=0)]
    threaded = [(n, b.ids.tolist()) for n, b in prefetch(batches(), depth=2)]
    assert inline == threaded and [n for n, _ in inline] == [6, 6, 6, 2]
    with pytest.raises(ValueError, match="bad chunk"):
        list(prefetch(batches(fail_at=12), depth=2))
