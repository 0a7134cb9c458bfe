"""The fast paths compute exactly what the plain ones do (no timing here: benchmarks/ measures speed)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepfm.data.batch import Batch, EncodedData, prefetch
from deepfm.data import slot_grouping
from deepfm.data.design import DistinctIds, distinct_ids, put_rows, take_rows
from deepfm.models.gather_pass import gather_scaled
from deepfm.models.layers import FeaturesEmbedding
from deepfm.training.optim import batch_occurrences
from deepfm.training.rowwise import LazyAdagrad, RowWiseAdam, add_occurrence_l2


@pytest.mark.parametrize("table", [50, 10_000_000])  # bitmap path, sort path
def test_distinct_ids_equal_torch_unique(table):
    ids = torch.randint(0, table, (64, 7))
    ids[3, 2] = ids[0, 0]  # a repeat for sure
    unique, inverse = distinct_ids(ids)
    expected_unique, expected_inverse = torch.unique(ids, sorted=True, return_inverse=True)
    assert torch.equal(unique, expected_unique) and torch.equal(inverse, expected_inverse)
    assert torch.equal(unique[inverse], ids)


@pytest.mark.parametrize("counting", [False, True])  # by sorting; by counting where the ids' range pays
@pytest.mark.parametrize("table", [50, 10_000_000])
def test_distinct_ids_of_a_batch_group_its_slots_by_id_in_slot_order(table, counting, monkeypatch):
    counted = []
    monkeypatch.setattr(slot_grouping, "group_by_counting",
                        lambda ids, span, real=slot_grouping.group_by_counting: counted.append(span) or real(ids, span))
    ids = torch.randint(0, table, (64, 7))
    ids[3, 2] = ids[0, 0]
    distinct = DistinctIds.of(ids, counting)
    assert len(counted) == (counting and table == 50)
    unique, inverse = torch.unique(ids, sorted=True, return_inverse=True)
    assert torch.equal(distinct.unique, unique) and torch.equal(distinct.inverse, inverse)
    counts = torch.bincount(inverse.reshape(-1), minlength=len(unique))
    assert distinct.slot_rows.dtype == torch.int32 and distinct.slot_rows.tolist() == [0, *counts.cumsum(0).tolist()]
    assert torch.equal(distinct.slot_columns, torch.sort(inverse.reshape(-1), stable=True).indices.int())
    assert DistinctIds.of(ids[:0]).unique.numel() == 0


def test_threads_group_by_counting_at_once_each_with_its_own_counts_left_zero():
    import threading

    batches = [torch.randint(0, span, (256, 5)) for span in (40, 900, 300, 1200, 7) for _ in range(20)]
    results: dict[int, list] = {}

    def group(part: int) -> None:
        results[part] = [slot_grouping.group_by_counting(ids, int(ids.max()) + 1) for ids in batches[part::2]]
        results[part].append(slot_grouping._scratch.counts)

    threads = [threading.Thread(target=group, args=(part,)) for part in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for part in (0, 1):
        *grouped, counts = results[part]
        assert not counts.any(), "a thread's counts are zero between batches"
        for ids, got in zip(batches[part::2], grouped):
            want = DistinctIds._grouped(ids)
            for a, b in zip(got, (want.unique, want.inverse.reshape(-1), want.slot_rows, want.slot_columns)):
                assert torch.equal(a, b)
    assert results[0][-1] is not results[1][-1]


def test_counts_left_half_made_by_an_interrupt_are_not_reused(monkeypatch):
    count_ids, place_slots = slot_grouping._passes()

    def interrupted(*args):
        raise KeyboardInterrupt

    ids = torch.randint(0, 30, (40, 3))
    monkeypatch.setattr(slot_grouping, "_passes", lambda: (count_ids, interrupted))
    with pytest.raises(KeyboardInterrupt):
        slot_grouping.group_by_counting(ids, 30)
    monkeypatch.setattr(slot_grouping, "_passes", lambda: (count_ids, place_slots))
    got, want = slot_grouping.group_by_counting(ids, 30), DistinctIds._grouped(ids)
    assert torch.equal(got[2], want.slot_rows) and torch.equal(got[3], want.slot_columns)


@pytest.mark.parametrize("table", [30, 1000])  # many slots per distinct id, few (a long tail)
def test_distinct_rows_sum_their_slots_like_index_add(table):
    torch.manual_seed(2)
    ids = torch.randint(0, table, (64, 6))
    distinct = DistinctIds.of(ids)
    assert distinct.slot_rows is not None, "on CPU the slots are summed by a product, even on a long tail"
    assert distinct.design_pays == (table == 30)
    per_slot = torch.randn(ids.numel(), 3)
    expected = torch.zeros(len(distinct.unique), 3).index_add_(0, distinct.inverse.reshape(-1), per_slot)
    torch.testing.assert_close(distinct.sum_by_row(per_slot), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("slots", [(5, 3), (400, 7)])  # one block; a block per thread
def test_gather_scaled_is_a_gather_then_a_product(dtype, slots):
    rows, index, values = torch.randn(50, 4).to(dtype), torch.randint(0, 50, slots), torch.rand(slots)
    expected = rows[index] * values.to(dtype).unsqueeze(-1)
    assert torch.equal(gather_scaled(rows, index, values), expected)


def test_a_table_the_compiled_gather_does_not_take_is_looked_up_and_scaled_by_torch():
    table = FeaturesEmbedding(30, 4, init_std=0.5)
    table.weight.data = table.weight.data.bfloat16()
    ids, values = torch.randint(0, 30, (8, 3)), torch.rand(8, 3)
    looked_up = table.lookup(Batch(ids, values, [], None), values)
    torch.testing.assert_close(looked_up, F.embedding(ids, table.weight.detach()) * values.unsqueeze(-1))


def test_sum_by_row_weights_each_slot_by_its_value_with_or_without_the_slot_grouping():
    ids, values, per_slot = torch.randint(0, 20, (16, 3)), torch.rand(16, 3), torch.randn(48, 2)
    unique, inverse = torch.unique(ids, return_inverse=True)
    expected = torch.zeros(len(unique), 2).index_add_(0, inverse.reshape(-1), per_slot * values.reshape(-1, 1))
    for distinct in (DistinctIds.of(ids), DistinctIds(unique, inverse)):  # grouped slots (CPU); none (elsewhere)
        torch.testing.assert_close(distinct.sum_by_row(per_slot, values), expected)


@pytest.mark.parametrize("table", [30, 1000])
def test_distinct_row_lookup_gives_the_same_values_and_gradient_as_a_plain_lookup(table):
    torch.manual_seed(0)
    ids = torch.randint(0, table, (64, 6))
    values = torch.rand(64, 6)
    batch = Batch(ids, values, [], None)
    assert (batch.design() is not None) == (table == 30)  # FM as products with X only where they pay
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


def test_a_table_looked_up_twice_in_one_step_gets_its_gradient_rows_summed_though_a_lookup_is_noted():
    from deepfm.data.design import noted_index
    from deepfm.training.rowwise import distinct_rows

    emb = FeaturesEmbedding(50, 3)
    first, second = torch.tensor([[1, 4], [4, 9]]), torch.tensor([[4, 7], [9, 9]])
    (emb(Batch(first, None, [], None)).fields.sum() + emb(Batch(second, None, [], None)).fields.sum()).backward()
    assert noted_index(emb.weight) is not None  # the second lookup's ids: not the summed gradient's rows
    rows, values = distinct_rows(emb.weight.grad, noted_index(emb.weight))
    assert rows.tolist() == [1, 4, 7, 9] and values[:, 0].tolist() == [1.0, 3.0, 1.0, 3.0]


def test_a_lookups_gradient_kept_by_autograd_is_taken_as_distinct_without_reading_its_rows(monkeypatch):
    from deepfm.data.design import noted_index
    from deepfm.training.rowwise import distinct_rows

    ids = torch.randint(0, 1000, (64, 6))
    emb = FeaturesEmbedding(1000, 4)
    emb(Batch(ids, None, [], None)).fields.sum().backward()
    assert not emb.weight.grad.is_coalesced()  # autograd keeps the gradient without the lookup's mark
    for read in ("__bool__", "item", "tolist"):  # any read of a value (on a GPU: a wait for it)
        monkeypatch.setattr(torch.Tensor, read, lambda *args, read=read: pytest.fail(f"read the rows ({read})"))
    rows, values = distinct_rows(emb.weight.grad, noted_index(emb.weight))
    monkeypatch.undo()
    assert rows.data_ptr() == noted_index(emb.weight).data_ptr() and rows.tolist() == torch.unique(ids).tolist()
    assert values.data_ptr() == emb.weight.grad._values().data_ptr()  # no copy either


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # the compiled pass, and the tensor ops
@pytest.mark.parametrize("row_l2", [0.0, 0.1])
def test_row_wise_adam_makes_sparse_adams_update_with_lazy_l2(row_l2, dtype):
    torch.manual_seed(1)
    start = torch.randn(20, 3, dtype=dtype)
    ours, reference = start.clone().requires_grad_(), start.clone().requires_grad_()
    fast, slow = RowWiseAdam([ours], lr=0.05, row_l2=row_l2), torch.optim.SparseAdam([reference], lr=0.05)
    for step in range(4):
        rows = torch.tensor([[7, 2, 7, 11][: 2 + step % 3]])  # unsorted, with a repeated row
        grad_values = torch.randn(rows.shape[1], 3, dtype=dtype)
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


def test_row_wise_adam_steps_blocks_of_many_rows_on_each_thread_as_sparse_adam(monkeypatch):
    from deepfm.training import rowwise

    blocks = []
    monkeypatch.setattr(rowwise, "in_row_blocks", lambda p, arrays, *a: blocks.append(len(
        results := in_row_blocks(p, arrays, *a))) or results)
    torch.manual_seed(2)
    start = torch.randn(5000, 4)
    ours, reference = start.clone().requires_grad_(), start.clone().requires_grad_()
    fast, slow = RowWiseAdam([ours], lr=0.05), torch.optim.SparseAdam([reference], lr=0.05)
    with preserved():
        torch.set_num_threads(2)
        for _ in range(3):
            rows = torch.randperm(5000)[:2000].sort().values.unsqueeze(0)  # distinct and sorted, as a lookup's
            grad_values = torch.randn(2000, 4)
            ours.grad = torch.sparse_coo_tensor(rows, grad_values, (5000, 4), is_coalesced=True, check_invariants=True)
            reference.grad = torch.sparse_coo_tensor(rows, grad_values, (5000, 4), is_coalesced=True, check_invariants=True)
            fast.step()
            slow.step()
    assert blocks == [2, 2, 2]
    torch.testing.assert_close(ours.detach(), reference.detach(), rtol=1e-6, atol=1e-7)


def test_a_compiled_pass_prefetches_rows_and_where_numba_cannot_it_prefetches_nothing_and_still_runs():
    """``prefetch_row`` asks for a row ahead and changes no value; a numba that cannot lower it gets a no-op."""
    from numba import njit

    from deepfm import row_prefetch

    def sum_rows_prefetching(prefetch):
        @njit
        def total(table, rows):
            out = 0.0
            for u in range(rows.size):
                if u + 1 < rows.size:
                    prefetch(table, rows[u + 1])
                out += table[rows[u]].sum()
            return out
        return total

    table, rows = np.arange(60, dtype=np.float32).reshape(20, 3), np.array([3, 9, 17], dtype=np.int64)
    # the numba this project pins lowers it (else row-wise Adam runs without prefetching: slower, same values)
    assert row_prefetch.prefetch_row is row_prefetch._llvm_prefetch_row
    assert sum_rows_prefetching(row_prefetch.prefetch_row)(table, rows) == table[rows].sum()
    assert sum_rows_prefetching(row_prefetch._no_prefetch)(table, rows) == table[rows].sum()

    def cannot_lower(table):
        raise NotImplementedError("no llvm.prefetch in this numba")

    assert row_prefetch.usable(row_prefetch._prefetch_first_row) and not row_prefetch.usable(cannot_lower)


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


# Dropout and batch norm in the MLP: cheaper CPU forms of the same functions.

from deepfm.models.batchnorm import batch_norm_relu_dropout  # noqa: E402
from deepfm.runtime import preserved  # noqa: E402
from deepfm.models import scores  # noqa: E402
from deepfm.models.dropout import draw_seed, keep_mask, relu_dropout  # noqa: E402
from deepfm.models.layers import MultiLayerPerceptron, WarmStartBatchNorm1d  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_relu_dropout_equals_relu_then_inverted_dropout_with_the_same_mask(dtype):
    torch.manual_seed(3)
    z, grad, p = torch.randn(64, 9).to(dtype), torch.randn(64, 9).to(dtype), 0.3
    mask = keep_mask(z.shape, p, seed=11)
    fast_in, plain_in = z.clone().requires_grad_(), z.clone().requires_grad_()
    fast = relu_dropout(fast_in * 1, p, seed=11)  # (× 1: not a leaf, as a layer's output)
    plain = F.relu(plain_in) * mask.to(dtype) / (1 - p)
    fast.backward(grad)
    plain.backward(grad)
    assert fast.dtype == dtype
    torch.testing.assert_close(fast, plain)
    torch.testing.assert_close(fast_in.grad, plain_in.grad)


def test_dropout_keeps_each_element_with_probability_one_minus_p_and_follows_the_torch_seed():
    for p in (0.1, 0.2, 0.5):
        kept = float(keep_mask(torch.Size([1000, 1000]), p, seed=int(p * 100)).float().mean())
        assert abs(kept - (1 - p)) < 5 * (p * (1 - p) / 1e6) ** 0.5  # five standard errors
    mask = keep_mask(torch.Size([1000, 1000]), 0.5, seed=1)
    for step in (1, 2, 3, 4):  # the four elements of one random word, and the next word's
        assert abs(float((mask[:, step:] == mask[:, :-step]).float().mean()) - 0.5) < 0.003, step
    assert abs(float((mask[1:] == mask[:-1]).float().mean()) - 0.5) < 0.003  # rows independent
    assert not torch.equal(keep_mask(torch.Size([1000, 1000]), 0.5, seed=2), mask)
    z = torch.randn(1000, 1000)
    torch.manual_seed(0)
    first = relu_dropout(z.clone(), 0.5)
    torch.manual_seed(0)
    assert torch.equal(relu_dropout(z.clone(), 0.5), first)
    assert not torch.equal(relu_dropout(z.clone(), 0.5), first)


def test_mlp_keeps_its_modules_and_in_eval_mode_is_the_plain_sequence():
    torch.manual_seed(1)
    mlp = MultiLayerPerceptron(6, [8, 8], dropout=0.4, batch_norm=True)
    assert [type(m).__name__ for m in mlp.layers] == ["Linear", "WarmStartBatchNorm1d", "ReLU", "Dropout"] * 2 + ["Linear"]
    x = torch.randn(32, 6)
    mlp.train()
    mlp(x)  # running statistics move
    mlp.eval()
    torch.testing.assert_close(mlp(x), mlp.layers(x))


def test_mlp_training_step_is_relu_dropout_on_each_hidden_layer():
    torch.manual_seed(2)
    mlp = MultiLayerPerceptron(6, [8, 8], dropout=0.25)
    x = torch.randn(32, 6)
    torch.manual_seed(7)
    out = mlp(x)
    torch.manual_seed(7)
    h = x
    for linear in (mlp.layers[0], mlp.layers[3]):
        h = relu_dropout(linear(h), 0.25)
    torch.testing.assert_close(out, mlp.layers[6](h))


@pytest.mark.parametrize("steps", [1, 3])
def test_warm_start_batch_norm_trains_like_batch_norm(steps):
    torch.manual_seed(4)
    ours, plain = WarmStartBatchNorm1d(5), torch.nn.BatchNorm1d(5)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2.0)
        ours.bias.uniform_(-1.0, 1.0)
    plain.load_state_dict(ours.state_dict())
    for step in range(steps):
        plain.momentum = max(0.1, 1.0 / (step + 1))  # the warm start's factor
        z = torch.randn(40, 5) * 3 + 2
        grad = torch.randn(40, 5)
        a, b = z.clone().requires_grad_(), z.clone().requires_grad_()
        ours.zero_grad()
        plain.zero_grad()
        ya, yb = ours(a), plain(b)
        ya.backward(grad)
        yb.backward(grad)
        torch.testing.assert_close(ya, yb)
        torch.testing.assert_close(a.grad, b.grad)
        torch.testing.assert_close(ours.weight.grad, plain.weight.grad)
        torch.testing.assert_close(ours.bias.grad, plain.bias.grad)
    torch.testing.assert_close(ours.running_mean, plain.running_mean)
    torch.testing.assert_close(ours.running_var, plain.running_var)
    ours.eval()
    plain.eval()
    z = torch.randn(10, 5)
    torch.testing.assert_close(ours(z), plain(z))


def test_warm_start_batch_norm_under_bf16_autocast_stays_close_to_batch_norm():
    torch.manual_seed(5)
    ours, plain = WarmStartBatchNorm1d(6), torch.nn.BatchNorm1d(6, momentum=1.0)
    z = (torch.randn(64, 6) * 2 + 1).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya, yb = ours(z), plain(z)
    assert ya.dtype == yb.dtype == torch.bfloat16
    torch.testing.assert_close(ya.float(), yb.float(), rtol=2e-2, atol=2e-2)


def plain_batch_norm_relu_dropout(z, weight, bias, p, seed, running=None, momentum=0.1):
    """F.batch_norm (float32) → ReLU → inverted dropout with ``keep_mask``'s mask."""
    mask = keep_mask(z.shape, p, seed) if p > 0 else torch.ones(z.shape, dtype=torch.bool)
    normed = F.batch_norm(z, *(running or (None, None)), weight, bias, True, momentum, 1e-5)
    return F.relu(normed) * mask / (1 - p)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("rows", [40, 1100])  # one block of rows; a block per thread
def test_batch_norm_relu_dropout_is_batch_norm_then_relu_then_dropout(dtype, p, rows):
    torch.manual_seed(5)
    z = torch.randn(rows, 7) * 3 + 20  # |μ| ≫ σ: the moments must not cancel
    grad = torch.randn(rows, 7)
    weight, bias = torch.rand(7) + 0.5, torch.randn(7)
    plain_params = [weight.double().requires_grad_(), bias.double().requires_grad_()]  # the reference in float64
    fast_params = [weight.clone().requires_grad_(), bias.clone().requires_grad_()]
    plain_running, fast_running = (torch.zeros(7).double(), torch.ones(7).double()), (torch.zeros(7), torch.ones(7))
    plain_in, fast_in = z.to(dtype).double().requires_grad_(), z.to(dtype).requires_grad_()  # the same values

    plain = plain_batch_norm_relu_dropout(plain_in, *plain_params, p, seed=9, running=plain_running, momentum=0.3)
    fast = batch_norm_relu_dropout(fast_in * 1, *fast_params, *fast_running, 0.3, 1e-5, p, seed=9)
    plain.backward(grad.double())
    fast.backward(grad.to(dtype))

    assert fast.dtype == dtype
    close = (lambda a, b, **bf16: torch.testing.assert_close(a.double(), b.detach(), **(
        dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else bf16)))
    close(fast, plain, rtol=2e-2, atol=3e-2)
    close(fast_in.grad, plain_in.grad, rtol=2e-2, atol=3e-2)
    for fast_param, plain_param in zip(fast_params, plain_params):
        close(fast_param.grad, plain_param.grad, rtol=2e-2, atol=0.5)  # sums of B bfloat16 gradients
    for fast_stat, plain_stat in zip(fast_running, plain_running):
        close(fast_stat, plain_stat, rtol=1e-2, atol=1e-2)


def test_the_dropout_mask_is_the_same_on_one_thread_and_two_whatever_the_width():
    masks = []
    for threads in (1, 2):
        with preserved():
            torch.set_num_threads(threads)
            masks.append([keep_mask(torch.Size([1100, width]), 0.3, seed=5) for width in (1, 7, 400)])
    for one, two in zip(*masks):  # a row's elements straddle random words unless its width is a multiple of 4
        assert torch.equal(one, two)
    assert torch.equal(masks[0][1].flatten(), keep_mask(torch.Size([7700]), 0.3, seed=5)), "element i's place alone"
    assert abs(float(masks[0][1].float().mean()) - 0.7) < 0.02


def test_batch_norm_relu_dropout_is_the_same_on_one_thread_and_two():
    z = torch.randn(1100, 5) * 2 + 1
    weight, bias = torch.rand(5) + 0.5, torch.randn(5)
    outputs = []
    for threads in (1, 2):
        with preserved():
            torch.set_num_threads(threads)
            outputs.append(batch_norm_relu_dropout(z, weight, bias, torch.zeros(5), torch.ones(5), 0.1, 1e-5, 0.5, seed=3))
    assert torch.equal(outputs[0] > 0, outputs[1] > 0), "the mask depends on the seed and each element's place alone"
    torch.testing.assert_close(outputs[0], outputs[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_batch_norm_relu_dropout_passes_a_nan_on(dtype):
    z = torch.randn(64, 3).to(dtype)
    z[5, 1] = float("nan")
    out = batch_norm_relu_dropout(z, torch.ones(3), torch.zeros(3), torch.zeros(3), torch.ones(3), 0.1, 1e-5, 0.2, seed=1)
    kept = keep_mask(z.shape, 0.2, seed=1)
    assert torch.equal(out[:, 1].isnan(), kept[:, 1]), "a diverged column shows (where dropout keeps it)"
    assert not out[:, [0, 2]].isnan().any()


@pytest.mark.parametrize("z, p", [(torch.randn(8, 3).double(), 0.2), (torch.randn(1, 3), 0.2), (torch.randn(8, 3), 1.0)],
                         ids=["float64", "one row", "p 1"])
def test_batch_norm_relu_dropout_refuses_what_it_cannot_compute(z, p):
    with pytest.raises(ValueError):
        batch_norm_relu_dropout(z, torch.ones(3), torch.zeros(3), torch.zeros(3), torch.ones(3), 0.1, 1e-5, p)


@pytest.mark.parametrize("which", range(5))
def test_batch_norm_relu_dropout_refuses_parameters_it_would_not_write_in_place(which):
    """Weight, bias, running statistics and input shift: float32 and contiguous; the module then takes F.batch_norm."""
    parameters = [torch.ones(3), torch.zeros(3), torch.zeros(3), torch.ones(3), torch.zeros(3)]
    parameters[which] = parameters[which].double() if which % 2 else torch.zeros(3, 2)[:, 0]
    *state, shift = parameters
    with pytest.raises(ValueError, match="float32"):
        batch_norm_relu_dropout(torch.randn(8, 3), *state, 0.1, 1e-5, 0.0, input_shift=shift)
    module = WarmStartBatchNorm1d(3)
    module.running_var = torch.ones(3, dtype=torch.float64)
    assert not module.fusable_for(torch.Size([8, 3]), torch.float32, "cpu")


@pytest.mark.parametrize("outputs", [1, 3])
@pytest.mark.parametrize("rows", [40, 1100])
def test_linear_scores_of_a_bf16_layer_are_the_float32_linear_layer(outputs, rows):
    torch.manual_seed(6)
    layer = torch.nn.Linear(300, outputs)
    x = torch.randn(rows, 300).bfloat16()
    grad = torch.randn(rows, outputs)
    fast_in, plain_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    fast = scores.linear_scores(fast_in, layer)
    fast.backward(grad)
    fast_grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    plain = layer(plain_in.float())
    plain.backward(grad)
    assert scores.fusable(layer, x) and fast.dtype == torch.float32 and fast_in.grad.dtype == torch.bfloat16
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_in.grad, plain_in.grad)
    for fast_grad, param in zip(fast_grads, layer.parameters()):
        torch.testing.assert_close(fast_grad, param.grad, rtol=1e-5, atol=1e-4)


def test_mlp_keeps_a_modules_own_call_where_a_hook_asks_for_it():
    mlp = MultiLayerPerceptron(6, [8], dropout=0.25, batch_norm=True)
    seen = []
    mlp.layers[1].register_forward_hook(lambda module, inputs, output: seen.append(output))
    mlp(torch.randn(32, 6))
    assert len(seen) == 1, "the hooked batch norm ran as its module"


def test_mlp_keeps_its_output_layers_own_call_where_a_backward_hook_asks_for_it():
    mlp = MultiLayerPerceptron(6, [8], batch_norm=True)
    seen = []
    mlp.layers[-1].register_full_backward_hook(lambda module, grad_in, grad_out: seen.append(grad_out))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mlp(torch.randn(32, 6))
    out.sum().backward()
    assert len(seen) == 1, "the hooked output layer ran as its module"


def test_a_dropout_in_evaluation_mode_keeps_everything_in_a_training_mlp():
    torch.manual_seed(2)
    mlp = MultiLayerPerceptron(6, [8], dropout=0.25, batch_norm=True)
    mlp.layers[3].eval()
    x = torch.randn(32, 6)
    linear, norm, _, _, output = mlp.layers
    expected = output(F.relu(F.batch_norm(linear(x), None, None, norm.weight, norm.bias, True, 0.1, 1e-5)))
    torch.testing.assert_close(mlp(x), expected)


def test_mlp_training_step_with_batch_norm_is_batch_norm_relu_dropout_on_each_hidden_layer():
    torch.manual_seed(2)
    mlp = MultiLayerPerceptron(6, [8, 8], dropout=0.25, batch_norm=True)
    x = torch.randn(32, 6)
    torch.manual_seed(7)
    out = mlp(x)
    torch.manual_seed(7)
    h = x
    for linear, norm in ((mlp.layers[0], mlp.layers[1]), (mlp.layers[4], mlp.layers[5])):
        h = plain_batch_norm_relu_dropout(linear(h), norm.weight, norm.bias, 0.25, draw_seed())
    torch.testing.assert_close(out, mlp.layers[8](h))
    assert all(int(norm.num_batches_tracked) == 1 for norm in (mlp.layers[1], mlp.layers[5]))


@pytest.mark.parametrize("autocast", [False, True])
def test_a_linear_before_batch_norm_trains_without_its_bias_and_evaluates_the_same(autocast):
    """Batch norm subtracts the batch's mean: the Linear's bias changes neither the training output nor any
    other gradient, its own gradient is zero, and the running mean counts it in (evaluation runs it whole)."""
    torch.manual_seed(4)
    fused = MultiLayerPerceptron(6, [8, 8], dropout=0.0, batch_norm=True)
    plain = MultiLayerPerceptron(6, [8, 8], dropout=0.0, batch_norm=True)
    plain.load_state_dict(fused.state_dict())
    with torch.no_grad():
        for mlp in (fused, plain):
            mlp.layers[0].bias.add_(0.5 if autocast else 3.0)  # far from 0: left out, it must still reach the running mean
    for module in plain.layers:
        module.register_forward_hook(lambda *args: None)  # every module keeps its own call
    x = torch.randn(300, 6)
    for mlp in (fused, plain):
        for _ in range(3):
            mlp.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = mlp(x)
            out.float().sum().backward()
    for (name, fast), slow in zip(fused.named_parameters(), plain.parameters()):
        if name.endswith("bias") and name.split(".")[1] in ("0", "3"):  # the Linears before a batch norm
            assert torch.equal(fast.grad, torch.zeros_like(fast)), name
            assert slow.grad.abs().max() < 2e-2, name  # the batch's sum of the gradient: zero up to rounding
        elif not autocast:  # (bf16's rounding of z with or without the bias moves the other gradients ~1%)
            torch.testing.assert_close(fast.grad, slow.grad, rtol=1e-4, atol=1e-4, msg=name)
    tolerance = dict(rtol=1e-2, atol=1e-2) if autocast else dict(rtol=1e-4, atol=1e-4)
    for fast, slow in zip(fused.buffers(), plain.buffers()):
        torch.testing.assert_close(fast, slow, **tolerance)
    fused.eval(), plain.eval()
    torch.testing.assert_close(fused(x), plain(x), **tolerance)


@pytest.mark.parametrize("case", ["hook on the Linear", "Linear without bias", "fp16 autocast", "with dropout"])
def test_a_linear_keeps_its_bias_in_training_unless_the_fused_batch_norm_can_take_its_place(case):
    torch.manual_seed(5)
    mlp = MultiLayerPerceptron(6, [8], dropout=0.3 if case == "with dropout" else 0.0, batch_norm=True)
    linear = mlp.layers[0]
    if case == "hook on the Linear":
        linear.register_forward_hook(lambda *args: None)
    if case == "Linear without bias":
        linear.bias = None
    with torch.autocast("cpu", dtype=torch.float16, enabled=case == "fp16 autocast"):
        out = mlp(torch.randn(300, 6))
    out.float().sum().backward()
    if case == "with dropout":  # fused (the mask changes nothing of this): an exact zero
        assert torch.equal(linear.bias.grad, torch.zeros(8))
    elif linear.bias is not None:  # the module's own call: the batch's sum of the gradient, zero up to rounding
        assert linear.bias.grad is not None and not torch.equal(linear.bias.grad, torch.zeros(8))
        assert linear.bias.grad.abs().max() < 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_take_rows_is_index_select_for_every_dtype(dtype):
    table = torch.randn(50, 3).to(dtype)
    index = torch.tensor([0, 7, 7, 49, 3])
    gathered = take_rows(table, index)
    assert gathered.dtype == dtype and torch.equal(gathered, table.index_select(0, index))
    gathered.add_(1)
    assert torch.equal(table[7], table.index_select(0, index)[1]), "a copy: writing to it leaves the table alone"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.int64])
@pytest.mark.parametrize("width", [None, 1, 3])  # a vector (one accumulator a row), rows of 1 and of 3
def test_put_rows_writes_distinct_rows_as_index_copy_does(dtype, width):
    shape = (50,) if width is None else (50, width)
    table = torch.arange(50 * (width or 1)).reshape(shape).to(dtype)
    index = torch.tensor([0, 3, 7, 49])
    rows = (torch.arange(4 * (width or 1)).reshape(4, *shape[1:]) + 1000).to(dtype)
    expected = table.clone().index_copy_(0, index, rows)
    assert put_rows(table, index, rows) is table and torch.equal(table, expected)
    strided = torch.zeros(50, 2 * (width or 1), dtype=dtype)[:, ::2].reshape(shape)  # not contiguous: index_copy_
    strided = strided if width is not None else torch.zeros(100, dtype=dtype)[::2]
    assert torch.equal(put_rows(strided, index, rows), expected.zero_().index_copy_(0, index, rows))


def test_per_occurrence_l2_on_a_distinct_row_lookup_matches_the_searched_path():
    torch.manual_seed(3)
    ids = torch.tensor([[0, 3], [3, 5], [0, 3], [7, 5]])
    batch = Batch(ids, None, [], torch.zeros(4))
    table = FeaturesEmbedding(8, 3, init_std=0.5)
    table(batch).fields.sum().backward()  # the gradient's rows are the batch's distinct ids themselves
    rows, counts, size = batch_occurrences(batch)
    assert table.weight.grad._indices()[0].data_ptr() == rows.data_ptr()
    searched = torch.nn.Parameter(table.weight.detach().clone())
    searched.grad = torch.sparse_coo_tensor(rows.clone().unsqueeze(0), table.weight.grad._values().clone(), (8, 3))
    add_occurrence_l2(table.weight, rows, counts, size, 0.05)
    add_occurrence_l2(searched, rows, counts, size, 0.05)
    torch.testing.assert_close(table.weight.grad.to_dense(), searched.grad.to_dense())
    expected = torch.zeros(8, 3)
    expected[rows] = 1.0 * counts.unsqueeze(1) + 2 * 0.05 * counts.unsqueeze(1) / 4 * table.weight.detach()[rows]
    torch.testing.assert_close(table.weight.grad.to_dense(), expected)


def test_a_gradient_run_imports_neither_sklearn_nor_numba_until_it_scores_or_samples():
    """Peak RSS: scikit-learn's metrics (~100 MB) load when a run first scores, numba (~60 MB) when it samples
    or first steps a compiled pass (dropout, row-wise Adam)."""
    import subprocess
    import sys

    code = ("import sys, deepfm.api, deepfm.cli; from deepfm.solvers import build_solver; "
            "print(sorted(m for m in ('sklearn', 'numba') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


class _Spy(torch.autograd.Function):
    """Identity that keeps the gradient it receives (to see where a layer's backward wrote)."""

    seen: list[torch.Tensor] = []

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        _Spy.seen.append(grad)
        return grad


def test_relu_dropout_backward_writes_its_gradient_into_the_incoming_one():
    """In the MLP, the backward of the fused ReLU + dropout allocates no (B, H) gradient: the next
    Linear's fresh input gradient is overwritten (no new pages), and the values are the plain form's."""
    torch.manual_seed(5)
    z, p = torch.randn(64, 9), 0.25
    linear = torch.nn.Linear(9, 4)
    out = relu_dropout(_Spy.apply(z.clone().requires_grad_()), p, seed=5, overwrite_grad=True)  # as the MLP does
    incoming = []
    out.register_hook(incoming.append)
    linear(out).sum().backward()
    plain_in = z.clone().requires_grad_()
    linear(F.relu(plain_in) * keep_mask(z.shape, p, seed=5).float() / (1 - p)).sum().backward()
    torch.testing.assert_close(_Spy.seen[-1], plain_in.grad)
    assert _Spy.seen[-1].data_ptr() == incoming[0].data_ptr()


def test_an_mlp_without_output_layer_leaves_the_callers_gradient_alone():
    """The last hidden layer of an MLP without an output layer hands its output to the caller, whose
    gradient tensor must not be overwritten."""
    torch.manual_seed(6)
    mlp = MultiLayerPerceptron(5, [7], dropout=0.3, output_dim=None)
    grad = torch.randn(16, 7)
    kept = grad.clone()
    mlp(torch.randn(16, 5, requires_grad=True)).backward(grad)
    assert torch.equal(grad, kept)


def test_the_row_wise_step_takes_the_rows_the_lookup_gathered_unless_the_table_changed(monkeypatch):
    """The forward gathers a batch's distinct rows of each table; the row-wise AdaGrad step of the same batch
    starts from those rows instead of gathering them again (same values: nothing wrote to the table in
    between), and gathers afresh when something did (an in-place write bumps the table's version).
    (Row-wise Adam and AdaGrad on fp32 CPU tables read the rows in their compiled passes and gather none: the
    tensor ops, on float64 tables here, do.)"""
    from deepfm.data import design
    from deepfm.training import rowwise

    ids = torch.tensor([[0, 3], [3, 5], [0, 3], [7, 5]])
    batch = Batch(ids, None, [], torch.zeros(4))
    gathers = []
    counted = lambda table, index: gathers.append(table) or take_rows(table, index)  # noqa: E731
    monkeypatch.setattr(rowwise, "take_rows", counted)

    def step(table: FeaturesEmbedding, optimizer: LazyAdagrad, write_between: bool) -> None:
        optimizer.zero_grad()
        table(batch).fields.square().sum().backward()
        if write_between:
            with torch.no_grad():
                table.weight.index_copy_(0, torch.tensor([3]), torch.ones(1, 3, dtype=table.weight.dtype))
        optimizer.step()

    results = []
    for write_between in (False, True):
        torch.manual_seed(5)
        table = FeaturesEmbedding(8, 3, init_std=0.5).double()
        optimizer = LazyAdagrad(table.parameters(), lr=0.1)
        gathers.clear()
        for _ in range(3):
            step(table, optimizer, write_between)
        assert sum(t is table.weight for t in gathers) == (3 if write_between else 0)
        results.append(table.weight.detach().clone())
    torch.manual_seed(5)
    plain = FeaturesEmbedding(8, 3, init_std=0.5).double()
    reference = LazyAdagrad(plain.parameters(), lr=0.1)
    monkeypatch.setattr(design, "recall_rows", lambda table, index: None, raising=False)
    monkeypatch.setattr(rowwise, "recall_rows", lambda table, index: None, raising=False)
    for _ in range(3):
        step(plain, reference, False)
    assert torch.equal(results[0], plain.weight.detach())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_relu_dropout_passes_nan_on_as_relu_does_whatever_its_sign_bit(dtype):
    nan = float("nan")
    z = torch.tensor([1.5, -2.0, nan, -nan, 0.0, -0.0, float("-inf"), float("inf")]).to(dtype)
    out = relu_dropout(z.clone() * 1, 1e-12, seed=3)  # p so small that nothing is dropped
    expected = torch.relu(z.float()) / (1 - 1e-12)
    assert torch.equal(out.float().isnan(), expected.isnan())
    torch.testing.assert_close(out.float()[~expected.isnan()], expected[~expected.isnan()])


def test_the_occurrence_l2_leaves_the_callers_counts_alone():
    from deepfm.training.rowwise import occurrence_l2_scale

    rows, counts = torch.tensor([1, 4]), torch.tensor([2.0, 3.0])
    scale = occurrence_l2_scale(rows, (rows, counts, 8), 0.5)
    torch.testing.assert_close(scale, torch.tensor([0.25, 0.375]))
    assert torch.equal(counts, torch.tensor([2.0, 3.0]))


def test_a_compiled_pass_is_compiled_uncached_where_no_cache_folder_can_be_written(monkeypatch):
    import numba

    from deepfm.compiled import compiled

    real = numba.njit

    def njit(**options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file 'f.py'")
        return real(**options)

    monkeypatch.setattr(numba, "njit", njit)

    def twice(x):
        return 2 * x

    assert compiled(twice)(21) == 42


def test_row_wise_adam_refuses_a_row_outside_the_table_instead_of_writing_past_it():
    table = torch.nn.Parameter(torch.zeros(4, 2))
    optimizer = RowWiseAdam([table])
    table.grad = torch.sparse_coo_tensor(torch.tensor([[1, 7]]), torch.ones(2, 2), (4, 2), is_coalesced=True,
                                         check_invariants=False)
    with pytest.raises(IndexError):
        optimizer.step()


from deepfm.compiled import in_row_blocks  # noqa: E402
from deepfm.models import layers  # noqa: E402


def _fields_with_special_values(rows: int, num_fields: int, k: int) -> torch.Tensor:
    fields = torch.randn(rows, num_fields, k)
    specials = [float("nan"), float("inf"), -float("inf"), 1 + 2**-8, 1 + 3 * 2**-8, 3.4e38, -0.0]  # ties to even
    fields.view(-1)[: len(specials)] = torch.tensor(specials)[: fields.numel()]
    return fields


@pytest.mark.parametrize("rows", [40, 1100])  # one block of rows; a block per thread
@pytest.mark.parametrize("num_fields, k", [(1, 4), (2, 3), (5, 1), (39, 10), (8, 64)])
@pytest.mark.parametrize("flat_dtype", [None, torch.bfloat16])
def test_the_fm_term_pass_computes_what_aten_ops_do(rows, num_fields, k, flat_dtype):
    """The FM term's forward pass: Σ_f v_f x_f and the pairwise term as ATen's sums (to rounding), the
    flat fields bit for bit (bf16: rounded as ``.to`` rounds, NaN and infinities included)."""
    torch.manual_seed(7)
    fields = torch.randn(rows, num_fields, k)
    pairwise, total, flat = layers._pairwise_of_fields(fields, True, flat_dtype)
    expected_pairwise, expected_total, expected_flat = layers._pairwise_of_fields(fields, False, flat_dtype)
    torch.testing.assert_close(total, expected_total, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pairwise, expected_pairwise, rtol=1e-4, atol=1e-4)
    assert flat.dtype == (flat_dtype or torch.float32) and torch.equal(flat, expected_flat)
    special = _fields_with_special_values(rows, num_fields, k)
    special_pairwise, special_total, special_flat = layers._pairwise_of_fields(special, True, flat_dtype)
    expected_pairwise, expected_total, expected_flat = layers._pairwise_of_fields(special, False, flat_dtype)
    torch.testing.assert_close(special_flat, expected_flat, rtol=0, atol=0,
                               equal_nan=True)  # a NaN's bits may differ (ATen's vector cast sets them all)
    assert torch.equal(special_pairwise.isnan(), expected_pairwise.isnan())  # inf − inf: NaN in both
    assert torch.equal(special_total.isnan(), expected_total.isnan())


@pytest.mark.parametrize("rows", [40, 1100])
@pytest.mark.parametrize("num_fields, k", [(1, 4), (5, 3), (39, 10)])
@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.bfloat16])
def test_the_fm_term_gradient_pass_is_the_aten_sum_bit_for_bit(rows, num_fields, k, grad_dtype):
    """∂L/∂(v_f x_f) = g_flat + (Σ_j v_j x_j − v_f x_f)·g_fm as ATen computes it, in float32 (a bf16
    g_flat widened), written into g_flat where that is float32."""
    torch.manual_seed(8)
    fields, grad_fm = torch.randn(rows, num_fields, k), torch.randn(rows)
    total = fields.sum(dim=1)
    grad_flat = torch.randn(rows, num_fields * k).to(grad_dtype)
    incoming = grad_flat.clone()
    fast = layers._fields_gradient(fields, total, grad_fm, incoming, True)
    plain = layers._fields_gradient(fields, total, grad_fm, grad_flat.clone(), False)
    assert fast.dtype == torch.float32 and fast.shape == fields.shape and torch.equal(fast, plain)
    assert (fast.data_ptr() == incoming.data_ptr()) == (grad_dtype == torch.float32)
    if grad_dtype == torch.bfloat16:
        assert torch.equal(incoming, grad_flat)  # read, not written
    transposed = grad_flat.t().contiguous().t()  # a strided gradient: read through a contiguous copy
    assert torch.equal(layers._fields_gradient(fields, total, grad_fm, transposed, True), plain)


def test_the_fm_term_and_the_flat_fields_each_have_their_own_gradient_when_the_other_is_unused():
    fields = torch.randn(300, 4, 3, requires_grad=True)
    pairwise, flat = layers._PairwiseAndFlatFields.apply(fields, layers._use_fm_passes(fields), None)
    flat.sum().backward()
    assert torch.equal(fields.grad, torch.ones_like(fields))
    fields.grad = None
    pairwise, flat = layers._PairwiseAndFlatFields.apply(fields, layers._use_fm_passes(fields), None)
    pairwise.sum().backward()
    torch.testing.assert_close(fields.grad, (fields.sum(1, keepdim=True) - fields).detach())


def test_deepfm_trains_on_the_fm_term_passes_and_predicts_on_aten_ops(monkeypatch):
    """In a CPU training step the FM term takes the compiled passes, and under bf16 autocast the MLP's first
    Linear reads the bf16 fields the pass wrote (no cast of its own, none back of its gradient); the step's
    loss and gradients are the ATen path's to rounding. Prediction keeps ATen ops (numba is not loaded there)."""
    from deepfm.models.deepfm import DeepFM

    rows = 600
    data = EncodedData(torch.randint(0, 50, (rows, 6)).numpy(), None, [], labels=torch.rand(rows).round().numpy())
    calls = []
    monkeypatch.setattr(layers, "in_row_blocks", lambda p, *a: calls.append(p.__name__) or in_row_blocks(p, *a))
    use_fm_passes = layers._use_fm_passes
    for autocast in (False, True):
        results = []
        for compiled in (True, False):
            monkeypatch.setattr(layers, "_use_fm_passes", use_fm_passes if compiled else (lambda f: False))
            torch.manual_seed(9)
            model = DeepFM(50, num_fields=6, embed_dim=8, mlp=(16, 16), dropout=0.0)
            calls.clear()

            def step():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):  # as the Trainer: forward only
                    loss = model(data.to_batch()).float().sum()
                loss.backward()

            ops = _names_of_ops_on((rows, 48), step)
            results.append(([p.grad.to_dense() for p in model.parameters()], calls.copy(), ops))
        (fast, fast_calls, fast_ops), (plain, plain_calls, _) = results
        assert fast_calls == ["pairwise_of_fields", "fields_gradient"] and plain_calls == []
        if autocast:
            assert not {"aten::_to_copy", "aten::copy_"} & set(fast_ops), fast_ops
        for fast_grad, plain_grad in zip(fast, plain):
            torch.testing.assert_close(fast_grad, plain_grad, rtol=1e-3, atol=1e-4)
        monkeypatch.setattr(layers, "_use_fm_passes", use_fm_passes)
        model.eval()
        calls.clear()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model(data.to_batch())
        assert calls == []


def _names_of_ops_on(shape: tuple[int, ...], run) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        run()
    return [event.name for event in prof.events() if any(list(s) == list(shape) for s in event.input_shapes or [])]


def _block_sums_or_raise(values, first_row, fail_from, slow_from=10**9, ended=None):  # (*blocks, first_row, *args)
    if first_row >= slow_from:
        time.sleep(0.5)
        ended.append(first_row)
    if first_row >= fail_from:
        raise ValueError(f"block at row {first_row}")
    return first_row, float(values.sum())


def test_row_blocks_run_on_the_helpers_give_results_in_order_and_hand_errors_back():
    values = np.arange(1200, dtype=np.float64).reshape(600, 2)
    with preserved():
        torch.set_num_threads(2)
        assert in_row_blocks(_block_sums_or_raise, [values], 10**9) == [(0, values[:300].sum()), (300, values[300:].sum())]
        with pytest.raises(ValueError, match="block at row 300"):  # the helper's block, not the caller's
            in_row_blocks(_block_sums_or_raise, [values], 300)
        assert len(in_row_blocks(_block_sums_or_raise, [values], 10**9)) == 2  # the helpers still work after it
        torch.set_num_threads(3)
        ended: list[int] = []
        with pytest.raises(ValueError, match="block at row 300"):  # the first error, once every block has ended
            in_row_blocks(_block_sums_or_raise, [np.ones((900, 2))], 300, 600, ended)
        assert ended == [600]


def test_row_blocks_keep_nothing_of_a_pass_once_it_returns():
    import gc
    import weakref

    class Arg:
        pass

    arg = Arg()
    kept = weakref.ref(arg)
    with preserved():
        torch.set_num_threads(2)
        in_row_blocks(lambda values, first_row, arg: None, [np.ones((600, 2))], arg)
    del arg
    gc.collect()
    assert kept() is None  # no helper holds the last block's arguments (they may be a batch's activations)


def _splitmix64(state: int) -> int:
    mask = 2**64 - 1
    z = (state ^ (state >> 30)) * 0xBF58476D1CE4E5B9 & mask
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & mask
    return z ^ (z >> 31)


@pytest.mark.parametrize("shape", [(3, 5), (2, 1), (5, 3), (1, 2), (300, 7)])
@pytest.mark.parametrize("p", [0.3, 0.9, 1 - 2**-18])
def test_the_dropout_mask_is_the_documented_splitmix64_draw(shape, p):
    """Element i (row-major) is dropped when bits 16·(i mod 4) … +15 of SplitMix64's word for
    seed + (⌊i/4⌋ + 1)·γ fall under round(p·2¹⁶) (a little-endian machine's parts)."""
    seed, gamma, threshold = 12345, 0x9E3779B97F4A7C15, round(p * 2**16)
    words = [_splitmix64((seed + (w + 1) * gamma) & (2**64 - 1)) for w in range((shape[0] * shape[1] + 3) // 4)]
    expected = [(words[i // 4] >> (16 * (i % 4)) & 0xFFFF) >= threshold for i in range(shape[0] * shape[1])]
    assert keep_mask(torch.Size(shape), p, seed).flatten().tolist() == expected


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_row_blocks_run_in_a_forked_child_with_its_own_helpers(in_forked_child):
    values = np.ones((600, 2))
    with preserved():
        torch.set_num_threads(2)
        in_row_blocks(_block_sums_or_raise, [values], 10**9)  # the parent's helpers started
        in_forked_child(lambda: in_row_blocks(_block_sums_or_raise, [values], 10**9) == [(0, 600.0), (300, 600.0)])


def test_a_first_linears_output_without_its_bias_gets_it_back_where_no_batch_norm_takes_its_place():
    torch.manual_seed(6)
    mlp = MultiLayerPerceptron(6, [8, 8], dropout=0.0, batch_norm=True)
    first = mlp.first_linear
    h = torch.nn.functional.linear(torch.randn(300, 6), first.weight)  # the first Linear's output, no bias
    with pytest.raises(ValueError, match="after_first_linear"):
        mlp(h, first_bias_left_out=True)
    mlp.eval()  # evaluating: no fused batch norm, so the bias is added back
    assert not mlp.first_bias_cancels(300, torch.float32, "cpu")
    torch.testing.assert_close(mlp(h, after_first_linear=True, first_bias_left_out=True),
                               mlp(h + first.bias, after_first_linear=True))


def test_an_interrupt_just_after_a_blocks_end_was_taken_does_not_wait_forever():
    """Ctrl-C delivered right after the caller took a finished block's lock: waiting for the lock again hung the
    run (a new user's interrupt, 2 of 6, at 0% CPU); the block has ended, so the interrupt goes on at once."""
    import threading

    from deepfm.compiled import _helpers, _Task

    task = _Task(lambda: None, ())
    _helpers.ensure(1)
    _helpers.tasks.put(task)  # a helper runs the block, then releases its lock
    task.done.acquire()
    task.done.release()  # the block has ended

    class InterruptedOnceTaken:
        def __init__(self, lock):
            self.lock, self.taken = lock, 0

        def acquire(self):
            self.lock.acquire()
            self.taken += 1
            if self.taken == 1:
                raise KeyboardInterrupt

    task.done = InterruptedOnceTaken(task.done)
    raised = []
    waiter = threading.Thread(target=lambda: raised.append(pytest.raises(KeyboardInterrupt, task.wait)), daemon=True)
    waiter.start()
    waiter.join(timeout=5)
    assert not waiter.is_alive() and raised, "wait() waited forever for a lock it held"
