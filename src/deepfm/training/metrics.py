"""Evaluation metrics per task (scikit-learn does the arithmetic)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, mean_absolute_error, mean_squared_error, roc_auc_score

# The metric that selects the best epoch, and whether larger is better.
SELECTION = {"binary": ("auc", True), "regression": ("rmse", False)}


def evaluate_predictions(task: str, labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Binary: AUC and logloss of probabilities. Regression: RMSE and MAE of ratings."""
    labels = np.asarray(labels, dtype=np.float64)
    predictions = np.asarray(predictions, dtype=np.float64)
    if task == "binary":
        metrics = {"logloss": float(log_loss(labels, np.clip(predictions, 1e-7, 1 - 1e-7), labels=[0, 1]))}
        metrics["auc"] = float(roc_auc_score(labels, predictions)) if 0 < labels.sum() < len(labels) else float("nan")
        return {"auc": metrics["auc"], "logloss": metrics["logloss"]}
    return {
        "rmse": float(np.sqrt(mean_squared_error(labels, predictions))),
        "mae": float(mean_absolute_error(labels, predictions)),
    }


def is_better(task: str, candidate: dict[str, float], best: dict[str, float] | None) -> bool:
    if best is None:
        return True
    name, larger = SELECTION[task]
    return candidate[name] > best[name] if larger else candidate[name] < best[name]
