"""The default portfolio: one model per default recipe, validation keeps the best (``training.portfolio``).

Where ``deepfm.defaults.portfolio`` lists several candidates for the model, task and ids (``PORTFOLIOS`` by their
shape; both branches of the data rule on a small long tail), ``Estimator.fit`` trains each from the same seed, each
with its own early stopping (and checkpoint directory), and keeps the one with the best validation metric. Where
two are scored on the same unweighted validation rows of a binary task (``paired_choice``), a later candidate must
beat the kept one by more than the standard error of the difference (DeLong's for AUC, paired row by row); closer
than that, the other metric decides (the lower logloss, or the higher AUC when selecting by logloss), so a tie on
AUC does not keep a model whose probabilities are worse. Otherwise a tie keeps the earlier candidate, so the
defaults win ties. The chosen candidate's resolved config is the run's config
(saved with the model); a candidate that sets ``min_count`` trains on encoders of its own (``Estimator.fit``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch import nn

from deepfm.config import RunConfig
from deepfm.data.encoders import IdCounts
from deepfm.defaults import Candidate, portfolio, with_candidate, with_task_defaults
from deepfm.errors import ConfigError, TrainingDiverged
from deepfm.tasks import Task
from deepfm.training.checkpoint import checkpoint_paths
from deepfm.training.trainer import TrainResult

BUDGET_KEYS = frozenset({"epochs"})  # how long a run may train, not a recipe: a value the user set holds for every candidate
TrainCandidate = Callable[[RunConfig, int], tuple[nn.Module, TrainResult]]  # (resolved config, index) -> trained
# (resolved config, trained model) -> (0/1 labels, logits) of the validation rows, None where they are not comparable
ValidationScores = Callable[[RunConfig, nn.Module], "tuple[np.ndarray, np.ndarray] | None"]


@dataclass(frozen=True)
class Tried:
    """One candidate's run: what it set and what validation said."""

    name: str
    overrides: dict[str, Any]
    best_valid: dict[str, float] | None
    best_epoch: int | None
    # the trainer's loop over every session of the run (not building the model or encoding a recipe's own data);
    # None: it finished, or began, before a resume, in a version that did not record the time
    seconds: float | None
    failed: str | None = None  # why training stopped (it diverged), or None
    compared: dict[str, Any] | None = None  # ``paired_gaps`` against the recipe kept before it, and whether it replaced it

    def to_dict(self) -> dict[str, Any]:
        overrides = {key: list(value) if isinstance(value, tuple) else value for key, value in self.overrides.items()}
        return ({"name": self.name, "overrides": overrides, "best_valid": self.best_valid, "best_epoch": self.best_epoch,
                 "seconds": self.seconds} | ({"failed": self.failed} if self.failed else {})
                | ({"compared": self.compared} if self.compared else {}))


@dataclass
class Chosen:
    """The kept candidate: its resolved config, trained model and result, beside every candidate's record."""

    config: RunConfig
    model: nn.Module
    result: TrainResult
    name: str
    tried: list[Tried]
    scores: tuple[np.ndarray, np.ndarray] | None = None  # its validation rows' (labels, logits), where comparable


def comparable(task: Task, kept: Chosen, scores: tuple[np.ndarray, np.ndarray] | None) -> bool:
    """Whether ``paired_choice`` can compare a candidate's validation ``scores`` with ``kept``'s: a binary task selecting
    by AUC or logloss, both scored on the same labelled rows, at least two of each class."""
    if task.name != "binary" or task.selection[0] not in ("auc", "logloss") or scores is None or kept.scores is None:
        return False
    labels = kept.scores[0]
    return np.array_equal(scores[0], labels) and min(labels.sum(), len(labels) - labels.sum()) >= 2


def paired_gaps(task: Task, kept: Chosen, scores: tuple[np.ndarray, np.ndarray] | None) -> dict[str, Any] | None:
    """A candidate's validation metrics less ``kept``'s, each with the standard error of that difference, both scored
    on the same rows (``{"against", "rows", "auc": [gap, se], "logloss": [gap, se]}``); None where not ``comparable``."""
    if not comparable(task, kept, scores):
        return None
    from deepfm import paired  # (SciPy's ranks: loaded where a portfolio compares)
    from deepfm.tasks import binary_logloss_rows

    labels, logits = scores
    kept_logits = kept.scores[1]
    auc = paired.auc_difference(labels, logits, kept_logits)
    logloss = paired.mean_difference(binary_logloss_rows(labels, logits), binary_logloss_rows(labels, kept_logits))
    return {"against": kept.name, "rows": len(labels), "auc": list(auc), "logloss": list(logloss)}


def decision(task: Task, name: str, gaps: dict[str, Any]) -> tuple[bool, str]:
    """Whether candidate ``name`` replaces the recipe its ``gaps`` are against, by the one-standard-error rule of the
    module's docstring, and a line for the log saying why."""
    by_auc = task.selection[0] == "auc"
    (gap, error), (other_gap, _) = (gaps["auc"], gaps["logloss"]) if by_auc else (gaps["logloss"], gaps["auc"])
    better, other_better = (gap > 0, other_gap < 0) if by_auc else (gap < 0, other_gap > 0)
    kept = gaps["against"]
    said = (f"portfolio: {name}: valid {'AUC' if by_auc else 'logloss'} {gap:+.5f} against {kept}, standard error "
            f"{error:.5f} (paired on {gaps['rows']:,} rows)")
    outcome = {True: f"{name} replaces it", False: f"{kept} keeps its place"}
    if abs(gap) > error:
        return better, f"{said}: {outcome[better]}"
    other, way = ("logloss", "lower") if by_auc else ("AUC", "higher")
    by = f", {way} by {abs(other_gap):.5f}" if other_gap else ", the same"
    return other_better, f"{said}: within it, so the {way} valid {other} decides: {outcome[other_better]}{by}"


def paired_choice(task: Task, kept: Chosen, name: str, scores: tuple[np.ndarray, np.ndarray] | None
                  ) -> tuple[bool, str | None]:
    """``decision`` on ``paired_gaps``: whether candidate ``name`` (its validation ``scores``) replaces ``kept``, and
    why; (False, None) where they are not ``comparable`` (compare as ``task.is_better``)."""
    gaps = paired_gaps(task, kept, scores)
    return (False, None) if gaps is None else decision(task, name, gaps)


def candidates_for(given: RunConfig, task: str, id_counts: IdCounts | None, in_memory: bool, processes: int,
                   has_valid: bool) -> tuple[tuple[Candidate, ...], str | None]:
    """The candidates to train for ``given`` (the config as the user set it, before the task's defaults), and
    a line for the log when a portfolio exists but does not apply (why); no candidates: train the defaults once."""
    listed = portfolio(given.model.name, task, id_counts)
    if len(listed) < 2 or given.training.portfolio == "off":
        return (), None
    set_keys = given.data.model_fields_set | given.model.model_fields_set | given.training.model_fields_set
    overlap = sorted({key for _, overrides in listed for key in overrides} & set_keys - BUDGET_KEYS)
    reasons = [reason for reason, applies in (
        (f"set by you: {', '.join(overlap)}", not overlap),
        (f"solver {given.training.solver}", given.training.solver == "gradient"),
        ("streamed training data", in_memory),
        (f"{processes} processes", processes == 1),
        ("no validation rows", has_valid)) if not applies]
    if reasons:
        names = ", ".join(name for name, _ in listed)
        return (), f"portfolio ({names}): not run ({'; '.join(reasons)}); training the config as given"
    yours = BUDGET_KEYS & set_keys  # e.g. --epochs 3: every candidate trains at most 3 epochs
    return tuple((name, {key: value for key, value in overrides.items() if key not in yours})
                 for name, overrides in listed), None


def recipe_checkpoint(checkpoint_dir: Path, index: int) -> Path:
    """Where candidate ``index`` (from 0) of a portfolio checkpoints, inside the run's checkpoint folder."""
    return checkpoint_dir / f"portfolio-{index + 1}"


def recipe_begun(checkpoint_dir: Path, index: int) -> bool:
    """Whether candidate ``index`` of an interrupted portfolio wrote a checkpoint (the latest or the previous)."""
    return any(path.is_dir() for path in checkpoint_paths(recipe_checkpoint(checkpoint_dir, index))[:2])


def recipe_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """The candidates' checkpoint folders a portfolio run left in ``checkpoint_dir`` (not their .old / .tmp)."""
    return sorted(path for path in checkpoint_dir.glob("portfolio-*")
                  if path.is_dir() and path.name.removeprefix("portfolio-").isdigit())


def as_checkpointed(candidates: tuple[Candidate, ...], checkpoint_dir: Path | None, resume: bool,
                    log: Callable[[str], None] | None = None) -> tuple[Candidate, ...]:
    """The candidates a resumed run trains: what its checkpoint was written under. A checkpoint of one recipe
    (a run without a portfolio) continues as that run; a portfolio's checkpoint (``portfolio-N`` folders) cannot
    continue without its portfolio (``ConfigError``), rather than start again beside it."""
    if not resume or checkpoint_dir is None or not checkpoint_dir.is_dir():
        return candidates
    recipes = [path.name for path in recipe_checkpoints(checkpoint_dir)]
    single = any((directory / "manifest.json").exists()
                 for directory in (checkpoint_dir, checkpoint_dir.with_name(checkpoint_dir.name + ".old")))
    if candidates and single and not recipes:
        (log or (lambda message: None))(f"resume: {checkpoint_dir} holds a run of one recipe; continuing it (no portfolio)")
        return ()
    if not candidates and recipes:
        raise ConfigError(f"--resume: {checkpoint_dir} holds a portfolio run ({', '.join(recipes)}); resume it with the "
                          "options it started with (without --portfolio off or a recipe's settings), or --overwrite")
    return candidates


def took(result: TrainResult) -> str:
    """How long a recipe trained, for the log: its seconds over the sessions of a resumed run, or what is known
    where its checkpoint, of an older version, did not record them."""
    if result.seconds is None:
        return "finished before the resume" if result.resumed_finished else "begun before the resume (time not recorded)"
    return f"{result.seconds:.1f} s" + (", before the resume" if result.resumed_finished else "")


def train_portfolio(candidates: tuple[Candidate, ...], given: RunConfig, task: Task, id_counts: IdCounts | None,
                    train: TrainCandidate, log: Callable[[str], None] | None = None,
                    validation: ValidationScores | None = None) -> Chosen:
    """Train every candidate (``train``: the resolved config and the candidate's index -> model and result)
    and keep the best on validation (``decision`` where ``validation`` scores each on the same rows, else
    ``task.is_better``; the earlier wins a tie). Only the best model so far, and its validation scores, are held."""
    say = log or (lambda message: None)
    task = task.selecting(given.training.select_by)
    metric, _ = task.selection
    chosen: Chosen | None = None
    tried: list[Tried] = []
    say(f"portfolio: {len(candidates)} default recipes for this data ({', '.join(name for name, _ in candidates)}); "
        f"each trains with its own early stopping, and the one best on the validation rows is kept")
    for index, (name, overrides) in enumerate(candidates):
        config = with_task_defaults(with_candidate(given, overrides), task.name, id_counts)
        settings = ", ".join(f"{key} {value}" for key, value in overrides.items()) or "as configured"
        say(f"portfolio {index + 1}/{len(candidates)}: {name} ({settings})")
        began = time.perf_counter()
        try:
            model, result = train(config, index)
        except TrainingDiverged as error:  # a recipe that blows up on this data loses; the others still count
            tried.append(Tried(name, dict(overrides), None, None, round(time.perf_counter() - began, 3), str(error)))
            say(f"portfolio {index + 1}/{len(candidates)}: {name}: diverged ({error}); left out")
            continue
        seconds = None if result.seconds is None else round(result.seconds, 3)  # every session's, a resumed run's too
        valid = (result.best_metrics or {}).get(metric)
        say(f"portfolio {index + 1}/{len(candidates)}: {name}: valid {metric} "
            f"{'—' if valid is None else f'{valid:.5f}'} at epoch {result.best_epoch}, {took(result)}")
        scores = validation(config, model) if validation is not None else None
        gaps = paired_gaps(task, chosen, scores) if chosen is not None else None
        if gaps is not None:
            replaces, why = decision(task, name, gaps)
            say(why)
        else:
            replaces = chosen is None or task.is_better(result.best_metrics or {}, chosen.result.best_metrics)
        tried.append(Tried(name, dict(overrides), result.best_metrics, result.best_epoch, seconds,
                           compared=None if gaps is None else gaps | {"replaced": replaces}))
        if replaces:
            chosen = Chosen(config, model, result, name, tried, scores)
    if chosen is None:
        raise TrainingDiverged("portfolio: every recipe diverged: " + "; ".join(f"{t.name}: {t.failed}" for t in tried))
    kept = chosen.config.data.min_count if "min_count" in dict(candidates)[chosen.name] else None
    encoders = ("" if kept is None else "; every value keeps its own id (data.min_count 1)" if kept <= 1 else
                f"; values seen fewer than {kept} times share their field's rare id (data.min_count {kept})")
    say(f"portfolio: kept {chosen.name} (by valid {metric}{encoders}; --portfolio off (training.portfolio) trains the "
        f"first recipe, {candidates[0][0]}, only)")
    return chosen
