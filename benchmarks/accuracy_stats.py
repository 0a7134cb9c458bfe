"""The sampling error of a test AUC (DeLong) and a seed spread, for the accuracy suite and the reference.

``auc_standard_error(labels, scores)``: DeLong, DeLong & Clarke-Pearson (1988), the standard error of
the empirical AUC as an estimate over test rows drawn from the same population, in O(n log n) by
midranks (Sun & Xu 2014). ``spread(values)``: mean, sample sd and n of per-seed figures.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def auc_standard_error(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(AUC, its DeLong standard error) of ``scores`` for binary ``labels`` (ties count one half)."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positives, negatives = scores[labels], scores[~labels]
    m, n = len(positives), len(negatives)
    overall = rankdata(np.concatenate([positives, negatives]))
    # structural components: for each positive, the share of negatives below it; for each negative,
    # the share of positives above it
    above_negatives = (overall[:m] - rankdata(positives)) / n
    below_positives = 1.0 - (overall[m:] - rankdata(negatives)) / m
    auc = float(above_negatives.mean())
    variance = above_negatives.var(ddof=1) / m + below_positives.var(ddof=1) / n
    return auc, float(np.sqrt(variance))


def spread(values: list[float]) -> dict[str, float]:
    """``{"mean", "sd", "n", "min", "max"}`` of per-seed figures (sd with n - 1)."""
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "sd": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "n": len(array), "min": float(array.min()), "max": float(array.max())}
