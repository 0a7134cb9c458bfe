"""The DeepFM paper's baselines read like their papers: FNN, IPNN/OPNN/PNN*, LR&DNN, FM&DNN.

Each test sets weights by hand on a tiny case and checks the model's defining equation.
"""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
import torch

from deepfm.config import ModelConfig, ModelName, TrainingConfig
from deepfm.data.batch import EncodedData
from deepfm.models import build_model
from deepfm.models.fm import FactorizationMachine
from deepfm.models.fnn import FNN, pretrain_with_fm
from deepfm.models.pnn import PNN, inner_products, outer_product_of_sum
from deepfm.models.wide_deep import FMAndDNN, WideAndDeep

# Three one-hot fields over 6 features: field 0 = {0, 1}, field 1 = {2, 3}, field 2 = {4, 5}.
NUM_FEATURES, NUM_FIELDS = 6, 3
# Row 0 is (0, 2, 4), row 1 is (1, 3, 5).
ROWS = EncodedData(ids=np.array([[0, 2, 4], [1, 3, 5]], dtype=np.int64), values=None,
                   labels=np.array([1.0, 0.0], dtype=np.float32))
# Feature i's vector v_i (k = 2). Row 0's field vectors are f = (1, 0), (0, 2), (1, 1).
V = torch.tensor([[1.0, 0.0], [2.0, 1.0], [0.0, 2.0], [1.0, -1.0], [1.0, 1.0], [0.0, 3.0]])
W = torch.tensor([[0.5], [-1.0], [0.25], [2.0], [-0.5], [1.0]])  # first-order weights w_i


def set_output_layer(mlp: torch.nn.Module, weights: list[float], bias: float = 0.0) -> None:
    """For an MLP with no hidden layer (mlp=()): the logit is weights · input + bias."""
    (linear,) = mlp.layers
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([weights]))
        linear.bias.fill_(bias)


def row0(model: torch.nn.Module) -> float:
    model.eval()
    return model(ROWS.to_batch())[0].item()


# -- PNN ------------------------------------------------------------------------------------------

def test_inner_products_are_every_pair_of_field_vectors():
    fields = V[[0, 2, 4]].unsqueeze(0)  # (1, 3, 2): f1 = (1,0), f2 = (0,2), f3 = (1,1)
    # <f1,f2> = 0, <f1,f3> = 1, <f2,f3> = 2
    assert inner_products(fields).tolist() == [[0.0, 1.0, 2.0]]


def test_outer_product_is_the_sum_pooled_matrix_of_the_pnn_paper():
    fields = V[[0, 2, 4]].unsqueeze(0)  # f_Σ = (2, 3)
    assert outer_product_of_sum(fields).tolist() == [[4.0, 6.0, 6.0, 9.0]]  # f_Σ f_Σᵀ, flattened


def test_sum_pooled_outer_product_equals_the_sum_of_all_pairwise_outer_products():
    """f_Σ f_Σᵀ = Σ_i Σ_j f_i f_jᵀ: the O(k²) form loses nothing against the O(F²k²) one."""
    fields = torch.randn(4, 5, 3, dtype=torch.float64)
    definition = torch.einsum("bik,bjl->bkl", fields, fields).flatten(1)
    torch.testing.assert_close(outer_product_of_sum(fields), definition)


@pytest.mark.parametrize("product, p_weights, expected", [
    ("inner", [1.0, 1.0, 1.0], 0.0 + 1.0 + 2.0),  # Σ_{i<j} <f_i, f_j>
    ("outer", [1.0, 0.0, 0.0, 1.0], 4.0 + 9.0),  # trace(f_Σ f_Σᵀ) = |f_Σ|²
    ("both", [1.0, 1.0, 1.0] + [0.0, 1.0, 0.0, 0.0], 3.0 + 6.0),
])
def test_pnn_first_layer_reads_the_embeddings_z_and_the_products_p(product, p_weights, expected):
    model = PNN(NUM_FEATURES, NUM_FIELDS, embed_dim=2, mlp=(), dropout=0.0, product=product)
    with torch.no_grad():
        model.embedding.weight.copy_(V)
    z_weights = [1.0, 0.0, 0.0, 0.0, 0.0, 0.5]  # picks f1[0] = 1 and f3[1] = 1 from z
    set_output_layer(model.dnn, z_weights + p_weights, bias=0.1)
    assert row0(model) == pytest.approx(0.1 + 1.0 + 0.5 + expected)


def test_pnn_product_layer_widths():
    F, k = NUM_FIELDS, 2
    widths = {p: PNN(NUM_FEATURES, F, k, mlp=(), product=p).product_layer(torch.zeros(1, F, k)).shape[1]
              for p in ("inner", "outer", "both")}
    assert widths == {"inner": F * k + F * (F - 1) // 2, "outer": F * k + k * k, "both": F * k + F * (F - 1) // 2 + k * k}


# -- FNN ------------------------------------------------------------------------------------------

def test_fnn_input_is_w0_then_each_fields_w_and_v():
    model = FNN(NUM_FEATURES, NUM_FIELDS, embed_dim=2, mlp=(), dropout=0.0)
    with torch.no_grad():
        model.bias.fill_(0.3)
        model.first_order.weight.copy_(W)
        model.embedding.weight.copy_(V)
    # input = [w0, w_0, v_0, w_2, v_2, w_4, v_4] = [0.3, 0.5, 1, 0, 0.25, 0, 2, -0.5, 1, 1]
    set_output_layer(model.dnn, [1.0, 10.0, 1.0, 0.0, 10.0, 0.0, 1.0, 10.0, 0.0, 1.0])
    assert row0(model) == pytest.approx(0.3 + 5.0 + 1.0 + 2.5 + 2.0 - 5.0 + 1.0)


def test_fnn_load_fm_copies_the_fm_into_the_input_layer():
    fm = FactorizationMachine(NUM_FEATURES, 2)
    with torch.no_grad():
        fm.linear.bias.fill_(0.7)
        fm.linear.weights.weight.copy_(W)
        fm.embedding.weight.copy_(V)
    model = FNN(NUM_FEATURES, NUM_FIELDS, embed_dim=2, mlp=(4,))
    model.load_fm(fm)
    assert model.bias.item() == pytest.approx(0.7)
    assert torch.equal(model.first_order.weight, W) and torch.equal(model.embedding.weight, V)


def test_fnn_pretraining_trains_an_fm_first_and_starts_from_its_embeddings():
    rng = np.random.default_rng(0)
    ids = np.stack([rng.integers(0, 2, 400), rng.integers(2, 4, 400), rng.integers(4, 6, 400)], axis=1)
    labels = ((ids[:, 0] == 1) ^ (ids[:, 1] == 3)).astype(np.float32)  # an interaction an FM can learn
    data = EncodedData(ids.astype(np.int64), None, labels=labels)
    torch.manual_seed(0)
    model = FNN(NUM_FEATURES, NUM_FIELDS, embed_dim=2, mlp=(4,))
    random_start = model.embedding.weight.detach().clone()
    training = TrainingConfig(epochs=3, batch_size=64, lr=0.05, patience=0)
    fm = pretrain_with_fm(model, "binary", training, data)
    assert torch.equal(model.embedding.weight, fm.embedding.weight)
    assert torch.equal(model.first_order.weight, fm.linear.weights.weight)
    assert not torch.allclose(model.embedding.weight, random_start)


def test_fnns_pretraining_fm_starts_from_the_output_prior_the_fnn_was_built_with(monkeypatch):
    """``build_model`` starts every model's output at the data's prior (a click rate's log-odds); stage 1's FM
    starts there too, not at p = 0.5 (a new user's run: a stage-1 loss of ln 2 after an epoch on Criteo)."""
    started = []

    class StartOnly:  # records the FM's bias when training would begin, and trains nothing
        def __init__(self, fm, *args, **kwargs):
            started.append(float(fm.linear.bias))

        def fit(self, *args, **kwargs):
            return None

    monkeypatch.setattr("deepfm.training.trainer.Trainer", StartOnly)
    prior = float(np.log(0.2 / 0.8))
    model = build_model(ModelConfig(name="fnn", embed_dim=2, mlp=(4,)), NUM_FEATURES, NUM_FIELDS, output_prior=prior)
    fm = pretrain_with_fm(model, "binary", TrainingConfig(epochs=1), ROWS)
    assert started == [pytest.approx(prior)]
    assert float(fm.linear.bias) == pytest.approx(prior) and float(model.bias) == pytest.approx(prior)


# -- LR&DNN and FM&DNN ----------------------------------------------------------------------------

def test_wide_and_deep_is_a_linear_model_plus_a_dnn_on_its_own_embedding():
    model = WideAndDeep(NUM_FEATURES, NUM_FIELDS, embed_dim=2, mlp=(), dropout=0.0)
    with torch.no_grad():
        model.wide.bias.fill_(0.2)
        model.wide.weights.weight.copy_(W)
        model.deep.embedding.weight.copy_(V)
    set_output_layer(model.deep.mlp, [1.0, 0.0, 0.0, 1.0, 0.0, 0.0])  # picks f1[0] = 1 and f2[1] = 2
    # wide: 0.2 + w_0 + w_2 + w_4 = 0.2 + 0.5 + 0.25 − 0.5; deep: 1 + 2
    assert row0(model) == pytest.approx(0.45 + 3.0)
    assert not any(isinstance(m, FactorizationMachine) for m in model.modules())


def test_fm_and_dnn_adds_an_fm_and_a_dnn_with_separate_embeddings():
    model = FMAndDNN(NUM_FEATURES, NUM_FIELDS, embed_dim=2, mlp=(), dropout=0.0)
    with torch.no_grad():
        model.linear.weights.weight.copy_(W)
        model.fm_embedding.weight.copy_(V)
        model.deep.embedding.weight.copy_(-V)
    set_output_layer(model.deep.mlp, [1.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # −f1[0] from E = −1
    # FM: Σw = 0.25; Σ_{i<j} <v_i, v_j> = 0 + 1 + 2 = 3; DNN: −1
    assert row0(model) == pytest.approx(0.25 + 3.0 - 1.0)
    assert model.fm_embedding.weight.data_ptr() != model.deep.embedding.weight.data_ptr()


# -- registry -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", get_args(ModelName))
def test_every_model_name_builds_and_returns_one_logit_per_row(name):
    model = build_model(ModelConfig(name=name, embed_dim=2, mlp=(4,)), NUM_FEATURES, NUM_FIELDS)
    logits = model(ROWS.to_batch())
    assert logits.shape == (2,) and torch.isfinite(logits).all()
