"""The MLP's first layer on the batch's distinct rows (``deepfm.models.first_layer``; DeepFM, Wide&Deep,
FM&DNN) is the same layer: h = b + W·flatten(e) = b + X P with P[u] = W_f(u) v_u, so logits and every gradient equal the
dense product's, to fp32 rounding; and it is chosen only where it pays."""

import numpy as np
import pytest
import torch

from deepfm.data.batch import Batch
from deepfm.data.design import DistinctIds
from deepfm.models import first_layer
from deepfm.models.deepfm import DeepFM
from deepfm.models.wide_deep import FMAndDNN, WideAndDeep
from deepfm.training import rowwise
from deepfm.training.rowwise import RowWiseAdam

FIELDS, PER_FIELD, K, B = 4, 6, 8, 64


def make_batch(numeric: bool, seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.integers(0, PER_FIELD, B) + f * PER_FIELD for f in range(FIELDS)], axis=1)
    values = torch.from_numpy(rng.normal(0, 1.5, (B, FIELDS)).astype(np.float32)) if numeric else None
    return Batch(torch.from_numpy(ids), values, [], torch.from_numpy(rng.integers(0, 2, B).astype(np.float32)))


def parts(model) -> tuple:
    """(the embedding the MLP reads, the MLP) of DeepFM, Wide&Deep or FM&DNN."""
    return (model.embedding, model.dnn) if isinstance(model, DeepFM) else (model.deep.embedding, model.deep.mlp)


def make_model(model_class, outputs: int = 1, **settings):
    torch.manual_seed(3)
    model = model_class(FIELDS * PER_FIELD, FIELDS, embed_dim=K, output_dim=outputs,
                        **{"mlp": (16, 8), "dropout": 0.0, **settings})
    with torch.no_grad():
        parts(model)[0].weight.normal_(0, 0.5)
    return model


def logits_and_gradients(model_class, distinct_form: bool, numeric: bool, outputs: int, monkeypatch,
                         **settings) -> tuple:
    monkeypatch.setattr(first_layer, "MIN_WIDTH", 0 if distinct_form else 10**9)
    model = make_model(model_class, outputs, **settings)
    embedding, mlp = parts(model)
    batch = make_batch(numeric)
    assert (first_layer.first_layer_plan(embedding, mlp, batch) is not None) == distinct_form
    logits = model(batch)
    (logits * torch.linspace(-1, 2, logits.numel()).view_as(logits)).sum().backward()
    grads = {name: p.grad.to_dense() if p.grad.is_sparse else p.grad for name, p in model.named_parameters()}
    return logits.detach(), grads


@pytest.mark.parametrize("model_class", [DeepFM, WideAndDeep, FMAndDNN])
@pytest.mark.parametrize("numeric", [False, True], ids=["one-hot", "numeric values"])
@pytest.mark.parametrize("outputs", [1, 3])
def test_the_distinct_form_has_the_dense_layers_logits_and_gradients(model_class, numeric, outputs, monkeypatch):
    dense_logits, dense_grads = logits_and_gradients(model_class, False, numeric, outputs, monkeypatch)
    logits, grads = logits_and_gradients(model_class, True, numeric, outputs, monkeypatch)
    torch.testing.assert_close(logits, dense_logits, rtol=1e-5, atol=1e-5)
    assert grads.keys() == dense_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, dense_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_with_dropout_and_batch_norm_too(monkeypatch):
    dense_logits, dense_grads = logits_and_gradients(DeepFM, False, True, 1, monkeypatch, dropout=0.3, batch_norm=True)
    logits, grads = logits_and_gradients(DeepFM, True, True, 1, monkeypatch, dropout=0.3, batch_norm=True)
    torch.testing.assert_close(logits, dense_logits, rtol=1e-5, atol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, dense_grads[name], rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize("model_class, outputs", [(DeepFM, 1), (DeepFM, 3), (WideAndDeep, 1), (FMAndDNN, 1)])
def test_the_distinct_form_leaves_a_bias_that_batch_norm_cancels_out_and_evaluates_the_same(model_class, outputs,
                                                                                           monkeypatch):
    """Before a fused batch norm the first Linear's bias cancels: the distinct form leaves it out (its gradient an
    exact zero) and the running mean counts it in, so training and evaluation match the dense form's."""
    results = {}
    for distinct_form in (False, True):
        monkeypatch.setattr(first_layer, "MIN_WIDTH", 0 if distinct_form else 10**9)
        model = make_model(model_class, outputs, dropout=0.0, batch_norm=True)
        embedding, mlp = parts(model)
        with torch.no_grad():
            mlp.first_linear.bias.add_(2.0)  # far from 0: left out, it must still reach the running mean
        assert mlp.first_bias_cancels(B, torch.float32, "cpu")
        planned = first_layer.first_layer_plan(embedding, mlp, make_batch(True))
        assert (planned is not None) == distinct_form
        model(make_batch(True)).sum().backward()
        model.eval()
        results[distinct_form] = (mlp.first_linear.bias.grad.clone(), mlp.layers[1].running_mean.clone(),
                                  model(make_batch(True)).detach())
        assert not mlp.first_bias_cancels(B, torch.float32, "cpu")  # evaluating: the Linear runs whole
    (dense_grad, dense_mean, dense_logits), (grad, mean, logits) = results[False], results[True]
    assert torch.equal(grad, torch.zeros_like(grad)) and torch.equal(dense_grad, torch.zeros_like(grad))
    torch.testing.assert_close(mean, dense_mean)
    torch.testing.assert_close(logits, dense_logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("hooked", ["first Linear", "MLP", "embedding"])
def test_a_hook_keeps_its_modules_own_call(hooked, monkeypatch):
    monkeypatch.setattr(first_layer, "MIN_WIDTH", 0)
    model = make_model(DeepFM)
    embedding, mlp = parts(model)
    assert first_layer.first_layer_plan(embedding, mlp, make_batch(True)) is not None
    module = {"first Linear": mlp.first_linear, "MLP": mlp, "embedding": embedding}[hooked]
    module.register_forward_hook(lambda *args: None)
    assert first_layer.first_layer_plan(embedding, mlp, make_batch(True)) is None


def test_row_wise_adam_steps_the_same_tables_and_starts_from_the_rows_the_lookup_gathered(monkeypatch):
    recalled = []
    original_recall = rowwise.recall_rows

    def recall_rows(table, index):
        rows = original_recall(table, index)
        if table.shape[1] == K:  # the embedding table (the first-order one may take the design matrix's path)
            recalled.append(rows)
        return rows

    monkeypatch.setattr(rowwise, "recall_rows", recall_rows)
    tables = {}
    for distinct_form in (False, True):
        monkeypatch.setattr(first_layer, "MIN_WIDTH", 0 if distinct_form else 10**9)
        model = make_model(DeepFM)
        optimizer = RowWiseAdam([model.embedding.weight, model.linear.weights.weight], lr=0.05)
        for seed in range(3):
            model.zero_grad(set_to_none=True)
            model(make_batch(True, seed)).sum().backward()
            optimizer.step()
        tables[distinct_form] = model.embedding.weight.detach().clone()
    torch.testing.assert_close(tables[True], tables[False], rtol=1e-5, atol=1e-6)
    assert len(recalled) == 6 and all(rows is not None for rows in recalled)  # no second gather of the rows


@pytest.mark.parametrize("model_class", [DeepFM, WideAndDeep])
@pytest.mark.parametrize("numeric", [False, True], ids=["one-hot", "numeric values"])
def test_predictions_are_the_dense_layers(model_class, numeric, monkeypatch):
    model = make_model(model_class, dropout=0.3, batch_norm=True)
    model(make_batch(numeric, seed=1))  # batch norm's running statistics move off their start
    model.eval()
    batch = make_batch(numeric)
    embedding, mlp = parts(model)
    predictions = {}
    for distinct_form in (False, True):
        monkeypatch.setattr(first_layer, "MIN_WIDTH", 0 if distinct_form else 10**9)
        with torch.inference_mode():
            assert (first_layer.first_layer_plan(embedding, mlp, batch) is not None) == distinct_form
            predictions[distinct_form] = model(batch)
    torch.testing.assert_close(predictions[True], predictions[False], rtol=1e-5, atol=1e-5)


def test_it_is_not_used_for_one_row_nor_for_dense_or_frozen_tables_nor_without_hidden_layers(monkeypatch):
    monkeypatch.setattr(first_layer, "MIN_WIDTH", 0)
    model = DeepFM(FIELDS * PER_FIELD, FIELDS, embed_dim=K, mlp=(16,))
    batch, first = make_batch(False), model.dnn.first_linear
    assert first_layer.first_layer_plan(model.embedding, model.dnn, batch) is not None
    one_row = Batch(batch.ids[:1], None, [], None)
    with torch.no_grad():
        assert first_layer.first_layer_plan(model.embedding, model.dnn, one_row) is None  # a served request: no repeats
    model.embedding.sparse = False  # a dense table gradient, as asked
    assert first_layer.first_layer_plan(model.embedding, model.dnn, batch) is None
    model(batch).sum().backward()
    assert not model.embedding.weight.grad.is_sparse
    model.embedding.sparse = True
    model.embedding.weight.requires_grad_(False)
    assert first_layer.first_layer_plan(model.embedding, model.dnn, batch) is None
    assert DeepFM(FIELDS * PER_FIELD, FIELDS, embed_dim=K, mlp=()).dnn.first_linear is None


def test_a_batch_with_other_fields_than_the_model_is_refused_as_by_the_dense_layer(monkeypatch):
    monkeypatch.setattr(first_layer, "MIN_WIDTH", 0)
    model = DeepFM(FIELDS * PER_FIELD, FIELDS + 1, embed_dim=K, mlp=(16,))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        model(make_batch(False))


@pytest.mark.parametrize("numeric", [False, True], ids=["one-hot", "numeric values"])
def test_under_bf16_autocast_the_first_layer_stays_in_fp32(numeric, monkeypatch):
    monkeypatch.setattr(first_layer, "MIN_WIDTH", 0)
    model = DeepFM(FIELDS * PER_FIELD, FIELDS, embed_dim=K, mlp=(16,))
    batch, first = make_batch(numeric), model.dnn.first_linear
    fields = model.embedding(batch).fields.flatten(1)  # the dense layer's input, fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plan = first_layer.first_layer_plan(model.embedding, model.dnn, batch)
        assert plan is not None
        _, hidden = first_layer.first_layer_on_distinct_rows(model.embedding, first, batch, plan)
    assert hidden.dtype == torch.float32
    torch.testing.assert_close(hidden, torch.nn.functional.linear(fields, first.weight, first.bias), rtol=1e-5, atol=1e-5)


def test_field_blocks_are_each_fields_run_of_distinct_rows_or_none_when_fields_share_a_row():
    ids = torch.tensor([[0, 5, 9], [2, 5, 9], [0, 6, 9]])
    assert first_layer.field_blocks(DistinctIds.of(ids)) == [(0, 2), (2, 4), (4, 5)]
    assert first_layer.field_blocks(DistinctIds.of(torch.tensor([[0, 5], [5, 6]]))) is None  # row 5 in both fields
    assert first_layer.field_blocks(DistinctIds.of(torch.tensor([[7, 1], [8, 2]]))) is None  # fields out of id order


def test_it_pays_for_wide_rows_that_recur_not_for_a_long_tail_or_narrow_rows():
    assert first_layer.pays(4096, 10, 4_800, 64)  # one-hot data at k 64
    assert not first_layer.pays(4096, 10, 4_800, 10)  # k 10
    assert not first_layer.pays(4096, 26, 34_000, 64)  # ~3 slots a row
    assert not first_layer.pays(4096, 39, 88_000, 10)  # Criteo-like long tail


def test_a_narrow_table_is_refused_before_the_batch_looks_for_its_distinct_ids():
    model = DeepFM(FIELDS * PER_FIELD, FIELDS, embed_dim=first_layer.MIN_WIDTH - 1, mlp=(16,)).eval()
    batch = make_batch(False)
    with torch.inference_mode():
        model(batch)
    assert batch._distinct is None  # predicting at k 10 sorts no ids
