"""Two models scored on the same rows: how far apart their metrics are, against the sampling error of that gap.

AUC by DeLong, DeLong & Clarke-Pearson (1988): the AUC is a mean over (positive, negative) pairs, and its variance
comes from each positive's share of negatives scored below it and each negative's share of positives scored above
it, in O(n log n) by midranks (Sun & Xu 2014). Two models' AUCs on the same rows are correlated; the standard
error of their difference comes from the differences of those shares, row by row (paired). Logloss is a mean
over rows, so its difference's standard error is that of the mean of the rows' loss differences.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _auc_components(positive: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(AUC, each positive's share of negatives scored below it, each negative's share of positives scored above
    it); a tie counts one half."""
    positives, negatives = scores[positive], scores[~positive]
    m, n = len(positives), len(negatives)
    overall = rankdata(np.concatenate([positives, negatives]))
    above_negatives = (overall[:m] - rankdata(positives)) / n
    below_positives = 1.0 - (overall[m:] - rankdata(negatives)) / m
    return float(above_negatives.mean()), above_negatives, below_positives


def _labels(labels: np.ndarray) -> np.ndarray:
    positive = np.asarray(labels).astype(bool).ravel()
    if positive.all() or not positive.any():
        raise ValueError("an AUC needs positive and negative rows")
    return positive


def auc_standard_error(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(AUC, its DeLong standard error) of ``scores`` for binary ``labels``."""
    positive = _labels(labels)
    auc, above, below = _auc_components(positive, np.asarray(scores, dtype=np.float64).ravel())
    return auc, float(np.sqrt(above.var(ddof=1) / len(above) + below.var(ddof=1) / len(below)))


def auc_difference(labels: np.ndarray, scores: np.ndarray, others: np.ndarray) -> tuple[float, float]:
    """(AUC of ``scores`` − AUC of ``others``, the DeLong standard error of that difference), both scored on the
    same rows of binary ``labels``."""
    positive = _labels(labels)
    auc, above, below = _auc_components(positive, np.asarray(scores, dtype=np.float64).ravel())
    other_auc, other_above, other_below = _auc_components(positive, np.asarray(others, dtype=np.float64).ravel())
    variance = (above - other_above).var(ddof=1) / len(above) + (below - other_below).var(ddof=1) / len(below)
    return auc - other_auc, float(np.sqrt(variance))


def mean_difference(losses: np.ndarray, others: np.ndarray) -> tuple[float, float]:
    """(mean of ``losses`` − mean of ``others``, the standard error of that difference), one loss per row each."""
    gaps = np.asarray(losses, dtype=np.float64).ravel() - np.asarray(others, dtype=np.float64).ravel()
    return float(gaps.mean()), float(gaps.std(ddof=1) / np.sqrt(len(gaps))) if len(gaps) > 1 else float("inf")

