"""A factorization machine by alternating least squares, libFM's ALS solver (Rendle, "Factorization
Machines with libFM", ACM TIST 2012, §4): coordinate descent on

    Σ_n (y_n − ŷ(x_n))² + λ_0 w0² + λ_w Σ_l w_l² + λ_v Σ_lf v_lf²

where each step sets one parameter to its exact minimiser given the others (the MCMC solver's
conditional mean with α = 1, μ = 0 and λ fixed; see ``deepfm.solvers.coordinate``). No learning
rate; one parameter set.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import scipy.sparse

from deepfm.solvers.coordinate import columns_of, predict_columns, predict_samples, sweep_factors, sweep_linear


class ALSFM:
    """``fit(X, y)`` on a design matrix (N × n, scipy sparse) and real targets; ``predict(X)``."""

    def __init__(self, rank: int = 10, l2_w: float = 1.0, l2_v: float = 1.0, l2_w0: float = 0.0, seed: int = 0,
                 init_std: float = 0.1):
        if min(l2_w, l2_v, l2_w0) < 0:
            raise ValueError("l2_w, l2_v, l2_w0: regularisation must be non-negative")
        self.rank, self.l2_w, self.l2_v, self.l2_w0, self.seed, self.init_std = rank, l2_w, l2_v, l2_w0, seed, init_std
        self.w0 = 0.0
        self.w = np.zeros(0)
        self.v = np.zeros((0, rank))
        self.sweep = 0

    def fit(self, design: scipy.sparse.spmatrix, y: np.ndarray, sweeps: int = 20,
            callback: Callable[[dict], None] | None = None, resume: bool = False) -> "ALSFM":
        """Run coordinate descent up to ``sweeps`` sweeps in all (``resume=True``: from the parameters held)."""
        num_rows, num_features = design.shape
        y = np.asarray(y, dtype=np.float64)
        if len(y) != num_rows:
            raise ValueError(f"y: {len(y)} labels for {num_rows} rows of the design matrix")
        if not resume:
            rng = np.random.default_rng(self.seed)
            self.w0, self.w, self.sweep = 0.0, np.zeros(num_features), 0
            self.v = rng.normal(0.0, self.init_std, (num_features, self.rank))
        columns = columns_of(design)
        began = time.perf_counter()
        while self.sweep < sweeps:
            residual = self._sweep(columns, y)
            self.sweep += 1
            if callback is not None:
                callback({"sweep": self.sweep, "rmse": float(np.sqrt(np.mean(np.square(residual)))),
                          "objective": self.objective(residual), "seconds": time.perf_counter() - began})
        return self

    def _sweep(self, columns: tuple, y: np.ndarray) -> np.ndarray:
        """w0, then every w_l, then every v_lf, each to its minimiser. Returns the residuals after."""
        prediction, q = np.empty(len(y)), np.empty((self.rank, len(y)))
        predict_columns(*columns, self.w0, self.w, self.v, prediction, q)
        residual = y - prediction
        new_w0 = (residual.sum() + self.w0 * len(y)) / (len(y) + self.l2_w0)
        residual -= new_w0 - self.w0
        self.w0 = new_w0
        num_features = len(self.w)
        sweep_linear(*columns, residual, self.w, np.zeros(num_features), np.full(num_features, self.l2_w), 1.0,
                     np.zeros(num_features))
        sweep_factors(*columns, residual, self.v, q, np.zeros(self.v.shape), np.full(self.v.shape, self.l2_v), 1.0,
                      np.zeros(self.v.shape))
        return residual

    def objective(self, residual: np.ndarray) -> float:
        """The regularised sum of squares being minimised, given the residuals y − ŷ."""
        return float(np.square(residual).sum() + self.l2_w0 * self.w0**2 + self.l2_w * np.square(self.w).sum()
                     + self.l2_v * np.square(self.v).sum())

    def predict(self, design: scipy.sparse.spmatrix) -> np.ndarray:
        """(N,) ŷ."""
        return predict_samples(design, np.array([self.w0]), self.w[None], self.v[None])[0]

    def to_tensors(self) -> dict[str, np.ndarray]:
        """The parameters and settings as plain arrays (for safetensors)."""
        return {"w0": np.array([self.w0]), "w": self.w.copy(), "v": self.v.copy(), "sweep": np.array([self.sweep]),
                "config.l2": np.array([self.l2_w, self.l2_v, self.l2_w0]),
                "config.seed_init_std": np.array([self.seed, self.init_std], dtype=np.float64)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> "ALSFM":
        l2_w, l2_v, l2_w0 = map(float, tensors["config.l2"])
        seed, init_std = tensors["config.seed_init_std"]
        model = cls(tensors["v"].shape[1], l2_w, l2_v, l2_w0, int(seed), float(init_std))
        model.w0, model.sweep = float(tensors["w0"][0]), int(tensors["sweep"][0])
        model.w, model.v = tensors["w"].astype(np.float64).copy(), tensors["v"].astype(np.float64).copy()
        return model
