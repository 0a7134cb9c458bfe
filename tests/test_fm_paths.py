"""Every computation path of ``FeaturesEmbedding``/``FeaturesLinear`` against the FM paper's definition.

The layers pick a path from grad mode, ``requires_grad`` and a density rule (sparse products with
the design matrix where ids repeat across rows). Whatever the path, the FM must equal Rendle's
equation computed the slow way on a dense x:

    ŷ(x) = w0 + Σ_i w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j        (all n features, O(k·n²))

and, while training, so must its gradient with respect to w and V.
"""

import numpy as np
import pytest
import torch

from deepfm.data import design
from deepfm.data.batch import Bag, EncodedData
from deepfm.models.fm import FactorizationMachine

FIELDS = [range(0, 8), range(8, 16), range(16, 24)]  # three single-valued fields' id ranges
BAG_IDS = range(24, 40)  # one multi-valued field
N, K, B = 40, 4, 24


def make_data(kind: str, seed: int = 0) -> EncodedData:
    """B rows; ``kind``: one-hot ids, numeric values on two fields, or one-hot plus a weighted bag.
    A row never holds one id twice (the definition's x has one entry per feature)."""
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.choice(list(field), B) for field in FIELDS], axis=1).astype(np.int32)
    values = None
    if kind == "numeric":
        values = np.ones(ids.shape, np.float32)
        values[:, 1:] = rng.normal(0, 1.5, (B, 2))
    bags = []
    if kind == "bags":
        lengths = rng.integers(1, 5, B)
        members = [rng.choice(list(BAG_IDS), n, replace=False) for n in lengths]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        bags = [Bag(offsets, np.concatenate(members).astype(np.int64), rng.uniform(0.2, 1.0, offsets[-1]).astype(np.float32))]
    return EncodedData(ids=ids, values=values, bags=bags, labels=rng.integers(0, 2, B).astype(np.float32))


def dense_x(data: EncodedData) -> torch.Tensor:
    """The paper's x: (B, n), x[b, i] = the value of feature i in row b."""
    x = np.zeros((len(data), N))
    values = data.dense_values() if data.values is not None else np.ones(data.ids.shape)
    for b in range(len(data)):
        for f in range(data.ids.shape[1]):
            x[b, data.ids[b, f]] += values[b, f]
        for bag in data.bags:
            for j in range(bag.offsets[b], bag.offsets[b + 1]):
                x[b, bag.ids[j]] += bag.weights[j]
    return torch.from_numpy(x)


def fm_definition(w0: torch.Tensor, w: torch.Tensor, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Rendle (2010), eq. 1, literally: every pair i < j of the n features."""
    pairs = torch.triu(torch.ones(N, N, dtype=torch.bool), diagonal=1)  # i < j
    interactions = (v @ v.T) * pairs  # <v_i, v_j> for i < j
    return w0 + x @ w + torch.einsum("bi,ij,bj->b", x, interactions, x)


def random_fm(seed: int = 1) -> FactorizationMachine:
    torch.manual_seed(seed)
    fm = FactorizationMachine(N, K)
    with torch.no_grad():
        fm.linear.weights.weight.normal_(0, 0.5)
        fm.linear.bias.fill_(0.3)
        fm.embedding.weight.normal_(0, 0.5)
    return fm


@pytest.fixture(params=["compiled pass", "sparse products", "no design matrix"])
def design_matrix(request, monkeypatch):
    """Training on CPU through the batch's design matrix takes both FM terms in one compiled pass; the sparse
    products are its path elsewhere (other dtypes, several outputs); without a design matrix, gathers."""
    from deepfm.models import fm as fm_module, layers

    monkeypatch.setattr(design, "SLOTS_PER_ROW_FOR_PRODUCTS", 10**9 if request.param == "no design matrix" else 0)
    passes = []
    if request.param == "sparse products":
        monkeypatch.setattr(fm_module, "fm_terms_of_design", lambda *args: None)
    else:
        monkeypatch.setattr(fm_module, "fm_terms_of_design", lambda linear, embedding, batch: passes.append(
            (embedding.trains_sparsely(), taken := layers.fm_terms_of_design(linear, embedding, batch))) or taken)
    yield request.param != "no design matrix"
    for training, taken in passes:  # the compiled pass in training only, where a design matrix is built
        assert (taken is not None) == (training and request.param == "compiled pass")


@pytest.mark.parametrize("kind", ["one-hot", "numeric", "bags"])
@pytest.mark.parametrize("mode", ["train", "eval", "frozen tables"])
def test_every_path_computes_the_fm_of_the_paper(kind, mode, design_matrix):
    fm, data = random_fm(), make_data(kind)
    batch = data.to_batch()
    if mode == "frozen tables":
        fm.requires_grad_(False)
    fm.train(mode != "eval")
    with torch.set_grad_enabled(mode != "eval"):
        got = fm(batch)
    if mode == "train":
        assert (batch.design() is not None) == design_matrix  # the path under test is the one taken
    w0, w, v = fm.linear.bias.double(), fm.linear.weights.weight[:, 0].double(), fm.embedding.weight.double()
    expected = fm_definition(w0.detach(), w.detach(), v.detach(), dense_x(data))
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["one-hot", "numeric", "bags"])
def test_every_training_path_has_the_gradient_of_the_paper(kind, design_matrix):
    fm, data = random_fm(), make_data(kind)
    upstream = torch.linspace(-1, 1, B, dtype=torch.float64)  # an arbitrary ∂L/∂ŷ
    (fm(data.to_batch()).double() * upstream).sum().backward()

    w0 = fm.linear.bias.detach().double()
    w = fm.linear.weights.weight.detach()[:, 0].double().requires_grad_()
    v = fm.embedding.weight.detach().double().requires_grad_()
    (fm_definition(w0, w, v, dense_x(data)) * upstream).sum().backward()

    def dense(grad: torch.Tensor) -> torch.Tensor:
        return (grad.to_dense() if grad.is_sparse else grad).double()

    torch.testing.assert_close(dense(fm.embedding.weight.grad), v.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dense(fm.linear.weights.weight.grad)[:, 0], w.grad, rtol=1e-5, atol=1e-5)


def test_an_fm_with_c_outputs_is_c_fms_of_the_paper():
    torch.manual_seed(2)
    fm = FactorizationMachine(N, K, output_dim=3)
    with torch.no_grad():
        fm.linear.weights.weight.normal_(0, 0.5)
        fm.linear.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        fm.embedding.weight.normal_(0, 0.5)
    data = make_data("bags")
    got = fm.eval()(data.to_batch())
    assert got.shape == (B, 3)
    x = dense_x(data)
    for c in range(3):
        v = fm.embedding.weight.detach().double()[:, c * K : (c + 1) * K]
        w = fm.linear.weights.weight.detach().double()[:, c]
        torch.testing.assert_close(got[:, c].double(), fm_definition(fm.linear.bias[c].detach().double(), w, v, x),
                                   rtol=1e-5, atol=1e-5)
