"""ALS for FMs (Rendle 2012, §4): every coordinate step is the exact minimiser of the regularised
squared error given the other parameters, so the objective never rises."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from safetensors.numpy import load_file, save_file

from deepfm.solvers.als import ALSFM
from test_gibbs import dense_fm, known_fm_data, tiny_problem


def least_squares_coordinate(x, y, w0, w, v, name: str, index, l2: float) -> float:
    """argmin_θ Σ (y − ŷ)² + l2 θ² for one parameter, as a dense least-squares solve: ŷ = g + θ h."""
    def with_value(value):
        params = {"w0": np.array(w0, dtype=float), "w": w.copy(), "v": v.copy()}
        params[name][index] = value
        return dense_fm(x, float(params["w0"]), params["w"], params["v"])
    g = with_value(0.0)
    h = with_value(1.0) - g
    design = np.concatenate([h[:, None], [[np.sqrt(l2)]]])
    return float(np.linalg.lstsq(design, np.concatenate([y - g, [0.0]]), rcond=None)[0][0])


def test_one_sweep_sets_each_parameter_to_its_closed_form_minimiser_in_turn():
    _, x, y, _, _ = tiny_problem(seed=2)
    l2_w0, l2_w, l2_v = 0.3, 0.7, 1.9
    model = ALSFM(rank=2, l2_w=l2_w, l2_v=l2_v, l2_w0=l2_w0, seed=3)
    start = np.random.default_rng(3).normal(0.0, model.init_std, (x.shape[1], 2))  # ALSFM's initial V
    w0, w, v = 0.0, np.zeros(x.shape[1]), start.copy()
    w0 = least_squares_coordinate(x, y, w0, w, v, "w0", (), l2_w0)
    for l in range(len(w)):
        w[l] = least_squares_coordinate(x, y, w0, w, v, "w", l, l2_w)
    for f in range(v.shape[1]):
        for l in range(v.shape[0]):
            v[l, f] = least_squares_coordinate(x, y, w0, w, v, "v", (l, f), l2_v)
    model.fit(scipy.sparse.csr_matrix(x), y, sweeps=1)
    np.testing.assert_allclose(model.w0, w0, rtol=1e-10)
    np.testing.assert_allclose(model.w, w, rtol=1e-10)
    np.testing.assert_allclose(model.v, v, rtol=1e-10)


def test_the_objective_never_rises_and_a_known_fm_is_fitted():
    rng, x, truth, _ = known_fm_data(seed=5)
    y = truth + rng.normal(0, 0.3, len(truth))
    history = []
    model = ALSFM(rank=3, l2_w=2.0, l2_v=5.0).fit(x[:2500], y[:2500], sweeps=15, callback=history.append)
    objectives = [item["objective"] for item in history]
    assert all(later <= earlier * (1 + 1e-12) for earlier, later in zip(objectives, objectives[1:]))
    assert np.sqrt(np.mean(np.square(model.predict(x[2500:]) - truth[2500:]))) < 0.35 * truth.std()


def test_saved_tensors_predict_the_same_and_resume_the_same_descent(tmp_path):
    rng, x, truth, _ = known_fm_data(seed=6, rows=400)
    straight = ALSFM(rank=3).fit(x, truth, sweeps=6)
    save_file(ALSFM(rank=3).fit(x, truth, sweeps=2).to_tensors(), tmp_path / "als.safetensors")
    loaded = ALSFM.from_tensors(load_file(tmp_path / "als.safetensors"))
    resumed = loaded.fit(x, truth, sweeps=6, resume=True)
    np.testing.assert_array_equal(resumed.predict(x), straight.predict(x))
    for name, array in straight.to_tensors().items():
        np.testing.assert_array_equal(resumed.to_tensors()[name], array, err_msg=name)


def test_negative_regularisation_is_an_error_that_names_it():
    with pytest.raises(ValueError, match="l2_w"):
        ALSFM(l2_w=-1.0)
