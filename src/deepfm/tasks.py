"""Task heads: what a model's output means, and how labels, loss and metrics follow from it.

A ``Task`` is the one object that models, trainer, metrics and the model directory share:

- ``encode_labels``: a raw label column -> numbers the loss reads (``--positive`` and the one other
  value of the training file, libFM's -1/+1);
- ``loss``: the training objective on logits, optionally weighted per row;
- ``link``: logits -> predictions (probabilities, ratings);
- ``metrics``: validation/evaluation scores, optionally weighted; ``selection`` picks the best epoch;
- ``output_dim``: the width of the model's last layer (1: logits of shape (B,));
- ``prior``: the model's starting output (the mean rating, the log-odds of the click rate);
- ``to_dict``/``task_from_dict``: its part of ``features.json``.

``fit_task`` decides the task from the whole training file (it sees it chunk by chunk).
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any, ClassVar, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F

from deepfm.data.frame import NUMBER_PATTERN, WITHIN_REACH, RawFrame, to_float, within_reach
from deepfm.errors import ConfigError, DataError

# Auto-detection: labels that are 0/1 except for at most this share are a binary file with a few bad
# rows (an error naming the first one), not ratings.
STRAY_LABEL_SHARE = 0.01
LABELS_LISTED = 8  # distinct raw values an error message lists


LARGER_IS_BETTER = {"auc": True, "accuracy": True, "logloss": False, "rmse": False, "mae": False}


ROUNDING = 1e-12  # relative: a metric that moves less than this between epochs moved by rounding, not by the model


class Task:
    """The head of a model for one kind of label. Subclasses set ``name`` and ``selection``."""

    name: ClassVar[str]
    selection: ClassVar[tuple[str, bool]]  # the metric that selects the best epoch, and whether larger is better
    metric_names: ClassVar[tuple[str, ...]]  # what ``metrics`` reports: what ``selecting`` may choose
    fallback: ClassVar[tuple[str, bool] | None] = None  # selects instead where ``selection`` is undefined (NaN)
    output_dim: ClassVar[int] = 1

    def __init__(self, label_mean: float | None = None, positive: str | None = None,
                 label_map: dict[str, float] | None = None, negative: str | None = None):
        self.label_mean = label_mean  # mean training label (after label_map)
        self.positive = canonical_label(positive)  # the raw label value that means 1, for text labels such as ">50K"
        # the one other raw value of the training labels, which means 0 (None: no --positive, or a model
        # directory of an older version, which reads every value other than ``positive`` as 0)
        self.negative = canonical_label(negative)
        self.label_map = dict(label_map or {})  # raw number (as text) -> label, e.g. libFM's {"-1": 0}

    # A task equals its name, so code that compares ``encoder.task == "binary"`` keeps working.
    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.name == other
        return isinstance(other, Task) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(label_mean={self.label_mean!r}, positive={self.positive!r}, "
                f"negative={self.negative!r})")

    # -- labels ---------------------------------------------------------------------------------

    def encode_labels(self, frame: RawFrame) -> np.ndarray:
        """The frame's labels as float32 numbers for the loss; a missing or invalid one is a ``DataError``."""
        y = read_labels(frame, self.positive, self.negative, fitted=True)
        if np.isnan(y).any():
            raise frame.missing_label(int(np.flatnonzero(np.isnan(y))[0]))
        for raw, mapped in self.label_map.items():
            y = np.where(y == float(raw), mapped, y)
        y = self.in_file_convention(frame, y)
        self.check_labels(frame, y)
        return y.astype(np.float32)

    def in_file_convention(self, frame: RawFrame, y: np.ndarray) -> np.ndarray:
        """Labels written in a convention of the file's format, as the task reads them (the task's own: as they are)."""
        return y

    def check_labels(self, frame: RawFrame, y: np.ndarray) -> None:
        """Refuse labels this task cannot read (located)."""

    # -- the head -------------------------------------------------------------------------------

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The batch's loss: the mean over rows, or the weighted mean Σ w_r ℓ_r / Σ w_r."""
        losses = self.row_losses(logits, labels)
        if weights is None:
            return losses.mean()
        return (losses * weights).sum() / weights.sum().clamp_min(torch.finfo(losses.dtype).tiny)

    def row_losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def link(self, logits: torch.Tensor) -> torch.Tensor:
        """Predictions from logits."""
        raise NotImplementedError

    def metrics(self, labels: np.ndarray, logits: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
        """Scores of float64 ``logits`` against ``labels``."""
        raise NotImplementedError

    def metrics_of_predictions(self, labels: np.ndarray, predictions: np.ndarray,
                               weights: np.ndarray | None = None) -> dict[str, float]:
        """``metrics`` from what ``link`` returned."""
        return self.metrics(labels, self.unlink(np.asarray(predictions, dtype=np.float64)), weights)

    def unlink(self, predictions: np.ndarray) -> np.ndarray:
        """Logits from predictions (the inverse of ``link``)."""
        raise NotImplementedError

    def selecting(self, metric: str) -> "Task":
        """This task with ``metric`` selecting the best epoch, stopping early and choosing among recipes
        (``training.select_by``; "auto": its own ``selection``); a ``ConfigError`` for a metric it does not report."""
        if metric == "auto" or metric == self.selection[0]:
            return self
        if metric not in self.metric_names:
            raise ConfigError(f"select_by {metric}: a {self.name} model is scored by {', '.join(self.metric_names)} "
                              f"(--select-by, training.select_by)")
        chosen = copy.copy(self)
        chosen.selection, chosen.fallback = (metric, LARGER_IS_BETTER[metric]), None
        return chosen

    def is_better(self, candidate: dict[str, float], best: dict[str, float] | None, by: float = 0.0) -> bool:
        """Whether ``candidate`` beats ``best`` on ``selection`` (on ``fallback`` where that is NaN), by more than the
        relative margin ``by`` (PyTorch's ReduceLROnPlateau ``threshold``, ``rel`` mode), and by more than rounding:
        two epochs that rank the rows alike tie (AUC 0.4444444444444445 against 0.4444444444444444 had kept the
        later epoch, at a worse logloss)."""
        if best is None:
            return True
        by = max(by, ROUNDING)
        for name, larger in filter(None, (self.selection, self.fallback)):
            new, old = candidate.get(name, math.nan), best.get(name, math.nan)
            if math.isnan(new) or math.isnan(old):
                continue
            return new > old + by * abs(old) if larger else new < old - by * abs(old)
        return False

    @property
    def prior(self) -> float:
        """The model's starting output."""
        return 0.0

    def prediction_columns(self, predictions: np.ndarray) -> dict[str, np.ndarray]:
        """Predictions as named columns for a predictions file."""
        return {"prediction": predictions}

    def prediction_names(self) -> list[str]:
        """The names of ``prediction_columns``, in order."""
        return list(self.prediction_columns(np.zeros(0)))

    # -- persistence ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The task's keys of ``features.json``."""
        return {"task": self.name, "label_map": self.label_map, "label_mean": self.label_mean, "positive": self.positive,
                "negative": self.negative}


def binary_logloss_rows(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Each row's −log σ(±z) from its float64 logit z and 0/1 label, exact however confident."""
    return np.logaddexp(0.0, -(2.0 * labels - 1.0) * logits)


class BinaryTask(Task):
    """Click or not: logits through a sigmoid, logloss, AUC (on logits: no ties from float rounding)."""

    name = "binary"
    selection = ("auc", True)
    fallback = ("logloss", False)
    metric_names = ("auc", "logloss")

    def in_file_convention(self, frame: RawFrame, y: np.ndarray) -> np.ndarray:
        """libFM's −1/+1 in a libFM/libFFM file: −1 is 0, whatever the training file's labels were. Decided for the
        file, over the chunks read of it so far: one holding 0 where another held −1 is a located error."""
        if frame.format not in ("libfm", "libffm") or self.positive:
            return y
        seen = self.__dict__.setdefault("_libfm_labels", {}).setdefault(frame.path, set())  # (not saved with the task)
        first = {value: np.flatnonzero(y == value)[:1] for value in (-1.0, 0.0)}
        held = {value for value, rows in first.items() if len(rows)}
        if len(held | seen) == 2:  # the later of the two values, in this chunk: the one that breaks the convention
            value = (held - seen).pop() if seen else max(held, key=lambda v: first[v][0])
            raise frame.error(int(first[value][0]), None, f"label {value:g}: this file's labels are 0/1 and libFM's "
                              f"-1/+1 both ({-1 if value == 0 else 0:g} on earlier lines); give one")
        seen |= held
        return np.where(y == -1, 0.0, y) if -1.0 in seen else y

    def check_labels(self, frame: RawFrame, y: np.ndarray) -> None:
        bad = np.flatnonzero((y != 0) & (y != 1))
        if len(bad):
            raise frame.error(int(bad[0]), None, f"binary labels must be 0 or 1, got {y[bad[0]]:g} (the model is binary; "
                                                 "for ratings, train with --task regression (data.task))")

    def row_losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, labels, reduction="none")

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        if weights is None:
            return F.binary_cross_entropy_with_logits(logits, labels)  # one fused kernel
        return super().loss(logits, labels, weights)

    def link(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def unlink(self, predictions: np.ndarray) -> np.ndarray:
        p = np.clip(predictions, 1e-300, 1 - 1e-16)
        return np.log(p) - np.log1p(-p)

    def metrics(self, labels: np.ndarray, logits: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
        labels = np.asarray(labels, dtype=np.float64)
        logits = np.asarray(logits, dtype=np.float64)
        from sklearn.metrics import roc_auc_score  # here: ~100 MB a run that scores nothing never loads

        # −log σ(±z) from the logits, exact however confident (as the training loss and the multiclass head's
        # log-softmax): probabilities clipped at 1e-7 capped a confident mistake's loss at ~16.1
        logloss = float(np.average(binary_logloss_rows(labels, logits), weights=weights))
        counted = labels if weights is None else labels[np.asarray(weights) > 0]  # rows of weight 0 count for nothing
        both = 0 < counted.sum() < len(counted)
        auc = float(roc_auc_score(labels, logits, sample_weight=weights)) if both else math.nan
        return {"auc": auc, "logloss": logloss}

    @property
    def prior(self) -> float:
        if self.label_mean is None:
            return 0.0
        rate = min(max(self.label_mean, 1e-4), 1 - 1e-4)
        return float(np.log(rate / (1 - rate)))


class RegressionTask(Task):
    """Ratings or any real value: identity link, squared error, RMSE and MAE."""

    name = "regression"
    selection = ("rmse", False)
    metric_names = ("rmse", "mae")

    def row_losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(logits, labels, reduction="none")

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        if weights is None:
            return F.mse_loss(logits, labels)
        return super().loss(logits, labels, weights)

    def link(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def unlink(self, predictions: np.ndarray) -> np.ndarray:
        return predictions

    def metrics(self, labels: np.ndarray, logits: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
        labels = np.asarray(labels, dtype=np.float64)
        logits = np.asarray(logits, dtype=np.float64)
        from sklearn.metrics import mean_absolute_error, mean_squared_error

        return {"rmse": float(np.sqrt(mean_squared_error(labels, logits, sample_weight=weights))),
                "mae": float(mean_absolute_error(labels, logits, sample_weight=weights))}

    @property
    def prior(self) -> float:
        return 0.0 if self.label_mean is None else float(self.label_mean)


MAX_CLASSES = 1000


class MulticlassTask(Task):
    """One of C classes (any ints or strings, as written): C logits through a softmax, cross-entropy;
    metrics accuracy, logloss and the macro-averaged one-vs-rest AUC. Labels are class positions
    0..C−1 for the loss; predictions are (N, C) class probabilities in the order of ``classes``."""

    name = "multiclass"
    selection = ("logloss", False)
    metric_names = ("logloss", "accuracy", "auc")

    def __init__(self, classes: Iterable[str] = (), class_rates: Iterable[float] | None = None):
        super().__init__()
        written = [str(c) for c in classes]
        canonical = [canonical_label(c) for c in written]
        # (an older version's classes "4" and "4.0" were two: they stay as written, each its own output, and its
        # labels are read as written too)
        self._as_written = len(set(canonical)) < len(canonical)
        self.classes = written if self._as_written else canonical
        self.class_rates = list(class_rates) if class_rates is not None else None  # training frequency of each class
        self._vocabulary = None

    @property
    def output_dim(self) -> int:  # type: ignore[override]
        return len(self.classes)

    def encode_labels(self, frame: RawFrame) -> np.ndarray:
        from deepfm.data.vocabulary import Vocabulary

        if self._vocabulary is None:
            self._vocabulary = Vocabulary(self.classes)
        text = label_text(frame, canonical=not self._as_written)
        missing = pc.is_null(text).to_numpy(zero_copy_only=False)
        if missing.any():
            raise frame.missing_label(int(np.flatnonzero(missing)[0]))
        position = self._vocabulary.positions(text)
        unknown = np.flatnonzero(position < 0)
        if len(unknown):
            raise frame.error(int(unknown[0]), None, f"label {text[int(unknown[0])].as_py()!r} is not one of the "
                                                     f"training classes ({_listed(self.classes)})")
        return position.astype(np.float32)

    def row_losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels.long(), reduction="none")

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        if weights is None:
            return F.cross_entropy(logits, labels.long())
        return super().loss(logits, labels, weights)

    def link(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=-1)

    def unlink(self, predictions: np.ndarray) -> np.ndarray:
        return np.log(np.clip(predictions, 1e-300, None))

    def metrics(self, labels: np.ndarray, logits: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
        labels = np.asarray(labels).astype(np.int64)
        logits = np.asarray(logits, dtype=np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # log softmax, in float64
        accuracy = float(np.average(logits.argmax(axis=1) == labels, weights=weights))
        logloss = float(np.average(-log_p[np.arange(len(labels)), labels], weights=weights))
        present = np.unique(labels if weights is None else labels[np.asarray(weights) > 0])  # weight 0: not present
        auc = math.nan
        if len(present) > 1:  # macro one-vs-rest AUC over the classes present (each needs positives and negatives)
            from sklearn.metrics import roc_auc_score

            aucs = [roc_auc_score(labels == c, log_p[:, c], sample_weight=weights) for c in present]
            auc = float(np.mean(aucs))
        return {"accuracy": accuracy, "logloss": logloss, "auc": auc}

    @property
    def prior(self) -> list[float] | float:
        if not self.class_rates:
            return 0.0
        rates = np.clip(np.asarray(self.class_rates, dtype=np.float64), 1e-4, None)
        logits = np.log(rates / rates.sum())
        return (logits - logits.mean()).tolist()  # softmax(prior) = the class rates

    def prediction_columns(self, predictions: np.ndarray) -> dict[str, np.ndarray]:
        """The most probable class, then each class's probability (``p_CLASS``)."""
        columns = {"prediction": np.asarray(self.classes, dtype=object)[predictions.argmax(axis=1)]}
        columns.update({f"p_{c}": predictions[:, i] for i, c in enumerate(self.classes)})
        return columns

    def prediction_names(self) -> list[str]:
        return list(self.prediction_columns(np.zeros((0, len(self.classes)))))

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.name, "classes": self.classes, "class_rates": self.class_rates,
                "label_map": {}, "label_mean": None, "positive": None, "negative": None}


class OrdinalTask(MulticlassTask):
    """Ordered numeric classes, such as ratings 1–5 (the classes in numeric order; "4" and "4.0" are one).

    A cumulative link: P(y ≤ j) = F(c_j − η) with one score η per row and C − 1 ordered cutpoints c_j
    (a logistic F on any gradient model, ``deepfm.models.heads.CumulativeLink``; the ordered probit
    of the MCMC solver). The model's C outputs are the log class probabilities log P(y = j), so the
    link is the softmax that returns them and the loss is −log P(class), as in multiclass. Metrics:
    multiclass's (accuracy of the most probable class, logloss, macro AUC) and the RMSE and MAE of
    the expected rating Σ_j P(y = j)·value_j, comparable with regression's."""

    name = "ordinal"
    metric_names = ("logloss", "accuracy", "auc", "rmse", "mae")

    @property
    def values(self) -> np.ndarray:
        """(C,) the classes as numbers, ascending."""
        return np.asarray([float(c) for c in self.classes], dtype=np.float64)

    def encode_labels(self, frame: RawFrame) -> np.ndarray:
        y = read_labels(frame, None, fitted=True)
        if np.isnan(y).any():
            raise frame.missing_label(int(np.flatnonzero(np.isnan(y))[0]))
        values = self.values
        position = np.minimum(np.searchsorted(values, y), len(values) - 1)
        unknown = np.flatnonzero(values[position] != y)
        if len(unknown):
            raise frame.error(int(unknown[0]), None, f"label {y[unknown[0]]:g} is not one of the training classes "
                                                     f"({_listed(self.classes)})")
        return position.astype(np.float32)

    def metrics(self, labels: np.ndarray, logits: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
        scores = super().metrics(labels, logits, weights)
        logits = np.asarray(logits, dtype=np.float64)
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        expected = (probabilities @ self.values) / probabilities.sum(axis=1)
        rating = self.values[np.asarray(labels).astype(np.int64)]
        from sklearn.metrics import mean_absolute_error, mean_squared_error

        scores["rmse"] = float(np.sqrt(mean_squared_error(rating, expected, sample_weight=weights)))
        scores["mae"] = float(mean_absolute_error(rating, expected, sample_weight=weights))
        return scores

    @property
    def prior(self) -> float:
        """The score η starts at 0; the cutpoints start at the class rates (``initial_cutpoints``)."""
        return 0.0

    def initial_cutpoints(self) -> list[float]:
        """c_j = logit P(y ≤ j) of the training rates: with η = 0 the head predicts the class rates."""
        rates = np.clip(np.asarray(self.class_rates or [1.0] * len(self.classes), dtype=np.float64), 1e-4, None)
        cumulative = np.clip(np.cumsum(rates / rates.sum())[:-1], 1e-4, 1 - 1e-4)
        return np.log(cumulative / (1 - cumulative)).tolist()

    def prediction_columns(self, predictions: np.ndarray) -> dict[str, np.ndarray]:
        """The most probable class, the expected rating (``expected``), then each class's probability."""
        columns = super().prediction_columns(predictions)
        return {"prediction": columns.pop("prediction"), "expected": predictions @ self.values, **columns}


TASKS: dict[str, type[Task]] = {"binary": BinaryTask, "regression": RegressionTask, "multiclass": MulticlassTask,
                                "ordinal": OrdinalTask}


def task_from_dict(data: dict[str, Any]) -> Task:
    """The task of a ``features.json`` (``Task.to_dict``); an unknown name is a ``ValueError``."""
    name = data.get("task")
    if name not in TASKS:
        raise ValueError(f"task must be one of {', '.join(repr(n) for n in TASKS)}, got {name!r}")
    if name in ("multiclass", "ordinal"):
        return TASKS[name](classes=data.get("classes") or [], class_rates=data.get("class_rates"))
    return TASKS[name](label_mean=data.get("label_mean"), positive=data.get("positive"),
                       label_map=data.get("label_map") or {}, negative=data.get("negative"))


_metrics_import: list = []  # the thread of ``load_metrics_ahead``, while one may run


def load_metrics_ahead() -> None:
    """Import scikit-learn's metrics on a daemon thread (~1 s of a core: scipy.stats builds its docstrings), so that a
    fit's first validation finds them loaded: the fit calls it before reading its data, where it validates. The
    import lock makes a thread that needs them meanwhile wait for this import, not run a second one. A fork waits for
    the import to end: a child would inherit import locks held by a thread it does not have, and hang on them."""
    import os
    import sys
    import threading

    if "sklearn.metrics" in sys.modules or any(thread.is_alive() for thread in _metrics_import):
        return
    if not _metrics_import and hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_finish_metrics_import)
    thread = threading.Thread(target=_import_metrics, name="deepfm-metrics-import", daemon=True)
    _metrics_import[:] = [thread]
    thread.start()


def _finish_metrics_import() -> None:
    for thread in _metrics_import:
        thread.join()


def _import_metrics() -> None:
    try:
        import sklearn.metrics  # noqa: F401
    except Exception:  # noqa: BLE001 - the first validation imports them again and says what fails
        pass


def as_task(task: Task | str) -> Task:
    """A ``Task`` from itself or its name (a name gives a task without a prior)."""
    return task if isinstance(task, Task) else task_from_dict({"task": task})


def metric_text(name: str, value: float, spec: str = ".5f") -> str:
    """``auc 0.94891`` as logs and reports print a metric; an AUC that is NaN reads ``auc undefined (one
    class)``: the rows scored hold a single class, so no ranking of positives over negatives exists."""
    if name == "auc" and math.isnan(value):
        return f"{name} undefined (one class)"
    return f"{name} {value:{spec}}"


# -- reading labels ---------------------------------------------------------------------------------


def read_labels(frame: RawFrame, positive: str | None, negative: str | None = None, fitted: bool = False) -> np.ndarray:
    """Labels as float64: numbers as written, or 1/0 for "equals ``positive``" (missing stays NaN).
    Text labels without ``positive`` are a ``DataError``: while the task is being fitted it suggests
    ``--positive VALUE``, for a ``fitted`` task (a trained model's) it says the model reads numbers. With
    ``negative`` too (the other value of the training labels), any third value is a located one."""
    if positive is None:
        _refuse_text_labels(frame, fitted)
        y = to_float(frame, frame.labels, None)
        beyond = np.flatnonzero(~(within_reach(y) | np.isnan(y)))  # (a missing label is said where it is read)
        if len(beyond):
            raise frame.error(int(beyond[0]), None, f"the label must be {WITHIN_REACH}, got {y[beyond[0]]:g}")
        return y
    text = label_text(frame)
    if negative is not None:
        third = pc.and_(pc.not_equal(text, positive), pc.not_equal(text, negative))
        rows = np.flatnonzero(pc.fill_null(third, False).to_numpy(zero_copy_only=False))
        if len(rows):
            raise frame.error(int(rows[0]), None, f"label {text[int(rows[0])].as_py()!r} is neither the positive value "
                                                  f"{positive!r} nor the negative value {negative!r} of the training labels")
    y = pc.equal(text, positive).to_numpy(zero_copy_only=False).astype(np.float64)
    y[pc.is_null(text).to_numpy(zero_copy_only=False)] = np.nan
    return y


INTEGRAL_DECIMAL = r"^([-+]?[0-9]+)\.0*$"  # "4.0", "4.": the class "4", as a float column's 4.0 reads


def canonical_label(value: str | None) -> str | None:
    """A label value as ``label_text`` reads it: trimmed, and "4.0" is "4"."""
    return None if value is None else re.sub(INTEGRAL_DECIMAL, r"\1", value.strip())


def label_text(frame: RawFrame, canonical: bool = True) -> pa.Array:
    """The labels as text, as written, except that an integral decimal is its integer ("4.0" and "4" are one
    class, whichever file or column type writes it; not where ``canonical`` is False: an older model's classes that
    spell one number twice); a float label's NaN is missing (not a class "nan"), and ±inf a located error."""
    labels = frame.labels
    if pa.types.is_floating(labels.type):
        infinite = np.flatnonzero(np.isinf(labels.to_numpy(zero_copy_only=False)))
        if len(infinite):
            raise frame.error(int(infinite[0]), None, f"the label must be a finite number, got {labels[int(infinite[0])]}")
        labels = pc.if_else(pc.is_nan(labels), pa.scalar(None, labels.type), labels)
    text = pc.utf8_trim_whitespace(pc.cast(labels, pa.string()))
    if not canonical or pa.types.is_floating(labels.type) or pa.types.is_integer(labels.type):
        return text  # as written, or already canonical
    return pc.replace_substring_regex(text, INTEGRAL_DECIMAL, r"\1")


def _refuse_text_labels(frame: RawFrame, fitted: bool) -> None:
    labels = frame.labels
    if not (pa.types.is_string(labels.type) or pa.types.is_large_string(labels.type)):
        return
    if pc.all(pc.match_substring_regex(pc.unique(labels), NUMBER_PATTERN)).as_py() is not False:
        return  # the distinct labels are numbers (or missing): one hash pass, the pattern on a few values
    number = pc.fill_null(pc.match_substring_regex(labels, NUMBER_PATTERN), True).to_numpy(zero_copy_only=False)
    bad = int(np.flatnonzero(~number)[0])
    seen = distinct_values(label_text(frame))
    if fitted:  # a trained model's labels: the options of training no longer apply
        raise frame.error(bad, None, f"the label must be a number, got {labels[bad].as_py()!r}: the model reads "
                                     f"numeric labels (values seen: {_listed(seen)})")
    raise frame.error(bad, None, f"the label must be a number, got {labels[bad].as_py()!r}; for text labels name the "
                                 f"value that means 1 with --positive VALUE (data.positive), or use --task multiclass (values seen: "
                                 f"{_listed(seen)})")


def distinct_values(text: pa.Array, limit: int = LABELS_LISTED + 1) -> list[str]:
    """Up to ``limit`` distinct non-missing values, most frequent first."""
    counts = pc.value_counts(pc.drop_null(text)).flatten()
    order = np.argsort(-counts[1].to_numpy(zero_copy_only=False), kind="stable")[:limit]
    return [counts[0][int(i)].as_py() for i in order]


def _class_order(value: str) -> tuple:
    """Numbers in numeric order (1, 2, 10), then text in alphabetical order."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _number_text(value: float) -> str:
    """4.0 as "4", 0.5 as "0.5": a class's name, exact (``float`` reads it back)."""
    return str(int(value)) if value.is_integer() else repr(value)


def _listed(values: Iterable[str], limit: int = LABELS_LISTED) -> str:
    values = list(values)
    text = ", ".join(repr(v) for v in values[:limit])
    return text + (", ..." if len(values) > limit else "")


# -- deciding the task on the whole training file ----------------------------------------------------


class TaskFitter:
    """Reads the training labels chunk by chunk, then decides the task (``finish``).

    ``auto`` chooses binary only when every label is 0 or 1; regression when the labels look like
    ratings or real values; labels that are 0/1 but for a few (≤ 1 %) stop with a ``DataError`` at
    the first odd one. A binary task needs both classes. With ``--positive`` the labels hold that
    value and one other, the negative one (the more frequent other value where there are more; each
    further value is an error at its first row).
    """

    def __init__(self, task: str, positive: str | None, allows_plus_minus_one: bool, path: str, one_vs_rest: bool = False):
        self.task, self.positive, self.allows_pm1, self.path = task, canonical_label(positive), allows_plus_minus_one, path
        self.one_vs_rest = one_vs_rest  # ``--positive`` against every other value: no negative value to find
        self.count, self.zero_one, self.minus_one, self.ones = 0, 0, 0, 0
        self.examples: list[float] = []  # a few distinct labels, for messages
        self.first_odd: DataError | None = None  # the first label that is neither 0/1 nor (libFM) -1
        self.first_of: dict[float, DataError] = {}  # libFM/libFFM: where the first 0 and the first -1 are
        self.raw_seen: dict[str, None] = {}  # distinct raw values (with ``--positive`` or once not 0/1), in order, a few
        self.others: dict[str, int] = {}  # ``--positive``: the other raw values (the first few) and their counts
        self.first_rows: dict[str, DataError] = {}  # where each of ``others`` first occurs
        self.class_counts: dict[str, int] = {}  # multiclass: every label value and its count
        self.trained_class_counts: dict[str, int] = {}  # of the rows not held out: the class rates
        self.trained_count, self.trained_total = 0, 0.0  # of the rows not held out: the label's mean

    def update(self, frame: RawFrame, counted: np.ndarray | None = None) -> None:
        """Read a frame's labels; ``counted``: the rows not held out for validation (None: every row), whose
        labels alone make the mean and the class rates (every row's decides the task and its classes)."""
        if frame.labels is None:
            return
        if self.task in ("multiclass", "ordinal"):
            self._count_classes(frame, counted)
            return
        y = read_labels(frame, self.positive)
        present = ~np.isnan(y)
        values = y[present]
        self.count += len(values)
        trained = values if counted is None else y[present & counted]
        self.trained_count += len(trained)
        self.trained_total += float(trained.sum())
        zero_one = (values == 0) | (values == 1)
        minus_one = values == -1 if self.allows_pm1 else np.zeros(len(values), bool)
        self.zero_one += int(zero_one.sum())
        self.ones += int((values == 1).sum())
        self.minus_one += int(minus_one.sum())
        for value in np.unique(values)[:LABELS_LISTED]:
            if len(self.examples) < LABELS_LISTED + 1 and value not in self.examples:
                self.examples.append(float(value))
        for value in (0.0, -1.0) if self.allows_pm1 else ():
            if value not in self.first_of and (values == value).any():
                self.first_of[value] = frame.error(int(np.flatnonzero(y == value)[0]), None, "")
        odd = np.flatnonzero(present)[~(zero_one | minus_one)]
        if self.first_odd is None and len(odd):
            self.first_odd = frame.error(int(odd[0]), None, f"label {y[odd[0]]:g} in a file of 0/1 labels")
        if self.positive is None and not len(odd):  # 0/1 so far: no raw value to list
            return
        text = label_text(frame)  # once a chunk, for both reads below
        if len(self.raw_seen) <= LABELS_LISTED:
            for value in distinct_values(text):
                self.raw_seen.setdefault(value, None)
        if self.positive is None:
            return
        if not self.one_vs_rest:
            self._count_others(frame, text)

    def _count_others(self, frame: RawFrame, text: pa.Array) -> None:
        """Count the raw values other than ``--positive`` in ``text`` (the frame's labels; the first few values)
        and locate each one's first row."""
        counts = pc.value_counts(text.filter(pc.fill_null(pc.not_equal(text, self.positive), False))).flatten()
        for value, count in zip(counts[0].to_pylist(), counts[1].to_pylist()):  # in order of first occurrence
            if value not in self.others:
                if len(self.others) > LABELS_LISTED:
                    continue  # already an error; its message needs only the first values
                self.first_rows[value] = frame.error(pc.index(text, value).as_py(), None, "")
                self.others[value] = 0
            self.others[value] += count

    def _count_classes(self, frame: RawFrame, counted: np.ndarray | None) -> None:
        text = label_text(frame)
        missing = pc.is_null(text).to_numpy(zero_copy_only=False)
        if missing.any():
            raise frame.missing_label(int(np.flatnonzero(missing)[0]))
        counts = pc.value_counts(text).flatten()
        for value, count in zip(counts[0].to_pylist(), counts[1].to_pylist()):
            self.class_counts[value] = self.class_counts.get(value, 0) + count
        if counted is not None:
            counts = pc.value_counts(text.filter(pa.array(counted))).flatten()
        for value, count in zip(counts[0].to_pylist(), counts[1].to_pylist()):
            self.trained_class_counts[value] = self.trained_class_counts.get(value, 0) + count
        if len(self.class_counts) > MAX_CLASSES:
            raise DataError(self.path, f"more than {MAX_CLASSES} distinct labels: not a multiclass label column "
                            "(--task regression, data.task, for numbers)")

    def untrained_classes(self) -> list[str]:
        """A multiclass or ordinal label's classes that only rows held out for validation hold."""
        return [value for value in sorted(self.class_counts, key=_class_order)
                if not self.trained_class_counts.get(value)]

    def _multiclass(self) -> Task:
        classes = sorted(self.class_counts, key=_class_order)
        if len(classes) < 2:
            raise DataError(self.path, f"--task multiclass needs at least two classes; every label is {_listed(classes)}")
        total = max(sum(self.trained_class_counts.values()), 1)
        return MulticlassTask(classes, [self.trained_class_counts.get(c, 0) / total for c in classes])

    def _ordinal(self) -> Task:
        counts: dict[float, int] = {}
        for value in self.class_counts:
            try:
                number = float(value)
            except ValueError:
                raise DataError(self.path, f"--task ordinal: label {value!r} is not a number; ordered classes are "
                                "numbers such as ratings 1-5 (--task multiclass, data.task, for unordered text labels)") from None
            counts[number] = counts.get(number, 0) + self.trained_class_counts.get(value, 0)
        if len(counts) < 2:
            raise DataError(self.path, f"--task ordinal needs at least two classes; every label is {_listed(self.class_counts)}")
        total = max(sum(counts.values()), 1)
        numbers = sorted(counts)
        return OrdinalTask([_number_text(v) for v in numbers], [counts[v] / total for v in numbers])

    def finish(self) -> Task:
        if self.task == "multiclass":
            return self._multiclass()
        if self.task == "ordinal":
            return self._ordinal()
        label_map: dict[str, float] = {}
        plus_minus_one = self.minus_one and self.zero_one + self.minus_one == self.count and self.task != "regression"
        mean = self.trained_total / self.trained_count if self.trained_count else None
        if plus_minus_one and self._only({-1.0, 1.0}):
            label_map = {"-1": 0.0}  # libFM's classification convention
            mean = (mean + 1) / 2 if mean is not None else None
        task = self.task
        if task == "auto":
            task = self._detect(bool(label_map))
        if task == "binary" and self.count:
            self._require_both_classes()
        return TASKS[task](label_mean=mean, positive=self.positive, label_map=label_map, negative=self._negative())

    def _negative(self) -> str | None:
        """``--positive``: the one other label value, which means 0; a third value is a located ``DataError``."""
        if self.positive is None or not self.others:
            return None
        negative = max(self.others, key=lambda value: self.others[value])  # ties: the first seen
        strays = [value for value in self.others if value != negative]
        if strays:
            first = self.first_rows[strays[0]]  # the earliest row of a stray (``others`` is in order of first rows)
            neither = self.count - self.ones - self.others[negative]
            raise DataError(first.path, f"label {strays[0]!r} is neither the positive value {self.positive!r} nor the "
                            f"negative value {negative!r} ({neither:,} of {self.count:,} labels are neither; labels "
                            f"seen: {_listed(self.raw_seen)}): fix the odd labels, add --one-vs-rest to read every "
                            "value but the positive one as 0, or use --task multiclass (data.task)",
                            line=first.line, column=first.column)
        return negative

    def _only(self, allowed: set[float]) -> bool:
        return set(self.examples) <= allowed

    def _detect(self, plus_minus_one: bool) -> str:
        if plus_minus_one or self.zero_one == self.count:
            return "binary"
        zeros = self.zero_one - self.ones
        if self.minus_one and zeros and self.zero_one + self.minus_one == self.count:  # libFM: 0, 1 and -1 together
            stray, kind = (-1.0, "0/1") if self.minus_one <= zeros else (0.0, "-1/1")
            strays = min(self.minus_one, zeros)
            if strays <= STRAY_LABEL_SHARE * self.count:
                error = self.first_of[stray]
                raise DataError(error.path, f"label {stray:g} in a file of {kind} labels ({strays:,} of {self.count:,} "
                                f"labels are {stray:g}): fix the odd labels, or name the task with --task binary "
                                "(refuses them) or --task regression", line=error.line, column=error.column)
        odd = self.count - self.zero_one - self.minus_one
        if odd <= STRAY_LABEL_SHARE * self.count and self.first_odd is not None:
            error = self.first_odd
            raise DataError(error.path, f"{error.message} ({odd:,} of {self.count:,} labels are not 0/1): fix "
                            "the odd labels, or name the task with --task binary (refuses them) or --task regression",
                            line=error.line, column=error.column)
        return "regression"

    def _require_both_classes(self) -> None:
        """Labels other than 0/1 are refused, located, when encoded; here both classes must appear."""
        zeros = self.zero_one + self.minus_one - self.ones
        if zeros and self.ones:
            return
        if self.positive is not None:
            present = "matches no label" if not self.ones else "matches every label"
            raise DataError(self.path, f"--positive {self.positive!r} {present} of the training file, so it has one "
                            f"class (labels seen: {_listed(self.raw_seen)})")
        shown = ", ".join(f"{v:g}" for v in self.examples)
        if len(self.examples) > 1:  # labels, but none of them 0/1 (ratings 1-5 under --task binary)
            raise DataError(self.path, f"the training labels are {shown}, not 0 and 1, which a binary task reads; "
                            "--positive VALUE --one-vs-rest (data.positive, data.one_vs_rest) reads one value as 1 and "
                            "every other as 0, or --task regression (data.task)")
        raise DataError(self.path, f"every training label is {shown}: a binary task needs both 0 and 1 "
                        "(or --task regression: data.task)")
