"""``deepfm tune``: search a model's settings with Optuna, on validation rows only.

The data is encoded once (the encoder fitted on the training file) and every trial trains on the
same arrays with the run's seed and one intra-op thread (unless ``--threads`` is given), so trials
differ by their settings alone. Trial 0 is what ``deepfm train`` would run: the model's defaults for
the task and the shape of the ids (``deepfm.defaults``), so the search is never worse than them on
validation. Each trial reports its validation metric after every epoch (the trainer's ``on_epoch``
hook) to Optuna's successive-halving pruner, which stops a trial outside the top third of all trials
at epochs 2, 6 and 18. The sampler is multivariate TPE, seeded by ``training.seed``.

The search space (``search_space``) is per model family, around the defaults, with conditional
ranges: the learning rate's by optimiser, the embedding L2's by its form (``tune.json`` names them
``lr_adam`` / ``lr_adagrad``, ``embed_l2_occurrences`` / ``embed_l2_rows``; ``settings`` holds the
config keys). A setting given as a flag is fixed, not searched.

The saved model is the best trial refitted (``TUNE_REFIT``, ``--refit``): trained again from its seed
on the training and validation rows together for the epochs validation chose (``refit_best``); with
``--refit off``, the best trial as it trained. Writes ``OUT/`` as that model's directory, ``OUT/tune.json``
(every trial: number, state, params, settings, value, epochs; the best trial's validation metric; what
the refit did, or null) and ``OUT/best.toml``, a config that ``deepfm train --config OUT/best.toml --out
DIR`` reproduces the saved model with (its ``training.refit`` included). A test file is never read.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from deepfm.config import RunConfig, build_config, merge
from deepfm.defaults import id_shape, with_task_defaults
from deepfm.errors import ConfigError, TrainingDiverged
from deepfm.recipes import DEEPFM_SEARCHED_RECIPE, FM_SEARCHED_RECIPE

WITHOUT_MLP = ("lr", "fm")
INSTALL_HINT = "pip install 'deepfm[tune]'"

# The search space per model family, around the defaults the accuracy suite chose (deepfm.defaults).
# The learning rate's range depends on the optimiser: AdaGrad's steps are lr·g/√G (Frappe FM's best:
# 0.1), Adam's lr·m/√v (the DeepFM default 1e-3); one range for both would spend half the trials on
# steps that cannot work. The embedding L2's range depends on its form: per occurrence (a mean over the
# batch; Frappe's best 1e-2, 1e-1 already 0.035 AUC worse) or lazily on the distinct rows of a batch
# (the former defaults: 1e-4 for FM, 0.1 for DeepFM).
ADAGRAD_FAMILY = ("adagrad", "rowwise_adagrad")
LR_BY_OPTIMIZER = {"adagrad": (1e-2, 0.5), "adam": (1e-4, 3e-2)}
EMBED_L2_BY_FORM = {"occurrences": (1e-4, 1e-1), "rows": (1e-6, 3e-1)}
# The best 600-s FM searches on Frappe ended on the edges, k 128 and batch 256 (valid AUC 0.9541 against
# the defaults' 0.9510), but k up to 256 and batch down to 128 did worse in the same 600 s (0.9532:
# slower trials, 79 of 90 pruned; benchmarks/README.md, "Tuning"), and again under the successive-halving
# pruner (seventh session: best k 256 / batch 128 trial 0.9524, trial 1 still the best), so the ranges stop there
EMBED_DIMS = (16, 32, 64, 128)
BATCH_SIZES = (256, 512, 1024, 2048, 4096)
# row-wise AdaGrad trains dense weights with Adam at the same lr, an AdaGrad-sized step for an MLP:
# models with an MLP search adam and adagrad only
OPTIMIZERS = {"without_mlp": ("adam", *ADAGRAD_FAMILY), "with_mlp": ("adam", "adagrad")}
DROPOUT = (0.0, 0.5)
MLPS = ("200,200", "400,400", "200,200,200", "400,400,400", "800,800,800")
WEIGHT_DECAYS = (0.0, 1e-6, 1e-5, 1e-4, 1e-3)
ADAGRAD_INITS = (0.0, 1e-3, 1e-2, 1e-1)  # long-tail data only: G0 = 0 cost Frappe 0.027 AUC (deepfm.defaults)
SCHEDULES = ("none", "plateau")  # plateau: reload the best epoch at lr/10 (FM on ratings' default)
# Trial 1 on click data, where it differs from the defaults: the all-AdaGrad recipe (FM's click
# defaults). For DeepFM on Frappe it was the one setting clearly above the defaults (valid AUC 0.9524,
# deepfm.defaults), left out of them for its cost on Criteo-sized inputs: a strong start for TPE.
CLICK_RECIPE = {"optimizer": "adagrad", "lr": 0.1, "dense_optimizer": "adagrad", "dense_lr": 0.1, "embed_reg": "occurrences",
                "embed_l2": 1e-2, "embed_dim": 64, "batch_size": 512}
SEARCHED_RECIPES = {"fm": FM_SEARCHED_RECIPE, "deepfm": DEEPFM_SEARCHED_RECIPE}
# The MLP's own optimiser and step (``dense_optimizer``, ``dense_lr``) are searched where the defaults set
# a step apart (DeepFM on recurring click ids: the tables at Adam 1e-2, the MLP at 1e-3), the step on the
# range of the MLP's optimiser; elsewhere the MLP steps at ``lr`` with the optimiser paired with
# ``optimizer``, as in the defaults. AdaGrad tables with an Adam MLP is what benchmarks/reference_frappe.py's
# DeepFM search found best on Frappe (valid 0.9548); in deepfm that recipe gave 0.9502, so it is searched, not seeded
DENSE_LR_BY_OPTIMIZER = {"adagrad": (1e-2, 0.5), "adam": (1e-4, 1e-2)}
MACHINE_SETTINGS = (("training", "threads"), ("training", "device"))  # best.toml leaves them to the machine unless fixed
TUNE_THREADS = 1  # per trial, unless --threads is given (Frappe DeepFM, shared 2 cores: 27.1 s vs 29.3 s with 2)
Log = Callable[[str], None]


def import_optuna():
    """Optuna, or a ``ConfigError`` that says how to install it."""
    try:
        import optuna
    except ImportError:
        raise ConfigError(f"deepfm tune needs Optuna: {INSTALL_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # deepfm prints one line per trial itself
    return optuna


@dataclass(frozen=True)
class Dimension:
    """One searched setting: ``section.key`` drawn by ``kind`` (log, uniform, choice, widths: a choice of
    comma-separated MLP widths) from ``space``; with ``when`` (another key, its values), only in trials
    where that key takes one of those values, under the Optuna name ``key_value`` (e.g. ``lr_adam``)."""

    section: str
    key: str
    kind: str
    space: tuple[Any, ...]
    when: tuple[str, tuple[Any, ...]] | None = None

    @property
    def name(self) -> str:
        return self.key if self.when is None else f"{self.key}_{self.when[1][0]}"

    def applies(self, values: dict[str, Any]) -> bool:
        """Whether this dimension is drawn when the other settings are ``values`` (by key)."""
        return self.when is None or values[self.when[0]] in self.when[1]

    def widened(self, default: Any) -> "Dimension":
        """This dimension with ``default`` inside it (a log range cannot hold 0: unchanged then)."""
        value = self.drawn_value(default)
        if self.kind in ("choice", "widths"):
            return self if value in self.space else Dimension(self.section, self.key, self.kind, (*self.space, value), self.when)
        low, high = self.space
        if self.kind == "log" and value <= 0:
            return self
        return Dimension(self.section, self.key, self.kind, (min(low, value), max(high, value)), self.when)

    def holds(self, default: Any) -> bool:
        value = self.drawn_value(default)
        return value in self.space if self.kind in ("choice", "widths") else self.space[0] <= value <= self.space[1]

    def drawn_value(self, setting: Any) -> Any:
        """A config value as Optuna draws it (MLP widths as the text ``400,400,400``)."""
        return ",".join(str(width) for width in setting) if self.kind == "widths" else setting

    def setting(self, drawn: Any) -> Any:
        """A drawn value as the config holds it."""
        return tuple(int(width) for width in drawn.split(",")) if self.kind == "widths" else drawn

    def draw(self, trial) -> Any:
        if self.kind == "log":
            return trial.suggest_float(self.name, *self.space, log=True)
        if self.kind == "uniform":
            return trial.suggest_float(self.name, *self.space)
        return trial.suggest_categorical(self.name, list(self.space))


def search_space(defaults: RunConfig, long_tail: bool = False) -> list[Dimension]:
    """What ``deepfm tune`` searches for ``defaults.model.name``, in drawing order: the optimiser, its
    learning rate (log range by optimiser, ``LR_BY_OPTIMIZER``; the MLP's own where the defaults give it
    one, ``DENSE_LR_BY_OPTIMIZER``), the form of the embedding L2 and its
    strength (log range by form), k, the batch size; with ``long_tail`` data AdaGrad's accumulator start;
    for models with an MLP its widths, dropout, batch norm and weight decay. Ranges are widened to hold
    ``defaults`` (the values the suite chose for the task: trial 0)."""
    with_mlp = defaults.model.name not in WITHOUT_MLP
    optimizers = OPTIMIZERS["with_mlp" if with_mlp else "without_mlp"]
    dims = [Dimension("training", "optimizer", "choice", optimizers)]
    dims += [Dimension("training", "lr", "log", LR_BY_OPTIMIZER["adam"], ("optimizer", ("adam",))),
             Dimension("training", "lr", "log", LR_BY_OPTIMIZER["adagrad"], ("optimizer", ADAGRAD_FAMILY))]
    if with_mlp and defaults.training.dense_lr is not None:
        dims += [Dimension("training", "dense_optimizer", "choice", tuple(DENSE_LR_BY_OPTIMIZER))]
        dims += [Dimension("training", "dense_lr", "log", bounds, ("dense_optimizer", (kind,)))
                 for kind, bounds in DENSE_LR_BY_OPTIMIZER.items()]
    dims += [Dimension("training", "embed_reg", "choice", tuple(EMBED_L2_BY_FORM))]
    dims += [Dimension("training", "embed_l2", "log", bounds, ("embed_reg", (form,))) for form, bounds in EMBED_L2_BY_FORM.items()]
    dims += [Dimension("model", "embed_dim", "choice", EMBED_DIMS), Dimension("training", "batch_size", "choice", BATCH_SIZES),
             Dimension("training", "lr_schedule", "choice", SCHEDULES)]
    if long_tail:
        dims.append(Dimension("training", "adagrad_init", "choice", ADAGRAD_INITS, ("optimizer", ADAGRAD_FAMILY)))
    if with_mlp:
        dims += [Dimension("model", "mlp", "widths", MLPS), Dimension("model", "dropout", "uniform", DROPOUT),
                 Dimension("model", "batch_norm", "choice", (True, False)),
                 Dimension("training", "weight_decay", "choice", WEIGHT_DECAYS)]
    values = settings_of(defaults)
    return [d.widened(values[d.key]) if d.applies(values) else d for d in dims]


def settings_of(config: RunConfig) -> dict[str, Any]:
    """Every model and training setting of ``config`` by key (the keys the search space names); the
    MLP's optimiser as it trains (unset: the one paired with ``optimizer``)."""
    from deepfm.training.optim import PAIRED_DENSE_OPTIMIZER

    values = dict(config.model) | dict(config.training)
    return values | {"dense_optimizer": values["dense_optimizer"] or PAIRED_DENSE_OPTIMIZER[values["optimizer"]]}


def drawn_settings(trial, dims: list[Dimension], base: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """One trial's settings by ``(section, key)``: each dimension that applies, drawn in order, over
    ``base`` (the settings by key); a dimension applies by the values drawn before it or ``base``'s."""
    values, drawn = dict(base), {}
    for dim in dims:
        if dim.applies(values):
            values[dim.key] = drawn[dim.section, dim.key] = dim.setting(dim.draw(trial))
    return drawn


def params_of(dims: list[Dimension], config: RunConfig) -> dict[str, Any]:
    """``config``'s settings as a trial's params: Optuna's names, each dimension that applies to them."""
    values = settings_of(config)
    return {d.name: d.drawn_value(values[d.key]) for d in dims if d.applies(values) and d.holds(values[d.key])}


def first_trials(dims: list[Dimension], defaults: RunConfig, task: str) -> list[dict[str, Any]]:
    """The trials to run first: ``defaults``, then on clicks ``CLICK_RECIPE`` and the model's
    ``SEARCHED_RECIPES`` over them, each where it differs from the trials before it."""
    first = [params_of(dims, defaults)]
    recipes = [CLICK_RECIPE, SEARCHED_RECIPES.get(defaults.model.name)] if task == "binary" else []
    for recipe in filter(None, recipes):
        settings = {(d.section, d.key): recipe[d.key] for d in dims if d.key in recipe}
        params = params_of(dims, build_config(merge(defaults.to_json_dict(), nested(settings)), source="tune"))
        first += [params] if params not in first else []
    return first


def nested(settings: dict[tuple[str, str], Any]) -> dict[str, Any]:
    """Settings by ``(section, key)`` as a nested config mapping (``{"training": {"lr": ..}, ..}``)."""
    mapping: dict[str, Any] = {}
    for (section, key), value in settings.items():
        mapping.setdefault(section, {})[key] = value
    return mapping


@dataclass
class TuneResult:
    """The finished search: every trial's record, the best trial's config, model and training record."""

    metric: str
    larger_is_better: bool
    trials: list[dict[str, Any]] = field(default_factory=list)
    best_config: RunConfig | None = None
    best_model: Any = None
    best_run: Any = None
    best_number: int | None = None
    interrupted: bool = False  # Ctrl-C ended the search before its trials or timeout did
    signal_number: int = 2  # the signal that did (SIGINT; SIGTERM or SIGHUP from a scheduler, as deepfm.cli.Stopped)


def tune(base: dict[str, Any], data, trials: int | None, timeout: float | None, log: Log,
         fixed: set[tuple[str, str]] = frozenset(), long_tail: bool = False) -> TuneResult:
    """Search ``base`` (a nested config mapping with the model's name and the task's defaults: trial 0)
    on ``data`` (``EncodedSplits`` whose ``valid`` is the validation rows), leaving the ``(section, key)``
    settings in ``fixed`` as ``base`` has them; at most ``trials`` trials, none started after
    ``timeout`` seconds. ``long_tail``: the data's ids are a long tail (``deepfm.defaults.id_shape``)."""
    optuna = import_optuna()
    from deepfm.experiments.compare import train_one

    defaults = build_config(base, source="tune")
    dims = [d for d in search_space(defaults, long_tail) if (d.section, d.key) not in fixed]
    metric, larger = data.encoder.task.selecting(defaults.training.select_by).selection
    result = TuneResult(metric, larger)
    study = optuna.create_study(direction="maximize" if larger else "minimize", sampler=sampler(optuna, defaults.training.seed),
                                pruner=pruner(optuna))
    for params in first_trials(dims, defaults, data.encoder.task.name):
        study.enqueue_trial(params)
    base_settings = settings_of(defaults)

    def objective(trial) -> float:
        settings = drawn_settings(trial, dims, base_settings)
        config = build_config(merge(base, nested(settings)), source="tune")
        trial.set_user_attr("settings", {key: value for (_, key), value in settings.items()})

        def report(record: dict[str, Any]) -> None:
            value = record.get("valid", {}).get(metric, math.nan)
            trial.report(value, record["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {record['epoch']} ({metric} {value:.5f})")

        model, run = train_one(config, data, lambda message: None, score_test=False, on_epoch=report)
        value = float(run_best(run, metric))
        trial.set_user_attr("epochs", len(run.history))
        trial.set_user_attr("best_epoch", run.best_epoch)
        if result.best_number is None or (value > best_value(result) if larger else value < best_value(result)):
            result.best_config, result.best_model, result.best_run, result.best_number = config, model, run, trial.number
        return value

    def progress(study, trial) -> None:
        record = trial_record(trial, metric)
        result.trials.append(record)
        log(describe_trial(record, metric, result))

    quiet, handlers = _NoInterruptTraceback(), logging.getLogger("optuna").handlers  # Optuna's own, on its root logger
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        study.optimize(objective, n_trials=trials, timeout=timeout, catch=(TrainingDiverged,), callbacks=[progress])
    except KeyboardInterrupt as stop:  # Ctrl-C ends the search as its timeout would, keeping the trials that finished
        if result.best_number not in {record["number"] for record in result.trials}:
            raise  # nothing finished, or the best trial's record was cut short
        result.interrupted, result.signal_number = True, getattr(stop, "signal_number", result.signal_number)
        log(f"interrupted: the search stops after {len(result.trials)} trials; the best is saved as at the end of a "
            "search, and the command exits as interrupted (Ctrl-C again stops its refit, if one is asked for, and "
            "saves the trial's own model)")
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)
    return result


class _NoInterruptTraceback(logging.Filter):
    """Optuna logs a trial that Ctrl-C stopped as failed, with the traceback, then as "failed with value None"; the
    search says it in one line (the objective returns a value or raises: no trial of its own ends with None)."""

    def filter(self, record: logging.LogRecord) -> bool:
        interrupted = record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt)
        return not (interrupted or "failed with value None" in record.getMessage())


STARTUP_TRIALS = 5  # random draws (after the defaults) before TPE models the trials; Optuna's default 10
# would leave a 600-s DeepFM search on Frappe (~10 trials) random throughout


def sampler(optuna, seed: int):
    """TPE over the joint space (``multivariate``; ``group``: the conditional lr and L2 ranges are
    modelled apart), seeded."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS, multivariate=True, group=True)


# Successive halving's rungs: epochs 2, 6, 18 (PRUNE_FIRST_EPOCH · PRUNE_KEEP_ONE_IN^r)
PRUNE_FIRST_EPOCH = 2
PRUNE_KEEP_ONE_IN = 3


def pruner(optuna):
    """Asynchronous successive halving by epoch: at epochs 2, 6 and 18 a trial goes on only if its
    validation metric is in the top third of *every* trial that reached that epoch (complete, pruned or
    running: the best n // 3 of the n there, or the best while n < 6). It replaced the median pruner, which
    compared with the completed trials alone: those are the survivors, the fast starters, so on Frappe's
    quiet 600-s FM search 412 of 441 trials stopped at epoch 2, and the best trial (top 8% of all trials
    at epoch 2, 0.9552 at epoch 20) sat exactly at the survivors' median there (benchmarks/README.md)."""
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=PRUNE_FIRST_EPOCH, reduction_factor=PRUNE_KEEP_ONE_IN,
                                                  min_early_stopping_rate=0)


def run_best(run, metric: str) -> float:
    """The validation ``metric`` of a run's best epoch."""
    return next(h["valid"][metric] for h in run.history if h["epoch"] == run.best_epoch)


def best_value(result: TuneResult) -> float:
    return run_best(result.best_run, result.metric)


def trial_record(trial, metric: str) -> dict[str, Any]:
    """What ``tune.json`` keeps of a trial."""
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() \
        if trial.datetime_complete and trial.datetime_start else None
    intermediate = trial.intermediate_values
    return {"number": trial.number, "state": trial.state.name.lower(), "params": trial.params,
            "settings": trial.user_attrs.get("settings", {}),
            metric: trial.value, "per_epoch": {str(epoch): value for epoch, value in sorted(intermediate.items())},
            "epochs": trial.user_attrs.get("epochs", max(intermediate, default=0)),
            "best_epoch": trial.user_attrs.get("best_epoch"), "seconds": round(seconds, 2) if seconds else None}


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def describe_trial(record: dict[str, Any], metric: str, result: TuneResult) -> str:
    """``trial 3 complete: lr 0.0123 ... -> valid auc 0.95123 (best 0.95321, trial 1) 12.3 s``."""
    params = " ".join(f"{k} {_shown(v)}" for k, v in record["params"].items())
    value = record[metric]
    outcome = f"valid {metric} {value:.5f}" if value is not None and record["state"] == "complete" else \
        f"pruned after epoch {record['epochs']}" if record["state"] == "pruned" else record["state"]
    best = f"best {best_value(result):.5f} (trial {result.best_number})" if result.best_number is not None else "no best yet"
    seconds = f" {record['seconds']:.1f} s" if record["seconds"] else ""
    return f"trial {record['number']} {record['state']}: {params} -> {outcome}; {best}{seconds}"


def toml_text(values: dict[str, Any]) -> str:
    """A nested config mapping as TOML (sections of scalars and arrays; None values are left out)."""

    def scalar(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value)
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(scalar(v) for v in value) + "]"
        return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's

    top = [f"{key} = {scalar(v)}" for key, v in values.items() if not isinstance(v, dict) and v is not None]
    sections = [f"\n[{key}]\n" + "\n".join(f"{k} = {scalar(x)}" for k, x in v.items() if x is not None)
                for key, v in values.items() if isinstance(v, dict)]
    return "\n".join(top) + "".join(sections) + "\n"


DEFAULT_TRIALS = 20  # when neither --trials nor --timeout is given
# The saved model: the best trial refitted on the training and validation rows together (``training.refit``;
# ``--refit off``: the best trial as it trained), as FLAML's retrain_full. Nested check (benchmarks/refit_nested.py:
# every 10th training row as validation, scored on the real validation split; seeds 2026 / 7; AUC gained by the
# refit): Frappe FM_SEARCHED_RECIPE +0.0021 / +0.0045, DeepFM tune's best +0.0042 / +0.0040; Adult the same
# settings FM +0.0026 / -0.0018, DeepFM +0.0011 / -0.0004; iPinYou at the defaults FM +0.019 / +0.014, DeepFM
# +0.022 / +0.030 (AUC ~0.55 there); FM on ratings gained on all three sets before (deepfm.defaults, refit)
TUNE_REFIT = "on"


def refit_best(config: RunConfig, data, run, held_out: bool, log: Log) -> tuple[Any, dict[str, Any]] | None:
    """The best trial (``config``, its ``run``) trained again from its seed on ``data``'s training and
    validation rows together for the epochs validation chose, its verdicts replayed
    (``deepfm.api.refit_model``), as ``training.refit`` asks: ``on``, or ``held-out`` with ``held_out``
    validation rows. Returns the model and what was done, or None (not asked for; streamed training rows,
    which a refit cannot join with the validation rows; FNN's pre-training, which a refit does not replay)."""
    from deepfm.api import refit_asked, refit_model, replays_pretraining
    from deepfm.data.batch import EncodedData

    if not refit_asked(config, held_out):
        return None
    if not isinstance(data.train, EncodedData):
        log("refit: not for streamed data; the saved model is the best trial's")
        return None
    if replays_pretraining(config):
        log("refit: FNN's FM pre-training is not replayed; the saved model is the best trial's")
        return None
    return refit_model(config, data.encoder, run.history[: run.best_epoch], data.train, data.valid, log=log)


def run_tune(config: RunConfig, trials: int | None, timeout: float | None, log: Log,
             progress: bool = False, fixed: set[tuple[str, str]] = frozenset()) -> dict[str, Any]:
    """``deepfm tune``: encode ``config``'s data once, search (the settings in ``fixed``, as
    ``(section, key)``, are not searched), and write ``config.out`` (the best trial's model
    directory, ``tune.json``, ``best.toml``); returns what ``tune.json`` holds."""
    from deepfm.api import Estimator
    from deepfm.experiments.compare import EncodedSplits, refuse_other_solvers
    from deepfm.experiments.report import versions
    from deepfm.runtime import configure as configure_runtime
    from deepfm.runtime import peak_rss_mb

    refuse_other_solvers(config.training.solver)  # before the data is read and before the validation rows are asked for
    began = time.perf_counter()
    if ("training", "threads") not in fixed:
        config = config.model_copy(update={"training": config.training.model_copy(update={"threads": TUNE_THREADS})})
    configure_runtime(config.training.threads)
    reader = Estimator(config)
    train, valid, holdout = reader.training_rows(config.data.train, config.data.valid, progress=progress)
    if valid is None:
        raise ConfigError("tune: selecting settings needs validation rows: give --valid, or a --valid-fraction above 0"
                          + (f" (at {config.data.valid_fraction:g} the training file's hashes held out no row: give a "
                             "larger one)" if config.data.valid_fraction else ""))
    for note in reader.encoder.fit_notes:
        log(note)
    if holdout is not None:
        log(holdout.describe())
    data = EncodedSplits(reader.encoder, train, valid)
    id_counts = reader.encoder.id_counts
    config = with_task_defaults(config, reader.encoder.task.name, id_counts)  # trial 0: what train would run
    if ("training", "refit") not in fixed:  # the saved model's rule, not a trial's: trials never refit
        config = config.model_copy(update={"training": config.training.model_copy(update={"refit": TUNE_REFIT})})
    base = {key: value for key, value in config.to_json_dict().items() if key != "out"}
    result = tune(base, data, trials, timeout, log, fixed, long_tail=id_shape(id_counts) == "long tail")
    if result.best_number is None:
        raise TrainingDiverged("tune: no trial finished (every one failed or was pruned); "
                               "see the trial lines above, or narrow the settings with flags")
    best = result.best_config
    try:
        refitted = refit_best(best, data, result.best_run, held_out=holdout is not None, log=log)
    except KeyboardInterrupt as stop:  # the search's result stands: saved as without a refit (Ctrl-C while saving
        # stops that)
        log("interrupted: the refit stops; the saved model is the best trial's, as trained in the search")
        refitted, result.interrupted = None, True
        result.signal_number = getattr(stop, "signal_number", result.signal_number)
    model, refit = refitted if refitted is not None else (result.best_model, None)
    validation = holdout.to_dict() if holdout is not None else {"source": "file", "path": config.data.valid}
    summary = {
        "model": best.model.name, "metric": result.metric, "direction": "maximize" if result.larger_is_better else "minimize",
        "validation": validation, "best_trial": result.best_number, "best_value": best_value(result),
        "best_params": next(t["params"] for t in result.trials if t["number"] == result.best_number),
        "refit": refit, "trials": result.trials, "seconds": round(time.perf_counter() - began, 1),
        "trials_asked": trials, "timeout": timeout, "interrupted": result.interrupted,
        **({"signal": result.signal_number} if result.interrupted else {}), "versions": versions(),
    }
    run = result.best_run
    metrics = {"task": data.encoder.task.name, "rows": len(train) if hasattr(train, "__len__") else train.num_rows,
               "ranks": 1, "valid_rows": len(valid), "validation": validation, "epochs": len(run.history),
               "best_epoch": run.best_epoch, "best_valid": next(h["valid"] for h in run.history if h["epoch"] == run.best_epoch),
               "history": run.history, "seconds": round(run.train_seconds, 3), "peak_rss_mb": round(peak_rss_mb(), 1),
               "tuned": {"trials": len(result.trials), "best_trial": result.best_number}}
    if refit is not None:
        metrics["refit"] = refit
    out = Path(config.out)
    writer = Estimator(best.model_copy(update={"out": str(out)}))
    writer.model, writer.encoder, writer.metrics = model, data.encoder, metrics
    writer.save(out, extra={"tune.json": summary})
    machine = {key for section, key in MACHINE_SETTINGS if (section, key) not in fixed}
    (out / "best.toml").write_text(best_toml(best, result, summary, machine), encoding="utf-8")
    return summary


def best_toml(best: RunConfig, result: TuneResult, summary: dict[str, Any], machine: set[str] = frozenset()) -> str:
    """``best.toml``: the best trial's whole config (the output directory left to ``--out``), its data files as
    absolute paths so that it reproduces from any working directory. The training settings in ``machine``
    (``threads``, ``device`` where the user did not fix them) are left to the machine that trains: the trials'
    one thread would pin a many-core machine's run to one core, a GPU's device fail on a CPU one."""
    from deepfm.api import applied_settings

    values = {key: value for key, value in applied_settings(best).items() if key != "out"}
    left = {key: values["training"].pop(key) for key in sorted(machine) if key in values["training"]}
    values["data"] = {key: str(Path(value).resolve()) if key in ("train", "valid") and value else value
                      for key, value in values["data"].items()}
    refit = summary["refit"]
    refitted = (f"# the saved model: refitted on {refit['rows']} rows (training + validation) for {refit['epochs']} epochs\n"
                if refit else "")
    cut = " (the search was interrupted: tune.json's interrupted)" if summary["interrupted"] else ""
    head = (f"# deepfm tune: trial {result.best_number} of {len(result.trials)}{cut}, valid {result.metric} "
            f"{summary['best_value']:.5f}\n{refitted}# reproduce: deepfm train --config THIS_FILE --out DIR (from any directory)\n")
    if left:
        trials = ", ".join(toml_text({key: value}).strip() for key, value in left.items())
        head += (f"# the trials ran with {trials}; the training machine chooses its own (add them under [training] "
                 "to repeat the trials' arithmetic bit for bit)\n")
    return head + toml_text(values)
