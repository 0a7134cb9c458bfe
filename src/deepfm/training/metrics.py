"""Evaluation metrics per task: the arithmetic lives in the task head (``deepfm.tasks``)."""

from __future__ import annotations

import numpy as np

from deepfm.tasks import TASKS, Task, as_task

# The metric that selects the best epoch, and whether larger is better (by task name).
SELECTION = {name: cls.selection for name, cls in TASKS.items()}


def evaluate_predictions(task: Task | str, labels: np.ndarray, predictions: np.ndarray,
                         weights: np.ndarray | None = None) -> dict[str, float]:
    """Binary: AUC and logloss of probabilities. Regression: RMSE and MAE of ratings."""
    return as_task(task).metrics_of_predictions(labels, predictions, weights)


def is_better(task: Task | str, candidate: dict[str, float], best: dict[str, float] | None) -> bool:
    return as_task(task).is_better(candidate, best)
