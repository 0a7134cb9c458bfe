"""scikit-learn estimators over ``deepfm.Estimator``: ``fit(X, y)``, ``predict``, ``predict_proba``,
``score``, parameters that round-trip, and the same model directory as ``deepfm train``.

    from deepfm.sklearn import DeepFMClassifier
    clf = DeepFMClassifier(epochs=5).fit(X_train, y_train, eval_set=[(X_valid, y_valid)])
    clf.predict_proba(X_test)[:, 1]
    clf.save("runs/clf"); DeepFMClassifier.load("runs/clf")

``X`` is a pandas DataFrame, a pyarrow Table or a 2-D array (columns named ``x0``, ``x1``, ...); an ``X`` without
feature names after a fit with them (a 2-D array after a DataFrame) is read by position, as scikit-learn's estimators
read it, with their warning.
Columns become fields by the library's rule: floats are numeric, integers and strings categorical
(``categorical=``/``numeric=`` choose). A SciPy sparse matrix (``OneHotEncoder``'s output, TF-IDF, a libFM-style
design matrix) is the FM paper's x: each row's non-zero columns are its features, weighted by their values, in one
multi-valued field (``SPARSE_FIELD``), as a libFM file reads. ``y`` goes into the training table as the label column and
``sample_weight`` as a weight column (config ``data.weight``). Any model of ``deepfm.models``
through ``model=``; a parameter left at None takes the config's default for that model.
"""

from __future__ import annotations

import re
import sys
import warnings
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (_check_sample_weight, check_consistent_length, check_is_fitted, column_or_1d,
                                      validate_data)

from deepfm.api import UNUSED_BY_SOLVER, Estimator
from deepfm.artifact import read_extra
from deepfm.config import SOLVER_TASKS, RunConfig, changed_keys, merge
from deepfm.data.encoders import WHOLE_FLOATS_NOTE
from deepfm.data.frame import DECIMAL_PATTERN, LARGEST_VALUE, WITHIN_REACH, RawFrame
from deepfm.data.tables import frame_from_table, table_from_pandas
from deepfm.errors import ModelDirError, SettingWarning, warn_data, warn_user
from deepfm.sklearn_words import estimator_words, in_estimator_words
from deepfm.tasks import canonical_label

SPARSE_FIELD = "features"  # a sparse X's one multi-valued field: column j's id is "j", its value the weight
LABEL = "label"  # the label column fit() adds to X's, as in deepfm train's files (RESERVED_LABEL if X has one)
RESERVED_LABEL = "__label__"
WEIGHT = "__sample_weight__"
SAVED = "sklearn.json"  # the estimator's class, parameters and classes_, beside the model directory's files


class _DeepFMEstimator(BaseEstimator):
    """What the classifiers and regressors share; ``_task`` is the deepfm task they train."""

    _task = "binary"
    # parameters newer than some pickled estimators: theirs read as the default
    solver = sweeps = als_l2 = burn_in = samples = select_by = None

    def __init__(self, *, model: str = "deepfm", epochs: int | None = None, batch_size: int | None = None,
                 lr: float | None = None, embed_dim: int | None = None, mlp: tuple[int, ...] | None = None,
                 dropout: float | None = None, embed_l2: float | None = None, optimizer: str | None = None,
                 solver: str | None = None, sweeps: int | None = None, als_l2: float | None = None,
                 burn_in: int | None = None, samples: int | None = None, patience: int | None = None,
                 select_by: str | None = None, categorical: tuple[str, ...] | None = None,
                 numeric: tuple[str, ...] | None = None, min_count: int | None = None, hash_buckets: int | None = None,
                 random_state: int | None = None, threads: int | None = None, device: str | None = None,
                 config: dict[str, Any] | None = None, verbose: bool = False):
        """Parameters (None: the default of the model and the data, as ``deepfm train --help`` lists them):
        ``model`` (deepfm, fm, lr or a baseline of the DeepFM paper), ``epochs`` (at most; 20, FM and DeepFM on regression
        80), ``batch_size``,
        ``lr``, ``embed_dim`` (k), ``mlp`` (hidden sizes), ``dropout``, ``embed_l2``, ``optimizer``, ``solver``
        (gradient; for model fm also als, or mcmc: Bayesian FM by Gibbs sampling, whose priors set the
        regularisation), ``sweeps`` (mcmc, als: passes over every parameter, in place of epochs), ``als_l2`` (als: its λ),
        ``burn_in`` (mcmc: first sweeps whose samples are dropped; a tenth), ``samples`` (mcmc: posterior samples kept,
        evenly spaced; 0 keeps every one after the burn-in),
        ``patience`` (early stopping, on ``eval_set`` or held-out rows), ``select_by`` (the metric that picks the
        epoch kept: auc for classifiers, rmse for regressors; 'logloss' keeps the best-calibrated probabilities),
        ``categorical`` / ``numeric`` (column kinds;
        otherwise floats are numeric, integers and text categorical), ``min_count``, ``hash_buckets``,
        ``random_state`` (the seed; None is deepfm's fixed seed 2026, so refits are identical, unlike
        scikit-learn's usual None), ``threads``, ``device``, ``config`` (any other key, as nested sections:
        ``{"training": {"refit": "on"}}``) and ``verbose`` (the training log on stderr).

        Without ``eval_set`` nothing is held out (``config={"data": {"valid_fraction": 0.1}}`` holds out a
        tenth): every row trains for ``epochs`` epochs, with no early stopping and no portfolio of recipes."""
        self.model = model
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.embed_dim = embed_dim
        self.mlp = mlp
        self.dropout = dropout
        self.embed_l2 = embed_l2
        self.optimizer = optimizer
        self.solver = solver
        self.sweeps = sweeps
        self.als_l2 = als_l2
        self.burn_in = burn_in
        self.samples = samples
        self.patience = patience
        self.select_by = select_by
        self.categorical = categorical
        self.numeric = numeric
        self.min_count = min_count
        self.hash_buckets = hash_buckets
        self.random_state = random_state
        self.threads = threads
        self.device = device
        self.config = config
        self.verbose = verbose

    # -- fitting ----------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any, sample_weight: Any = None, eval_set: Any = None) -> "_DeepFMEstimator":
        """Train on ``X, y`` (``sample_weight``: one weight per row); with ``eval_set`` = ``[(X_valid,
        y_valid)]``, early stopping keeps the epoch best on it."""
        _warn_of_other_index(X, y, "y")
        table = self._table(X, reset=True)
        y = self._fit_targets(y)
        check_consistent_length(table, y)
        label = LABEL if LABEL not in _names(table) else RESERVED_LABEL
        columns = {label: pa.array(self._encode_targets(y))}
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, table, dtype=np.float64)
            if not (np.isfinite(sample_weight) & (sample_weight >= 0)).all():
                bad = sample_weight[~(np.isfinite(sample_weight) & (sample_weight >= 0))][0]
                raise ValueError(f"sample_weight: weights must be finite numbers ≥ 0, got {bad:g}")
            self._check_weighted_targets(y, sample_weight)
            columns[WEIGHT] = pa.array(sample_weight)
        train = _with_columns(table, columns, label)
        valid = None
        if eval_set is not None:
            if isinstance(eval_set, list) and len(eval_set) != 1:
                raise ValueError(f"eval_set: one (X_valid, y_valid) pair, which early stopping selects on; got "
                                 f"{len(eval_set)}")
            X_valid, y_valid = eval_set[0] if isinstance(eval_set, list) else eval_set
            _warn_of_other_index(X_valid, y_valid, "eval_set's y")
            try:
                valid = self._table(X_valid, reset=False)
                y_valid = self._targets(y_valid)
                check_consistent_length(valid, y_valid)
                encoded_valid = pa.array(self._encode_targets(y_valid))
            except ValueError as error:
                raise ValueError(f"eval_set: {error}") from None
            valid = _with_columns(valid, {label: encoded_valid}, label)
        elif self._patience() is not None and self._solver() == "gradient" and not (
                self.config or {}).get("data", {}).get("valid_fraction"):
            warn_user(f"{type(self).__name__}(patience={self._patience()}) stops early on eval_set's rows, or on rows "
                      "held out with config={'data': {'valid_fraction': 0.1}}; with neither, every epoch trains")
        self._check_solver()
        with estimator_words(), warnings.catch_warnings():  # (the settings not read: said here, in this API's words)
            estimator = Estimator(**self._config(label, weighted=sample_weight is not None))
            self._warn_unused(estimator.config)
            warnings.simplefilter("ignore", SettingWarning)
            self.estimator_ = estimator.fit(train, valid=valid, progress=bool(self.verbose), log=self._say)
        self._set_iterations()
        for note in self.estimator_.encoder.fit_warnings if not self.verbose else ():  # (verbose: said in the log)
            warn_data(in_estimator_words(note))
        return self

    def _set_iterations(self) -> None:
        """``n_iter_``: the epochs (or sweeps) run; ``best_iteration_``: the one whose weights the model keeps."""
        metrics = self.estimator_.metrics
        self.n_iter_, self.best_iteration_ = (metrics.get(key) if isinstance(metrics.get(key), int) else None
                                              for key in ("epochs", "best_epoch"))

    def _patience(self) -> int | None:
        return self.patience if self.patience is not None else (self.config or {}).get("training", {}).get("patience")

    def _solver(self) -> str:
        return self.solver or (self.config or {}).get("training", {}).get("solver", "gradient")

    def _check_solver(self) -> None:
        """A ``ValueError`` in this API's words (the run's config would name the command's flags) where the solver
        cannot fit this model or task."""
        solver, name = self._solver(), type(self).__name__
        if solver in SOLVER_TASKS and self.model != "fm":
            raise ValueError(f"{name}(solver={solver!r}) fits model='fm' only (model={self.model!r}); use "
                             f"{name.replace('DeepFM', 'FM')}(solver={solver!r}), or solver='gradient' for this model")
        if solver in SOLVER_TASKS and self._task not in SOLVER_TASKS[solver]:
            raise ValueError(f"{name}(solver={solver!r}) fits {' and '.join(SOLVER_TASKS[solver])} tasks, not "
                             f"{self._task}; solver='mcmc' classifies (by probit), or solver='gradient'")

    def _warn_unused(self, config: RunConfig) -> None:
        """A ``UserWarning`` naming the parameters set here (or keys of ``config=``) that the model or the solver does
        not read (mcmc and als have no learning rate, batch or epochs; an FM no MLP), as a grid search over them
        would find nothing."""
        name, solver = type(self).__name__, config.training.solver
        unused = changed_keys(config.training, UNUSED_BY_SOLVER.get(solver, ()))
        if unused:
            reads = {"mcmc": "it reads sweeps, burn_in and samples", "als": "it reads sweeps and als_l2 (its λ)",
                     "gradient": "solver='mcmc' or 'als' reads them"}[solver]
            warn_user(f"{name}(solver={solver!r}) does not use {self._named('training', unused)}: they are "
                      f"ignored ({reads})")
        unused = config.model.unused_keys(changed_only=True)
        if unused:
            warn_user(f"{name}(model={config.model.name!r}) does not use {self._named('model', unused)}: they are "
                      "ignored")

    def _named(self, section: str, keys: list[str]) -> str:
        """``keys`` of a config section as this estimator takes them: its parameter, or ``config=``'s nested key."""
        return ", ".join(key if getattr(self, key, None) is not None else f"config[{section!r}][{key!r}]"
                         for key in keys)

    def _say(self, message: str) -> None:
        """The fit's log on stderr with ``verbose``; without it, only the note that floats of whole numbers (an
        ``OrdinalEncoder``'s codes, say) are read as numbers, as a ``DataWarning``: read as ids they fit better."""
        if self.verbose:
            message = in_estimator_words(message)
            if getattr(self, "_sparse_in", False) and self.min_count is None:  # (min_count 1 is this API's for it)
                message = message.replace("(min_count 1 as you set it)", "(min_count 1: a sparse X's columns are ids)")
            print(message, file=sys.stderr, flush=True)
        elif message.startswith(WHOLE_FLOATS_NOTE):
            warn_data(in_estimator_words(message))

    def _config(self, label: str, weighted: bool) -> dict[str, Any]:
        """The run configuration: the named parameters over ``config`` (a nested mapping, as in a TOML file)."""
        seed = self.random_state
        if seed is not None and not isinstance(seed, (int, np.integer)):
            seed = int(check_random_state(seed).randint(2**31 - 1))
        sections = {
            "data": {"label": label, "task": self._task, "weight": WEIGHT if weighted else None,
                     "multi": [SPARSE_FIELD] if getattr(self, "_sparse_in", False) else None,
                     "categorical": self.categorical, "numeric": self.numeric,
                     "min_count": 1 if self.min_count is None and getattr(self, "_sparse_in", False) else self.min_count,
                     "hash_buckets": self.hash_buckets},
            "model": {"name": self.model, "embed_dim": self.embed_dim, "mlp": self.mlp, "dropout": self.dropout},
            "training": {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "embed_l2": self.embed_l2,
                         "optimizer": self.optimizer, "solver": self.solver, "sweeps": self.sweeps,
                         "als_l2": self.als_l2, "burn_in": self.burn_in, "samples": self.samples,
                         "patience": self.patience, "select_by": self.select_by, "seed": seed,
                         "threads": self.threads, "device": self.device},
        }
        chosen = {name: {k: v for k, v in values.items() if v is not None} for name, values in sections.items()}
        # scikit-learn's convention: fit trains on every row of X; early stopping selects on eval_set (or on
        # rows held out with config={"data": {"valid_fraction": 0.1}}), not on rows it holds out unasked
        return merge(merge({"data": {"valid_fraction": 0.0}}, self.config or {}), chosen)

    def _table(self, X: Any, reset: bool) -> Any:
        """``X`` as an Arrow table of named columns; checks its columns against those seen in ``fit``. Where ``X`` or
        the fit's X had no feature names (a 2-D array, a DataFrame whose column names are not text), ``X``'s columns
        are the fit's by position, as scikit-learn's estimators take them (with its warning where the fit had names);
        each keeps the kind the fit gave it (categorical or numeric). Another number of columns is a ValueError.
        A sparse ``X`` (and any ``X`` after a fit on one) is its checked CSR matrix (``sparse_frame``'s one field)."""
        X = _scipy_if_pandas_sparse(X)
        if reset:
            self._sparse_in = _is_sparse(X)
        if getattr(self, "_sparse_in", False):
            X = validate_data(self, X, reset=reset, accept_sparse="csr", dtype=np.float64, ensure_min_samples=1)
            self._columns_in = [SPARSE_FIELD]
            return checked_csr(X)
        if _is_sparse(X):
            raise ValueError("X: a sparse matrix, where the fit read columns (an array or a DataFrame); give "
                             "X.toarray(), or fit on the sparse matrix")
        if isinstance(X, pa.Table) or _is_dataframe(X):
            shape = (X.num_rows, X.num_columns) if isinstance(X, pa.Table) else X.shape
            for count, what in zip(shape, ("sample", "feature")):  # as check_array says of an array
                if count == 0:
                    raise ValueError(f"Found array with 0 {what}(s) (shape={shape}) while a minimum of 1 is required.")
            validate_data(self, X, reset=reset, skip_check_array=True)
            table = X if isinstance(X, pa.Table) else _arrow_from_pandas(X)
        else:
            X = validate_data(self, X, reset=reset, dtype=None, ensure_all_finite=False, ensure_min_samples=1)
            table = pa.table({f"x{j}": _arrow_column(X[:, j]) for j in range(X.shape[1])})
        if reset:
            self._columns_in = table.column_names
        elif not (hasattr(self, "feature_names_in_") and _has_feature_names(X)):
            table = table.rename_columns(self._fitted_columns())
        if RESERVED_LABEL in table.column_names or WEIGHT in table.column_names:
            raise ValueError(f"X: the column names {RESERVED_LABEL!r} and {WEIGHT!r} are reserved for y and sample_weight")
        return table

    def _fitted_columns(self) -> list[str]:
        """The names of the fit's columns, in order: its feature names, or ``x0``, ``x1``, ... for an array (where an
        older version saved none)."""
        columns = getattr(self, "_columns_in", None)
        if columns is not None:
            return columns
        names = getattr(self, "feature_names_in_", None)
        return names.tolist() if names is not None else [f"x{j}" for j in range(self.n_features_in_)]

    def _fit_targets(self, y: Any) -> np.ndarray:
        return self._targets(y)

    def _targets(self, y: Any) -> np.ndarray:
        return column_or_1d(y, warn=True)

    def _encode_targets(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=np.float64)

    def _check_weighted_targets(self, y: np.ndarray, sample_weight: np.ndarray) -> None:
        """Refuse weights that leave nothing to learn from."""
        if not (sample_weight > 0).any():
            raise ValueError("sample_weight: every weight is 0")

    def _scores(self, X: Any) -> np.ndarray:
        """The model's output for each row of ``X``: probabilities of ``classes_[1]``, or values."""
        check_is_fitted(self, "estimator_")
        with estimator_words():
            return self.estimator_.predict(_with_columns(self._table(X, reset=False), {}, None)).astype(np.float64)

    # -- persistence ------------------------------------------------------------------------------

    def save(self, directory: str) -> str:
        """Write the model directory (loads with ``deepfm.Estimator.load`` and ``deepfm serve`` too)."""
        check_is_fitted(self, "estimator_")
        params = self.get_params(deep=False)
        if not isinstance(params.get("random_state"), (int, np.integer, type(None))):  # a RandomState: spent by the
            params["random_state"] = None  # fit (its text would not seed a refit), as clone leaves an unseeded one
        saved = {"estimator": type(self).__name__, "params": params,
                 "n_features_in": self.n_features_in_,
                 "feature_names_in": getattr(self, "feature_names_in_", np.array([])).tolist() or None,
                 "columns": self._fitted_columns(), "sparse": getattr(self, "_sparse_in", False),
                 "classes": getattr(self, "classes_", np.array([])).tolist() or None}
        self.estimator_.save(directory, extra={SAVED: _json_safe(saved)})
        return str(directory)

    @classmethod
    def load(cls, directory: str) -> "_DeepFMEstimator":
        """The estimator that ``save`` wrote to ``directory``, fitted."""
        estimator = Estimator.load(directory)  # checks every file against the manifest
        saved = read_extra(directory, SAVED)
        if saved is None:
            raise ModelDirError(f"{directory}: not saved by deepfm.sklearn (no {SAVED}); load it with deepfm.Estimator.load")
        if saved["estimator"] != cls.__name__:  # (a DeepFMClassifier of model 'fm' would predict alike, but surprise)
            raise ModelDirError(f"{directory}: holds a {saved['estimator']}, not a {cls.__name__}; load it with "
                                f"{saved['estimator']}.load")
        names = cls._get_param_names()
        params = {k: tuple(v) if k == "mlp" and isinstance(v, list) else v for k, v in saved["params"].items()}
        loaded = cls(**{k: v for k, v in params.items() if k in names})  # (JSON has no tuples: mlp back as one)
        loaded.estimator_, loaded.n_features_in_ = estimator, saved["n_features_in"]
        if saved["feature_names_in"] is not None:
            loaded.feature_names_in_ = np.asarray(saved["feature_names_in"], dtype=object)
        loaded._columns_in = saved.get("columns")  # None from older versions (``_fitted_columns``)
        loaded._sparse_in = saved.get("sparse", False)
        if saved["classes"] is not None:
            loaded.classes_ = np.asarray(saved["classes"])
        loaded._set_iterations()
        return loaded

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # a missing value has its own id
        tags.input_tags.string = True  # strings are categorical values
        tags.input_tags.categorical = True
        tags.input_tags.sparse = True  # a row's non-zero columns are its features
        tags.non_deterministic = self.device not in (None, "cpu")  # GPU kernels may reorder sums
        return tags


def text_classes(classes: Any) -> bool:
    """Whether a classifier's ``classes_`` are text that is not numbers (``click``/``skip``): what its saved model reads
    as text labels (``_Classifier._read_classes_as_labels``)."""
    return np.asarray(classes).dtype.kind in "OUS" and not all(re.match(DECIMAL_PATTERN, str(c)) for c in classes)


def refuse_mixed_targets(y: np.ndarray) -> None:
    """Labels of text and of numbers together (a 'yes' among 0/1) are a ``ValueError`` at the first of the other kind
    (scikit-learn's own check says only "Unknown label type: unknown")."""
    if y.dtype != object or len(y) == 0:
        return
    texts = np.fromiter((isinstance(v, str) for v in y), bool, len(y))  # (on the error path only)
    if texts.all() or not texts.any():
        return
    other = int(np.argmax(texts != texts[0]))
    raise ValueError(f"y: position {other} holds {y[other]!r} ({type(y[other]).__name__}) after labels of "
                     f"{type(y[0]).__name__}: give y one type (e.g. y.astype(str))")


class _Classifier(ClassifierMixin, _DeepFMEstimator):
    """Binary classification: labels of any two values; ``classes_`` holds them in sorted order and
    the model predicts the probability of ``classes_[1]``."""

    _task = "binary"

    def _fit_targets(self, y: Any) -> np.ndarray:
        y = self._targets(y)
        if y.dtype == object:  # text labels with a NaN or None: np.unique's "'<' not supported between float and str"
            missing = np.flatnonzero((y != y) | np.equal(y, None))
            if len(missing):
                raise ValueError(f"Input y contains NaN: row {int(missing[0])} (and {len(missing) - 1} more) has no label; "
                                 "drop those rows or fill them")
        try:
            check_classification_targets(y)
        except ValueError:
            refuse_mixed_targets(y)  # (the check's own words say nothing of where)
            raise
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(f"y: got {len(self.classes_)} class(es) {self.classes_[:5].tolist()}; "
                             "Only binary classification is supported (two classes); deepfm.Estimator(data={'task': "
                             "'multiclass'}) trains a model of more classes (or 'ordinal' for ordered ones, as ratings)")
        return y

    def fit(self, X: Any, y: Any, sample_weight: Any = None, eval_set: Any = None) -> "_Classifier":
        super().fit(X, y, sample_weight=sample_weight, eval_set=eval_set)
        self._read_classes_as_labels()
        return self

    def _read_classes_as_labels(self) -> None:
        """The fitted model reads a file's labels as its text classes (``classes_[1]`` is 1, ``classes_[0]`` is 0, any
        other value a located error), as a model trained with ``--positive`` does: ``deepfm evaluate`` and
        ``Estimator.evaluate`` score a file labelled as ``y`` was. Classes that are numbers (0/1, a libFM file's -1/+1)
        and booleans are read as numbers, as before (their files spell them in more than one way: +1 and 1)."""
        if not text_classes(self.classes_):
            return
        task = self.estimator_.encoder.task
        task.positive, task.negative = canonical_label(str(self.classes_[1])), canonical_label(str(self.classes_[0]))

    def _encode_targets(self, y: np.ndarray) -> np.ndarray:
        unknown = ~np.isin(y, self.classes_)
        if unknown.any():
            seen = np.asarray(y[unknown][0]).item()  # 6, not np.int64(6)
            raise ValueError(f"y: {seen!r} is not one of the classes seen in fit {self.classes_.tolist()}")
        return (y == self.classes_[1]).astype(np.float64)

    def _check_weighted_targets(self, y: np.ndarray, sample_weight: np.ndarray) -> None:
        weighted = np.unique(y[sample_weight > 0])
        if len(weighted) != 2:
            raise ValueError(f"sample_weight: only the class(es) {weighted.tolist()} have a positive weight; "
                             "a binary classifier needs two")

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, 2): the probabilities of ``classes_[0]`` and ``classes_[1]``."""
        p = self._scores(X)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """The class of each row of ``X``: ``classes_[1]`` where its probability is at least 0.5, else ``classes_[0]``."""
        positive = self._scores(X) >= 0.5
        return self.classes_[positive.astype(int)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags


class _Regressor(RegressorMixin, _DeepFMEstimator):
    """Regression (ratings, real values): squared error, ``score`` is R²."""

    _task = "regression"

    def _targets(self, y: Any) -> np.ndarray:
        y = column_or_1d(y, warn=True)
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError("y: a regressor needs numbers") from None
        if not np.isfinite(y).all():
            raise ValueError("y: contains NaN or infinity")
        return y

    def predict(self, X: Any) -> np.ndarray:
        """The predicted value of each row of ``X``."""
        return self._scores(X)


def _with_model(init: Any, model: str) -> Any:
    """The shared ``__init__`` with ``model`` defaulting to ``model``: scikit-learn reads the
    parameters and their defaults from each class's ``__init__`` signature."""
    copy = type(init)(init.__code__, init.__globals__, init.__name__, init.__defaults__, init.__closure__)
    copy.__kwdefaults__ = {**init.__kwdefaults__, "model": model}
    copy.__doc__, copy.__annotations__ = init.__doc__, init.__annotations__
    return copy


class DeepFMClassifier(_Classifier):
    """DeepFM (or ``model=``) for binary labels."""


class FMClassifier(_Classifier):
    """A factorization machine (or ``model=``) for binary labels."""

    __init__ = _with_model(_DeepFMEstimator.__init__, "fm")


class DeepFMRegressor(_Regressor):
    """DeepFM (or ``model=``) for real-valued targets."""


class FMRegressor(_Regressor):
    """A factorization machine (or ``model=``) for real-valued targets."""

    __init__ = _with_model(_DeepFMEstimator.__init__, "fm")


def _warn_of_other_index(X: Any, y: Any, name: str) -> None:
    """A ``UserWarning`` where ``y`` (a pandas Series) holds the row labels of ``X`` (a DataFrame) in another order:
    rows pair by position, as scikit-learn's estimators pair them, not by label, so a ``y`` sorted apart from ``X``
    pairs the wrong rows. Other labels (X's index reset in a pipeline) are not warned of: position is all there is."""
    index = getattr(y, "index", None)
    if (_is_dataframe(X) and index is not None and type(y).__module__.startswith("pandas") and len(index) == len(X)
            and not X.index.equals(index) and X.index.sort_values().equals(index.sort_values())):
        warn_user(f"{name}'s index holds X's labels in another order: rows pair by position, as in scikit-learn, "
                  "not by index label (y.reindex(X.index) pairs them by label)")


def _is_dataframe(X: Any) -> bool:
    return type(X).__module__.startswith("pandas") and type(X).__name__ == "DataFrame"  # pandas is optional


def _has_feature_names(X: Any) -> bool:
    """Whether scikit-learn reads feature names from ``X``: an Arrow table's, a DataFrame's where all are text."""
    return isinstance(X, pa.Table) or (_is_dataframe(X) and len(X.columns) > 0
                                       and all(isinstance(name, str) for name in X.columns))


def _is_sparse(X: Any) -> bool:
    from scipy import sparse

    return sparse.issparse(X)


def _scipy_if_pandas_sparse(X: Any) -> Any:
    """A DataFrame of pandas sparse columns (``pd.get_dummies(..., sparse=True)``) as the SciPy matrix it holds."""
    if not _is_dataframe(X) or len(X.columns) == 0:
        return X
    import pandas as pd

    sparse_columns = [name for name, kind in X.dtypes.items() if isinstance(kind, pd.SparseDtype)]
    if sparse_columns and len(sparse_columns) < len(X.columns):
        raise ValueError(f"X: some columns of the DataFrame are pandas sparse columns ({', '.join(map(str, sparse_columns[:5]))}), "
                         "others not; give X.sparse.to_coo() of all-sparse columns, or dense columns")
    return X.sparse.to_coo() if sparse_columns else X


def checked_csr(X: Any) -> Any:
    """A sparse matrix as CSR of float64 values, duplicates summed and stored zeros dropped; a value beyond
    ``LARGEST_VALUE`` is a ValueError naming it."""
    from scipy import sparse

    X = sparse.csr_matrix(X, dtype=np.float64, copy=True)
    X.sum_duplicates()
    X.eliminate_zeros()
    beyond = np.flatnonzero(np.abs(X.data) > LARGEST_VALUE)
    if len(beyond):
        row = int(np.searchsorted(X.indptr, beyond[0], side="right")) - 1
        raise ValueError(f"X[{row}, {int(X.indices[beyond[0]])}] = {X.data[beyond[0]]:g}: a value must be {WITHIN_REACH}; "
                         "scale the column (MaxAbsScaler)")
    if X.nnz >= 2**31:
        raise ValueError(f"X: {X.nnz} non-zero values, more than a table column holds (2**31); fit on parts, or "
                         "write the rows to a libFM file for deepfm train --stream")
    return X


def sparse_frame(X: Any, columns: dict[str, pa.Array] | None = None, label: str | None = None) -> RawFrame:
    """A sparse matrix as rows of one multi-valued field ``SPARSE_FIELD``: each row's non-zero columns j as ids "j",
    weighted by their values, in column order (a libFM file's layout); ``columns`` beside it (the label ``label``,
    the sample weight). The weights go in as numbers, never through text."""
    X = checked_csr(X)
    offsets = pa.array(X.indptr.astype(np.int32))
    ids = pa.ListArray.from_arrays(offsets, pc.cast(pa.array(X.indices.astype(np.int64)), pa.string()))
    frame = frame_from_table(pa.table({SPARSE_FIELD: ids, **(columns or {})}), "<table>", label or LABEL,
                             require_label=label is not None, multi=(SPARSE_FIELD,))
    if not (X.data == 1).all():
        frame.weights[SPARSE_FIELD] = pa.ListArray.from_arrays(offsets, pa.array(X.data.astype(np.float32)))
    return frame


def _names(data: Any) -> list[str]:
    return data.column_names if isinstance(data, pa.Table) else [SPARSE_FIELD]


def _with_columns(data: Any, columns: dict[str, pa.Array], label: str | None) -> pa.Table | RawFrame:
    """``_table``'s ``data`` with ``columns`` beside its own: a table, or a sparse matrix's frame."""
    if not isinstance(data, pa.Table):
        return sparse_frame(data, columns, label)
    for name, column in columns.items():
        data = data.append_column(name, column)
    return data


def _arrow_from_pandas(X: Any) -> pa.Table:
    if not all(isinstance(name, str) for name in X.columns):
        X = X.set_axis([str(name) for name in X.columns], axis=1)
    return table_from_pandas(X, "X", "X")


def _arrow_column(values: np.ndarray) -> pa.Array:
    """One column of a 2-D array: numbers stay numbers (NaN: missing), anything else becomes text."""
    if values.dtype.kind in "biuf":
        return pa.array(values, from_pandas=True)
    if values.dtype.kind == "c":
        raise ValueError("X: complex data is not supported")
    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: their text
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _json_safe(value: Any) -> Any:
    """Parameters as JSON: tuples as lists, NumPy scalars as numbers, anything else as its text."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


__all__ = ["DeepFMClassifier", "DeepFMRegressor", "FMClassifier", "FMRegressor", "sparse_frame"]
