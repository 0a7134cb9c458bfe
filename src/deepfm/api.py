"""The Python API: an estimator with fit / predict / evaluate / save / load.

    from deepfm import Estimator
    est = Estimator(model={"name": "deepfm"}, training={"epochs": 5}).fit("train.csv", valid="valid.csv")
    est.evaluate("test.csv")          # {"rows": ..., "auc": ..., "logloss": ...}
    est.save("runs/frappe")
    Estimator.load("runs/frappe").predict("test.csv")
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import torch

from deepfm import distributed, randomness
from deepfm.artifact import load_model_dir, save_model_dir
from deepfm.config import RunConfig, build_config, changed_keys, merge
from deepfm.devices import resolve_device, usable_here
from deepfm.defaults import describe_shape_rule, describe_small_sample, id_shape, with_task_defaults
from deepfm.data.batch import EncodedData
from deepfm.data.encoders import UNSEEN_ROWS, FeatureEncoder, refuse_zero_weight_sum
from deepfm.data.filelist import ChunkedFiles, chunk_index, files_with_rows, is_pattern, open_chunked
from deepfm.data.frame import RawFrame, as_numbers_where_written_so
from deepfm.data.delimited import delimited_layout, unlabelled_criteo_rows
from deepfm.data.formats import CRITEO_COLUMNS, detect_format, first_line
from deepfm.data.identity import data_identity, describe_change
from deepfm.resumable import checkpoint_saved
from deepfm.data.holdout import HASH_RULE, Holdout, encode_hashed, hashed_mask, held_out_rule, split_encoded, stream_fraction
from deepfm.data.readers import frame_from_table
from deepfm.data.tables import is_list, table_from_pandas
from deepfm.data.unseen import UnseenCounts
from deepfm.data.stream import Chunk, ChunkedFile, StreamSource, chunk_bytes_for, count_rows, encode_file, estimated_rows, fit_and_encode, fit_streaming, should_stream
from deepfm.errors import (CheckpointError, ConfigError, DataError, DataTypeError, DataWarning, NotPositionalError,
                           warn_data, warn_setting)
from deepfm.models import model_for_run
from deepfm.portfolio import as_checkpointed, candidates_for, recipe_begun, recipe_checkpoint, train_portfolio
from deepfm.runtime import (available_cores, configure as configure_runtime, cpu_has_bf16_math, peak_rss_mb,
                             preserving, release_free_memory)
from deepfm.solvers import build_solver
from deepfm.tasks import Task, load_metrics_ahead
from deepfm.training.checkpoint import checkpoint_json, complete_checkpoint, stage_checkpoint, write_atomically
from deepfm.training.trainer import NOT_FINITE, Trainer, TrainResult, first_not_finite, predict_logits

Data = str | Path | pa.Table | RawFrame  # or a pandas DataFrame (converted with pa.Table.from_pandas)
TrainingData = tuple[EncodedData | StreamSource, EncodedData | None, Holdout | None]  # train, held-out rows, how

RUN_RECORD = "checkpoint-run.json"  # beside the checkpoint: what the run trains on (``run_record``)
# What a resumed run must share with the interrupted one (``refuse_another_run``): the data (its files'
# identity, ``deepfm.data.identity``), every model and data setting but how the files are read (--stream, chunk
# and window sizes: the trainer compares those when it resumes in the middle of an epoch, where they fix the
# batches) and the training settings below. The rest may change on resume: --lr, --dense-lr, --embed-l2,
# --linear-l2 and weight_decay (README), the budget (epochs, sweeps, patience), threads and device.
READING_SETTINGS = frozenset({"train", "valid", "stream", "chunk_rows", "shuffle_window"})
TRAJECTORY_SETTINGS = ("seed", "optimizer", "dense_optimizer", "solver", "embed_reg", "adagrad_init", "lr_schedule",
                       "precision", "burn_in", "samples", "als_l2", "select_by", "min_improvement")


def _verdicts(history: list[dict[str, Any]], task: Task) -> list[bool]:
    """Whether each epoch of ``history`` improved on validation (``improved``; derived from the
    metrics for the history of a checkpoint written before it was recorded)."""
    best, verdicts = None, []
    for record in history:
        improved = record.get("improved", task.is_better(record["valid"], best))
        best = record["valid"] if improved else best
        verdicts.append(bool(improved))
    return verdicts


def overconfidence_note(task, best: dict[str, float] | None, valid: EncodedData | None) -> str | None:
    """A note where the kept epoch (best by AUC) scores a validation logloss worse than predicting the training click
    rate for every row: its ranking may be good while its probabilities are not (overconfident)."""
    if task.selection[0] != "auc" or not best or "logloss" not in best or valid is None or valid.labels is None:
        return None
    constant = task.metrics(valid.labels, np.full(len(valid.labels), task.prior), valid.weights)["logloss"]
    if best["logloss"] <= constant:
        return None
    return (f"the kept epoch, best by validation AUC, has validation logloss {best['logloss']:.4f}, worse than "
            f"{constant:.4f} for the training click rate on every row: use its predictions to rank rows, not as "
            "probabilities (they are overconfident); --select-by logloss (training.select_by) keeps the epoch whose probabilities are best")


def below_the_mean_note(task, best: dict[str, float] | None, valid: EncodedData | None) -> str | None:
    """A note where the kept epoch of a regression scores a validation RMSE worse than predicting the training mean for
    every row: it learned nothing the mean does not know (too large a step diverges this way without a NaN)."""
    if (task.name != "regression" or task.label_mean is None or not best or "rmse" not in best or valid is None
            or valid.labels is None):
        return None
    constant = task.metrics(valid.labels, np.full(len(valid.labels), task.prior), valid.weights)["rmse"]
    if not best["rmse"] > constant:
        return None
    return (f"the kept epoch has validation RMSE {best['rmse']:.4g}, worse than {constant:.4g} for the training mean "
            "on every row: the model predicts worse than no model; train again with a lower --lr (training.lr), or more L2")


def plainly_other_format(path: Path, trained_on: str) -> str:
    """How a fitted model reads ``path``: as its training files were read, unless those were set by hand and ``path``
    is plainly another format (a DataWarning says so): a .parquet/.pq file, or a CSV given to a model trained on raw
    Criteo files (read as Criteo: 'expected 40 fields, found 1'), or a TSV whose first line names Criteo's columns
    (its header read as a row). Other tab-separated rows stay Criteo (Kaggle's test.txt has no label), and an unnamed
    file (Spark's part-00000) or one that cannot be read is read as the model's."""
    if trained_on == "auto" or not path.is_file():
        return trained_on
    try:
        detected = detect_format(path)
    except DataError:  # the reader says what is wrong, as the model's format
        return trained_on
    criteo_header = (trained_on, detected) == ("criteo", "tsv") and bool(
        set(first_line(path).rstrip("\r\n").split("\t")) & set(CRITEO_COLUMNS))
    plainly_other = detected == "parquet" or (trained_on, detected) == ("criteo", "csv") or criteo_header
    if detected == trained_on or not plainly_other:
        return trained_on
    warn_data(f"{path} reads as {detected} (its name and first line), not as the {trained_on} files the model was "
              f"trained on")
    return detected


def new_model(config: RunConfig, encoder: FeatureEncoder) -> torch.nn.Module:
    """``config``'s model for ``encoder``'s features, from ``training.seed`` (its starting weights; in a fit, drawn as
    that fit's: ``deepfm.randomness``)."""
    return randomness.initialised(lambda: model_for_run(config, encoder.num_features, encoder.num_fields, encoder.task,
                                                        [spec.size for spec in encoder.fields]), seed=config.training.seed)


def refit_asked(config: RunConfig, held_out: bool) -> bool:
    """Whether ``training.refit`` asks for a refit: ``on``, or ``held-out`` where the validation rows were
    ``held_out`` of the training data."""
    rule = config.training.refit
    return rule == "on" or rule == "held-out" and held_out


def refit_refused(cfg: RunConfig, streamed: bool, world: int) -> ConfigError:
    """The error of ``training.refit`` "on" in a run it cannot refit: another solver, streamed rows or processes."""
    return ConfigError("training.refit: needs gradient training on in-memory data in one process (this run: solver "
                       f"{cfg.training.solver}, {'streamed' if streamed else 'in memory'}, {world} process(es)); turn it off")


def refuse_sweeps_on_ranks(cfg: RunConfig, world: int) -> None:
    """MCMC and ALS sample or solve one chain over every row in one process: several processes would each run a chain
    on their share of the rows and race for one checkpoint."""
    if world > 1 and cfg.training.solver != "gradient":
        raise ConfigError(f"training.solver {cfg.training.solver}: runs in one process, not {world} (--nproc, torchrun); "
                          "train it without them, or use --solver gradient")


def peak_memory(world: int) -> dict[str, Any]:
    """``peak_rss_mb``: this process's peak resident memory, or with ``world`` ranks their peaks added up (each
    rank's own in ``peak_rss_mb_ranks``); a collective there, so every rank calls it."""
    if world == 1:
        return {"peak_rss_mb": round(peak_rss_mb(), 1)}
    peaks = distributed.gather_blocks(np.array([peak_rss_mb()]))
    return {"peak_rss_mb": round(float(peaks.sum()), 1), "peak_rss_mb_ranks": [round(float(p), 1) for p in peaks]}


def holds_out(config: RunConfig, valid: Any) -> bool:
    """Whether training rows are held out for validation: no ``valid`` data and ``data.valid_fraction`` > 0, for
    gradient training (its early stopping reads them); the sweeping solvers (mcmc, als) stop at ``sweeps`` and only
    score the rows, so they hold out only where the fraction was set explicitly."""
    data = config.data
    return (valid is None and data.valid_fraction > 0
            and (config.training.solver == "gradient" or "valid_fraction" in data.model_fields_set))


def replays_pretraining(config: RunConfig) -> bool:
    """Whether ``config``'s model pre-trains (FNN's FM pre-training), which a refit does not replay."""
    return config.model.name == "fnn" and bool(config.model.pretrain)


REFIT_SUFFIX = "-refit"  # a refit's checkpoints: a sibling of the run's checkpoint directory


def refit_model(config: RunConfig, encoder: FeatureEncoder, history: list[dict[str, Any]], train: EncodedData,
                valid: EncodedData, progress: bool = False, log: Callable[[str], None] | None = None,
                checkpoint_dir: Path | None = None, resume: bool = False) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A new model (``new_model``) trained on ``train`` and ``valid`` together for the epochs of ``history``
    (a run's records up to its best epoch), replaying that run's verdicts: its reloads and learning-rate
    drops (``training.refit``), with checkpoints in ``checkpoint_dir`` (``resume`` continues from them).
    Returns the model and what was done (rows, epochs, seconds, samples/s)."""
    verdicts = _verdicts(history, encoder.task.selecting(config.training.select_by))
    rows = EncodedData.concat([train, valid])
    model = new_model(config, encoder)
    say = log or (lambda message: None)
    remedy = (f"Delete {checkpoint_dir} and resume: the refit trains again from the start (the run's own checkpoint "
              "is kept; --overwrite would train the whole run again)")
    resume = resume and complete_checkpoint(checkpoint_dir, lambda message: None, remedy) is not None  # the trainer warns
    say(f"refit: {'continuing' if resume else 'training again from the start'} on {len(rows):,} rows (training + "
        f"validation; the encoders stay those fitted on the training rows) for {len(verdicts)} "
        f"epoch{'s' if len(verdicts) != 1 else ''}, as validation chose")
    began = time.perf_counter()
    again = Trainer(model, encoder.task, config.training, checkpoint_dir=checkpoint_dir, progress=progress,
                    log=log).fit(rows, replay=verdicts, resume=resume)
    return model, {"rows": len(rows), "epochs": again.epochs_run, "seconds": round(time.perf_counter() - began, 3),
                   "train_samples_per_s": round(again.samples_per_s, 1), "earlier_seconds": again.earlier_seconds}


def _held_out_of(data: EncodedData, hold_out: bool, fraction: float, seed: int, source: Data) -> TrainingData:
    """``data`` (read from ``source``) without and with its held-out rows (``split_encoded``), or all of it."""
    where = str(source) if isinstance(source, (str, Path)) else "data.train"
    return split_encoded(data, fraction, seed, where) if hold_out else (data, None, None)


# What only gradient training reads: a sweeping solver (mcmc, als) says it leaves these alone when they are set.
GRADIENT_ONLY = ("epochs", "batch_size", "lr", "optimizer", "dense_optimizer", "dense_lr", "adagrad_init", "embed_l2",
                 "embed_reg", "lr_schedule", "patience", "weight_decay", "refit", "portfolio")
UNUSED_BY_SOLVER = {  # the training settings each solver has no use for (said when a run sets them)
    "gradient": ("sweeps", "samples", "burn_in", "als_l2"),
    "mcmc": (*GRADIENT_ONLY, "linear_l2", "als_l2", "select_by", "min_improvement"),
    "als": (*GRADIENT_ONLY, "linear_l2", "samples", "burn_in", "select_by", "min_improvement"),
}
def applied_settings(config: RunConfig) -> dict[str, Any]:
    """``config`` as a config file's mapping, less the keys its model and solver do not read (set in a file, train
    would say of each that it is not applied): what a run's record gives to ``deepfm train --config``."""
    values = config.to_json_dict()
    every_key_set = type(config.model).model_validate(config.model.model_dump())
    for section, unused in (("model", every_key_set.unused_keys()),
                            ("training", UNUSED_BY_SOLVER.get(config.training.solver, ()))):
        values[section] = {key: value for key, value in values[section].items() if key not in unused}
    return values


WHY_UNUSED = {"gradient": "those are the mcmc and als solvers'", "mcmc": "it samples for training.sweeps; there is no "
              "learning rate, batch, epoch or recipe to select, and its prior learns the L2", "als": "it solves for "
              "training.sweeps with its own λ, training.als_l2; there is no learning rate, batch, epoch or recipe to select"}


def unused_by_solver_note(solver: str, keys: list[str]) -> str:
    """The note for training ``keys`` that ``solver`` does not read (``UNUSED_BY_SOLVER``)."""
    return (f"solver {solver} does not use {', '.join(f'training.{key}' for key in keys)}: "
            f"{'they are' if len(keys) > 1 else 'it is'} not applied ({WHY_UNUSED[solver]})")
HELD_OUT_BY = "position hash from 1, not counted by the encoders"  # the run record's name of today's hold-out (deepfm.data.holdout)


def run_record(config: RunConfig, train: Data, valid: Data | None) -> dict[str, Any]:
    """What a run trains on and with, as ``RUN_RECORD`` holds it: its data's identity and the settings a
    resumed run must share with it, as it trains with them (``config`` after ``with_task_defaults``: a
    flag that states a default of the task changes nothing)."""
    settings = config.to_json_dict()
    data = {key: value for key, value in settings["data"].items() if key not in READING_SETTINGS}
    data["valid_fraction"] = config.data.valid_fraction if holds_out(config, valid) else 0.0  # the rows it holds out
    if data["valid_fraction"]:
        data["held_out_by"] = HELD_OUT_BY  # versions before held out other rows in memory, and counted them
    return {**trained_on(train, valid), "trained_with": {
        "data": data,
        "model": settings["model"],
        "training": {key: settings["training"][key] for key in TRAJECTORY_SETTINGS} | effective_burn_in(config)}}


def trained_on(train: Data, valid: Data | None) -> dict[str, Any]:
    """The identity of a run's data (``deepfm.data.identity``): each file's path, size and modification time, read
    without opening it; a table's rows, columns and a hash of sampled rows."""
    return {"train": data_identity(train),
            "valid": data_identity(valid, pattern=isinstance(valid, (str, Path)) and not Path(valid).exists())}


def effective_burn_in(config: RunConfig) -> dict[str, int]:
    """The sampler's burn-in as it runs (unset: a tenth of the sweeps), so that a resume stating it is the same run."""
    return {"burn_in": config.training.burn_in_sweeps} if config.training.solver == "mcmc" else {}


def refuse_another_run(saved: dict[str, Any], record: dict[str, Any], checkpoint_dir: Path,
                       sections: Sequence[str] = ("data", "model", "training")) -> None:
    """A ``ConfigError`` naming what differs when ``record`` (this run's ``run_record``) is not the one the
    checkpoint was written under (``saved``): its data and its settings in ``sections``. An older version's
    record holds its settings as given (``settings``, before the task's defaults): compare it with a record
    of this run's settings as given. A key ``saved`` lacks is not compared."""
    changes: dict[str, list[str]] = {}
    for name in ("train", "valid"):
        if name in saved and saved[name] != record[name]:
            changes.setdefault("data", []).append(describe_change(name, saved[name], record[name]))
    for section in sections:
        values = record["trained_with"][section]
        before = saved.get("trained_with", saved.get("settings", {})).get(section, {})
        if section == "training" and before.get("burn_in", 0) is None:  # an older record: the burn-in as given, unset
            before = {key: value for key, value in before.items() if key != "burn_in"}  # (the chain's own check reads
            # the burn-in it ran with: ``solvers.sweeps``)
        changes.setdefault(f"{section} settings", []).extend(
            f"{key} {_shown(before[key])} → {_shown(value)}" for key, value in values.items()
            if key in before and before[key] != value)
        if section == "data" and "held_out_by" in values and "held_out_by" not in before and before.get("valid_fraction"):
            changes[f"{section} settings"].append(f"held-out rows: an older version's → {values['held_out_by']}")
    changes = {what: changed for what, changed in changes.items() if changed}
    if changes:
        defaults = ("; a setting left unset takes this version's default, which may not be the one the run started with: "
                    "give the checkpoint's value (the first of each pair) to resume" if set(changes) - {"data"} else "")
        raise ConfigError(f"{checkpoint_dir}: the checkpoint was written with other {' and '.join(changes)} "
                          f"({'; '.join(sum(changes.values(), []))}); resume with the same data and settings, or "
                          "train into a new --out" + (f" (data only copied or touched: delete {checkpoint_dir.parent / RUN_RECORD}"
                                                      " to resume anyway)" if set(changes) == {"data"} else defaults))


def run_seconds(session: float, earlier: list[float | None]) -> dict[str, float | None]:
    """``seconds``: the run's wall time, this session's and, where it resumed, the earlier sessions' training time by
    the recipes' checkpoints (``seconds_before_resume``; None where a checkpoint of an older version did not say;
    their reading before training is not counted)."""
    if not any(earlier) and None not in earlier:
        return {"seconds": round(session, 3)}
    before = None if None in earlier else sum(earlier)
    return {"seconds": round(session + (before or 0.0), 3),
            "seconds_before_resume": None if before is None else round(before, 3)}


def joined(parts: list[np.ndarray]) -> np.ndarray:
    """Chunks' arrays as one, in order (the one chunk's as it is)."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def typed_classes(classes: list[str]) -> list[str] | list[int] | list[float]:
    """Class texts as the numbers they spell where every one is one, as predict's output types them
    (``as_numbers_where_written_so``: '01' stays text, as does '1e400'), and as text where two would be one number."""
    typed = as_numbers_where_written_so(pa.array(classes, pa.string())).to_pylist()
    return typed if len(set(typed)) == len(typed) else list(classes)


class Estimator:
    """Reads files, fits encoders on training data only, trains, predicts and saves.

        Estimator(data={"categorical": ("user", "item")}, model={"name": "fm", "embed_dim": 32},
                  training={"epochs": 10, "seed": 7})

    The sections are those of a ``--config`` file and ``deepfm.config.RunConfig``: ``data`` (label, column
    kinds, --min-count, --valid-fraction, ...), ``model`` (name: lr, fm, deepfm or a baseline of the paper;
    embed_dim, mlp, dropout, ...) and ``training`` (epochs, lr, optimizer, batch_size, seed, device,
    solver, ...); ``deepfm train --help`` lists every key with its default. A key left unset takes the
    model's and the data's defaults (``deepfm.defaults``), as on the command line. ``fit`` without
    ``valid`` holds out about ``data.valid_fraction`` (0.1) of the training rows for early stopping and
    fits the encoders on the others; the log and ``metrics["validation"]`` say how many."""

    def __init__(self, config: RunConfig | None = None, **sections: Any):
        """``config``: a validated ``RunConfig``, or its sections as mappings (``data=``, ``model=``,
        ``training=``), laid over ``config`` when both are given."""
        # only what the config set: a key it left unset stays unset, so the task's defaults and the portfolio still apply
        base = json.loads(config.model_dump_json(exclude_unset=True)) if config is not None else {}
        self.config = build_config(merge(base, sections)) if sections or config is None else config
        self.model: torch.nn.Module | None = None
        self.encoder: FeatureEncoder | None = None
        self.result: TrainResult | None = None
        self.metrics: dict[str, Any] = {}
        self._last_fit: tuple[RunConfig, RunConfig] | None = None  # the settings a fit was given and those it left
        # a fitted model reads files in this format, as given (predict/evaluate --format); None: as its training files
        # were read, or a plainly other format (``plainly_other_format``)
        self.read_format: str | None = None

    # -- data -------------------------------------------------------------------------------------

    def read(self, data: Data, require_label: bool = True) -> RawFrame:
        """A file path, an Arrow table, a pandas DataFrame or a ``RawFrame`` as a ``RawFrame`` (libFM/libFFM
        files laid out as the fitted model's columns)."""
        source = self._source(data, require_label)
        if isinstance(source, ChunkedFiles):
            raise DataError(data, "a pattern of files is read chunk by chunk, by deepfm train, predict and evaluate "
                                  "(Estimator.fit, predict, evaluate, frames): give one file here")
        return source.whole() if isinstance(source, ChunkedFile) else source

    def frames(self, data: Data, require_label: bool = True, chunk_rows: int | None = None) -> Iterator[RawFrame]:
        """``read``, a file chunk by chunk: frames of about ``chunk_rows`` rows each (default ``data.chunk_rows``),
        in file order, each ``RawFrame.line_of`` its own file's lines; a glob pattern's files one after the other, in
        name order (as ``fit`` reads them); a table or frame whole."""
        if chunk_rows is not None and (not isinstance(chunk_rows, int) or isinstance(chunk_rows, bool) or chunk_rows < 1):
            raise ConfigError(f"chunk_rows: expected a whole number of rows, at least 1, got {chunk_rows!r}")
        source = self._source(data, require_label)
        if isinstance(source, RawFrame):
            yield source
            return
        rows = chunk_rows or self.config.data.chunk_rows
        chunk_bytes = chunk_bytes_for(source.path, rows)
        for file in source.files if isinstance(source, ChunkedFiles) else [source]:
            file.chunk_bytes = chunk_bytes
            yield from file.in_order(rows)

    def _source(self, data: Data, require_label: bool) -> RawFrame | ChunkedFile | ChunkedFiles:
        """``data`` as a frame, or for a file (a pattern's files) the reader of it."""
        cfg = self.config.data
        if isinstance(data, RawFrame):
            return data
        if isinstance(data, (str, Path)) and is_pattern(data) and not Path(data).exists():
            # scoring: the columns the model reads in every file, others as they come; evaluating, the label in every
            # file and the weights in every file or in none
            read = None if self.encoder is None else (
                [spec.name for spec in self.encoder.fields] + ([cfg.label] if require_label else []))
            every_or_none = [self.encoder.weight] if require_label and self.encoder and self.encoder.weight else []
            return ChunkedFiles(data, files_with_rows(data, lambda file: self._source(file, require_label)), cfg.ignore,
                                read, every_or_none)
        if type(data).__module__.startswith("pandas") and type(data).__name__ == "DataFrame":  # pandas is optional
            data = table_from_pandas(data)
        if not isinstance(data, (str, Path, pa.Table)):
            hint = ("; pandas.DataFrame(data) makes one of a list of records or a dict of columns"
                    if isinstance(data, (list, dict)) else "")
            raise DataTypeError(f"data: expected a file path, a pyarrow.Table or a pandas DataFrame, got "
                                f"{type(data).__name__}{hint}")
        if isinstance(data, pa.Table):
            multi = self._multi_as_text({field.name: field.type for field in data.schema})
            return frame_from_table(data, "<table>", cfg.label, require_label, multi=multi, separator=cfg.multi_separator)
        layout = self.encoder.layout if self.encoder is not None else None
        read_as = cfg.format if self.encoder is None else self.read_format or plainly_other_format(Path(data), cfg.format)
        multi, fmt = cfg.multi, None
        if self.encoder is not None and self.encoder.multi_fields:  # a fitted model's fields that the file may hold as text
            fmt = read_as if read_as != "auto" else detect_format(data)
        if fmt in ("csv", "tsv"):
            multi = self._multi_as_text(dict.fromkeys(delimited_layout(Path(data), fmt)[0], pa.string()))
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            try:
                multi = self._multi_as_text({field.name: field.type for field in pq.read_schema(data)})
            except (pa.ArrowInvalid, OSError):
                pass  # the reader says what is wrong with the file, at its place
        features = [field.name for field in self.encoder.fields] if self.encoder is not None else []
        if read_as == "auto" and unlabelled_criteo_rows(data, features):  # a model of Criteo's raw files scoring
            read_as = "criteo"  # rows without their label (Kaggle's test.txt)
        return ChunkedFile(data, read_as, cfg.label, multi, cfg.multi_separator, require_label, layout=layout)

    def _multi_as_text(self, columns: dict[str, pa.DataType]) -> tuple[str, ...]:
        """``data.multi``, and a fitted model's other multi-valued fields (one trained on a column of lists, say)
        that ``columns`` (name: type) hold other than as lists: text ``a|b`` (also a pandas category, or a column of
        nulls); a field missing there is ``transform``'s to report."""
        multi = self.config.data.multi
        if self.encoder is None:
            return multi
        text = [spec.name for spec in self.encoder.multi_fields if spec.name not in multi and spec.name in columns
                and not is_list(columns[spec.name])]
        return (*multi, *text)

    def encode(self, data: Data, with_labels: bool | None = None) -> EncodedData:
        """Rows as the model reads them. ``ids`` are int32 while the table has fewer than 2³¹ rows
        (cast to int64 for the ONNX graph); ``dense_values()`` gives every field's value (N, F), or
        None when every value is 1 (one-hot data such as Frappe). ``labels`` are encoded when the
        data has the label column (``with_labels=True``: it must; ``False``: never). A field whose values are
        far more often unseen or missing than in training is a ``DataWarning`` (``FeatureEncoder.scoring_notes``).
        A glob pattern's files are read chunk by chunk and their rows joined (a validation set written as parts); their
        labels with ``with_labels=True`` alone."""
        if isinstance(data, (str, Path)) and is_pattern(data) and not Path(data).exists():
            self._require_encoder()  # (a pattern's labels: with with_labels=True, from every file)
            return EncodedData.concat([encoded for _, encoded in self._encoded_chunks(data, bool(with_labels), None)])
        return self._read_and_encode(data, with_labels)[1]

    def _require_encoder(self) -> None:
        if self.encoder is None:
            raise RuntimeError("the estimator has no encoders yet: call fit() or Estimator.load()")

    def _read_and_encode(self, data: Data, with_labels: bool | None) -> tuple[RawFrame, EncodedData]:
        self._require_encoder()
        frame = self.read(data, require_label=bool(with_labels))
        encoded = self.encoder.transform(frame, with_labels=with_labels is not False)
        for note in self.encoder.scoring_notes(encoded):
            warn_data(f"{frame.path}: {note}")
        return frame, encoded

    # -- training ---------------------------------------------------------------------------------

    @preserving  # threads, denormals and Arrow's pool are set for training and restored after it
    @randomness.own_generator()  # the fit's draws are its own: fits at once in threads give their models as alone
    def fit(
        self,
        train: Data | None = None,
        valid: Data | None = None,
        out: str | Path | None = None,
        resume: bool = False,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> "Estimator":
        """Fit encoders on ``train``, train the model, keep the best epoch; with ``out``, checkpoint
        into ``out/checkpoint`` (``resume=True`` continues from there, also to train a finished run on) and save the
        model to ``out``, the checkpoint kept beside it (``deepfm.artifact.remove_checkpoint`` removes it; the
        command line does unless ``--keep-checkpoint``). Afterwards ``config`` holds the settings the run trained
        with (the data's defaults filled in); a later ``fit`` starts afresh from the settings given, unless
        ``config`` was set anew in between."""
        last = getattr(self, "_last_fit", None)  # (an Estimator pickled by an older version has none)
        if last is not None and self.config is last[1]:
            self.config = last[0]  # not the choices the last fit made for its own data (batch, lr, k, ...)
        given = self.config
        try:
            return self._fit(train, valid, out, resume, progress, log)
        finally:
            self._last_fit = (given, self.config)

    def _fit(self, train: Data | None, valid: Data | None, out: str | Path | None, resume: bool, progress: bool,
             log: Callable[[str], None] | None) -> "Estimator":
        cfg = self.config
        train = train if train is not None else cfg.data.train
        valid = valid if valid is not None else cfg.data.valid
        out = out if out is not None else cfg.out
        if train is None:
            raise ConfigError("data.train: a training file is required")
        if resume and out is None:  # (a checkpoint is kept only in out)
            raise ConfigError("resume=True continues the run checkpointed in an output directory: give fit(..., out=DIR), "
                              "the run's own")
        cfg.check_batch_norm_rows()
        if valid is not None or cfg.data.valid_fraction > 0:
            load_metrics_ahead()  # on another core while the data are read
        device = resolve_device(cfg.training.device, "training.device")  # a ConfigError before any data is read
        if device != cfg.training.device:  # auto
            self.config = cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"device": device})})
        ctx = distributed.setup(cfg.training.device)  # joins torchrun's process group, if launched by it
        restarts = distributed.restarts_of_the_run()
        if restarts and out is not None:  # torchrun restarted the ranks after a failure: continue the run
            resume = True
            if log and ctx.is_main:
                log(f"restart {restarts} (torchrun): continuing from the last checkpoint in {out}")
        if ctx.world > 1:
            self.config = cfg = cfg.model_copy(update={"training": cfg.training.model_copy(
                update={"device": distributed.rank_device(cfg.training.device, ctx)})})
        configure_runtime(cfg.training.threads or max(1, available_cores() // ctx.local_world))
        if cfg.training.precision == "bf16" and cfg.model.name in ("lr", "fm") and log:
            log(f"precision bf16 changes nothing for {cfg.model.name}: it has no MLP (it trains in fp32)")
        elif cfg.training.precision == "bf16" and cfg.training.device == "cpu" and cpu_has_bf16_math() is False and log:
            log("precision bf16: this CPU has no AVX512-BF16 or AMX, so torch emulates bfloat16 and the MLP's "
                "products run slower than in fp32 (the default)")
        elif cfg.training.precision == "bf16" and log and ctx.is_main:
            log("precision bf16: the MLP's hidden layers run in bfloat16; the embeddings, the FM term, the output layer "
                "and every weight stay fp32")
        streamed = cfg.data.stream == "on" and isinstance(train, (str, Path))  # ("auto" decides once the file is seen)
        refuse_sweeps_on_ranks(cfg, ctx.world)
        if cfg.training.refit == "on" and (streamed or ctx.world > 1 or cfg.training.solver != "gradient"):
            raise refit_refused(cfg, streamed, ctx.world)  # before any data is read, not after training
        began = time.perf_counter()
        saved_features = Path(out) / "checkpoint-features.json" if out else None
        recorded = Path(out) / RUN_RECORD if out else None
        # what is left of a run killed before its first checkpoint (encoders, record) is not resumed: it starts afresh
        has_checkpoint = bool(resume and out and ctx.is_main and checkpoint_saved(Path(out)))
        saved_record = checkpoint_json(recorded) if has_checkpoint and recorded.exists() else None  # rank 0's paths
        if saved_record is not None:  # before any data is read: the data and its settings (the task's defaults leave
            # them be); the model's and training's once those defaults apply, or now for an older version's record
            older = "trained_with" not in saved_record
            refuse_another_run(saved_record, run_record(cfg, train, valid), Path(out) / "checkpoint",
                               sections=("data", "model", "training") if older else ("data",))
        # an older version's checkpoint has no record: this run's would vouch for what was never compared
        unrecorded = resume and recorded is not None and not recorded.exists() and any(
            (Path(out) / name).exists() for name in ("checkpoint", "checkpoint.old", "checkpoint-fnn-stage1", "checkpoint-refit"))
        saved = None
        if has_checkpoint and saved_features.exists():
            try:
                saved = FeatureEncoder.from_dict(checkpoint_json(saved_features))
            except (KeyError, TypeError, ValueError, AttributeError) as error:  # JSON, but not an encoder's
                raise CheckpointError(f"{saved_features}: damaged ({type(error).__name__}: {error}); train again "
                                      "without --resume (--overwrite)") from None
        hold_out = holds_out(cfg, valid)
        train_data, valid_data, holdout = (self._training_data(train, saved, progress, hold_out) if ctx.world == 1
                                           else self._training_shard(train, saved, ctx, hold_out))
        for note in self.encoder.fit_notes if log and ctx.is_main else ():
            log(note)
        for note in self.encoder.fit_warnings if not log and ctx.is_main else ():  # (no log: said nowhere else)
            warn_data(f"{train if isinstance(train, (str, Path)) else 'the training data'}: {note}")
        if isinstance(train_data, StreamSource) and log and ctx.is_main:
            chunks = len(train_data.file.chunks())  # their rows: --chunk-rows' bytes, or a Parquet file's row groups
            log(f"streaming: {train_data.num_rows:,} training rows read chunk by chunk every epoch ({chunks} "
                f"chunk{'s' if chunks != 1 else ''} of about {round(train_data.num_rows / max(chunks, 1)):,} rows, "
                f"shuffled {train_data.window} chunks at a time; --stream off (data.stream) reads them into memory)")
        if holdout is not None and log and ctx.is_main:
            log(holdout.describe("early stopping" if cfg.training.solver == "gradient" else
                                 f"a score at the end ({cfg.training.solver} trains on none of them)"))
        elif hold_out and valid_data is None and log and ctx.is_main:
            log(f"validation: --valid-fraction {cfg.data.valid_fraction:g} holds out none of the training rows (each "
                "row is held out by a seeded hash of its position), so training runs without early stopping; give a "
                "--valid file or a larger --valid-fraction")
        if valid is not None:
            valid_data = self.encode(valid, with_labels=True)
        if saved_features and ctx.is_main:
            saved_features.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(saved_features, json.dumps(self.encoder.to_dict()))  # a kill leaves old or new
        task = self.encoder.task
        task.selecting(cfg.training.select_by)  # a metric the task does not report: said before any training
        id_counts = self.encoder.id_counts
        given = cfg
        self.config = cfg = with_task_defaults(cfg, task.name, id_counts)  # e.g. FM's L2 on ratings (deepfm.defaults)
        record = run_record(cfg, train, valid) if out else None
        if saved_record is not None and "trained_with" in saved_record:
            refuse_another_run(saved_record, record, Path(out) / "checkpoint")
        if saved_features and ctx.is_main and not unrecorded:
            write_atomically(recorded, json.dumps(record))  # before the first checkpoint, as the encoders
        if ctx.world > 1 and log and ctx.is_main:
            each = cfg.training.batch_size
            log(f"{ctx.world} processes, each a batch of {each:,} rows: steps of {ctx.world * each:,} rows, as one "
                f"process with --batch-size {ctx.world * each:,} (deepfm.distributed)")
            left = id_counts.rows - len(train_data) * ctx.world if isinstance(train_data, EncodedData) and id_counts else 0
            if left > 0:  # every rank trains on as many rows (deepfm.distributed.sharding)
                log(f"{left} of the {id_counts.rows:,} training rows left out, so that each of the {ctx.world} "
                    f"processes trains on {len(train_data):,}")
        ignored = given.model.unused_keys(changed_only=True)  # (warned, not logged: a quiet run, or one with no log,
        if ignored and ctx.is_main:  # hears of it too; a loaded model's config, which sets every key, of none)
            warn_setting(given.model.unused_note(ignored))
        solver = given.training.solver
        unused = changed_keys(given.training, UNUSED_BY_SOLVER.get(solver, ()))
        if unused and ctx.is_main:
            warn_setting(unused_by_solver_note(solver, unused))
        shape_rule = describe_shape_rule(given, id_counts, task.name)  # the user's keys said to be theirs
        if shape_rule and log and ctx.is_main:
            log(shape_rule)
        small_sample = describe_small_sample(given, task.name, id_counts)
        if small_sample and log and ctx.is_main:
            log(small_sample)
        candidates, note = candidates_for(given, task.name, id_counts, in_memory=isinstance(train_data, EncodedData),
                                          processes=ctx.world, has_valid=valid_data is not None)
        if note and log and ctx.is_main:
            log(note)
        checkpoint_dir = Path(out) / "checkpoint" if out else None
        resumable = as_checkpointed(candidates, checkpoint_dir, resume, log if ctx.is_main else None)
        if candidates and not resumable:  # a run of one recipe, continued as it started: the saved config says so
            self.config = cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"portfolio": "off"})})
        candidates = resumable

        variants: dict[str, tuple[FeatureEncoder, TrainingData]] = {}
        fitted_with = cfg.data.model_dump_json()  # the data settings the encoder above was fitted under

        def data_for(config: RunConfig) -> tuple[FeatureEncoder, TrainingData]:
            """The encoder and rows ``config`` trains on: those fitted above, or, for a candidate of other data
            settings (a small long tail's recurring branch sets ``min_count``, ``deepfm.defaults.portfolio``), its
            own, fitted and encoded again in memory from the same training rows, the same rows held out."""
            wanted = config.data.model_dump_json()
            if wanted == fitted_with:
                return self.encoder, (train_data, valid_data, holdout)
            if wanted not in variants:
                other = Estimator(config.model_copy(update={"data": config.data.model_copy(update={"stream": "off"})}))
                with warnings.catch_warnings():  # the run's own encoding said what there was to say of these rows
                    warnings.simplefilter("ignore", DataWarning)
                    other_train, other_valid, other_holdout = other._training_data(train, None, False, hold_out)
                    if valid is not None:
                        other_valid = other.encode(valid, with_labels=True)
                variants[wanted] = other.encoder, (other_train, other_valid, other_holdout)
            return variants[wanted]

        def train_one(config: RunConfig, index: int | None = None) -> tuple[torch.nn.Module, TrainResult]:
            encoder, (rows, valid_rows, _) = data_for(config)
            model = new_model(config, encoder)
            distributed.broadcast_model(model)  # the same start on every rank
            distributed.global_batch_norm(model)  # statistics of the global batch, as in one process
            where = recipe_checkpoint(checkpoint_dir, index) if checkpoint_dir and index is not None else checkpoint_dir
            begun = resume
            if resume and index is not None and ctx.world == 1 and not recipe_begun(checkpoint_dir, index):
                begun = False  # the interrupted portfolio had not reached this recipe: nothing is wrong
                if log:
                    log(f"resume: recipe {index + 1} had not begun; training it from the start")
            result = build_solver(config, progress=progress, log=log).fit(model, task, rows, valid_rows,
                                                                          checkpoint_dir=where, resume=begun)
            earlier.append(result.earlier_seconds)
            return model, result

        earlier: list[float | None] = []  # each recipe's seconds in the sessions before this one (a resumed run)

        def validation_scores(config: RunConfig, model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray] | None:
            """A candidate's validation rows' 0/1 labels and logits, for the portfolio's paired comparison (not
            where the rows are weighted: said once)."""
            rows = data_for(config)[1][1]
            if rows is None or rows.labels is None or task.name != "binary":
                return None
            if rows.weights is not None:
                if log and not weighted_said:
                    log("portfolio: the validation rows are weighted (--weight), so a later recipe is kept where its "
                        "weighted validation metric is better at all: the paired standard error is for unweighted rows")
                    weighted_said.append(True)
                return None
            return rows.labels, predict_logits(model, rows)

        weighted_said: list[bool] = []

        chosen = (train_portfolio(candidates, given, task, id_counts, train_one, log, validation_scores) if candidates
                  else None)
        if chosen is not None:
            self.config = cfg = chosen.config
            self.model, self.result = chosen.model, chosen.result
            self.encoder, (train_data, valid_data, holdout) = data_for(cfg)
            id_counts = self.encoder.id_counts
        else:
            self.model, self.result = train_one(cfg)
        if log and ctx.is_main:
            for note in (overconfidence_note(task.selecting(cfg.training.select_by), self.result.best_metrics, valid_data),
                         below_the_mean_note(task, self.result.best_metrics, valid_data)):
                if note:
                    log(note)
        refit = self._refit(train_data, valid_data, holdout is not None, progress, log, checkpoint_dir, resume)
        if refit is not None:  # the refit's seconds in the sessions before this one count as the recipes' do
            earlier.append(refit.pop("earlier_seconds"))
        self.metrics = {
            "task": task.name,
            "rows": (train_data.num_rows if isinstance(train_data, StreamSource) else len(train_data)) * ctx.world,
            "ranks": ctx.world,
            "valid_rows": len(valid_data) if valid_data is not None else 0,
            "validation": (holdout.to_dict() if holdout is not None else {"source": "none"} if valid is None else
                           {"source": "file", **({"path": str(valid)} if isinstance(valid, (str, Path)) else {})}),
            # the data's identity, as the resume record holds it (compare's report holds each file's SHA-256 too)
            "data": ({key: record[key] for key in ("train", "valid")} if record is not None
                     else trained_on(train, valid)),
            "epochs": self.result.epochs_run,
            "best_epoch": self.result.best_epoch,
            "best_valid": self.result.best_metrics,
            "history": self.result.history,
            **run_seconds(time.perf_counter() - began, earlier),
            "train_samples_per_s": round(self.result.samples_per_s * ctx.world, 1),
            "threads": torch.get_num_threads(),  # as trained (config.json's 0 is one per core, wherever it runs)
            **peak_memory(ctx.world),
        }
        if chosen is not None:
            self.metrics["portfolio"] = [record.to_dict() for record in chosen.tried]
            self.metrics["portfolio_choice"] = chosen.name
        if refit is not None:
            self.metrics["refit"] = refit
        if id_counts is not None:  # the statistic the data rule of deepfm.defaults reads, and its branch
            self.metrics["ids"] = id_counts.to_dict() | {"shape": id_shape(id_counts)}
        self.model.eval()  # a fitted model predicts: no call switches its mode (predicting from threads at once is safe)
        if out is not None and ctx.is_main:
            self.save(out)
        return self

    def _new_model(self) -> torch.nn.Module:
        """The model of this run's config for the fitted encoder, from ``training.seed`` (its starting weights)."""
        return new_model(self.config, self.encoder)

    def _refit(self, train: EncodedData | StreamSource, valid: EncodedData | None, held_out: bool, progress: bool,
               log: Callable[[str], None] | None, checkpoint_dir: Path | None = None,
               resume: bool = False) -> dict[str, Any] | None:
        """``training.refit``: a new model, from the same seed, trained on ``train`` and ``valid`` together
        for the epochs up to the best one, with the first run's verdicts replayed (its reloads and
        learning-rate drops). The first run's validation metrics stay in ``metrics`` (they chose the
        epochs; the refitted model has no held-out rows left to score). Returns what it did, or None."""
        cfg, say = self.config, log or (lambda message: None)
        rule = cfg.training.refit
        if not refit_asked(cfg, held_out):
            return None
        supported = cfg.training.solver == "gradient" and isinstance(train, EncodedData) and distributed.context().world == 1
        if rule == "held-out" and not supported:
            say("refit: not for streamed, distributed or non-gradient runs; the model is the one early stopping kept")
            return None
        if valid is None or self.result.best_epoch is None:
            say("refit: no validation rows chose the epochs; the model is the one trained")
            return None
        if not supported:
            raise refit_refused(cfg, isinstance(train, StreamSource), distributed.context().world)
        if replays_pretraining(cfg):
            raise ConfigError("training.refit: FNN's FM pre-training is not replayed; set model.pretrain = false "
                              "or turn refit off")
        self.model, record = refit_model(cfg, self.encoder, self.result.history[: self.result.best_epoch], train, valid,
                                         progress, log, stage_checkpoint(checkpoint_dir, REFIT_SUFFIX), resume)
        return record

    def training_rows(self, train: Data, valid: Data | None = None, progress: bool = False) -> TrainingData:
        """Fit the encoders on ``train`` and encode it as ``fit`` does in one process: (training rows,
        validation rows, how they were held out or None). The validation rows are ``valid``'s, or
        without it those held out of ``train`` (``data.valid_fraction``), or None."""
        hold_out = holds_out(self.config, valid)
        train_data, held, holdout = self._training_data(train, None, progress, hold_out)
        return train_data, self.encode(valid, with_labels=True) if valid is not None else held, holdout

    def _training_shard(self, train: Data, encoder: FeatureEncoder | None, ctx: distributed.Context,
                        hold_out: bool = False) -> TrainingData:
        """This rank's rows of the training file, encoded with rank 0's encoders (fitted on the whole
        file in one streamed pass, or the checkpoint's when resuming), which every rank receives as
        JSON with the file's chunk index, each chunk's rows and whether to stream (rank 0 decides).
        Streaming: a ``StreamSource`` of this rank's share of each epoch (``rank_share``), rows held
        out as in one process. In memory: the rows ``g % world == rank``; with ``hold_out``, every rank
        holds out the same rows (``deepfm.data.holdout``) before sharding the others."""
        cfg = self.config.data
        if not isinstance(train, (str, Path)):
            raise ConfigError("data.train: distributed training reads its rows from a file; pass a path")
        chunk_bytes = chunk_bytes_for(train, cfg.chunk_rows)
        shared = None
        if ctx.is_main:
            file = open_chunked(train, cfg, chunk_bytes)
            stream = should_stream(train, cfg.stream)
            fraction = self._held_out_fraction(train) if hold_out else None
            rule = held_out_rule(fraction, self.config.training.seed) if fraction is not None else None
            fitted, rows = (encoder, count_rows(file)) if encoder is not None else fit_streaming(file, cfg, held_out=rule)
            release_free_memory()  # the counting tables of the fit
            index = [[dataclasses.astuple(chunk) for chunk in chunks] for chunks in chunk_index(file)]
            shared = json.dumps({"encoder": fitted.to_dict(), "rows": rows, "stream": stream, "chunks": index,
                                 "held_out_fraction": fraction})
        received = json.loads(distributed.broadcast_text(shared))
        self.encoder = FeatureEncoder.from_dict(received["encoder"])
        rows = received["rows"]
        file = open_chunked(train, cfg, chunk_bytes, index=[[Chunk(*c) for c in chunks] for chunks in received["chunks"]])
        if received["stream"]:
            return self._streamed(file, rows, received["held_out_fraction"], part=(ctx.rank, ctx.world))
        seed, fraction = self.config.training.seed, received["held_out_fraction"]
        held = hashed_mask(0, sum(rows), fraction, seed) if hold_out else None
        if held is not None and held.all():
            raise DataError(str(train), f"--valid-fraction {fraction:g} holds out every one of the file's {sum(rows)} "
                            "rows; give a --valid file or a smaller fraction", line=1)
        shard, valid = distributed.encode_shard_and_held_out(file.frames(layout=self.encoder.layout), self.encoder,
                                                             sum(rows), ctx, held)
        holdout = Holdout(fraction, len(valid), HASH_RULE, seed) if valid is not None else None
        return shard, valid, holdout

    def _held_out_fraction(self, train: str | Path) -> float:
        """The share of the file ``train`` held out: ``data.valid_fraction``, lowered for a file so large (by its
        estimated rows, known before it is read, as the encoders must) that the held-out rows, which validation
        holds in memory, would pass ``STREAM_HELD_OUT_ROWS``. Streamed or not, the same share: a resumed run
        that streams where the first did not (``--stream auto`` by free memory) holds out the rows its
        checkpoint's encoders left out."""
        return stream_fraction(estimated_rows(train), self.config.data.valid_fraction)

    def _streamed(self, file: ChunkedFile | ChunkedFiles, rows: list[int], fraction: float | None,
                  part: tuple[int, int] = (0, 1)) -> TrainingData:
        """A ``StreamSource`` over ``file`` (``rows``: each chunk's) for ``part`` (rank, world); with a held-out
        ``fraction`` (the one the encoders left out), the rows ``hashed_mask`` holds out are left out of it and
        returned encoded (on several ranks: each encodes those of its block of chunks, then all are
        gathered). No row held out: no validation rows; every row held out: a ``DataError``."""
        cfg, seed = self.config.data, self.config.training.seed
        if fraction is None:
            return StreamSource(file, self.encoder, rows, window=cfg.shuffle_window, part=part), None, None
        if part[1] > 1 and not self.encoder.multi_fields:  # each rank reads 1/world of the file for them
            ctx = distributed.context()
            valid = distributed.gather_rows(distributed.encode_held_out_share(file, self.encoder, rows, fraction, seed, ctx))
        else:
            valid = encode_hashed(file, self.encoder, fraction, seed)
        held = len(valid) if valid is not None else 0
        if held == sum(rows):
            raise DataError(str(file.path), f"--valid-fraction {fraction:g} holds out every one of the file's "
                            f"{sum(rows)} rows; give a --valid file or a smaller fraction", line=1)
        if not held:
            return StreamSource(file, self.encoder, rows, window=cfg.shuffle_window, part=part), None, None
        exclude = functools.partial(hashed_mask, fraction=fraction, seed=seed)
        return (StreamSource(file, self.encoder, rows, window=cfg.shuffle_window, exclude=exclude, part=part), valid,
                Holdout(fraction, len(valid), HASH_RULE, seed))

    def _training_data(self, train: Data, encoder: FeatureEncoder | None, progress: bool = False,
                       hold_out: bool = False) -> TrainingData:
        """Fit ``self.encoder`` (unless given) and encode ``train``. A file is read chunk by chunk:
        into memory, or, when streaming, again every epoch by a ``StreamSource``. ``progress``: a bar
        over the chunks on a terminal. With ``hold_out``, ``data.valid_fraction`` of the rows are
        held out (``deepfm.data.holdout``) and returned apart."""
        cfg = self.config.data
        seed = self.config.training.seed
        if not isinstance(train, (str, Path)):
            rule = held_out_rule(cfg.valid_fraction, seed) if hold_out else None  # rows the encoders leave out
            self.encoder = encoder  # read as this run's config (and its checkpoint's encoders) say, not a former fit's
            frame = self.read(train)
            if frame.num_rows == 0:  # as a file without data rows (a model of no rows predicts a constant)
                raise DataError(frame.path, "no rows to train on")
            self.encoder = encoder or FeatureEncoder.fit([frame], cfg, held_out=rule)
            return _held_out_of(self.encoder.transform(frame), hold_out, cfg.valid_fraction, seed, train)
        file = open_chunked(train, cfg, chunk_bytes_for(train, cfg.chunk_rows))
        stream = should_stream(train, cfg.stream)
        fraction = self._held_out_fraction(train) if hold_out else None
        rule = held_out_rule(fraction, seed) if fraction is not None else None
        if encoder is None and not stream:  # one reading pass
            try:
                self.encoder, _, data = fit_and_encode(file, cfg, progress=progress, held_out=rule)
            except NotPositionalError as error:  # (a libFM file whose first chunk looked positional)
                if isinstance(file, ChunkedFiles):
                    raise
                # the rows are in memory anyway: read them in one piece (twice the rows the first MiB's lines make
                # likely, an estimate; a file of longer lines later is the error above)
                file = open_chunked(train, cfg, chunk_bytes_for(train, 2 * estimated_rows(train)))
                self.encoder, _, data = fit_and_encode(file, cfg, progress=progress, held_out=rule)
                self.encoder.fit_notes.insert(0, f"{error.path}: read again in one piece, where its rows are one "
                                                 f"multi-valued field 'features': line {error.line}: {error.message}")
            release_free_memory()  # the counting tables of the fit and the parsed chunks
            return _held_out_of(data, hold_out, fraction, seed, train)
        if encoder is None:
            encoder, rows = fit_streaming(file, cfg, progress=progress, held_out=rule)
            release_free_memory()  # the counting tables of the fit
        else:
            rows = count_rows(file, progress=progress)
        self.encoder = encoder
        if stream:
            return self._streamed(file, rows, fraction)
        data = encode_file(file, encoder, rows, progress=progress)
        release_free_memory()  # the parsed chunks
        return _held_out_of(data, hold_out, fraction, seed, train)

    # -- inference --------------------------------------------------------------------------------

    def predict(self, data: Data, chunk_rows: int | None = None) -> np.ndarray:
        """Probabilities (binary) or ratings (regression), one per row, in input order; (N, C) class
        probabilities for a multiclass or ordinal task, in the order of ``classes``. A file is read chunk by chunk
        (``predict_chunks``), so memory holds its predictions, not its rows. Safe to call from several threads
        at once."""
        return joined([predictions for _, predictions in self.predict_chunks(data, chunk_rows)])

    def predict_chunks(self, data: Data, chunk_rows: int | None = None) -> Iterator[tuple[RawFrame, np.ndarray]]:
        """``predict`` a chunk at a time: each chunk of a file (about ``chunk_rows`` rows, default
        ``data.chunk_rows``; ``frames``) with its predictions, in file order, for scoring files larger than memory."""
        self._require_model()
        for frame, encoded in self._encoded_chunks(data, False, chunk_rows):
            yield frame, self.encoder.task.link(torch.from_numpy(self._logits(frame, encoded))).numpy()

    @property
    def classes(self) -> list[str] | list[int] | list[float] | None:
        """A multiclass or ordinal model's classes in the order of ``predict``'s columns: numbers where every class is
        one (ratings 1-5 as the ints 1-5, so that ``np.array(classes)[p.argmax(1)]`` compares with the labels and
        ``p @ classes`` is an ordinal model's expected rating), else the text the training labels wrote; None for a
        binary or regression model."""
        self._require_model()
        if self.encoder.task.name not in ("multiclass", "ordinal"):
            return None
        return typed_classes(self.encoder.task.classes)

    def evaluate(self, data: Data, chunk_rows: int | None = None) -> dict[str, Any]:
        """``{"rows": N, "auc": .., "logloss": ..}`` (binary), ``{"rows": N, "rmse": .., "mae": ..}`` (regression),
        ``{"rows": N, "accuracy": .., "logloss": .., "auc": ..}`` (multiclass: the macro one-vs-rest AUC; ordinal adds
        the expected rating's ``rmse`` and ``mae``), and
        ``"weighted_by"``: the weight column, where the metrics weigh each row by it (``data.weight``). A file is
        read chunk by chunk, as ``predict`` reads it; memory holds each row's logits, label and weight."""
        self._require_model()
        logits, labels, weights = [], [], []
        for frame, encoded in self._encoded_chunks(data, True, chunk_rows):
            if encoded.labels is None:
                raise DataError(str(data), f"evaluation needs the label column '{self.encoder.label}'", line=1)
            logits.append(self._logits(frame, encoded))
            labels.append(encoded.labels)
            weights.append(encoded.weights)
        source = str(data) if isinstance(data, (str, Path)) else "<table>"
        weighted = {"weighted_by": self.encoder.weight} if weights[0] is not None else {}
        if self.encoder.weight and not weighted:
            warn_data(f"{source}: no column '{self.encoder.weight}', the sample weights the model was trained with: "
                      "the metrics weigh every row alike")
        labels = joined(labels)
        if len(labels) == 0:  # metrics of no rows are NaN (and NumPy's warnings), not a number to report
            raise DataError(source, "no rows to evaluate", line=None)
        refuse_zero_weight_sum(joined(weights) if weighted else None, source, "rows to evaluate")
        metrics = self.encoder.task.metrics(labels, joined(logits), joined(weights) if weighted else None)
        return {"rows": len(labels), **weighted, **metrics}

    def _encoded_chunks(self, data: Data, with_labels: bool | None,
                        chunk_rows: int | None) -> Iterator[tuple[RawFrame, EncodedData]]:
        """Each chunk of ``data`` (``frames``) and its rows as the model reads them (labels as ``encode`` reads them);
        unseen values warned of as ``encode`` warns of them, counted over the first ``UNSEEN_ROWS`` rows whatever the
        chunks."""
        counts, where = UnseenCounts(self.encoder), str(data) if isinstance(data, (str, Path)) else None
        for frame in self.frames(data, require_label=bool(with_labels), chunk_rows=chunk_rows):
            encoded = self.encoder.transform(frame, with_labels=with_labels is not False)
            if counts.rows < UNSEEN_ROWS:
                counts.add(encoded.slice(0, min(len(encoded), UNSEEN_ROWS - counts.rows)))
                if counts.rows >= UNSEEN_ROWS:
                    self._warn_unseen(where or frame.path, counts)
            yield frame, encoded
        if counts.rows < UNSEEN_ROWS:
            self._warn_unseen(where or frame.path, counts)

    def _warn_unseen(self, where: str, counts: UnseenCounts) -> None:
        for note in self.encoder.scoring_notes(counts=counts):
            warn_data(f"{where}: {note}")

    def _logits(self, frame: RawFrame, encoded: EncodedData) -> np.ndarray:
        """The model's logits for the rows of ``frame``; a row whose logits are not finite is a located ``DataError``."""
        logits = predict_logits(self.model, encoded, self.config.training.device)
        row = first_not_finite(logits)
        if row is not None:
            raise DataError(frame.path, NOT_FINITE, line=frame.line_of(row))
        return logits

    # -- persistence ------------------------------------------------------------------------------

    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the model directory (``deepfm.artifact``); ``extra``: further JSON files by name."""
        self._require_model()
        config, counts = self.config, self.encoder.id_counts
        if config.data.min_count is None and counts is not None:  # the rare-value rule's choice, as applied
            config = config.model_copy(update={"data": config.data.model_copy(update={"min_count": counts.min_count})})
        return save_model_dir(directory, self.model, self.encoder, config, self.metrics, extra)

    @classmethod
    def load(cls, directory: str | Path) -> "Estimator":
        """The fitted estimator a model directory holds (``save``, ``deepfm train``), its files checked against its
        manifest; a model trained on a GPU loads on a machine without one."""
        saved = load_model_dir(directory)
        config = saved.config
        device = usable_here(config.training.device)
        if device != config.training.device:  # trained on a GPU (or MPS) this machine lacks
            config = config.model_copy(update={"training": config.training.model_copy(update={"device": device})})
        estimator = cls(config)
        estimator.model, estimator.encoder, estimator.metrics = saved.model, saved.encoder, saved.metrics
        estimator.model.to(config.training.device)  # where predict() sends the batches
        return estimator

    def _require_model(self) -> None:
        if self.model is None or self.encoder is None:
            raise RuntimeError("the estimator has no model yet: call fit() or Estimator.load()")
