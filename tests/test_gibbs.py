"""Bayesian FM by Gibbs sampling (Freudenthaler, Rendle & Schmidt-Thieme 2011), checked against the
model's definition: each draw comes from the exact conditional posterior of the joint density, a chain
recovers a known FM, probit and ordered probit beat constant predictors, and a resumed chain is the
same chain."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from scipy.special import ndtr
from safetensors.numpy import load_file, save_file

from deepfm.data.batch import Bag, EncodedData
from deepfm.data.design import design_of_data
from deepfm.solvers.coordinate import columns_of, predict_columns, predict_samples, sweep_factors, sweep_linear
from deepfm.solvers.gibbs import GibbsFM, evenly_spaced
from deepfm.solvers.latent import (class_probabilities, log_class_probability, metropolis_cutpoints, ordinal_log_likelihood,
                                  truncated_normal, with_infinite_ends)


# -- the model, by its definition (O(n²) per row) ---------------------------------------------------

def dense_fm(x: np.ndarray, w0: float, w: np.ndarray, v: np.ndarray) -> np.ndarray:
    """ŷ = w0 + Σ_i w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j, pair by pair."""
    out = w0 + x @ w
    for i in range(x.shape[1]):
        for j in range(i + 1, x.shape[1]):
            out = out + (v[i] @ v[j]) * x[:, i] * x[:, j]
    return out


def quadratic_in(log_density, value: float) -> tuple[float, float]:
    """(mean, precision) of a Gaussian whose log-density is the quadratic ``log_density(θ)``,
    from three exact evaluations around ``value``."""
    low, mid, high = log_density(value - 1), log_density(value), log_density(value + 1)
    precision = -(high - 2 * mid + low)
    return value + (high - low) / 2 / precision, precision


def tiny_problem(seed: int = 0, rows: int = 14, features: int = 5, rank: int = 2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)) * (rng.random((rows, features)) < 0.6)
    return rng, x, rng.normal(size=rows), rng.normal(size=features), rng.normal(size=(features, rank))


# -- the design matrix of a dataset -----------------------------------------------------------------

def test_design_of_data_holds_values_bag_weights_and_sums_repeated_ids():
    data = EncodedData(
        ids=np.array([[0, 3], [1, 3], [2, 4]], dtype=np.int32),
        values=np.array([[1.5], [2.0], [-1.0]], dtype=np.float32), value_fields=(1,),  # field 1 is numeric
        bags=[Bag(offsets=np.array([0, 2, 2, 5]), ids=np.array([5, 6, 6, 6, 0]),
                  weights=np.array([0.5, 0.5, 0.25, 0.25, 0.5], dtype=np.float32))],
        labels=np.zeros(3, dtype=np.float32))
    expected = np.zeros((3, 7))
    expected[0, [0, 3, 5, 6]] = [1, 1.5, 0.5, 0.5]
    expected[1, [1, 3]] = [1, 2.0]
    expected[2, [2, 4, 6, 0]] = [1, -1.0, 0.5, 0.5]  # id 6 twice in the bag: 0.25 + 0.25
    design = design_of_data(data, num_features=7)
    assert isinstance(design, scipy.sparse.csr_matrix) and design.dtype == np.float64
    np.testing.assert_array_equal(design.toarray(), expected)


# -- one coordinate at a time: the exact conditional posterior --------------------------------------

def test_predictions_and_factor_sums_equal_the_fm_definition():
    _, x, _, w, v = tiny_problem()
    prediction, q = np.empty(len(x)), np.empty((v.shape[1], len(x)))
    predict_columns(*columns_of(scipy.sparse.csr_matrix(x)), 0.3, w, v, prediction, q)
    np.testing.assert_allclose(prediction, dense_fm(x, 0.3, w, v), rtol=1e-12)
    np.testing.assert_allclose(q, (x @ v).T, rtol=1e-12)
    samples = predict_samples(scipy.sparse.csr_matrix(x), np.array([0.3, -1.0]), np.stack([w, -w]), np.stack([v, 2 * v]),
                              rows_per_block=5)
    np.testing.assert_allclose(samples, [dense_fm(x, 0.3, w, v), dense_fm(x, -1.0, -w, 2 * v)], rtol=1e-12)


def test_each_w_is_drawn_from_its_conditional_posterior_under_the_joint_density():
    rng, x, y, w, v = tiny_problem()
    alpha, w0 = 2.5, 0.4
    prior_mean, prior_precision = rng.normal(size=len(w)), rng.uniform(0.5, 3, len(w))
    noise = rng.normal(size=len(w))
    expected = w.copy()
    for l in range(len(w)):  # in turn, each given the others' new values
        def log_density(value):
            trial = expected.copy()
            trial[l] = value
            return (-alpha / 2 * np.sum(np.square(y - dense_fm(x, w0, trial, v)))
                    - prior_precision[l] / 2 * (value - prior_mean[l]) ** 2)
        mean, precision = quadratic_in(log_density, expected[l])
        expected[l] = mean + noise[l] / np.sqrt(precision)
    residual = y - dense_fm(x, w0, w, v)
    sampled = w.copy()
    sweep_linear(*columns_of(scipy.sparse.csr_matrix(x)), residual, sampled, prior_mean, prior_precision, alpha, noise)
    np.testing.assert_allclose(sampled, expected, rtol=1e-10)
    np.testing.assert_allclose(residual, y - dense_fm(x, w0, sampled, v), atol=1e-12)  # e follows


def test_each_v_is_drawn_from_its_conditional_posterior_under_the_joint_density():
    rng, x, y, w, v = tiny_problem(seed=1)
    alpha, w0 = 0.7, -0.2
    prior_mean, prior_precision = rng.normal(size=v.shape), rng.uniform(0.5, 3, v.shape)
    noise = rng.normal(size=v.shape)
    expected = v.copy()
    for f in range(v.shape[1]):  # factor by factor, then feature by feature, as libFM
        for l in range(v.shape[0]):
            def log_density(value):
                trial = expected.copy()
                trial[l, f] = value
                return (-alpha / 2 * np.sum(np.square(y - dense_fm(x, w0, w, trial)))
                        - prior_precision[l, f] / 2 * (value - prior_mean[l, f]) ** 2)
            mean, precision = quadratic_in(log_density, expected[l, f])
            expected[l, f] = mean + noise[l, f] / np.sqrt(precision)
    residual, q = y - dense_fm(x, w0, w, v), (x @ v).T.copy()
    sampled = v.copy()
    sweep_factors(*columns_of(scipy.sparse.csr_matrix(x)), residual, sampled, q, prior_mean, prior_precision, alpha,
                  noise)
    np.testing.assert_allclose(sampled, expected, rtol=1e-10)
    np.testing.assert_allclose(residual, y - dense_fm(x, w0, w, sampled), atol=1e-12)
    np.testing.assert_allclose(q, (x @ sampled).T, atol=1e-12)


def test_truncated_normal_stays_inside_its_interval_even_far_in_the_tails():
    rng = np.random.default_rng(0)
    mean = np.array([0.0, 0.0, 40.0, -40.0, 3.0])
    lower = np.array([1.0, -np.inf, -np.inf, 0.0, 2.9])
    upper = np.array([np.inf, -2.0, 0.0, np.inf, 3.1])
    draws = np.stack([truncated_normal(rng, mean, lower, upper) for _ in range(2000)])
    assert np.all((draws >= lower) & (draws <= upper)) and np.all(np.isfinite(draws))
    np.testing.assert_allclose(draws[:, 0].mean(), 1.5251, atol=0.05)  # E[Z | Z > 1] = φ(1)/(1 − Φ(1))


def test_class_probabilities_keep_their_precision_far_in_the_upper_tail():
    cutpoints = np.array([-1.0, 0.5])
    prediction = np.array([0.0, 0.0, 0.0, -12.0])
    label = np.array([0, 1, 2, 2])
    expected = [np.log(ndtr(-1.0)), np.log(ndtr(0.5) - ndtr(-1.0)), np.log(ndtr(-0.5)), np.log(ndtr(-12.5))]
    np.testing.assert_allclose(log_class_probability(cutpoints, prediction, label), expected, rtol=1e-10)
    np.testing.assert_allclose(class_probabilities(cutpoints, prediction).sum(axis=1), 1.0)
    np.testing.assert_allclose(ordinal_log_likelihood(with_infinite_ends(cutpoints), prediction, label), sum(expected),
                               rtol=1e-10)


def test_the_cutpoint_moves_sample_the_cutpoints_posterior():
    """With ŷ = 0 and a flat prior, p(c₀ < c₁ | y) ∝ Φ(c₀)^n₀ (Φ(c₁) − Φ(c₀))^n₁ (1 − Φ(c₁))^n₂;
    the proposals truncated to keep the order need the Hastings correction to get it right."""
    rng = np.random.default_rng(0)
    label = np.repeat([0, 1, 2], [6, 2, 6])
    prediction = np.zeros(len(label))
    grid = np.linspace(-4, 4, 801)
    low, high = np.meshgrid(grid, grid, indexing="ij")
    with np.errstate(divide="ignore", invalid="ignore"):  # log of 0 and of negatives off the cone c₀ < c₁
        log_density = 6 * np.log(ndtr(low)) + 2 * np.log(ndtr(high) - ndtr(low)) + 6 * np.log(ndtr(-high))
    density = np.where(low < high, np.exp(log_density - np.max(log_density[low < high])), 0.0)
    exact_means = [np.sum(low * density) / np.sum(density), np.sum(high * density) / np.sum(density)]
    cutpoints = np.array([-0.5, 0.5])
    likelihood = float(log_class_probability(cutpoints, prediction, label).sum())
    draws = []
    for _ in range(30000):
        cutpoints, likelihood, _ = metropolis_cutpoints(rng, cutpoints, prediction, label, 1.0, likelihood)
        draws.append(cutpoints)
    np.testing.assert_allclose(np.mean(draws[1000:], axis=0), exact_means, atol=0.03)
    np.testing.assert_allclose(likelihood, log_class_probability(cutpoints, prediction, label).sum())


# -- chains -----------------------------------------------------------------------------------------

def known_fm_data(seed: int = 0, rows: int = 3000, users: int = 60, items: int = 80, rank: int = 3):
    """One-hot user and item plus a numeric feature; targets from a known FM, before any noise."""
    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, users, rows), rng.integers(0, items, rows)
    numeric = rng.normal(size=rows)
    columns = np.stack([user, users + item, np.full(rows, users + items)], axis=1).ravel()
    values = np.stack([np.ones(rows), np.ones(rows), numeric], axis=1).ravel()
    x = scipy.sparse.csr_matrix((values, (np.repeat(np.arange(rows), 3), columns)), shape=(rows, users + items + 1))
    w, v = rng.normal(0, 0.5, users + items + 1), rng.normal(0, 0.5, (users + items + 1, rank))
    truth = predict_samples(x, np.array([1.0]), w[None], v[None])[0]
    groups = np.concatenate([np.zeros(users), np.ones(items), [2]]).astype(np.int64)
    return rng, x, truth, groups


def test_a_chain_on_data_from_a_known_fm_recovers_its_predictions_and_noise():
    rng, x, truth, groups = known_fm_data()
    y = truth + rng.normal(0, 0.3, len(truth))
    alphas = []
    model = GibbsFM(rank=3, groups=groups, seed=1).fit(x[:2500], y[:2500], sweeps=100, burn_in=20,
                                                       callback=lambda info: alphas.append(info["alpha"]))
    held_out_error = np.sqrt(np.mean(np.square(model.predict(x[2500:]) - truth[2500:])))
    assert held_out_error < 0.25 * truth.std()  # the noise alone is 0.35 of it
    assert 0.27 < 1 / np.sqrt(np.mean(alphas[20:])) < 0.33  # the noise's standard deviation, 0.3


def test_a_chain_asked_for_fewer_samples_holds_only_those_while_it_runs():
    """``keep`` samples of the sweeps after the burn-in, evenly spaced with the last among them, are the
    only ones held (memory is S × n × (k + 1), not one sample per sweep): the same draws as a chain that
    keeps every sample, thinned afterwards."""
    rng, x, truth, groups = known_fm_data()
    y = truth + rng.normal(0, 0.3, len(truth))
    held = []
    thin = GibbsFM(rank=3, groups=groups, seed=1).fit(x[:500], y[:500], sweeps=14, burn_in=4, keep=3,
                                                      callback=lambda info: held.append(info["kept"]))
    every = GibbsFM(rank=3, groups=groups, seed=1).fit(x[:500], y[:500], sweeps=14, burn_in=4)
    assert max(held) == 3 and len(every.samples) == 10
    chosen = evenly_spaced(10, 3)
    assert chosen.tolist() == [0, 4, 9]
    np.testing.assert_array_equal(thin.samples.arrays(*thin.state.v.shape, 0)["v"],
                                  every.samples.arrays(*every.state.v.shape, 0)["v"][chosen])


def test_probit_beats_the_constant_predictor_clearly():
    from sklearn.metrics import log_loss, roc_auc_score

    rng, x, truth, groups = known_fm_data(seed=2, rows=4000, users=30, items=40)
    y = (truth - truth.mean() + rng.normal(size=len(truth)) > 0).astype(float)  # P(y = 1) = Φ(ŷ − mean)
    model = GibbsFM(rank=3, groups=groups, seed=1).fit(x[:3500], y[:3500], task="binary", sweeps=60, burn_in=10)
    probability = model.predict(x[3500:])
    assert np.all((probability > 0) & (probability < 1))
    constant = log_loss(y[3500:], np.full(500, y[:3500].mean()))
    oracle = log_loss(y[3500:], ndtr(truth - truth.mean())[3500:])
    assert log_loss(y[3500:], probability) < constant - 0.6 * (constant - oracle)
    assert roc_auc_score(y[3500:], probability) > 0.75


def test_ordered_probit_beats_the_constant_predictors_clearly():
    rng, x, truth, groups = known_fm_data(seed=3, rows=4000, users=30, items=40)
    latent = truth - truth.mean() + rng.normal(size=len(truth))
    cutpoints = np.quantile(latent, [0.1, 0.35, 0.7, 0.9])
    y = 1.0 + np.searchsorted(cutpoints, latent)  # ratings 1–5
    model = GibbsFM(rank=3, groups=groups, seed=1).fit(x[:3500], y[:3500], task="ordinal", sweeps=60, burn_in=10)
    expected, probabilities = model.predict(x[3500:]), model.class_probabilities(x[3500:])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    np.testing.assert_allclose(expected, probabilities @ np.arange(1, 6))
    oracle = class_probabilities(cutpoints, (truth - truth.mean())[3500:]) @ np.arange(1, 6)
    error, constant_error, oracle_error = (np.sqrt(np.mean(np.square(p - y[3500:]))) for p in (expected, y[:3500].mean(), oracle))
    assert error < constant_error - 0.6 * (constant_error - oracle_error)
    accuracy = np.mean(np.argmax(probabilities, axis=1) + 1 == y[3500:])
    assert accuracy > np.max(np.bincount(y[:3500].astype(int))) / 3500 + 0.05


@pytest.mark.parametrize("task", ["regression", "binary", "ordinal"])
def test_a_chain_saved_as_tensors_and_resumed_is_the_same_chain(task, tmp_path):
    rng, x, truth, groups = known_fm_data(seed=4, rows=400)
    y = {"regression": truth, "binary": (truth > np.median(truth)).astype(float),
         "ordinal": 1.0 + np.searchsorted(np.quantile(truth, [0.3, 0.7]), truth)}[task]
    straight = GibbsFM(rank=3, groups=groups, seed=5).fit(x, y, task, sweeps=9, burn_in=3)
    first = GibbsFM(rank=3, groups=groups, seed=5).fit(x, y, task, sweeps=5, burn_in=3)
    save_file(first.to_tensors(), tmp_path / "chain.safetensors")
    loaded = GibbsFM.from_tensors(load_file(tmp_path / "chain.safetensors"))
    np.testing.assert_array_equal(loaded.predict(x), first.predict(x))
    resumed = loaded.fit(x, y, task, sweeps=9, burn_in=3, resume=True)
    for name, array in straight.to_tensors().items():
        np.testing.assert_array_equal(resumed.to_tensors()[name], array, err_msg=name)
    assert resumed.to_tensors()["samples.w"].shape[0] == 6


def test_bad_arguments_are_errors_that_name_them():
    _, x, truth, groups = known_fm_data(rows=50)
    with pytest.raises(ValueError, match="task"):
        GibbsFM().fit(x, truth, task="poisson")
    with pytest.raises(ValueError, match="groups"):
        GibbsFM(groups=groups[:-1]).fit(x, truth, sweeps=2)
    with pytest.raises(ValueError, match="resume"):
        GibbsFM().fit(x, truth, sweeps=2, resume=True)
    with pytest.raises(ValueError, match="binary labels are 0 or 1"):
        GibbsFM().fit(x, np.where(truth > 0, 1.0, -1.0), task="binary", sweeps=2)
    with pytest.raises(ValueError, match="ordinal labels need 2 classes or more"):
        GibbsFM().fit(x, np.ones(len(truth)), task="ordinal", sweeps=2)
    ordinal = GibbsFM().fit(x, np.arange(len(truth)) % 3, task="ordinal", sweeps=2, burn_in=0)
    with pytest.raises(ValueError, match="the chain's classes"):
        ordinal.fit(x, np.arange(len(truth)) % 4, task="ordinal", sweeps=3, resume=True)
    with pytest.raises(ValueError, match="features"):
        ordinal.fit(x[:, :-1], np.arange(len(truth)) % 3, task="ordinal", sweeps=3, resume=True)


def test_a_regression_averages_each_sample_clipped_to_the_training_labels_range():
    """libFM's MCMC: each sample's ŷ is clipped to [min y, max y] of the training labels before the average, so a
    pair the data rarely saw cannot predict a rating no one gave. A chain saved as tensors keeps the range."""
    rng, x, truth, groups = known_fm_data(seed=5, rows=300)
    y = np.clip(np.round(3 + truth), 1, 5)
    chain = GibbsFM(rank=3, groups=groups, seed=1).fit(x, y, sweeps=20, burn_in=5)
    grid = scipy.sparse.csr_matrix(np.eye(x.shape[1])[np.arange(60)] + np.eye(x.shape[1])[60 + np.arange(60) % 80])
    samples = chain.sample_predictions(grid)
    assert chain.target_range == (1.0, 5.0) and ((samples < 1) | (samples > 5)).any()
    np.testing.assert_allclose(chain.predict(grid), np.clip(samples, 1, 5).mean(axis=0))
    loaded = GibbsFM.from_tensors(chain.to_tensors())
    np.testing.assert_array_equal(loaded.predict(grid), chain.predict(grid))
