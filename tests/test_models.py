"""The models read like their papers: these tests check the equations, not just shapes."""

import itertools

import numpy as np
import pytest
import torch

from deepfm.config import ModelConfig
from deepfm.data.batch import Bag, EncodedData
from deepfm.models import build_model
from deepfm.models.deepfm import DeepFM
from deepfm.models.fm import FactorizationMachine
from deepfm.models.layers import EmbeddedFields, FeaturesEmbedding, MultiLayerPerceptron, fm_pairwise
from deepfm.models.lr import LogisticRegression

N_FEATURES, K = 12, 4


def sparse_rows(seed=0, rows=5, fields=3, with_bag=True):
    """Rows with single-valued fields (real values) and one weighted multi-valued field."""
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.choice(np.arange(f * 3, f * 3 + 3), rows) for f in range(fields)], axis=1).astype(np.int64)
    values = rng.normal(size=(rows, fields)).astype(np.float32)
    bags = []
    if with_bag:
        lengths = rng.integers(1, 4, rows)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        bag_ids = np.concatenate([rng.choice(np.arange(9, 12), n, replace=False) for n in lengths]).astype(np.int64)
        bags = [Bag(offsets, bag_ids, rng.uniform(0.1, 1.0, offsets[-1]).astype(np.float32))]
    return EncodedData(ids, values, bags, labels=rng.integers(0, 2, rows).astype(np.float32))


def dense_x(data: EncodedData) -> np.ndarray:
    """The same rows as dense real-valued feature vectors x ∈ R^n (FM paper notation)."""
    x = np.zeros((len(data), N_FEATURES))
    for r in range(len(data)):
        for f in range(data.ids.shape[1]):
            x[r, data.ids[r, f]] += data.values[r, f]
        for bag in data.bags:
            lo, hi = bag.offsets[r], bag.offsets[r + 1]
            for i, w in zip(bag.ids[lo:hi], bag.weights[lo:hi]):
                x[r, i] += w
    return x


WITH_AND_WITHOUT_BAGS = pytest.mark.parametrize("with_bag", [True, False], ids=["multi-valued", "one-per-field"])


@WITH_AND_WITHOUT_BAGS
def test_fm_pairwise_term_equals_the_quadratic_definition(with_bag):
    torch.manual_seed(0)
    data = sparse_rows(with_bag=with_bag)
    emb = FeaturesEmbedding(N_FEATURES, K, init_std=0.5)
    fast = fm_pairwise(emb(data.to_batch())).detach().double().numpy()
    V, x = emb.weight.detach().double().numpy(), dense_x(data)
    slow = [sum(V[i] @ V[j] * x[r, i] * x[r, j] for i, j in itertools.combinations(range(N_FEATURES), 2)) for r in range(len(x))]
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)


@WITH_AND_WITHOUT_BAGS
def test_fm_prediction_is_w0_plus_linear_plus_pairwise(with_bag):
    torch.manual_seed(1)
    model = FactorizationMachine(N_FEATURES, K)
    with torch.no_grad():
        model.linear.bias.fill_(0.3)
        model.linear.weights.weight.normal_()
        model.embedding.weight.normal_()
    data = sparse_rows(seed=1, with_bag=with_bag)
    x = dense_x(data)
    w = model.linear.weights.weight.detach().double().numpy()[:, 0]
    V = model.embedding.weight.detach().double().numpy()
    expected = 0.3 + x @ w + np.array([0.5 * (((x[r] @ V) ** 2) - (x[r] ** 2) @ (V**2)).sum() for r in range(len(x))])
    np.testing.assert_allclose(model(data.to_batch()).detach().double().numpy(), expected, rtol=1e-5, atol=1e-5)


@WITH_AND_WITHOUT_BAGS
def test_fm_gradients_match_the_paper(with_bag):
    """∂y/∂w0 = 1, ∂y/∂w_i = x_i, ∂y/∂v_if = x_i Σ_j v_jf x_j − v_if x_i² (one example)."""
    torch.manual_seed(2)
    model = FactorizationMachine(N_FEATURES, K)
    with torch.no_grad():
        model.embedding.weight.normal_()
    model.embedding.sparse = model.linear.weights.sparse = False
    data = sparse_rows(seed=2, rows=1, with_bag=with_bag)
    model(data.to_batch()).sum().backward()
    x = dense_x(data)[0]
    V = model.embedding.weight.detach().double().numpy()
    assert model.linear.bias.grad.item() == pytest.approx(1.0)
    np.testing.assert_allclose(model.linear.weights.weight.grad.double().numpy()[:, 0], x, rtol=1e-5, atol=1e-6)
    paper = x[:, None] * (x @ V)[None, :] - V * (x**2)[:, None]
    np.testing.assert_allclose(model.embedding.weight.grad.double().numpy(), paper, rtol=1e-4, atol=1e-5)


def test_fm_in_matrix_form_gives_the_papers_outputs_and_gradients_on_a_batch(monkeypatch):
    """Training batches whose ids repeat go through sparse products with the design matrix X (B × U
    distinct features); outputs and gradients are still the paper's, summed over the rows."""
    import deepfm.models.layers as layers

    data = sparse_rows(seed=4, rows=40, with_bag=False)  # 9 distinct features in 120 slots
    batch = data.to_batch()
    assert batch.design() is not None
    torch.manual_seed(4)
    model = FactorizationMachine(N_FEATURES, K)
    with torch.no_grad():
        model.linear.bias.fill_(-0.2)
        model.linear.weights.weight.normal_()
        model.embedding.weight.normal_()
    monkeypatch.setattr(layers, "fm_pairwise", None)  # the field form is not used
    y = model(batch)
    g = torch.randn(len(y))  # ∂loss/∂y of each row
    (y * g).sum().backward()
    x, g = dense_x(data), g.double().numpy()
    w = model.linear.weights.weight.detach().double().numpy()[:, 0]
    V = model.embedding.weight.detach().double().numpy()
    expected = -0.2 + x @ w + 0.5 * (((x @ V) ** 2).sum(1) - (x**2) @ (V**2).sum(1))
    np.testing.assert_allclose(y.detach().double().numpy(), expected, rtol=1e-5, atol=1e-5)
    assert model.linear.bias.grad.item() == pytest.approx(g.sum(), rel=1e-5)
    np.testing.assert_allclose(model.linear.weights.weight.grad.to_dense().double().numpy()[:, 0], g @ x, rtol=1e-5, atol=1e-5)
    paper = sum(g[r] * (x[r][:, None] * (x[r] @ V)[None, :] - V * (x[r] ** 2)[:, None]) for r in range(len(x)))
    np.testing.assert_allclose(model.embedding.weight.grad.to_dense().double().numpy(), paper, rtol=1e-4, atol=1e-4)
    assert model.embedding.weight.grad.is_sparse


def test_fm_matrix_form_follows_the_tables_dtype_and_leaves_input_gradients_to_the_field_form():
    data = sparse_rows(seed=5, rows=40, with_bag=False)
    one_hot = EncodedData(data.ids, None, [], data.labels).to_batch()
    assert one_hot.design() is not None
    model = FactorizationMachine(N_FEATURES, K).double()
    assert model(one_hot).dtype == torch.float64
    values = torch.from_numpy(data.values).requires_grad_()
    batch = EncodedData(data.ids, data.values, [], data.labels).to_batch()
    batch.values = values
    FactorizationMachine(N_FEATURES, K)(batch).sum().backward()
    assert values.grad is not None and values.grad.abs().sum() > 0  # saliency needs ∂y/∂x


def test_written_out_pairwise_gradient_equals_autograd_of_the_formula():
    torch.manual_seed(3)
    fields = torch.randn(6, 5, 4, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda f: fm_pairwise(EmbeddedFields(f)), (fields,))
    by_formula = fm_pairwise(EmbeddedFields(fields, squares=fields.pow(2).sum(1)))  # the generic path
    upstream = torch.randn(6, dtype=torch.float64)
    (expected,) = torch.autograd.grad(by_formula, fields, upstream)
    (written_out,) = torch.autograd.grad(fm_pairwise(EmbeddedFields(fields)), fields, upstream)
    torch.testing.assert_close(written_out, expected)


@pytest.mark.parametrize("training", [True, False])  # the compiled score pass; nn.Linear on x.float()
def test_under_bf16_autocast_the_mlp_output_layer_stays_fp32(training):
    torch.manual_seed(4)
    mlp = MultiLayerPerceptron(8, (16, 16)).train(training)
    with torch.no_grad():
        mlp.layers[-1].bias.fill_(3000.0)  # a rating-sized output prior: bf16 steps by 16 there
    x = torch.randn(32, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = mlp(x)
    assert y.dtype == torch.float32
    assert (y - mlp(x)).abs().max() < 0.5  # hidden layers in bf16, the sum near 3000 not rounded to 16s


def test_embedding_gradients_are_sparse_so_updates_touch_only_seen_rows():
    model = FactorizationMachine(N_FEATURES, K)
    data = sparse_rows(with_bag=False)
    model(data.to_batch()).sum().backward()
    grad = model.embedding.weight.grad
    assert grad.is_sparse
    assert set(grad.coalesce().indices()[0].tolist()) == set(np.unique(data.ids).tolist())


@pytest.mark.parametrize("with_bag", [True, False], ids=["multi-valued field", "single-valued fields only"])
def test_deepfm_fm_part_and_dnn_read_the_same_embedding_tensor(with_bag):
    torch.manual_seed(3)
    model = DeepFM(N_FEATURES, num_fields=4 if with_bag else 3, embed_dim=K, mlp=(8, 8), dropout=0.0)
    seen = {}
    model.embedding.register_forward_hook(lambda m, i, out: seen.update(embedded=out))
    model.dnn.register_forward_hook(lambda m, i, out: seen.update(dnn_input=i[0]))
    data = sparse_rows(seed=3, with_bag=with_bag)
    logits = model(data.to_batch())
    assert isinstance(seen["embedded"], EmbeddedFields)
    assert seen["dnn_input"].data_ptr() == seen["embedded"].fields.data_ptr()  # flatten is a view: no copy
    assert [m for m in model.modules() if isinstance(m, FeaturesEmbedding) and m.weight.shape[1] == K] == [model.embedding]
    # y = y_FM + y_DNN with y_FM exactly the FM model's output on the same weights
    fm = FactorizationMachine(N_FEATURES, K)
    fm.linear.load_state_dict(model.linear.state_dict())
    fm.embedding.load_state_dict(model.embedding.state_dict())
    y_dnn = model.dnn(seen["embedded"].fields.flatten(1)).squeeze(-1)
    torch.testing.assert_close(logits, fm(data.to_batch()) + y_dnn)


def test_deepfm_started_as_fm_predicts_its_fm_part_until_training_moves_the_deep_part():
    torch.manual_seed(3)
    model = build_model(ModelConfig(name="deepfm", embed_dim=K, mlp=(8, 8), dropout=0.0, mlp_output_init="zero"),
                        N_FEATURES, 4)
    torch.manual_seed(3)
    drawn = build_model(ModelConfig(name="deepfm", embed_dim=K, mlp=(8, 8), dropout=0.0), N_FEATURES, 4)
    same = {k: v for k, v in drawn.state_dict().items() if not k.startswith(f"dnn.layers.{len(model.dnn.layers) - 1}.")}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in same.items())  # the rest as the same seed draws it
    data = sparse_rows(seed=3)
    fm = FactorizationMachine(N_FEATURES, K)
    fm.linear.load_state_dict(model.linear.state_dict())
    fm.embedding.load_state_dict(model.embedding.state_dict())
    torch.testing.assert_close(model(data.to_batch()), fm(data.to_batch()))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(data.to_batch()), data.to_batch().labels)
    loss.backward()
    assert model.dnn.layers[-1].weight.grad.abs().sum() > 0  # the deep part learns from the first step


def test_models_return_logits_of_shape_batch():
    data = sparse_rows(seed=4, rows=7)
    for name in ("lr", "fm", "deepfm"):
        model = build_model(ModelConfig(name=name, embed_dim=K, mlp=(8,)), N_FEATURES, 4)
        out = model(data.to_batch())
        assert out.shape == (7,) and out.dtype == torch.float32


def test_logistic_regression_is_linear_in_x():
    torch.manual_seed(5)
    model = LogisticRegression(N_FEATURES)
    with torch.no_grad():
        model.linear.weights.weight.normal_()
    data = sparse_rows(seed=5)
    w = model.linear.weights.weight.detach().double().numpy()[:, 0]
    np.testing.assert_allclose(model(data.to_batch()).detach().numpy(), dense_x(data) @ w, rtol=1e-5, atol=1e-5)


def test_batch_norm_running_statistics_start_from_the_data_not_from_zero_and_one():
    from deepfm.models.layers import WarmStartBatchNorm1d

    torch.manual_seed(6)
    norm = WarmStartBatchNorm1d(3)
    first = torch.randn(64, 3) * 0.01 + 5
    norm(first)
    torch.testing.assert_close(norm.running_mean, first.mean(0))
    torch.testing.assert_close(norm.running_var, first.var(0))  # not 0.9 · 1 + 0.1 · var
    batches = [torch.randn(64, 3) * 0.01 + 5 for _ in range(3)]
    for batch in batches:
        norm(batch)
    torch.testing.assert_close(norm.running_mean, torch.stack([first, *batches]).mean((0, 1)), rtol=0, atol=1e-5)
    for _ in range(30):
        before = norm.running_mean.clone()
        batch = torch.randn(64, 3)
        norm(batch)
    torch.testing.assert_close(norm.running_mean, 0.9 * before + 0.1 * batch.mean(0))  # then the usual momentum
    loaded = torch.nn.BatchNorm1d(3)
    loaded.load_state_dict(norm.state_dict())  # the same state as BatchNorm1d
    x = torch.randn(8, 3)
    torch.testing.assert_close(WarmStartBatchNorm1d(3, track_running_stats=False)(x),
                               torch.nn.BatchNorm1d(3, track_running_stats=False)(x))


def test_fm_matrix_form_includes_multi_valued_fields_and_repeated_ids(monkeypatch):
    """Weighted multi-valued entries (the FM paper's 'other movies rated', weights 1/count) are
    columns of X too, an id repeated within a row included."""
    import deepfm.models.layers as layers

    data = sparse_rows(seed=7, rows=60, with_bag=True)
    data.bags[0].ids[:3] = data.ids[0, 0]  # row 0's bag repeats its first single-valued id
    batch = data.to_batch()
    assert batch.design() is not None
    torch.manual_seed(7)
    model = FactorizationMachine(N_FEATURES, K)
    with torch.no_grad():
        model.linear.weights.weight.normal_()
        model.embedding.weight.normal_()
    monkeypatch.setattr(layers, "fm_pairwise", None)  # the field form is not used
    y = model(batch)
    g = torch.randn(len(y))
    (y * g).sum().backward()
    monkeypatch.undo()
    reference = FactorizationMachine(N_FEATURES, K)
    reference.load_state_dict(model.state_dict())
    reference.embedding.sparse = reference.linear.weights.sparse = False  # the field form, plain autograd
    expected = reference(data.to_batch())
    (expected * g).sum().backward()
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.embedding.weight.grad.to_dense(), reference.embedding.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.linear.weights.weight.grad.to_dense(), reference.linear.weights.weight.grad,
                               rtol=1e-4, atol=1e-5)


def _ops_on(shape: tuple[int, ...], run) -> list[str]:
    """Names of the operators ``run()`` calls with an input of ``shape`` (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        run()
    return [event.name for event in prof.events() if any(list(s) == list(shape) for s in event.input_shapes or [])]


def test_deepfm_backward_adds_the_fm_gradient_into_the_mlps_input_gradient():
    """The shared fields get one gradient: the FM term's Σ_j v_j x_j − v_i x_i is added in place into the
    gradient the MLP hands back (no autograd sum into a new (B, F, k) tensor), and every gradient is
    bitwise the one of the two parts read apart (``fm_pairwise`` and ``fields.flatten(1)``)."""
    torch.manual_seed(5)
    rows = sparse_rows(seed=5, rows=16, fields=4, with_bag=False)
    data = EncodedData(rows.ids, None, [], labels=rows.labels)  # one-hot fields, as categorical data
    model = DeepFM(N_FEATURES, num_fields=4, embed_dim=K, mlp=(8, 8), dropout=0.0)
    model(data.to_batch()).sum().backward()
    fused = {name: p.grad.to_dense() for name, p in model.named_parameters()}
    model.zero_grad()
    embedded = model.embedding(data.to_batch())
    y_fm = model.linear(data.to_batch()) + fm_pairwise(embedded)
    (y_fm + model.dnn(embedded.fields.flatten(1)).squeeze(-1)).sum().backward()
    for name, p in model.named_parameters():
        assert torch.equal(fused[name], p.grad.to_dense()), name
    model.zero_grad()
    sums = [op for op in _ops_on((16, 4, K), lambda: model(data.to_batch()).sum().backward()) if op == "aten::add"]
    assert sums == [], sums
