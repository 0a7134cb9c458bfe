"""Latent Gaussian targets for classification by Gibbs sampling (Albert & Chib 1993).

Binary labels (probit): y = 1 ⇔ z > 0 with z ~ N(ŷ, 1), so given ŷ each z is a normal truncated to
its label's side. Ordered labels 0 < … < J−1 (ordered probit): y = j ⇔ c_{j−1} < z ≤ c_j with
cutpoints c_0 < … < c_{J−2} (c_{−1} = −∞, c_{J−1} = +∞). The cutpoints move by a Metropolis–Hastings
step with z integrated out (Cowles 1996), then z is drawn given them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from scipy.special import ndtr, ndtri

SQRT_HALF = math.sqrt(0.5)


def truncated_normal(rng: np.random.Generator, mean: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """One draw of N(mean, 1) restricted to (lower, upper) per entry, by the inverse CDF.

    An interval above the mean is mirrored below it, where Φ keeps its precision in the tail."""
    a, b = lower - mean, upper - mean
    mirrored = a > 0
    lo, hi = np.where(mirrored, -b, a), np.where(mirrored, -a, b)
    p_lo, p_hi = ndtr(lo), ndtr(hi)
    t = ndtri(p_lo + rng.random(len(mean)) * (p_hi - p_lo))
    t = np.where(p_hi > p_lo, np.clip(t, lo, hi), hi)  # an interval too far in the tail: its edge
    return mean + np.where(mirrored, -t, t)


def probit_latent(rng: np.random.Generator, prediction: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """z ~ N(ŷ, 1) given the label's side of 0 (``positive``: (N,) bool)."""
    infinite = np.full(len(prediction), np.inf)
    zero = np.zeros(len(prediction))
    return truncated_normal(rng, prediction, np.where(positive, zero, -infinite), np.where(positive, infinite, zero))


def with_infinite_ends(cutpoints: np.ndarray) -> np.ndarray:
    """[−∞, c_0, …, c_{J−2}, +∞]: class j lies between entries j and j + 1."""
    return np.concatenate([[-np.inf], cutpoints, [np.inf]])


def log_class_probability(cutpoints: np.ndarray, prediction: np.ndarray, label: np.ndarray) -> np.ndarray:
    """log P(y = label | ŷ) = log[Φ(c_label − ŷ) − Φ(c_{label−1} − ŷ)], accurate in both tails."""
    edges = with_infinite_ends(cutpoints)
    a, b = edges[label] - prediction, edges[label + 1] - prediction
    sign = np.where(a > 0, -1.0, 1.0)  # above ŷ: Φ(−a) − Φ(−b), the same mass from the precise tail
    return np.log(np.maximum(sign * (ndtr(sign * b) - ndtr(sign * a)), 1e-300))


@njit(cache=True)
def ordinal_log_likelihood(edges: np.ndarray, prediction: np.ndarray, label: np.ndarray) -> float:  # pragma: no cover
    """Σ_n log P(y_n | ŷ_n) in one compiled pass (``edges``: ``with_infinite_ends(cutpoints)``);
    the sum of ``log_class_probability``, with Φ(x) = erfc(−x/√2)/2."""
    total = 0.0
    for n in range(len(prediction)):
        a, b = edges[label[n]] - prediction[n], edges[label[n] + 1] - prediction[n]
        if a > 0:  # above ŷ: Φ(−a) − Φ(−b), from the precise tail
            mass = 0.5 * (math.erfc(a * SQRT_HALF) - math.erfc(b * SQRT_HALF))
        else:
            mass = 0.5 * (math.erfc(-b * SQRT_HALF) - math.erfc(-a * SQRT_HALF))
        total += math.log(max(mass, 1e-300))
    return total


def class_probabilities(cutpoints: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """(N, J) P(y = j | ŷ) for every class."""
    cumulative = ndtr(with_infinite_ends(cutpoints)[None, :] - prediction[:, None])
    return np.diff(cumulative, axis=1)


def initial_cutpoints(label: np.ndarray, num_classes: int) -> np.ndarray:
    """Cutpoints that reproduce the classes' frequencies when ŷ = 0: c_j = Φ⁻¹(P(y ≤ j))."""
    cumulative = np.cumsum(np.bincount(label, minlength=num_classes))[:-1] / len(label)
    return ndtri(np.clip(cumulative, 1e-6, 1 - 1e-6))


def metropolis_cutpoints(rng: np.random.Generator, cutpoints: np.ndarray, prediction: np.ndarray,
                         label: np.ndarray, step: float, log_likelihood: float) -> tuple[np.ndarray, float, bool]:
    """One Metropolis–Hastings move of the cutpoints under a flat prior (Cowles 1996): each c'_j is
    proposed from N(c_j, step²) truncated to (c'_{j−1}, c_{j+1}), which keeps them ordered (a move the
    same scheme could not undo, c_j ≥ c'_{j+1}, is rejected).
    ``log_likelihood`` is Σ log P(y | ŷ, cutpoints); returns the cutpoints after the move, their log
    likelihood and whether the move was accepted."""
    old = with_infinite_ends(cutpoints)
    new = old.copy()
    for j in range(1, len(old) - 1):
        unit = truncated_normal(rng, np.zeros(1), (new[j - 1 : j] - old[j]) / step, (old[j + 1 : j + 2] - old[j]) / step)
        new[j] = old[j] + step * unit[0]
    inner = slice(1, len(old) - 1)
    if not np.all(old[1:-2] < new[2:-1]):  # the reverse move cannot reach c: reject
        return cutpoints.copy(), log_likelihood, False
    proposal_ratio = np.sum(
        np.log(ndtr((old[2:] - old[inner]) / step) - ndtr((new[:-2] - old[inner]) / step))
        - np.log(ndtr((new[2:] - new[inner]) / step) - ndtr((old[:-2] - new[inner]) / step)))
    proposed_likelihood = ordinal_log_likelihood(new, prediction, label)
    if np.log(rng.random()) < proposed_likelihood - log_likelihood + proposal_ratio:
        return new[inner], proposed_likelihood, True
    return cutpoints.copy(), log_likelihood, False
