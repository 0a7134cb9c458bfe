"""``deepfm tune``: search a model's settings with Optuna, on validation rows only.

The data is encoded once (the encoder fitted on the training file) and every trial trains on the
same arrays with the run's seed, so trials differ by their settings alone. Each trial reports its
validation metric after every epoch (the trainer's ``on_epoch`` hook) to Optuna's median pruner,
which stops a trial that is worse than the median of earlier trials at the same epoch. The sampler
is TPE, seeded by ``training.seed``; the first trial is the model's defaults.

The search space (``search_space``) is drawn from the config's own fields: the optimiser choices
are ``TrainingConfig``'s ``optimizer`` Literal, and every range is widened to hold the default.

Writes ``OUT/`` as a model directory of the best trial, ``OUT/tune.json`` (every trial: number,
state, params, value, epochs) and ``OUT/best.toml``, a config that ``deepfm train --config
OUT/best.toml --out DIR`` reproduces the best trial with. A test file is never read.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, get_args

from deepfm.config import RunConfig, TrainingConfig, build_config, merge
from deepfm.errors import ConfigError, TrainingDiverged

WITHOUT_MLP = ("lr", "fm")
INSTALL_HINT = "pip install 'deepfm[tune]'"

# (section, key) -> how Optuna draws it; ranges are widened to hold the model's default
FLOAT_LOG = {
    ("training", "lr"): (1e-4, 3e-1),
    ("training", "embed_l2"): (1e-7, 3e-1),
}
EMBED_DIM = (4, 128)  # drawn log-uniformly as an integer (Frappe FM trials crowded at 64 when it was the top)
BATCH_SIZES = (256, 512, 1024, 2048, 4096)
DROPOUT = (0.0, 0.6)  # models with an MLP only
Log = Callable[[str], None]


def import_optuna():
    """Optuna, or a ``ConfigError`` that says how to install it."""
    try:
        import optuna
    except ImportError:
        raise ConfigError(f"deepfm tune needs Optuna: {INSTALL_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # deepfm prints one line per trial itself
    return optuna


def optimizer_names() -> tuple[str, ...]:
    """The optimisers ``training.optimizer`` accepts (its Literal type), in declaration order."""
    return tuple(get_args(TrainingConfig.model_fields["optimizer"].annotation))


@dataclass(frozen=True)
class Dimension:
    """One searched setting: ``section.key`` drawn by ``kind`` (log, int_log, uniform, choice) from ``space``."""

    section: str
    key: str
    kind: str
    space: tuple[Any, ...]

    @property
    def name(self) -> str:
        return self.key

    def widened(self, default: Any) -> "Dimension":
        """This dimension with ``default`` inside it (a log range cannot hold 0: unchanged then)."""
        if self.kind == "choice":
            return self if default in self.space else Dimension(self.section, self.key, self.kind, (*self.space, default))
        low, high = self.space
        if self.kind in ("log", "int_log") and default <= 0:
            return self
        return Dimension(self.section, self.key, self.kind, (min(low, default), max(high, default)))

    def holds(self, value: Any) -> bool:
        return value in self.space if self.kind == "choice" else self.space[0] <= value <= self.space[1]

    def draw(self, trial) -> Any:
        if self.kind == "log":
            return trial.suggest_float(self.name, *self.space, log=True)
        if self.kind == "int_log":
            return trial.suggest_int(self.name, *self.space, log=True)
        if self.kind == "uniform":
            return trial.suggest_float(self.name, *self.space)
        return trial.suggest_categorical(self.name, list(self.space))


def search_space(defaults: RunConfig) -> list[Dimension]:
    """What ``deepfm tune`` searches for ``defaults.model.name``: the learning rate and embedding L2
    (log-uniform), the optimiser (every name the config accepts), the embedding width k (log-uniform
    integer), the batch size, and dropout for models with an MLP; ranges widened to hold ``defaults``."""
    dims = [Dimension(section, key, "log", bounds) for (section, key), bounds in FLOAT_LOG.items()]
    dims += [Dimension("training", "optimizer", "choice", optimizer_names()),
             Dimension("model", "embed_dim", "int_log", EMBED_DIM),
             Dimension("training", "batch_size", "choice", BATCH_SIZES)]
    if defaults.model.name not in WITHOUT_MLP:
        dims.append(Dimension("model", "dropout", "uniform", DROPOUT))
    return [d.widened(getattr(getattr(defaults, d.section), d.key)) for d in dims]


def overrides_of(params: dict[str, Any], dims: list[Dimension]) -> dict[str, Any]:
    """A trial's params as a nested config mapping (``{"training": {"lr": ..}, "model": {..}}``)."""
    nested: dict[str, Any] = {}
    for dim in dims:
        nested.setdefault(dim.section, {})[dim.key] = params[dim.name]
    return nested


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


def tune(base: dict[str, Any], data, trials: int | None, timeout: float | None, log: Log,
         fixed: set[tuple[str, str]] = frozenset()) -> TuneResult:
    """Search ``base`` (a nested config mapping with the model's name) on ``data`` (``EncodedSplits``
    whose ``valid`` is the validation rows), leaving the ``(section, key)`` settings in ``fixed`` as
    ``base`` has them; at most ``trials`` trials, none started after ``timeout`` seconds."""
    optuna = import_optuna()
    from deepfm.experiments.compare import train_one

    defaults = build_config(base, source="tune")
    dims = [d for d in search_space(defaults) if (d.section, d.key) not in fixed]
    metric, larger = data.encoder.task.selection
    result = TuneResult(metric, larger)
    sampler = optuna.samplers.TPESampler(seed=defaults.training.seed)  # 10 random trials, then TPE
    pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2)  # from epoch 2 on
    study = optuna.create_study(direction="maximize" if larger else "minimize", sampler=sampler, pruner=pruner)
    first = {d.name: getattr(getattr(defaults, d.section), d.key) for d in dims}
    study.enqueue_trial({name: value for (name, value), d in zip(first.items(), dims) if d.holds(value)})

    def objective(trial) -> float:
        params = {d.name: d.draw(trial) for d in dims}
        config = build_config(merge(base, overrides_of(params, dims)), source="tune")

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

    study.optimize(objective, n_trials=trials, timeout=timeout, catch=(TrainingDiverged,), callbacks=[progress])
    return result


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


def run_tune(config: RunConfig, trials: int | None, timeout: float | None, log: Log,
             progress: bool = False, fixed: set[tuple[str, str]] = frozenset()) -> dict[str, Any]:
    """``deepfm tune``: encode ``config``'s data once, search (the settings in ``fixed``, as
    ``(section, key)``, are not searched), and write ``config.out`` (the best trial's model
    directory, ``tune.json``, ``best.toml``); returns what ``tune.json`` holds."""
    from deepfm.api import Estimator
    from deepfm.experiments.compare import EncodedSplits
    from deepfm.runtime import configure as configure_runtime
    from deepfm.training.trainer import peak_rss_mb

    began = time.perf_counter()
    configure_runtime(config.training.threads)
    reader = Estimator(config)
    train, valid, holdout = reader.training_rows(config.data.train, config.data.valid, progress=progress)
    if valid is None:
        raise ConfigError("tune: selecting settings needs validation rows: give --valid, or a --valid-fraction above 0")
    for note in reader.encoder.fit_notes:
        log(note)
    if holdout is not None:
        log(holdout.describe())
    data = EncodedSplits(reader.encoder, train, valid)
    base = {key: value for key, value in config.to_json_dict().items() if key != "out"}
    result = tune(base, data, trials, timeout, log, fixed)
    if result.best_number is None:
        raise TrainingDiverged("tune: no trial finished (every one failed or was pruned); "
                               "see the trial lines above, or narrow the settings with flags")
    best = result.best_config
    validation = holdout.to_dict() if holdout is not None else {"source": "file", "path": config.data.valid}
    summary = {
        "model": best.model.name, "metric": result.metric, "direction": "maximize" if result.larger_is_better else "minimize",
        "validation": validation, "best_trial": result.best_number, "best_value": best_value(result),
        "best_params": next(t["params"] for t in result.trials if t["number"] == result.best_number),
        "trials": result.trials, "seconds": round(time.perf_counter() - began, 1),
    }
    run = result.best_run
    metrics = {"task": data.encoder.task.name, "rows": len(train) if hasattr(train, "__len__") else train.num_rows,
               "ranks": 1, "valid_rows": len(valid), "validation": validation, "epochs": len(run.history),
               "best_epoch": run.best_epoch, "best_valid": next(h["valid"] for h in run.history if h["epoch"] == run.best_epoch),
               "history": run.history, "seconds": round(run.train_seconds, 3), "peak_rss_mb": round(peak_rss_mb(), 1),
               "tuned": {"trials": len(result.trials), "best_trial": result.best_number}}
    out = Path(config.out)
    writer = Estimator(best.model_copy(update={"out": str(out)}))
    writer.model, writer.encoder, writer.metrics = result.best_model, data.encoder, metrics
    writer.save(out, extra={"tune.json": summary})
    (out / "best.toml").write_text(best_toml(best, result, summary), encoding="utf-8")
    return summary


def best_toml(best: RunConfig, result: TuneResult, summary: dict[str, Any]) -> str:
    """``best.toml``: the best trial's whole config (the output directory left to ``--out``)."""
    values = {key: value for key, value in best.to_json_dict().items() if key != "out"}
    head = (f"# deepfm tune: trial {result.best_number} of {len(result.trials)}, valid {result.metric} "
            f"{summary['best_value']:.5f}\n# reproduce: deepfm train --config best.toml --out DIR\n")
    return head + toml_text(values)
