"""Typed, frozen, validated run configuration.

One ``RunConfig`` drives a run; it comes from CLI flags, a TOML/YAML file, or both
(flags win). It is validated before any data is read, and saved in the model
directory so a model explains how it was made.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deepfm.config_lines import KeyLines, line_of
from deepfm.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Format = Literal["auto", "csv", "tsv", "parquet", "criteo", "libfm", "libffm"]
Task = Literal["auto", "binary", "regression", "multiclass", "ordinal"]
Solver = Literal["gradient", "mcmc", "als"]
ModelName = Literal["lr", "fm", "deepfm", "fnn", "ipnn", "opnn", "pnn", "wide_deep", "fm_dnn"]
Optimizer = Literal["adam", "adagrad", "sgd", "rowwise_adagrad"]
DenseOptimizer = Literal["adam", "adagrad", "sgd"]
EmbedRegularizer = Literal["rows", "occurrences"]
LrSchedule = Literal["none", "plateau"]
Refit = Literal["off", "held-out", "on"]
Portfolio = Literal["auto", "off"]
NumericEncoding = Literal["scale", "bucket"]
Precision = Literal["fp32", "bf16"]
SelectBy = Literal["auto", "auc", "logloss", "accuracy", "rmse", "mae"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # lr inf: refused, not a NaN loss later


class DataConfig(_Frozen):
    """Where the data is and how its columns become features."""

    train: str | None = None
    valid: str | None = None
    valid_fraction: float = Field(0.1, ge=0, lt=1, description="without a valid file: the share of training rows "
                                  "held out (each by a seeded hash of its position; not in the vocabularies) for early stopping; 0: none, train on every row. mcmc/als stop at their sweeps: they hold "
                                  "rows out (to score them) only where this is set")
    format: Format = "auto"
    label: str = "label"
    positive: str | None = Field(None, description="binary: the label value that means 1 (e.g. >50K); the one other value means 0")
    one_vs_rest: bool = Field(False, description="with positive: every other label value means 0 (one value against the "
                                                 "rest, e.g. rating 5 against 1-4) instead of the labels holding two values")
    task: Task = "auto"
    weight: str | None = Field(None, description="a column of sample weights (not a feature): each row's weight in the "
                                                 "loss and in the validation/evaluation metrics")
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    multi: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    multi_separator: str = Field("|", min_length=1, max_length=1)
    min_count: int | None = Field(None, ge=1, description="values seen fewer times in train share the rare bucket "
                                  "(unset: 1; 10 where the ids are a long tail of 10,000+ rows, deepfm.defaults.rare_value_threshold)")
    hash_buckets: int = Field(0, ge=0, description="hash fields with more distinct values than this (0: never)")
    numeric_encoding: NumericEncoding = "scale"
    numeric_buckets: int = Field(16, ge=2, le=1024)
    stream: Literal["auto", "on", "off"] = Field(
        "auto", description="read the training file chunk by chunk every epoch (auto: when it would not fit in memory)")
    chunk_rows: int = Field(65_536, ge=1, description="rows per chunk when reading files chunk by chunk")
    shuffle_window: int = Field(8, ge=1, description="streaming: chunks whose rows are shuffled together")

    @model_validator(mode="after")
    def _one_vs_rest_needs_positive(self) -> "DataConfig":
        if self.one_vs_rest and self.positive is None:
            raise ValueError("one_vs_rest: name the positive label value too (--positive VALUE)")
        for name, value in (("one_vs_rest", self.one_vs_rest), ("positive", self.positive is not None)):
            if value and self.task not in ("auto", "binary"):
                raise ValueError(f"{name}: a binary task's option (the task is {self.task})")
        return self

    def columns_named_twice(self) -> dict[str, list[str]]:
        """Columns that two of the kind options name (``--multi user --numeric user``), with those options: one would
        be silently dropped. Refused when a run reads its data (models saved before the rule still load)."""
        roles: dict[str, list[str]] = {}
        for key in ("categorical", "numeric", "multi", "ignore"):
            for name in getattr(self, key):
                roles.setdefault(name, []).append(key)
        if self.weight is not None:
            roles.setdefault(self.weight, []).append("weight")
        return {name: keys for name, keys in roles.items() if len(keys) > 1}

    @field_validator("categorical", "numeric", "multi", "ignore", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        """``"a, b"`` -> ``("a", "b")``; ``""`` alone names the column whose header is empty (pandas' index, written
        by ``to_csv``): ``--ignore ''``."""
        if value == "":
            return ("",)
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value


def changed_keys(section: BaseModel, keys: Iterable[str]) -> list[str]:
    """Those of ``keys`` set in ``section`` to another value than their default."""
    fields = type(section).model_fields
    return [key for key in keys if key in section.model_fields_set
            and getattr(section, key) != fields[key].get_default(call_default_factory=True)]


class ModelConfig(_Frozen):
    """Architecture. The DeepFM paper's k=10 and 400-400-400 ReLU; dropout 0.2 with batch norm instead
    of the paper's 0.5 without, which trained better on Frappe's validation split (docs/results)."""

    name: ModelName = "deepfm"
    embed_dim: int = Field(10, ge=1, le=1024)
    mlp: tuple[int, ...] = (400, 400, 400)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    activation: Literal["relu", "tanh", "sigmoid"] = "relu"
    batch_norm: bool = True
    pretrain: bool = Field(True, description="fnn only: initialise from an FM trained first on the same data")
    mlp_output_init: Literal["random", "zero"] = Field(
        "random", description="deepfm only: zero starts the MLP's output layer at 0, so the model starts as its FM part "
                              "and the deep part adds what training finds (DeepFM's default on ratings)")

    def unused_keys(self, changed_only: bool = False) -> list[str]:
        """The keys set here (not defaults) that this model does not read: ``mlp`` for an FM, ``pretrain`` but for FNN;
        ``changed_only``: of those, the ones set to another value than the default (a loaded model's config sets
        every key)."""
        deep = {"embed_dim", "mlp", "dropout", "activation", "batch_norm"}
        used = {"lr": set(), "fm": {"embed_dim"}, "deepfm": deep | {"mlp_output_init"}, "fnn": deep | {"pretrain"}
                }.get(self.name, deep)
        keys = [key for key in type(self).model_fields if key in self.model_fields_set and key not in used | {"name"}]
        return changed_keys(self, keys) if changed_only else keys

    def unused_note(self, keys: list[str]) -> str:
        """The log line for ``keys`` this model does not read (``unused_keys``, or those of them a flag set)."""
        return (f"model {self.name} does not use {', '.join(f'model.{key}' for key in keys)}: "
                f"{'they are' if len(keys) > 1 else 'it is'} not applied")

    @field_validator("mlp", mode="before")
    @classmethod
    def _parse_mlp(cls, value: Any) -> Any:
        if isinstance(value, str):  # "400,400,400" or the paper's "400-400-400"
            parts = [v.strip() for v in value.replace("-", ",").split(",")]
            if not all(parts) or not all(v.isdigit() for v in parts):  # "-400": a sign, not a separator
                raise ValueError(f"{value!r}: give the hidden layers' widths as positive integers, e.g. 400,400,400")
            return tuple(int(v) for v in parts)
        return value

    @field_validator("mlp")
    @classmethod
    def _positive_widths(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(w <= 0 for w in value):
            raise ValueError("every MLP width must be a positive integer")
        return value


class TrainingConfig(_Frozen):
    """Optimisation, early stopping and checkpointing."""

    epochs: int = Field(20, ge=1, description="most passes over the training rows (FM and DeepFM on regression ratings: 80, a task default)")
    batch_size: int = Field(512, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Optimizer = Field("adam", description="adam; adagrad; sgd; rowwise_adagrad: AdaGrad with one accumulator "
                                                     "per embedding row for the tables, Adam for dense weights")
    dense_optimizer: DenseOptimizer | None = Field(
        None, description="the optimiser of the dense weights (MLP, batch norm, bias); unset: the one that goes with "
                          "optimizer (adam, adagrad, sgd: the same; rowwise_adagrad: adam)")
    dense_lr: float | None = Field(None, gt=0, description="the dense weights' learning rate (unset: lr)")
    adagrad_init: float = Field(0.0, ge=0, description="adagrad, rowwise_adagrad: the accumulators' start G0 (TensorFlow's "
                                                       "initial_accumulator_value); above 0, a rarely updated id steps "
                                                       "in proportion to its gradient instead of by ±lr")
    embed_l2: float = Field(0.1, ge=0, description="L2 strength on latent factors V (see embed_reg)")
    linear_l2: float | None = Field(None, ge=0, description="L2 strength on first-order weights w (same form as "
                                                            "embed_reg; unset: embed_l2)")
    embed_reg: EmbedRegularizer = Field(
        "rows", description="rows: λ·v on each distinct row a batch touches (lazy L2); occurrences: the penalty "
                            "λ·mean over the batch of Σ_f ‖v_f‖², i.e. 2λ·(count in batch / batch size)·v per row")
    lr_schedule: LrSchedule = Field(
        "none", description="plateau: when validation does not improve, reload the best epoch's weights and divide "
                            "the learning rate by 10 (needs validation data)")
    refit: Refit = Field(
        "off", description="after early stopping, train again from the start on the training and validation rows "
                           "together for the epochs validation chose (the same lr drops) and save that model; "
                           "held-out: only when the validation rows were held out of the training data "
                           "(valid_fraction, no valid file; in-memory gradient training in one process); on: also "
                           "with a valid file (true/false in a config mean on/off)")
    portfolio: Portfolio = Field(
        "auto", description="auto: where deepfm.defaults lists several default recipes for the model, task and ids "
                            "(PORTFOLIOS), train one model per recipe from the same seed and keep the one with the "
                            "best validation metric (a later recipe must beat the one kept by more than the standard "
                            "error of the difference; within it, the other metric decides) (in-memory gradient "
                            "training in one process, with validation rows, and none of the recipes' keys set by the "
                            "user); off: the first recipe, the defaults")
    weight_decay: float = Field(0.0, ge=0, description="L2 on dense (MLP) weights")
    solver: Solver = Field("gradient", description="what fits the parameters: gradient (minibatch SGD/Adam); mcmc "
                                                   "(Gibbs sampling of a Bayesian FM, libFM's MCMC) or als (alternating "
                                                   "least squares), model fm only")
    sweeps: int = Field(200, ge=1, description="mcmc/als: passes over every parameter (they replace epochs)")
    burn_in: int | None = Field(None, ge=0, description="mcmc: first sweeps whose samples are dropped (default a tenth)")
    samples: int = Field(0, ge=0, description="mcmc: posterior samples the model keeps, evenly spaced over the sweeps "
                                              "after the burn-in (0: every one)")
    als_l2: float = Field(10.0, ge=0, description="als: λ of w and V (the regularised sum of squares)")
    seed: int = Field(2026, ge=0, lt=2**63, description="draws the starting weights, the batches' order and dropout")
    patience: int = Field(2, ge=0, description="epochs without improvement before stopping (0: never stop early)")
    min_improvement: float = Field(
        0.0, ge=0, lt=1, description="the relative gain of the validation metric an epoch needs to count as an "
                                     "improvement (its weights kept, the patience and the plateau schedule reset)")
    select_by: SelectBy = Field(
        "auto", description="the validation metric that keeps the best epoch, stops early and chooses among the "
                            "portfolio's recipes: auto is the task's (binary auc, regression rmse, multiclass and "
                            "ordinal logloss); binary: auc or logloss (probabilities to bid or calibrate with); "
                            "regression: rmse or mae; multiclass: logloss, accuracy or auc; ordinal: those or rmse, mae")
    checkpoint_every: int = Field(0, ge=0, description="also checkpoint every N steps (0: once per epoch)")
    threads: int = Field(0, ge=0, description="torch intra-op threads (0: one per core; FM and LR default to 1)")
    device: str = "cpu"
    precision: Precision = Field(
        "fp32", description="bf16: the MLP's hidden layers in bfloat16 (autocast; weights, embeddings, the FM term "
                            "and the output layer stay fp32); fast on CPUs with AVX512-BF16/AMX and on GPUs")


    @field_validator("refit", mode="before")
    @classmethod
    def _refit_from_bool(cls, value: Any) -> Any:
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _burn_in_within_sweeps(self) -> "TrainingConfig":
        if self.solver == "mcmc" and self.burn_in is not None and self.burn_in >= self.sweeps:
            raise ValueError(f"burn_in {self.burn_in} leaves no sample of the {self.sweeps} sweeps; lower it or "
                             "raise training.sweeps")
        return self

    @property
    def burn_in_sweeps(self) -> int:
        """mcmc: the sweeps whose samples are dropped, as the sampler runs them (``burn_in``, unset: a tenth)."""
        return self.sweeps // 10 if self.burn_in is None else self.burn_in

    @property
    def kept_samples(self) -> int:
        """mcmc: how many posterior samples the model holds."""
        after_burn_in = self.sweeps - self.burn_in_sweeps
        return min(self.samples, after_burn_in) if self.samples else after_burn_in


# What each solver other than ``gradient`` fits: the model, and the tasks it has a likelihood for.
SOLVER_TASKS = {"mcmc": ("regression", "binary", "ordinal"), "als": ("regression",)}


class RunConfig(_Frozen):
    """Everything a ``deepfm train`` run needs."""

    out: str | None = None
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()

    @model_validator(mode="after")
    def _solver_fits_model_and_task(self) -> "RunConfig":
        check_solver(self.training.solver, self.model.name, self.data.task)
        return self

    def check_batch_norm_rows(self) -> None:
        """A ConfigError where the run would train batch norm on batches of one row (``--batch-size 1``): checked
        when a fit starts, not when a config is read (a model directory of an older version loads as it was)."""
        from deepfm.errors import ConfigError

        if (self.training.batch_size == 1 and self.training.solver == "gradient" and self.model.batch_norm
                and "batch_norm" not in ModelConfig(name=self.model.name, batch_norm=True).unused_keys()):
            raise ConfigError(f"training.batch_size 1: {self.model.name}'s batch norm needs at least 2 rows a batch "
                              "(model.batch_norm); --batch-size 2 or more, or batch_norm = false in the [model] section")

    def to_json_dict(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())


def check_solver(solver: str, model: str, task: str) -> None:
    """Refuse a model or task the solver cannot fit (``task`` auto passes until the data decides it)."""
    if solver == "gradient":
        return
    if model != "fm":
        raise ValueError(f"training.solver {solver} fits model fm only (model.name is {model}); use --model fm, "
                         "or --solver gradient for the other models")
    if task != "auto" and task not in SOLVER_TASKS[solver]:
        raise ValueError(f"training.solver {solver} fits the tasks {', '.join(SOLVER_TASKS[solver])}, not {task}"
                         + ("; --solver mcmc fits binary (probit) and ordinal too" if solver == "als" else
                            "; --task ordinal for ordered ratings, or --solver gradient"))


def _format_validation_error(error: ValidationError, source: str, key_lines: KeyLines) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        hint = (_closest_key(item["loc"]) if item["type"] == "extra_forbidden" else
                _closest_choice(item) if item["type"] == "literal_error" else "")
        line = line_of(key_lines, item["loc"])
        where = source if line is None else f"{source}:{line}"
        lines.append(f"{where}: {key}: {item['msg']}{hint}" if key else f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


# models of the field that this library does not build, and what it offers instead (model.name's error says so
# after the name typed)
_FFM = ("(field-aware FM) is not built here: a libFFM file's fields group its features for deepfm, fnn and the PNN "
        "models, and make MCMC's hyperprior groups; fm reads its features as libFM would")
OTHER_MODELS = {"ffm": _FFM, "fwfm": _FFM, "field_aware_fm": _FFM, "fieldaware": _FFM,
                **{name: "is not built here; the models are lr, fm, deepfm and the DeepFM paper's baselines"
                   for name in ("xdeepfm", "dcn", "dcnv2", "autoint", "nfm", "afm", "din", "dien")}}


def _closest_choice(item: dict) -> str:
    """For a value outside a key's choices: " (did you mean 'deepfm'?)" where one is the value in other case or close."""
    import difflib
    import re

    choices = re.findall(r"'([^']*)'", str(item.get("ctx", {}).get("expected", "")))
    typed = str(item.get("input"))
    if item.get("loc") == ("model", "name") and typed.lower().replace("-", "_") in OTHER_MODELS:
        return f" ({typed} {OTHER_MODELS[typed.lower().replace('-', '_')]})"
    close = [choice for choice in choices if choice.lower() == typed.lower()] or difflib.get_close_matches(
        typed.lower(), choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _closest_key(loc: tuple) -> str:
    """For an unknown key at ``loc`` (section, key): " (did you mean section.other?)" where a known key is close."""
    import difflib

    section: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        field = section.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        section = annotation
    if len(loc) == 2:  # a key of another section (training.task is data.task), before a close key of this one
        for name, field in RunConfig.model_fields.items():
            if name != loc[0] and isinstance(field.annotation, type) and loc[1] in field.annotation.model_fields:
                return f" ({loc[1]} is a key of the {name} section: {name}.{loc[1]})"
    close = difflib.get_close_matches(str(loc[-1]), list(section.model_fields), n=1, cutoff=0.75)
    return f" (did you mean {'.'.join(str(p) for p in (*loc[:-1], close[0]))}?)" if close else ""


def build_config(values: dict[str, Any], source: str = "config", lines: KeyLines | None = None) -> RunConfig:
    """Validate a nested mapping into a ``RunConfig``; errors name the offending key, as ``source:line``
    where ``lines`` (``config_lines.key_lines`` of the file ``source``) says where it was set.

    The chosen model's tuned defaults (``deepfm.defaults``) go under ``values``: what is set wins.
    """
    from deepfm.defaults import model_defaults

    model = values.get("model") if isinstance(values.get("model"), dict) else {}
    training = values.get("training") if isinstance(values.get("training"), dict) else {}
    values = merge(model_defaults(str(model.get("name", "deepfm")), str(training.get("solver", "gradient"))), values)
    try:
        return RunConfig.model_validate(values)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, source, lines or {})) from None


def saved_run(values: dict[str, Any]) -> dict[str, Any]:
    """A model directory's saved run settings as this version validates them: what earlier versions accepted and
    ignored is left out (``positive`` with a task other than binary), so that their models still load."""
    data = values.get("data") if isinstance(values.get("data"), dict) else {}
    if data.get("positive") is not None and data.get("task", "auto") not in ("auto", "binary"):
        values = {**values, "data": {**data, "positive": None}}
    return values


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON config file into a nested mapping (not yet validated). JSON is read as the YAML it
    is (a model's config in compare's results.json, say), so its errors and keys have lines as YAML's do."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            values = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml", ".json"):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"{path}: config files must end in .toml, .yaml, .yml or .json")
    except ConfigError:
        raise
    except (tomllib.TOMLDecodeError, ValueError) as error:
        at = re.search(r" \(at line (\d+), column (\d+)\)$", str(error))  # tomllib's place, as path:line:column
        where, what = (f"{path}:{at[1]}:{at[2]}", str(error)[: at.start()]) if at else (str(path), str(error))
        raise ConfigError(f"{where}: cannot parse: {what}{' (found here; it may begin on a line above)' if at else ''}"
                          ) from None
    except Exception as error:  # yaml.YAMLError without importing yaml at module level
        if not type(error).__module__.startswith("yaml"):
            raise
        mark = getattr(error, "problem_mark", None)
        if mark is None:
            raise ConfigError(f"{path}: cannot parse: {error}") from None
        context = getattr(error, "context", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}:{mark.line + 1}:{mark.column + 1}: cannot parse: {problem}"
                          + (f" ({context})" if context else "")) from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return values


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into ``base`` (overrides win), returning a new mapping."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
