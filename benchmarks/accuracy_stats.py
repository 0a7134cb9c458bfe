"""The sampling error of a test AUC (DeLong) and a seed spread, for the accuracy suite and the reference.

``auc_standard_error(labels, scores)``: DeLong, DeLong & Clarke-Pearson (1988), the standard error of
the empirical AUC as an estimate over test rows drawn from the same population (``deepfm.paired``, which
the portfolio also uses). ``spread(values)``: mean, sample sd and n of per-seed figures.
"""

from __future__ import annotations

import numpy as np

from deepfm.paired import auc_standard_error  # noqa: F401  (the suite's name for it)


def spread(values: list[float]) -> dict[str, float]:
    """``{"mean", "sd", "n", "min", "max"}`` of per-seed figures (sd with n - 1)."""
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "sd": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "n": len(array), "min": float(array.min()), "max": float(array.max())}
