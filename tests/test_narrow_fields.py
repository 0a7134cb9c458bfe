"""DeepFM's first Linear with its narrow fields' columns on their few distinct rows (``deepfm.models.narrow_fields``)
is the same layer: h = b + flat_D W_Dᵀ + X_N (blockdiag(R_f) W_Nᵀ), so logits and every gradient equal the dense
product's, to fp32 rounding; and a field is narrow only where its rows in the batch span ≤ 0.5·k distinct ids."""

import numpy as np
import pytest
import torch

from deepfm.data.batch import Batch, BagTensor
from deepfm.models import first_layer, narrow_fields
from deepfm.models.deepfm import DeepFM
from deepfm.training.rowwise import LazyAdagrad, RowWiseAdam

K, B = 8, 96
NUMERIC, SMALL, LARGE = 2, 3, 40  # a numeric field's rows (missing, present), a small vocabulary, a larger one
RULE = narrow_fields.MAX_ROWS_PER_WIDTH


def layout(sizes: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes)[:-1]])


def make_batch(sizes: list[int], numeric: list[int], seed: int = 0) -> Batch:
    """Ids of fields of ``sizes`` in one table, each field's range after the last; ``numeric`` fields carry values."""
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.integers(0, size, B) for size in sizes], axis=1) + layout(sizes)
    values = np.ones((B, len(sizes)), dtype=np.float32)
    values[:, numeric] = rng.normal(0, 1.5, (B, len(numeric)))
    return Batch(torch.from_numpy(ids), torch.from_numpy(values), [], torch.from_numpy(rng.integers(0, 2, B).astype(np.float32)))


def make_model(sizes: list[int], **settings) -> DeepFM:
    torch.manual_seed(3)
    model = DeepFM(sum(sizes), len(sizes), embed_dim=K, **{"mlp": (16, 8), "dropout": 0.0, **settings})
    with torch.no_grad():
        model.embedding.weight.normal_(0, 0.5)
    return model


def logits_and_gradients(sizes, numeric, narrow_form: bool, monkeypatch, **settings) -> tuple:
    monkeypatch.setattr(narrow_fields, "MAX_ROWS_PER_WIDTH", RULE if narrow_form else 0.0)
    model = make_model(sizes, **settings)
    batch = make_batch(sizes, numeric)
    assert (narrow_fields.narrow_fields_plan(model.embedding, model.dnn, batch) is not None) == narrow_form
    logits = model(batch)
    (logits * torch.linspace(-1, 2, len(logits))).sum().backward()
    grads = {name: p.grad.to_dense() if p.grad.is_sparse else p.grad for name, p in model.named_parameters()}
    return logits.detach(), grads


LAYOUTS = {  # field sizes, numeric fields
    "narrow fields first (Criteo's order)": ([NUMERIC, NUMERIC, SMALL, LARGE, LARGE], [0, 1]),
    "narrow fields between wide ones": ([LARGE, NUMERIC, LARGE, SMALL, NUMERIC], [1, 4]),
    "every field narrow": ([NUMERIC, SMALL, NUMERIC], [0, 2]),
    "one-hot, no values": ([SMALL, LARGE, SMALL], []),
}


@pytest.mark.parametrize("sizes, numeric", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain MLP", "batch norm"])
def test_the_narrow_form_has_the_dense_layers_logits_and_gradients(sizes, numeric, batch_norm, monkeypatch):
    dense_logits, dense_grads = logits_and_gradients(sizes, numeric, False, monkeypatch, batch_norm=batch_norm)
    logits, grads = logits_and_gradients(sizes, numeric, True, monkeypatch, batch_norm=batch_norm)
    torch.testing.assert_close(logits, dense_logits, rtol=1e-5, atol=1e-5)
    assert grads.keys() == dense_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, dense_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_with_dropout_too(monkeypatch):
    sizes, numeric = LAYOUTS["narrow fields between wide ones"]
    dense_logits, dense_grads = logits_and_gradients(sizes, numeric, False, monkeypatch, dropout=0.3, batch_norm=True)
    logits, grads = logits_and_gradients(sizes, numeric, True, monkeypatch, dropout=0.3, batch_norm=True)
    torch.testing.assert_close(logits, dense_logits, rtol=1e-5, atol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, dense_grads[name], rtol=1e-3, atol=1e-4, msg=name)


def test_a_field_is_narrow_where_its_rows_span_at_most_half_the_width_of_distinct_ids():
    sizes = [NUMERIC, K // 2, K // 2 + 1, LARGE]
    model, batch = make_model(sizes), make_batch(sizes, [0])
    plan = narrow_fields.narrow_fields_plan(model.embedding, model.dnn, batch)
    assert plan.narrow == [0, 1] and plan.wide == [2, 3]
    unique = plan.distinct.unique
    assert [unique[a:b + 1].tolist() for a, b in plan.spans] == [[0, 1], [2, 3, 4, 5]]  # the fields' own rows


def test_a_span_holding_another_fields_rows_is_still_the_same_sum(monkeypatch):
    """Fields sharing one id range (a hand-made table): field 1's span takes in field 0's ids, zero columns of X."""
    ids = torch.tensor([[0, 0], [2, 3], [1, 3], [2, 0]]).repeat(B // 4, 1)
    batch = Batch(ids, torch.rand(ids.shape) + 0.5, [], None)
    results = []
    for rule in (0.0, RULE):
        monkeypatch.setattr(narrow_fields, "MAX_ROWS_PER_WIDTH", rule)
        model = make_model([4, 0])
        logits = model(batch)
        logits.sum().backward()
        results.append((logits.detach(), model.embedding.weight.grad.to_dense(), model.dnn.first_linear.weight.grad))
    assert narrow_fields.narrow_fields_plan(model.embedding, model.dnn, batch).narrow == [0, 1]
    for dense, narrow in zip(*results):
        torch.testing.assert_close(narrow, dense, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("optimizer_class", [RowWiseAdam, LazyAdagrad])
def test_row_wise_optimisers_step_the_same_tables(optimizer_class, monkeypatch):
    """LazyAdagrad starts from the rows the lookup gathered and writes into them (not copied: no backward saves them)."""
    sizes, numeric = LAYOUTS["narrow fields first (Criteo's order)"]
    tables = {}
    for narrow_form in (False, True):
        monkeypatch.setattr(narrow_fields, "MAX_ROWS_PER_WIDTH", RULE if narrow_form else 0.0)
        model = make_model(sizes, batch_norm=True)
        optimizer = optimizer_class([model.embedding.weight, model.linear.weights.weight], lr=0.05)
        for seed in range(3):
            model.zero_grad(set_to_none=True)
            model(make_batch(sizes, numeric, seed)).sum().backward()
            optimizer.step()
        tables[narrow_form] = model.embedding.weight.detach().clone()
    torch.testing.assert_close(tables[True], tables[False], rtol=1e-5, atol=1e-6)


def test_it_is_for_training_a_sparse_table_in_fp32_with_one_output_and_no_hooks():
    sizes, numeric = LAYOUTS["narrow fields first (Criteo's order)"]
    batch = make_batch(sizes, numeric)
    model = make_model(sizes)

    def planned(model=model, batch=batch) -> bool:
        return narrow_fields.narrow_fields_plan(model.embedding, model.dnn, batch, model.output_dim) is not None

    assert planned()
    with torch.no_grad():
        assert not planned()  # predicting: the dense layer
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not planned()
    assert not planned(DeepFM(sum(sizes), len(sizes), embed_dim=K, mlp=(16,), output_dim=3))
    assert not planned(DeepFM(sum(sizes), len(sizes), embed_dim=K, mlp=()))
    bag = BagTensor(torch.zeros(B, dtype=torch.int64), torch.ones(B), torch.arange(B))
    with_bag = Batch(batch.ids, batch.values, [bag], None)
    assert not planned(batch=with_bag)
    model.embedding.sparse = False
    assert not planned()
    model.embedding.sparse = True
    model.dnn.first_linear.register_forward_hook(lambda *args: None)
    assert not planned()


def test_the_distinct_form_comes_first_where_it_pays(monkeypatch):
    """At k ≥ ``first_layer.MIN_WIDTH`` with recurring rows, every field's columns take the distinct rows already."""
    monkeypatch.setattr(first_layer, "MIN_WIDTH", 0)
    sizes, numeric = LAYOUTS["narrow fields first (Criteo's order)"]
    model, batch = make_model(sizes), make_batch(sizes, numeric)
    assert first_layer.first_layer_plan(model.embedding, model.dnn, batch) is not None
    called = []
    monkeypatch.setattr("deepfm.models.deepfm.narrow_fields_plan", lambda *args: called.append(args))
    model(batch)
    assert called == []


@pytest.mark.parametrize("hooked", ["embedding", "dnn"])
def test_hooks_on_the_embedding_or_the_mlp_keep_their_own_calls(hooked):
    """A hook sees what the module's own call gets: the (B, F, k) fields, the (B, F·k) MLP input."""
    sizes, numeric = LAYOUTS["narrow fields first (Criteo's order)"]
    model, batch = make_model(sizes), make_batch(sizes, numeric)
    assert narrow_fields.narrow_fields_plan(model.embedding, model.dnn, batch) is not None
    seen = []
    getattr(model, hooked).register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    assert narrow_fields.narrow_fields_plan(model.embedding, model.dnn, batch) is None
    model(batch)
    assert len(seen) == 1 and (hooked == "embedding" or seen[0].shape == (B, len(sizes) * K))


def test_an_empty_batch_gives_no_logits_as_the_dense_layer_does():
    sizes, numeric = LAYOUTS["narrow fields first (Criteo's order)"]
    batch = make_batch(sizes, numeric)
    empty = Batch(batch.ids[:0], batch.values[:0], [], batch.labels[:0])
    assert make_model(sizes)(empty).shape == (0,)


def test_a_first_linear_without_bias_and_float64_values_are_the_dense_layers_too():
    sizes, numeric = LAYOUTS["narrow fields between wide ones"]
    model, batch = make_model(sizes), make_batch(sizes, numeric)
    model.dnn.first_linear.bias = None
    planned = narrow_fields.narrow_fields_plan(model.embedding, model.dnn, batch)
    assert planned is not None
    narrow = model(batch)
    with torch.no_grad():
        torch.testing.assert_close(narrow, model(batch), rtol=1e-5, atol=1e-5)  # predicting: the dense layer
    as_float64 = Batch(batch.ids, batch.values.double(), [], batch.labels)
    assert narrow_fields.narrow_fields_plan(model.embedding, model.dnn, as_float64) is None


def test_a_frozen_first_linear_still_trains_the_tables_as_the_dense_layer_does(monkeypatch):
    sizes, numeric = LAYOUTS["narrow fields between wide ones"]
    tables = []
    for rule in (0.0, RULE):
        monkeypatch.setattr(narrow_fields, "MAX_ROWS_PER_WIDTH", rule)
        model = make_model(sizes)
        model.dnn.first_linear.weight.requires_grad_(False)
        model(make_batch(sizes, numeric)).sum().backward()
        assert model.dnn.first_linear.weight.grad is None
        tables.append(model.embedding.weight.grad.to_dense())
    torch.testing.assert_close(tables[1], tables[0], rtol=1e-4, atol=1e-5)
