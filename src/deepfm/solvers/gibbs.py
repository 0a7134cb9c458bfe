"""Bayesian factorization machines by Gibbs sampling, as libFM's MCMC solver (Freudenthaler,
Rendle & Schmidt-Thieme 2011; Rendle, "Factorization Machines with libFM", ACM TIST 2012).

Model: y ~ N(ŷ(x), 1/α) with ŷ the FM (see ``deepfm.solvers.coordinate``). Priors, one set per
group of features (a field): w_l ~ N(μ_w[g], 1/λ_w[g]), v_lf ~ N(μ_v[g,f], 1/λ_v[g,f]); hyperpriors
μ | λ ~ N(μ_0, 1/(γ_0 λ)), λ ~ Gamma(α_λ/2, β_λ/2), α ~ Gamma(α_0/2, β_0/2); w0 has a flat prior.
A sweep draws each unknown from its conditional posterior in turn, so there is no learning rate and
no regularisation to tune; predictions average the samples kept after the burn-in (a regression's each clipped to
the training labels' range first, as libFM does: a sample far out on a pair the data rarely saw is no rating). Binary labels
use probit and ordered labels an ordered probit, through latent targets (``deepfm.solvers.latent``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Callable

import numpy as np
import scipy.sparse
from scipy.special import ndtr

from deepfm.solvers.coordinate import columns_of, predict_columns, predict_samples, sweep_factors, sweep_linear
from deepfm.solvers.latent import (class_probabilities, initial_cutpoints, metropolis_cutpoints, ordinal_log_likelihood,
                                   probit_latent, truncated_normal, with_infinite_ends)

TASKS = ("regression", "binary", "ordinal")
CUTPOINT_MOVES_PER_SWEEP = 5
TARGET_ACCEPTANCE = 0.3


@dataclass(frozen=True)
class Hyperpriors:
    """libFM's defaults: α ~ Gamma(α_0/2, β_0/2); λ ~ Gamma(α_λ/2, β_λ/2); μ | λ ~ N(μ_0, 1/(γ_0 λ))."""

    alpha_0: float = 1.0
    beta_0: float = 1.0
    alpha_lambda: float = 1.0
    beta_lambda: float = 1.0
    mu_0: float = 0.0
    gamma_0: float = 1.0


@dataclass
class ChainState:
    """Everything the next sweep depends on: resuming from it continues the same chain."""

    w0: float
    w: np.ndarray  # (n,)
    v: np.ndarray  # (n, k)
    mu_w: np.ndarray  # (G,)
    lambda_w: np.ndarray  # (G,)
    mu_v: np.ndarray  # (G, k)
    lambda_v: np.ndarray  # (G, k)
    alpha: float  # noise precision (1 for probit targets)
    cutpoints: np.ndarray  # (J − 1,) ordinal only, else (0,)
    step: float  # the cutpoints' Metropolis–Hastings step
    sweep: int
    rng: np.random.Generator


@dataclass
class Samples:
    """The posterior samples kept after the burn-in, S of them."""

    w0: list[float] = field(default_factory=list)
    w: list[np.ndarray] = field(default_factory=list)
    v: list[np.ndarray] = field(default_factory=list)
    cutpoints: list[np.ndarray] = field(default_factory=list)

    def keep(self, state: ChainState) -> None:
        self.w0.append(state.w0)
        self.w.append(state.w.copy())
        self.v.append(state.v.copy())
        self.cutpoints.append(state.cutpoints.copy())

    def __len__(self) -> int:
        return len(self.w0)

    def arrays(self, num_features: int, rank: int, num_cutpoints: int) -> dict[str, np.ndarray]:
        """w0 (S,), w (S, n), v (S, n, k), cutpoints (S, J − 1)."""
        return {"w0": np.asarray(self.w0, dtype=np.float64),
                "w": np.stack(self.w) if self.w else np.zeros((0, num_features)),
                "v": np.stack(self.v) if self.v else np.zeros((0, num_features, rank)),
                "cutpoints": np.stack(self.cutpoints) if self.cutpoints else np.zeros((0, num_cutpoints))}


def evenly_spaced(available: int, wanted: int) -> np.ndarray:
    """Indices of ``wanted`` of ``available`` samples, evenly spaced, the last always among them."""
    return np.round(np.linspace(available - 1, 0, wanted))[::-1].astype(np.int64)  # from the last: one sample is it


class GibbsFM:
    """A factorization machine whose predictions average Gibbs samples of its posterior.

    ``fit(X, y, task)`` takes the design matrix (N × n, scipy sparse) and labels: real values
    (``regression``), 0/1 (``binary``: probit) or ordered values such as ratings 1–5 (``ordinal``:
    ordered probit with learned cutpoints; w0 stays 0 there, the cutpoints take its place)."""

    def __init__(self, rank: int = 10, groups: np.ndarray | None = None, seed: int = 0, init_std: float = 0.1,
                 hyperpriors: Hyperpriors = Hyperpriors()):
        self.rank, self.groups, self.seed, self.init_std, self.hyperpriors = rank, groups, seed, init_std, hyperpriors
        self.task: str | None = None
        self.classes: np.ndarray = np.zeros(0)
        self.target_range: tuple[float, float] = (-np.inf, np.inf)  # regression: the training labels' min and max
        self.state: ChainState | None = None
        self.samples = Samples()

    # -- fitting ----------------------------------------------------------------------------------

    def fit(self, design: scipy.sparse.spmatrix, y: np.ndarray, task: str = "regression", sweeps: int = 200,
            burn_in: int | None = None, callback: Callable[[dict], None] | None = None,
            resume: bool = False, metrics_every: int = 1, classes: np.ndarray | None = None,
            keep: int | None = None) -> "GibbsFM":
        """Run the chain up to ``sweeps`` sweeps in all, keeping the samples after ``burn_in`` (default
        a tenth of them): every one, or ``keep`` of them evenly spaced, the last among them
        (``evenly_spaced``; only those are held in memory); ``resume=True`` continues the chain this
        model holds (from ``from_tensors``).
        ``classes``: ordinal only, every class value, ascending (default: those in ``y``; a class no
        row of ``y`` holds still gets its cutpoint, as the model it fills expects).
        ``callback`` gets each sweep's record, with the train RMSE (AUC) of the kept samples' mean every
        ``metrics_every`` sweeps and at the last (an AUC costs about as much as a sweep on Frappe)."""
        if task not in TASKS:
            raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")
        burn_in = sweeps // 10 if burn_in is None else burn_in
        num_rows, num_features = design.shape
        if len(y) != num_rows:
            raise ValueError(f"y: {len(y)} labels for {num_rows} rows of the design matrix")
        groups = self._groups(num_features)
        num_groups = int(groups.max()) + 1 if num_features else 1
        if resume:
            if self.state is None or self.task != task:
                raise ValueError(f"resume: no {task} chain to resume (fit it or load it with from_tensors)")
            if len(self.state.w) != num_features:
                raise ValueError(f"resume: the chain has {len(self.state.w)} features, the design matrix {num_features}")
        else:
            self.task = task
            values = np.asarray(y if classes is None else classes, dtype=np.float64)
            self.classes = np.unique(values) if task == "ordinal" else np.zeros(0)
        if task == "regression" and len(y):
            self.target_range = (float(np.min(y)), float(np.max(y)))
        label = self._labels(y)
        if not resume:
            self.state = self._initial_state(num_features, num_groups, label, num_rows)
            self.samples = Samples()
        columns = columns_of(design)
        members = scipy.sparse.csr_matrix((np.ones(num_features), (groups, np.arange(num_features))),
                                          shape=(num_groups, num_features))
        kept = set(evenly_spaced(sweeps - burn_in, keep).tolist()) if keep else None  # of the sweeps after the burn-in
        kept_sum = self._train_prediction_sum(design) if callback is not None else None
        began = time.perf_counter()
        state = self.state
        while state.sweep < sweeps:
            prediction = self._sweep(state, columns, label, groups, members, in_burn_in=state.sweep < burn_in)
            state.sweep += 1
            if state.sweep > burn_in and (kept is None or state.sweep - burn_in - 1 in kept):
                self.samples.keep(state)
                if kept_sum is not None:  # the progress's posterior mean on the training rows
                    kept_sum += self._response(prediction, state.cutpoints)
            if callback is not None:
                record = {"sweep": state.sweep, "kept": len(self.samples), "alpha": state.alpha}
                if state.sweep % metrics_every == 0 or state.sweep == sweeps:
                    estimate = kept_sum / len(self.samples) if len(self.samples) else self._response(prediction, state.cutpoints)
                    record.update(self._train_metrics(estimate, np.asarray(y, dtype=np.float64)))
                callback({**record, "seconds": time.perf_counter() - began})
        return self

    def _groups(self, num_features: int) -> np.ndarray:
        groups = np.zeros(num_features, dtype=np.int64) if self.groups is None else np.asarray(self.groups, np.int64)
        if groups.shape != (num_features,) or (num_features and groups.min() < 0):
            raise ValueError(f"groups: expected {num_features} non-negative group indices, one per feature")
        return groups

    def _labels(self, y: np.ndarray) -> np.ndarray:
        """Regression targets as float64; binary labels as bool; ordered labels as class indices."""
        y = np.asarray(y, dtype=np.float64)
        if self.task == "binary":
            if not np.all((y == 0) | (y == 1)):
                raise ValueError("y: binary labels are 0 or 1")
            return y == 1
        if self.task == "ordinal":
            if len(self.classes) < 2:
                raise ValueError(f"y: ordinal labels need 2 classes or more, got {len(self.classes)}")
            label = np.minimum(np.searchsorted(self.classes, y), len(self.classes) - 1)
            if not np.all(self.classes[label] == y):
                raise ValueError(f"y: a label outside the chain's classes {self.classes.tolist()}")
            return label
        return y

    def _initial_state(self, num_features: int, num_groups: int, label: np.ndarray, num_rows: int) -> ChainState:
        rng = np.random.default_rng(self.seed)
        ordinal = self.task == "ordinal"
        return ChainState(
            w0=0.0, w=np.zeros(num_features), v=rng.normal(0.0, self.init_std, (num_features, self.rank)),
            mu_w=np.zeros(num_groups), lambda_w=np.ones(num_groups),
            mu_v=np.zeros((num_groups, self.rank)), lambda_v=np.ones((num_groups, self.rank)), alpha=1.0,
            cutpoints=initial_cutpoints(label, len(self.classes)) if ordinal else np.zeros(0),
            step=1.0 / np.sqrt(max(num_rows, 1)), sweep=0, rng=rng)

    def _sweep(self, state: ChainState, columns: tuple, label: np.ndarray, groups: np.ndarray,
               members: scipy.sparse.csr_matrix, in_burn_in: bool) -> np.ndarray:
        """One Gibbs sweep: targets, α, hyperparameters, w0, w, V. Returns ŷ after it."""
        rng, hyper = state.rng, self.hyperpriors
        prediction, q = np.empty(len(label)), np.empty((self.rank, len(label)))
        predict_columns(*columns, state.w0, state.w, state.v, prediction, q)
        target = self._target(state, prediction, label, in_burn_in)
        residual = target - prediction
        if self.task == "regression":
            state.alpha = rng.gamma((hyper.alpha_0 + len(residual)) / 2, 2 / (hyper.beta_0 + np.square(residual).sum()))
        state.mu_w, state.lambda_w = draw_group_prior(rng, state.w, groups, members, state.mu_w, hyper)
        state.mu_v, state.lambda_v = draw_group_prior(rng, state.v, groups, members, state.mu_v, hyper)
        if self.task != "ordinal":  # flat prior on w0; ordinal cutpoints absorb it
            precision = state.alpha * len(residual)
            new_w0 = state.w0 + residual.sum() / len(residual) + rng.standard_normal() / np.sqrt(precision)
            residual -= new_w0 - state.w0
            state.w0 = new_w0
        sweep_linear(*columns, residual, state.w, state.mu_w[groups], state.lambda_w[groups], state.alpha,
                     rng.standard_normal(len(state.w)))
        sweep_factors(*columns, residual, state.v, q, state.mu_v[groups], state.lambda_v[groups], state.alpha,
                      rng.standard_normal(state.v.shape))
        return target - residual

    def _target(self, state: ChainState, prediction: np.ndarray, label: np.ndarray, in_burn_in: bool) -> np.ndarray:
        """y itself, or the latent z drawn given ŷ (and the cutpoints, moved first)."""
        if self.task == "binary":
            return probit_latent(state.rng, prediction, label)
        if self.task == "ordinal":
            likelihood = ordinal_log_likelihood(with_infinite_ends(state.cutpoints), prediction, label)
            for _ in range(CUTPOINT_MOVES_PER_SWEEP):
                state.cutpoints, likelihood, accepted = metropolis_cutpoints(
                    state.rng, state.cutpoints, prediction, label, state.step, likelihood)
                if in_burn_in:  # adapt the step towards the target acceptance, then freeze it
                    state.step *= float(np.exp(0.5 * (accepted - TARGET_ACCEPTANCE)))
            edges = with_infinite_ends(state.cutpoints)
            return truncated_normal(state.rng, prediction, edges[label], edges[label + 1])
        return label

    # -- predicting -------------------------------------------------------------------------------

    def _response(self, prediction: np.ndarray, cutpoints: np.ndarray) -> np.ndarray:
        """The task's prediction from one sample's ŷ: ŷ, P(y = 1) = Φ(ŷ), or the expected label."""
        if self.task == "binary":
            return ndtr(prediction)
        if self.task == "ordinal":
            return (class_probabilities(cutpoints, prediction) * self.classes).sum(axis=1)  # no BLAS threads
        return prediction

    def _train_prediction_sum(self, design: scipy.sparse.spmatrix) -> np.ndarray:
        """Σ over the samples kept so far of their responses on the training rows (for the progress)."""
        if not len(self.samples):
            return np.zeros(design.shape[0])
        return self.predict(design) * len(self.samples)

    def _train_metrics(self, estimate: np.ndarray, y: np.ndarray) -> dict[str, float]:
        if self.task == "binary":
            from sklearn.metrics import roc_auc_score

            return {"auc": float(roc_auc_score(y > 0.5, estimate))}
        return {"rmse": float(np.sqrt(np.mean(np.square(estimate - y))))}

    def sample_predictions(self, design: scipy.sparse.spmatrix) -> np.ndarray:
        """(S, N) ŷ of every kept sample."""
        arrays = self._sample_arrays()
        return predict_samples(design, arrays["w0"], arrays["w"], arrays["v"])

    def predict(self, design: scipy.sparse.spmatrix) -> np.ndarray:
        """(N,) the posterior mean: of ŷ clipped to ``target_range`` (regression), of P(y = 1) (binary), of the label (ordinal)."""
        if self.task == "ordinal":
            return (self.class_probabilities(design) * self.classes).sum(axis=1)
        per_sample = self.sample_predictions(design)
        if self.task == "binary":
            return ndtr(per_sample).mean(axis=0)
        return np.clip(per_sample, *self.target_range).mean(axis=0)

    def class_probabilities(self, design: scipy.sparse.spmatrix) -> np.ndarray:
        """(N, J) ordinal only: P(y = classes[j]) averaged over the samples."""
        if self.task != "ordinal":
            raise ValueError("class_probabilities: the model was not fitted for the ordinal task")
        per_sample = self.sample_predictions(design)
        cutpoints = self._sample_arrays()["cutpoints"]
        return np.mean([class_probabilities(c, p) for c, p in zip(cutpoints, per_sample)], axis=0)

    def _sample_arrays(self, allow_none: bool = False) -> dict[str, np.ndarray]:
        if not len(self.samples) and not allow_none:
            raise ValueError("no posterior samples: fit with more sweeps than the burn-in")
        return self.samples.arrays(*self.state.v.shape, len(self.state.cutpoints))

    # -- saving -----------------------------------------------------------------------------------

    def to_tensors(self) -> dict[str, np.ndarray]:
        """The kept samples, the chain's state (for resuming) and the settings, as plain arrays."""
        assert self.state is not None, "fit first"
        state = self.state
        tensors = {f"samples.{name}": array for name, array in self._sample_arrays(allow_none=True).items()}
        for item in fields(ChainState):
            value = getattr(state, item.name)
            if item.name == "rng":
                value = rng_to_array(value)
            tensors[f"state.{item.name}"] = np.atleast_1d(np.asarray(value))
        tensors["config.task"] = np.array([TASKS.index(self.task)])
        tensors["config.classes"] = self.classes
        tensors["config.target_range"] = np.array(self.target_range, dtype=np.float64)
        tensors["config.groups"] = self._groups(len(state.w))
        tensors["config.hyperpriors"] = np.array([getattr(self.hyperpriors, f.name) for f in fields(Hyperpriors)])
        tensors["config.seed_init_std"] = np.array([self.seed, self.init_std], dtype=np.float64)
        return {name: np.ascontiguousarray(array) for name, array in tensors.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> "GibbsFM":
        """The model ``to_tensors`` saved: it predicts the same and ``fit(..., resume=True)`` goes on."""
        seed, init_std = tensors["config.seed_init_std"]
        rank = tensors["state.v"].shape[1]
        model = cls(rank, tensors["config.groups"].astype(np.int64), int(seed), float(init_std),
                    Hyperpriors(*map(float, tensors["config.hyperpriors"])))
        model.task = TASKS[int(tensors["config.task"][0])]
        model.classes = tensors["config.classes"].astype(np.float64)
        if "config.target_range" in tensors:  # (a chain saved before the clip predicts unclipped)
            model.target_range = tuple(map(float, tensors["config.target_range"]))
        values = {}
        for item in fields(ChainState):
            array = tensors[f"state.{item.name}"]
            if item.name == "rng":
                values[item.name] = rng_from_array(array)
            elif item.name in ("w0", "alpha", "step"):
                values[item.name] = float(array[0])
            elif item.name == "sweep":
                values[item.name] = int(array[0])
            else:
                values[item.name] = array.astype(np.float64).copy()
        model.state = ChainState(**values)
        model.samples = Samples(list(map(float, tensors["samples.w0"])), list(tensors["samples.w"].copy()),
                                list(tensors["samples.v"].copy()), list(tensors["samples.cutpoints"].copy()))
        return model


def draw_group_prior(rng: np.random.Generator, values: np.ndarray, groups: np.ndarray,
                     members: scipy.sparse.csr_matrix, mean: np.ndarray,
                     hyper: Hyperpriors) -> tuple[np.ndarray, np.ndarray]:
    """(μ, λ) of each group given its parameters θ (``values``: (n,) or (n, k); G groups):
    λ ~ Gamma((α_λ + n_g + 1)/2, rate (β_λ + Σ(θ − μ)² + γ_0 (μ − μ_0)²)/2), then
    μ ~ N((Σθ + γ_0 μ_0)/(n_g + γ_0), 1/((n_g + γ_0) λ))."""
    count = np.asarray(members.sum(axis=1)).reshape(-1, *([1] * (values.ndim - 1)))
    spread = members @ np.square(values - mean[groups]) + hyper.gamma_0 * np.square(mean - hyper.mu_0)
    precision = rng.gamma((hyper.alpha_lambda + count + 1) / 2, 2 / (hyper.beta_lambda + spread))
    weight = count + hyper.gamma_0
    center = (members @ values + hyper.gamma_0 * hyper.mu_0) / weight
    return center + rng.standard_normal(center.shape) / np.sqrt(weight * precision), precision


def rng_to_array(rng: np.random.Generator) -> np.ndarray:
    """A PCG64 generator's state as six uint64 (128-bit state and increment, the cached half-word)."""
    state = rng.bit_generator.state
    if state["bit_generator"] != "PCG64":
        raise ValueError(f"rng: only PCG64 states are saved, got {state['bit_generator']}")
    mask = (1 << 64) - 1
    words = [state["state"]["state"] >> 64, state["state"]["state"] & mask, state["state"]["inc"] >> 64,
             state["state"]["inc"] & mask, state["has_uint32"], state["uinteger"]]
    return np.array(words, dtype=np.uint64)


def rng_from_array(array: np.ndarray) -> np.random.Generator:
    words = [int(word) for word in array]
    bit_generator = np.random.PCG64()
    bit_generator.state = {"bit_generator": "PCG64",
                           "state": {"state": (words[0] << 64) | words[1], "inc": (words[2] << 64) | words[3]},
                           "has_uint32": words[4], "uinteger": words[5]}
    return np.random.Generator(bit_generator)
