"""Train several models (or several settings of one) on ONE encoding, seeds and budget.

The encoder is fitted once on the training file; every variant and seed then reads the same
encoded arrays, so differences come from the models alone. Each run records its validation
metrics per epoch (``TrainResult.history``), its test metrics, its wall time (FNN's FM
pre-training included) and its parameter count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from deepfm import randomness
from deepfm.api import Estimator, applied_settings, new_model
from deepfm.config import RunConfig, build_config, merge
from deepfm.data.batch import EncodedData
from deepfm.data.encoders import FeatureEncoder
from deepfm.data.holdout import Holdout
from deepfm.defaults import with_task_defaults
from deepfm.errors import ConfigError, DataError
from deepfm.experiments.studies import STUDIES
from deepfm.models import MODELS
from deepfm.training.metrics import SELECTION, evaluate_predictions
from deepfm.runtime import configure as configure_runtime
from deepfm.training.trainer import Trainer, predict

PAPER_ORDER = ("lr", "fm", "fnn", "ipnn", "opnn", "pnn", "wide_deep", "fm_dnn", "deepfm")
Log = Callable[[str], None]


@dataclass
class Variant:
    """One column of the comparison: a label and the full config it trains with."""

    label: str
    config: RunConfig


@dataclass
class Run:
    seed: int
    test: dict[str, float]
    train_seconds: float
    best_epoch: int | None
    history: list[dict[str, Any]]
    test_predictions: np.ndarray | None = None  # kept for the first seed only (ROC curves)


@dataclass
class VariantResult:
    label: str
    model: str
    parameters: int
    config: dict[str, Any]
    runs: list[Run] = field(default_factory=list)

    def summary(self, metric: str) -> tuple[float, float]:
        """Mean and (sample) standard deviation of a test metric over seeds (std 0 for one run)."""
        values = np.array([run.test[metric] for run in self.runs], dtype=np.float64)
        return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


@dataclass
class EncodedSplits:
    encoder: FeatureEncoder
    train: EncodedData
    valid: EncodedData
    test: EncodedData | None = None  # None when tuning: the test file is never read
    holdout: Holdout | None = None  # how the validation rows were held out of the training file (no --valid file)


def parse_models(text: str) -> tuple[str, ...]:
    """``all`` (the paper's nine, in its table's order) or a comma-separated list of model names."""
    from deepfm.errors import ConfigError

    if text.strip() == "all":
        return PAPER_ORDER
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        from deepfm.data.tables import closest_name

        free = sorted(set(MODELS) - set(names))  # not a model named already ('fm,dfm' is not 'fm,fm')
        meant = [name if name in MODELS else closest_name(name, free) for name in names]
        raise ConfigError(f"--models: unknown {unknown or text!r}; choose 'all' or from {sorted(MODELS)}"
                          + (f" (did you mean --models {','.join(meant)}?)" if names and all(meant) else ""))
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # two rows of one name in the report, told apart by nothing (--seeds repeats a model's runs)
        raise ConfigError(f"--models: {', '.join(twice)} named twice; name each model once (--seeds runs it again)")
    return names


def model_variants(names: tuple[str, ...], base: dict[str, Any], overrides: dict[str, Any]) -> list[Variant]:
    """One variant per model: global defaults < its tuned defaults (``deepfm.defaults``, applied by
    ``build_config``) < ``base`` (a config file) < ``overrides`` (flags)."""
    variants = []
    for name in names:
        values = merge(merge(base, overrides), {"model": {"name": name}})
        variants.append(Variant(name, build_config(values, source="compare")))
    return variants


def study_variants(study: str, base: dict[str, Any], overrides: dict[str, Any]) -> list[Variant]:
    """DeepFM with one setting varied per the paper's section 3.3 (``STUDIES[study]``)."""
    from deepfm.errors import ConfigError

    if study not in STUDIES:
        raise ConfigError(f"--study: {study!r} is not a study; choose from {sorted(STUDIES)}")
    varied = {key for _, change in STUDIES[study] for key in change}
    given = sorted(varied & set(overrides.get("model", {})))
    if given:  # the study would set it over the flag in every variant, without a word
        raise ConfigError(f"--study {study} varies model.{given[0]}: leave out --{given[0].replace('_', '-')}")
    fixed = merge(merge(base, overrides), {"model": {"name": "deepfm"}})
    return [Variant(label, build_config(merge(fixed, {"model": change}), source="compare"))
            for label, change in STUDIES[study]]


BUDGET = ("epochs", "patience", "batch_size")  # the same for every model of a comparison


def with_model_defaults(config: RunConfig, encoder: FeatureEncoder) -> RunConfig:
    """``config`` with its model's defaults for the task and the ids, as deepfm train applies them once the data
    is read (``with_task_defaults``), but the comparison's budget (``BUDGET``) kept: every model trains as long."""
    budget = {key: getattr(config.training, key) for key in BUDGET}
    tuned = with_task_defaults(config, encoder.task.name, encoder.id_counts)
    counts = encoder.id_counts  # the rare-value threshold the encoding applied, and the one recipe: saved as they ran
    data = {"min_count": counts.min_count} if counts is not None and tuned.data.min_count is None else {}
    return tuned.model_copy(update={"data": tuned.data.model_copy(update=data),
                                    "training": tuned.training.model_copy(update=budget | {"portfolio": "off"})})


def encode_splits(config: RunConfig, train: str, valid: str | None, test: str) -> EncodedSplits:
    """Fit the encoder ONCE on ``train`` (a file or a glob pattern of files, in memory) and encode the three files with
    it, as ``deepfm train`` reads them; without ``valid``, validate on training rows held out as ``deepfm train`` holds
    them out (a seeded hash of each row's position; left out of the encoder's fit), the rest trained on; every model
    validates on the same rows. Without ``valid``, no fraction, or one that holds out no row, is an error: compare
    keeps each model's best epoch by validation."""
    if valid is None and not config.data.valid_fraction:
        raise ConfigError("--valid-fraction 0: compare keeps each model's best epoch by its validation rows; give --valid "
                          "or a --valid-fraction above 0")
    reader = Estimator(config.model_copy(update={"data": config.data.model_copy(update={"stream": "off"})}))
    rows, held, holdout = reader._training_data(train, None, hold_out=valid is None)
    if valid is not None:
        held = reader.encode(valid, with_labels=True)
    elif held is None:
        raise DataError(train, f"--valid-fraction {config.data.valid_fraction:g} holds out none of its {len(rows):,} "
                        "rows; give --valid or a larger --valid-fraction")
    return EncodedSplits(reader.encoder, rows, held, reader.encode(test, with_labels=True), holdout)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def refuse_other_solvers(solver: str) -> None:
    """Compare and tune train by gradient: another solver is a ``ConfigError`` (say it before any data is read, and
    before a model's config is checked: its 'fits model fm only' would name the wrong reason)."""
    if solver != "gradient":
        raise ConfigError(f"training.solver {solver!r}: compare and tune train by gradient; "
                          "use deepfm train for the sampling and ALS solvers")


@randomness.own_generator()  # its draws its own, as a fit's (trials in threads)
def train_one(config: RunConfig, data: EncodedSplits, log: Log, score_test: bool = True,
              on_epoch: Callable[[dict[str, Any]], None] | None = None) -> tuple[torch.nn.Module, Run]:
    """Train one variant with one seed (FNN: FM pre-training first) and score it on test
    (``score_test=False``: leave test untouched, e.g. when tuning). ``on_epoch``: the trainer's hook,
    called with each epoch's record (its validation metrics under ``valid``)."""
    task, seed = data.encoder.task, config.training.seed
    refuse_other_solvers(config.training.solver)
    config.check_batch_norm_rows()  # (as a fit checks it; tune's trials come here alone)
    model = new_model(config, data.encoder)
    began = time.perf_counter()
    if config.model.name == "fnn" and config.model.pretrain:
        from deepfm.models.fnn import pretrain_with_fm

        pretrain_with_fm(model, task, config.training, data.train, data.valid, log)  # as deepfm train does
    result = Trainer(model, task, config.training, progress=False, log=log, on_epoch=on_epoch).fit(data.train, data.valid)
    seconds = time.perf_counter() - began
    if not score_test:
        return model, Run(seed, {}, seconds, result.best_epoch, result.history)
    predictions = predict(model, task, data.test, config.training.device)
    test = evaluate_predictions(task, data.test.labels, predictions)
    return model, Run(seed, test, seconds, result.best_epoch, result.history, predictions)


def load_start_up_costs() -> None:
    """Load what a process's first fit loads inside its training (scikit-learn's metrics, ~1 s; numba's CPU target,
    ~0.6 s), so that each model's seconds are its own. On Frappe, LR first in ``--models lr,fm`` took 2.9 s for its
    first seed against 0.3 s for its second; 0.6 s after this."""
    import sklearn.metrics  # noqa: F401

    from deepfm.compiled import load_compiler

    load_compiler()


def run_variants(variants: list[Variant], data: EncodedSplits, seeds: int, log: Log,
                 results: list[VariantResult] | None = None) -> list[VariantResult]:
    """Every variant × seeds ``seed, seed+1, …`` (the base seed from its training config), the process's start-up
    costs loaded first (``load_start_up_costs``). Each variant joins ``results`` with its first finished run, so a
    caller that Ctrl-C stops still holds every run that finished."""
    name, _ = SELECTION[data.encoder.task]
    results = [] if results is None else results
    for variant in variants:  # what no model of them can train is said before any trains
        variant.config.check_batch_norm_rows()
    load_start_up_costs()
    for variant in variants:
        variant = Variant(variant.label, with_model_defaults(variant.config, data.encoder))
        configure_runtime(variant.config.training.threads)  # each model's own (LR and FM: 1), as train runs it
        result: VariantResult | None = None
        for offset in range(seeds):
            training = variant.config.training.model_copy(update={"seed": variant.config.training.seed + offset})
            config = variant.config.model_copy(update={"training": training})
            log(f"{variant.label}: seed {training.seed}")
            model, run = train_one(config, data, lambda m: log("  " + m))
            if offset > 0:
                run.test_predictions = None
            if result is None:
                result = VariantResult(variant.label, config.model.name, count_parameters(model),
                                       applied_settings(variant.config))  # deepfm train --config takes it
                results.append(result)
            result.runs.append(run)
            log(f"{variant.label}: test {name} {run.test[name]:.5f} in {run.train_seconds:.1f} s")
    return results
