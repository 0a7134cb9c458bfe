"""The training loop: read it top to bottom.

For each epoch: shuffle (order fixed by seed and epoch), step through batches, evaluate
on validation data, keep the best epoch's weights, stop after ``patience`` epochs
without improvement (with ``lr_schedule = plateau``, each such epoch first reloads the best
weights and divides the learning rate by 10), checkpoint. Resuming restores model, optimisers, RNG and position.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from deepfm import distributed, randomness
from deepfm.config import TrainingConfig
from deepfm.data.batch import Batch, BatchSource, EncodedData, InMemorySource, prefetch
from deepfm.data.encoders import refuse_one_weighted_class, refuse_zero_weight_sum
from deepfm.errors import ConfigError, DataError, TrainingDiverged
from deepfm.runtime import available_cores, peak_rss_mb, release_free_memory
from deepfm.training.checkpoint import CheckpointWarning, CheckpointWriter, complete_checkpoint, load_checkpoint
from deepfm.tasks import Task, as_task, metric_text
from deepfm.training.optim import ModelOptimizer, batch_occurrences
from deepfm.training.fm_step import FMStep

PROGRESS_EVERY = 16  # steps between updates of the running loss in the progress bar
PLATEAU_FACTOR = 0.1  # lr_schedule "plateau": the learning rate's factor on each epoch without improvement
# of ``Trainer._resume_settings``, those a resumed run must share with the interrupted one even at an epoch's
# end (the others fix the batches of an epoch: they count where it resumes in the middle of one)
EVERY_RESUME = frozenset({"seed", "optimizer", "rows"})
BATCHES_AHEAD_FROM = 4096  # rows a batch: from this size on a thread makes the next ones during a step (``Trainer``)
PREDICT_BATCH = 4096  # activations of 4096 × 400 stay in cache: faster on CPU than larger batches


def loss_fn(task: Task | str, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean logloss (binary) or mean squared error (regression) of a batch (weighted by row if given)."""
    return as_task(task).loss(logits, labels, weights)


def to_prediction(task: Task | str, logits: torch.Tensor) -> torch.Tensor:
    """Probabilities for binary tasks, ratings for regression."""
    return as_task(task).link(logits)


PROGRESS_ROWS = 200_000  # scoring more rows than this shows a bar (when progress is on)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's weights (the CPU for a model without any)."""
    weight = next(model.parameters(), None)
    return weight.device if weight is not None else torch.device("cpu")


@torch.no_grad()
def predict_logits(model: nn.Module, data: EncodedData, device: str | torch.device | None = None,
                   batch_size: int = PREDICT_BATCH, progress: bool = False) -> np.ndarray:
    """The model's logits for every row of ``data``, in order, float64: (N,) or (N, C) for C outputs.
    The batches go to ``device``, by default the one the model's weights are on. A model in training mode (the
    trainer scoring its validation rows) is switched to eval for the call and back; one in eval mode is only read,
    so calls from several threads at once are safe (``Estimator.fit`` leaves its model in eval mode)."""
    if model.training:
        model.eval()
        try:
            return predict_logits(model, data, device, batch_size, progress)
        finally:
            model.train()
    device = device if device is not None else model_device(model)
    out: np.ndarray | None = None
    starts = range(0, max(len(data), 1), batch_size)  # no rows: one empty batch, for the shape of C outputs, (0, C)
    for start in tqdm(starts, desc="scoring", unit="batch", leave=False, disable=not progress or len(data) < PROGRESS_ROWS):
        chunk = data.slice(start, min(start + batch_size, len(data)))
        logits = model(chunk.to_batch(device)).double().cpu().numpy()
        if out is None:
            out = np.empty((len(data), *logits.shape[1:]), dtype=np.float64)
        out[start : start + len(chunk)] = logits
    return out if out is not None else np.empty(0, dtype=np.float64)


NOT_FINITE = ("the model's prediction for this row is not a finite number: its values overflow the model's float32 "
              "arithmetic (scale them down)")


def first_not_finite(outputs: np.ndarray) -> int | None:
    """The first row of ``outputs`` ((N,) or (N, C) logits or predictions) that holds NaN or infinity, or None."""
    finite = np.isfinite(outputs).reshape(len(outputs), -1).all(axis=1) if outputs.size else np.ones(len(outputs), bool)
    return None if finite.all() else int(np.argmin(finite))


@torch.no_grad()
def predict(model: nn.Module, task: Task | str, data: EncodedData, device: str | torch.device | None = None,
            batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """Predictions for every row of ``data``, in order: (N,) probabilities or ratings, or (N, C) class
    probabilities; float64. The batches go to ``device``, by default the model's."""
    logits = predict_logits(model, data, device, batch_size)
    return as_task(task).link(torch.from_numpy(logits)).numpy()


def steps_in_epoch(source: BatchSource, batch_size: int) -> int:
    """Batches per epoch: a last batch of one row joins the one before (``join_single_row_tail``)."""
    steps = source.steps_per_epoch(batch_size)
    return steps - 1 if steps > 1 and source.num_rows % batch_size == 1 else steps


def join_single_row_tail(batches: Iterator[EncodedData], batch_size: int) -> Iterator[EncodedData]:
    """The batches, with a last batch of one row appended to the one before: batch norm cannot
    train on one row, and no row is skipped. In memory and streamed alike (both end an epoch with
    the only short batch), so the steps of an epoch, and resuming at one, do not change. At ``batch_size`` 1
    every batch is one row, and each is its own step (a model with batch norm refuses that size)."""
    held: EncodedData | None = None
    for batch in batches:
        if held is not None and len(batch) == 1 and batch_size > 1:  # (only an epoch's last batch is short)
            held = EncodedData.concat([held, batch])
            continue
        if held is not None:
            yield held
        held = batch
    if held is not None:
        yield held


def loss_read_interval(device_type: str) -> int:
    """Steps between reads of the training loss: every step on the CPU, every ``PROGRESS_EVERY`` elsewhere.
    Each read of a GPU's loss makes the host wait for the GPU, which then idles while the host prepares the next
    step; a loss that is not finite is still reported at its own step, up to that many steps later."""
    return 1 if device_type == "cpu" else PROGRESS_EVERY


@dataclass
class TrainResult:
    """What a run did: per-epoch history, the best epoch and throughput."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_metrics: dict[str, float] | None = None
    epochs_run: int = 0
    train_seconds: float = 0.0
    samples_seen: int = 0
    epoch_loss: tuple[float, int] = (0.0, 0)  # (loss sum, steps) of the epoch so far, kept in mid-epoch checkpoints
    seconds: float | None = 0.0  # wall-clock seconds the run took (validation and checkpoints too) in every session of
    # it, up to its last checkpoint; None where it resumed from a checkpoint of an older version, which did not say
    resumed_finished: bool = False  # resumed from the checkpoint of a run that had finished: nothing trained now
    earlier_seconds: float | None = 0.0  # of ``seconds``, what the sessions before this one took (None: not known)

    @property
    def samples_per_s(self) -> float:
        return self.samples_seen / self.train_seconds if self.train_seconds else 0.0


class Trainer:
    """Trains one model on encoded data; ``checkpoint_dir`` enables checkpoints and resume."""

    def __init__(
        self,
        model: nn.Module,
        task: Task | str,
        config: TrainingConfig,
        checkpoint_dir: Path | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.model = model.to(config.device)
        self.task = as_task(task).selecting(config.select_by)
        self.config = config
        self.optimizer = ModelOptimizer(self.model, config)
        distributed.share_tables(self.optimizer.sparse_params)  # ranks on one machine map one copy of each table
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self._writer = CheckpointWriter()  # each checkpoint written while the next epoch trains
        self.progress = progress and sys.stderr.isatty() and distributed.is_main()
        self.log = log or (lambda message: None)
        self.has_log = log is not None
        self.on_epoch = on_epoch
        self.autocast_device = torch.device(config.device).type
        self.bf16 = config.precision == "bf16"
        # A thread makes the next batches of 4096 rows and more while this one trains: on a core compute leaves idle
        # (FM and LR run one thread), or in the single-threaded stretches of a step on several threads (2 cores, DeepFM
        # at the defaults, file → model, alternated pairs: Criteo shape fp32 faster in 4 of 5, bf16 2 of 2, long tail
        # 2 of 2, one-hot 1 of 2). Smaller batches are made inline: their Python then waits for the GIL the batch
        # thread holds (2026-12-05, Frappe, medians of 3 alternated epochs, made ahead against inline: FM k 64 at
        # batch 512 290k against 365k samples/s, 1024 432k / 560k, 2048 829k / 844k, 4096 1.22M / 1.18M; LR at 512
        # 398k / 601k; DeepFM at 512 on one-hot and long-tail data 26.5k / 27.5k and 27.5k / 28.7k). One thread on
        # every core: made inline, cheaper than handed over.
        self._batches_ahead = self.autocast_device != "cpu" or config.batch_size >= BATCHES_AHEAD_FROM and (
            torch.get_num_threads() > 1  # (a GPU: the thread's copies to the device overlap the step, at any size)
            or torch.get_num_threads() * distributed.context().local_world < available_cores())
        self._read_every = loss_read_interval(self.autocast_device)
        self._fm_step: FMStep | None = None  # FM's compiled step, where it applies (``fit`` decides)
        self._source: BatchSource | None = None  # what ``fit`` trains on (its layout is part of a checkpoint)
        self._began, self._before = time.perf_counter(), 0.0  # ``fit`` sets both: its session's start, earlier ones'

    def fit(self, train: EncodedData | BatchSource, valid: EncodedData | None = None, resume: bool = False,
            replay: Sequence[bool] | None = None) -> TrainResult:
        """Train on ``train`` (in-memory data or any ``BatchSource``); ``valid`` selects the best epoch.
        ``replay`` (no ``valid``): another run's per-epoch verdicts (``improved`` of its history), followed
        for ``len(replay)`` epochs as if validation had given them: the same best epoch, reloads and
        learning-rate drops (``refit``)."""
        config, result = self.config, TrainResult()
        self._began = time.perf_counter()  # this session's start (``_save`` counts the run's seconds from it)
        epochs = config.epochs if replay is None else len(replay)
        source = InMemorySource(train) if isinstance(train, EncodedData) else train
        self._source = source
        start_epoch, skip_steps, best_weights, bad_epochs = 0, 0, None, 0
        found = complete_checkpoint(self.checkpoint_dir, self._warn) if resume else None
        if found:
            start_epoch, skip_steps, best_weights, bad_epochs = self._restore(found, result)
            stopped = bool(config.patience and bad_epochs >= config.patience)
            if start_epoch >= epochs or stopped:  # (not "at epoch 4" of a 3-epoch run)
                self.log(f"resumed from {found}: its run had finished ({start_epoch} epochs"
                         f"{', stopped early' if stopped else ''}); nothing is left to train")
            else:
                self.log(f"resumed from {found} at epoch {start_epoch + 1}, step {skip_steps}")
        elif resume:
            self.log(f"--resume: no checkpoint in {self.checkpoint_dir}; starting from scratch")
        self._before = result.earlier_seconds = result.seconds  # the earlier sessions': none, or those the checkpoint
        # says (None: it does not)
        self._fm_step = self.compiled_fm_step()  # decided now: hooks registered since ``__init__`` count
        if isinstance(train, EncodedData) and distributed.context().world == 1:  # (a rank's shard may be all 0)
            refuse_zero_weight_sum(train.weights, "training data", "training rows")
            refuse_one_weighted_class(train.labels, train.weights, self.task.name, "training data")
        refuse_zero_weight_sum(valid.weights if valid is not None else None, "validation data", "validation rows")
        steps_per_epoch = steps_in_epoch(source, config.batch_size)
        if source.num_rows == 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules()):
            raise DataError("training data", "1 sample (one training row): batch norm needs at least two; add rows or "
                            "turn batch norm off (model.batch_norm = false)")
        try:
            for epoch in range(start_epoch, epochs):
                if config.patience and bad_epochs >= config.patience:
                    break  # a resumed run that had already stopped early
                self.model.train()
                ahead = 2 if self._batches_ahead or not isinstance(source, InMemorySource) else 0
                ordered = join_single_row_tail(source.batches(config.batch_size, config.seed, epoch, skip=skip_steps),
                                               config.batch_size)
                batches = prefetch(ordered, config.device, ahead, distinct=self._fm_step is None)  # (FM's step: by ids)
                bar = tqdm(batches, total=steps_per_epoch, initial=skip_steps, desc=f"epoch {epoch + 1}", disable=not self.progress, leave=False)
                total_loss, steps = result.epoch_loss if skip_steps else (0.0, 0)  # resumed mid-epoch: its loss so far
                began = time.perf_counter()
                unread: list[torch.Tensor] = []  # the losses of the steps since the last read
                try:
                    for step, (rows, batch) in enumerate(bar, start=skip_steps):
                        unread.append(self._step(batch))
                        result.samples_seen += rows
                        checkpoint = (config.checkpoint_every and (step + 1) % config.checkpoint_every == 0
                                      and step + 1 < steps_per_epoch)
                        if len(unread) >= self._read_every or checkpoint:
                            shown = steps // PROGRESS_EVERY
                            total_loss, steps = total_loss + self._read_losses(unread, epoch, step), steps + len(unread)
                            unread.clear()
                            if self.progress and steps // PROGRESS_EVERY > shown:  # every PROGRESS_EVERY steps
                                bar.set_postfix_str(f"loss {total_loss / steps:.5f}", refresh=False)
                        if checkpoint:
                            result.train_seconds += time.perf_counter() - began
                            result.epoch_loss = (total_loss, steps)
                            self._save(result, epoch, step + 1, best_weights, bad_epochs)
                            began = time.perf_counter()
                    if unread:
                        total_loss, steps = total_loss + self._read_losses(unread, epoch, step), steps + len(unread)
                finally:
                    batches.close()  # the batch thread stops here too when a step fails
                result.train_seconds += time.perf_counter() - began
                skip_steps, result.epoch_loss = 0, (0.0, 0)
                record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": total_loss / max(steps, 1)}
                reload = False
                if valid is not None or replay is not None:
                    metrics = self._validate(valid, epoch) if valid is not None else None
                    improved = (self.task.is_better(metrics, result.best_metrics, by=config.min_improvement)
                                if valid is not None else replay[epoch])
                    record.update({"valid": metrics} if metrics is not None else {}, improved=bool(improved))
                    if improved:
                        result.best_epoch, result.best_metrics, bad_epochs = epoch + 1, metrics, 0
                        best_weights = {k: v.detach().clone().cpu() for k, v in self.model.state_dict().items()}
                    else:
                        bad_epochs += 1
                        reload = config.lr_schedule == "plateau" and best_weights is not None
                else:
                    result.best_epoch, best_weights = epoch + 1, None
                result.history.append(record)
                result.epochs_run = epoch + 1
                self.log(_describe(record))
                if reload:  # after the epoch's line, which it follows from
                    self._reload_with_lower_lr(best_weights, replayed=replay is not None)
                if self.on_epoch:
                    self.on_epoch(record)
                self._save(result, epoch + 1, 0, best_weights, bad_epochs)
                if config.patience and bad_epochs >= config.patience:
                    self.log(f"early stop: no improvement for {bad_epochs} epochs; best epoch {result.best_epoch}")
                    break
        except BaseException:  # diverged, interrupted: the run's own error is the one said, once the write has ended
            self._writer.wait(raising=False)
            raise
        self._writer.wait()  # the last checkpoint on disk before the run returns
        release_free_memory()  # the steps' freed tensors, kept by malloc for the next step (``runtime``), before predicting
        if best_weights is not None:
            self.model.load_state_dict(best_weights)
        result.resumed_finished = found is not None and result.epochs_run == start_epoch  # (mid-epoch: it trains on)
        return result

    def compiled_fm_step(self) -> FMStep | None:
        """FM's compiled training step (``training.fm_step``) for this model and settings, or None: autograd steps."""
        return FMStep.of(self.model, self.task, self.optimizer, self.config.device, self.config.precision)

    def _validate(self, valid: EncodedData, epoch: int) -> dict[str, float]:
        """The task's metrics on the validation rows (the same on every rank)."""
        logits = distributed.gather_blocks(predict_logits(
            self.model, distributed.block_of(valid), self.config.device, progress=self.progress))
        if not np.isfinite(logits).all():
            raise TrainingDiverged(f"epoch {epoch + 1}: the model predicts NaN or infinity on validation rows "
                                   f"(it diverged); train again with a lower --lr (this run: {self.config.lr:g})")
        return self.task.metrics(valid.labels, logits, valid.weights)

    def _reload_with_lower_lr(self, best_weights: dict[str, torch.Tensor], replayed: bool = False) -> None:
        """The plateau schedule: continue from the best epoch's weights at a tenth of the learning rate."""
        self.model.load_state_dict(best_weights)
        self.optimizer.scale_lr(PLATEAU_FACTOR)
        self.log(f"{'as in the run: ' if replayed else ''}no improvement: reloaded the best epoch's weights; learning rate "
                 f"now {self.config.lr * self.optimizer.lr_scale:g}")

    def _read_losses(self, losses: list[torch.Tensor], epoch: int, last_step: int) -> float:
        """The sum of the steps' ``losses`` (the last one that of step ``last_step``, from 0), read in one go;
        TrainingDiverged names the first step whose loss is not finite."""
        values = torch.stack(losses).tolist()
        for offset, loss in enumerate(values):
            if not math.isfinite(loss):
                step = last_step - len(values) + offset + 2  # counted from 1
                raise TrainingDiverged(f"epoch {epoch + 1}, step {step}: the training loss is {loss} (the model "
                                       f"diverged); train again with a lower --lr (this run: {self.config.lr:g})")
        return math.fsum(values)

    def _step(self, batch: Batch) -> torch.Tensor:
        loss = self._fm_step.step(batch) if self._fm_step is not None else None
        if loss is not None:
            return loss
        self.optimizer.zero_grad()
        with torch.autocast(self.autocast_device, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(batch)  # bf16: the MLP's hidden layers in bfloat16; FM term and output in fp32
        loss = self.task.loss(logits.float(), batch.labels, batch.weights)
        loss.backward()
        if self.optimizer.per_occurrence:  # before averaging: each process adds its own rows' share
            self.optimizer.add_occurrence_penalty(batch_occurrences(batch))
        owned = distributed.average_gradients(self.model)  # no-op in a single process
        self.optimizer.step()  # distributed: each rank steps on the table rows it owns ...
        owned.share()  # ... and sends them to the other ranks
        return loss.detach()  # read by ``_read_losses``, on a GPU not at every step

    def _save(self, result: TrainResult, epoch: int, step: int, best_weights, bad_epochs: int) -> None:
        result.seconds = None if self._before is None else self._before + time.perf_counter() - self._began
        if self.checkpoint_dir:  # every rank: rank 0 collects the tables' optimiser state of the rows others own
            distributed.gather_row_state(self.optimizer.optimizers.get("sparse"))
        if not self.checkpoint_dir or not distributed.is_main():
            return
        loop = {
            "epoch": epoch, "step": step, "bad_epochs": bad_epochs, "history": result.history,
            "best_epoch": result.best_epoch, "best_metrics": result.best_metrics,
            "train_seconds": result.train_seconds, "samples_seen": result.samples_seen,
            "epoch_loss": list(result.epoch_loss), "settings": self._resume_settings(), "seconds": result.seconds,
        }
        self._writer.save(self.checkpoint_dir, self.model, self.optimizer.state_dict(), loop, best_weights)

    def _resume_settings(self) -> dict[str, Any]:
        """What fixes the batches and steps of an epoch: resuming in the middle of one needs the same."""
        source = self._source
        return {"batch_size": self.config.batch_size, "seed": self.config.seed, "optimizer": self.config.optimizer,
                "ranks": distributed.context().world, "rows": source.num_rows,
                "streamed": not isinstance(source, InMemorySource), "shuffle_window": getattr(source, "window", None),
                "chunk_rows": list(getattr(source, "rows_per_chunk", []))[:1],
                "chunks": chunk_layout(getattr(source, "rows_per_chunk", []))}  # (a checkpoint before it: not compared)

    def _warn(self, message: str) -> None:
        """A damaged checkpoint, said by rank 0: in the run's log, or as a Python warning without one."""
        if not distributed.is_main():
            return
        if self.has_log:
            self.log(message)
        else:
            warnings.warn(message, CheckpointWarning, stacklevel=2)

    def _restore(self, found: Path, result: TrainResult) -> tuple[int, int, dict | None, int]:
        weights, optimizer_state, loop, best, rng = load_checkpoint(found)
        saved = loop.get("settings", {})
        compared = self._resume_settings() if loop["step"] else {  # at an epoch's end nothing is skipped ...
            key: value for key, value in self._resume_settings().items() if key in EVERY_RESUME}  # ... but these count
        changed = [f"{k} {saved[k]} → {v}" for k, v in compared.items() if saved.get(k, v) != v]
        if changed:
            raise ConfigError(f"{self.checkpoint_dir}: the checkpoint was written with other training settings "
                              f"({', '.join(changed)}); resume with the same settings, or train into a new --out")
        differs = weights_differ(weights, self.model.state_dict())
        try:
            if differs is None:
                self.model.load_state_dict(weights)
                self.optimizer.load_state_dict(optimizer_state)
        except (RuntimeError, ValueError, KeyError):
            differs = "the optimiser's state does not fit this model's parameters"
        if differs is not None:
            raise ConfigError(f"{self.checkpoint_dir}: the checkpoint was written with other model or optimiser "
                              f"settings ({differs}); resume with the same settings, or train into a new --out")
        randomness.set_state(rng)  # the generator training draws from: the fit's, or torch's default one
        result.history = loop["history"]
        result.best_epoch, result.best_metrics = loop["best_epoch"], loop["best_metrics"]
        result.train_seconds, result.samples_seen = loop["train_seconds"], loop["samples_seen"]
        result.epochs_run = loop["epoch"]
        result.epoch_loss = tuple(loop.get("epoch_loss", (0.0, 0)))  # absent in checkpoints of older versions
        result.seconds = loop.get("seconds")  # absent in checkpoints of older versions: not known
        return loop["epoch"], loop["step"], best, loop["bad_epochs"]


def weights_differ(saved: dict[str, torch.Tensor], current: dict[str, torch.Tensor]) -> str | None:
    """How a checkpoint's weights (``saved``) differ from a model's (``current``), in a few words (None: they
    have the same names and shapes): the first tensor whose shape differs, or how many names either lacks."""
    resized = [name for name in current if name in saved and saved[name].shape != current[name].shape]
    missing, unexpected = [n for n in current if n not in saved], [n for n in saved if n not in current]
    if resized:
        name = resized[0]
        more = f" and {len(resized) - 1} more" if len(resized) > 1 else ""
        return f"{name} {_dims(saved[name])} → {_dims(current[name])}{more}"
    if missing or unexpected:
        return (f"{len(unexpected)} weight(s) only in the checkpoint, {len(missing)} only in this model "
                f"(e.g. {(unexpected or missing)[0]})")
    return None


def _dims(tensor: torch.Tensor) -> str:
    return "×".join(map(str, tensor.shape)) or "scalar"


def _describe(record: dict[str, Any]) -> str:
    text = f"epoch {record['epoch']}: train loss {record['train_loss']:.5f}"
    for name, value in record.get("valid", {}).items():
        text += f"  valid {metric_text(name, value)}"
    return text


def chunk_layout(rows_per_chunk: Sequence[int]) -> str:
    """A streamed file's chunks, as a resume compares them: their count and a hash of each one's rows (the first
    chunk's rows alone missed a Parquet file chunked anew by another --chunk-rows)."""
    rows = np.asarray(list(rows_per_chunk), dtype=np.int64)
    return f"{len(rows)}:{hashlib.sha256(rows.tobytes()).hexdigest()[:16]}"
