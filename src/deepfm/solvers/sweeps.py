"""The solvers that sweep over every parameter in turn, libFM's MCMC and ALS, behind the ``Solver`` seam.

They fit an FM on the whole training file as Rendle's design matrix (``design_of_data``), with the
array-level cores ``GibbsFM`` and ``ALSFM``, then put the result into the run's module: the kept
posterior samples into a ``PosteriorFM``, ALS's one parameter set into a ``FactorizationMachine``.
A sweep is what an epoch is to the gradient solver: ``training.sweeps`` of them, a progress bar with
the noise precision α and the train RMSE (AUC for binary labels; measured every twentieth of the run),
or a log line every twentieth of the run off a terminal. The chain (or ALS's parameters) is checkpointed every ``CHECKPOINT_SWEEPS``
sweeps (``training.checkpoint_every`` sweeps if set): ``--resume`` continues the same chain, so a
resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from safetensors.numpy import load_file, save_file
from torch import nn
from tqdm import tqdm

from deepfm.config import RunConfig
from deepfm.data.batch import BatchSource, EncodedData
from deepfm.data.design import design_of_data
from deepfm.errors import ConfigError
from deepfm.models.fm import FactorizationMachine
from deepfm.models.posterior import PosteriorFM, set_fm_parameters
from deepfm.solvers.als import ALSFM
from deepfm.solvers.gibbs import GibbsFM, evenly_spaced
from deepfm.tasks import Task, metric_text
from deepfm.training.checkpoint import complete_checkpoint, publish, staging_dir
from deepfm.training.trainer import TrainResult, predict_logits

CHECKPOINT_SWEEPS = 50  # the chain with its samples is large (S × n × k): written every this many sweeps
LOG_LINES = 20  # off a terminal, about this many progress lines per run
CHAIN_FILE = "chain.safetensors"


class SweepSolver:
    """What MCMC and ALS share: the design matrix, progress, checkpoints and the ``TrainResult``.
    Subclasses set ``name`` and make, fit and store their core."""

    name = ""

    def __init__(self, config: RunConfig, progress: bool = True, log: Callable[[str], None] | None = None):
        self.config = config
        self.progress = progress and sys.stderr.isatty()
        self.log = log or (lambda message: None)

    def fit(self, model: nn.Module, task: Task, train: EncodedData | BatchSource, valid: EncodedData | None = None,
            checkpoint_dir: Path | None = None, resume: bool = False) -> TrainResult:
        if not isinstance(train, EncodedData):
            raise ConfigError(f"--solver {self.name} (training.solver) reads the training rows in memory: --stream off "
                              "(data.stream), or --solver gradient to stream them")
        if train.weights is not None:
            raise ConfigError(f"training.solver {self.name}: sample weights (--weight) are not supported; "
                              "use --solver gradient")
        training = self.config.training
        design = design_of_data(train, self.num_features(model))
        labels = train.labels.astype(np.float64)
        settings = {"solver": self.name, "rows": len(train), "features": design.shape[1],
                    "rank": self.config.model.embed_dim, "task": task.name, "seed": training.seed,
                    **self.chain_settings()}
        core, history, before = None, [], 0.0  # before: the seconds of the sessions a resumed chain ran in (None: not known)
        if self.name == "mcmc" and training.samples > training.kept_samples:
            self.log(f"note: training.samples {training.samples}: {training.kept_samples} sweeps follow the burn-in, so "
                     f"the model keeps {training.kept_samples} samples (raise training.sweeps for more)")
        if resume and complete_checkpoint(checkpoint_dir, self.log):
            core, history, before = self.restore(Path(checkpoint_dir), settings)
            self.log(f"resumed from {checkpoint_dir} at sweep {len(history) + 1}")
        elif resume:
            self.log(f"--resume: no checkpoint in {checkpoint_dir}; starting from scratch")
        every = training.checkpoint_every or CHECKPOINT_SWEEPS
        result = TrainResult(history=history, earlier_seconds=before)
        first_sweep = len(history)
        bar = tqdm(total=training.sweeps, initial=first_sweep, desc=self.name, unit="sweep",
                   disable=not self.progress, leave=False)
        began = time.perf_counter()
        shown: dict[str, Any] = {}  # the bar's figures: the latest of each

        def after_sweep(core: Any, record: dict[str, Any]) -> None:
            entry = {"epoch": record["sweep"], **{k: float(v) for k, v in record.items() if k not in ("sweep", "seconds")}}
            history.append(entry)
            bar.update(1)
            shown.update(entry)
            bar.set_postfix_str(describe(shown, with_sweep=False), refresh=False)
            if not self.progress and (record["sweep"] % self.report_every() == 0 or record["sweep"] == training.sweeps):
                self.log(describe(entry))
            if checkpoint_dir is not None and (record["sweep"] % every == 0 or record["sweep"] == training.sweeps):
                seconds = None if before is None else before + time.perf_counter() - began
                self.save(Path(checkpoint_dir), core, history, settings, seconds)

        with bar:
            core = self.run(core, model, design, labels, task, after_sweep)
        result.train_seconds = time.perf_counter() - began
        result.seconds = None if before is None else before + result.train_seconds
        result.samples_seen = len(train) * (len(history) - first_sweep)
        self.store(core, model)
        model.to(training.device)  # the sweeps run on the CPU; predictions where the run predicts
        result.epochs_run = result.best_epoch = len(history)
        if valid is not None:
            logits = predict_logits(model, valid, training.device)
            result.best_metrics = task.metrics(valid.labels, logits, valid.weights)
            self.log("  ".join([f"{self.name}, {len(history)} sweeps:"]
                               + [f"valid {metric_text(k, v)}" for k, v in result.best_metrics.items()]))
        return result

    def report_every(self) -> int:
        """Sweeps between the train metrics (and, off a terminal, the log lines): about ``LOG_LINES`` a run."""
        return max(1, self.config.training.sweeps // LOG_LINES)

    # -- what each solver supplies ----------------------------------------------------------------

    def num_features(self, model: nn.Module) -> int:
        raise NotImplementedError

    def chain_settings(self) -> dict[str, Any]:
        """Settings a resumed run must share with the interrupted one (beyond rows, features, rank, task, seed)."""
        return {}

    def run(self, core: Any, model: nn.Module, design, labels: np.ndarray, task: Task, after_sweep: Callable) -> Any:
        """Fit (or, given ``core``, continue) up to ``training.sweeps``; ``after_sweep(core, record)`` each sweep."""
        raise NotImplementedError

    def store(self, core: Any, model: nn.Module) -> None:
        raise NotImplementedError

    def from_tensors(self, tensors: dict[str, np.ndarray]) -> Any:
        raise NotImplementedError

    # -- checkpoints ------------------------------------------------------------------------------

    def save(self, directory: Path, core: Any, history: list[dict[str, Any]], settings: dict[str, Any],
             seconds: float | None) -> None:
        """The chain and its history; ``seconds``: what the run has taken, every session of it (None: not known)."""
        staging = staging_dir(directory)
        save_file(core.to_tensors(), str(staging / CHAIN_FILE))
        state = {"settings": settings, "history": history, "seconds": seconds}
        (staging / "state.json").write_text(json.dumps(state, indent=1))
        publish(staging, directory)

    def restore(self, directory: Path, settings: dict[str, Any]) -> tuple[Any, list[dict[str, Any]], float | None]:
        """The chain, its history and the seconds it took (None from checkpoints of older versions)."""
        found = complete_checkpoint(directory, warn=lambda message: None)  # fit has warned
        state = json.loads((found / "state.json").read_text())
        saved = state.get("settings", {"solver": "gradient"})
        changed = [f"{k} {saved.get(k)} → {v}" for k, v in settings.items() if saved.get(k) != v]
        if changed:
            raise ConfigError(f"{directory}: the checkpoint was written by another run ({', '.join(changed)}); "
                              "resume with the same data and settings, or train into a new --out")
        return self.from_tensors(load_file(str(found / CHAIN_FILE))), state["history"], state.get("seconds")


def describe(entry: dict[str, Any], with_sweep: bool = True) -> str:
    """``sweep 20: train rmse 0.91234  alpha 1.2`` (the progress line of a sweep)."""
    parts = [f"train {k} {entry[k]:.5f}" for k in ("rmse", "auc") if k in entry]
    parts += [f"alpha {entry['alpha']:.4g}"] if "alpha" in entry else []
    parts += [f"objective {entry['objective']:.6g}"] if "objective" in entry else []
    return (f"sweep {entry['epoch']}: " if with_sweep else "") + "  ".join(parts)


class MCMCSolver(SweepSolver):
    """Gibbs sampling of a Bayesian FM (``GibbsFM``): Gaussian (regression), probit (binary) or ordered
    probit (ordinal) likelihood; one hyperprior group per field (the module's ``groups``)."""

    name = "mcmc"

    def num_features(self, model: nn.Module) -> int:
        return len(_posterior(model).groups)

    def burn_in(self) -> int:
        return self.config.training.burn_in_sweeps

    def chain_settings(self) -> dict[str, Any]:
        # the sweeps and the samples kept too: the chain keeps only the samples of its schedule as it runs
        return {"burn_in": self.burn_in(), "sweeps": self.config.training.sweeps,
                "samples": self.config.training.kept_samples}

    def run(self, core: GibbsFM | None, model: nn.Module, design, labels: np.ndarray, task: Task,
            after_sweep: Callable) -> GibbsFM:
        resume = core is not None
        if core is None:
            core = GibbsFM(self.config.model.embed_dim, _posterior(model).groups.numpy(), seed=self.config.training.seed)
        classes = None
        if task.name == "ordinal":  # the chain reads ratings, not class positions: its progress RMSE is of ratings
            classes = task.values
            labels = classes[np.asarray(labels, dtype=np.int64)]
        return core.fit(design, labels, task.name, sweeps=self.config.training.sweeps, burn_in=self.burn_in(),
                        callback=lambda record: after_sweep(core, record), resume=resume,
                        metrics_every=self.report_every(), classes=classes, keep=self.config.training.kept_samples)

    def store(self, core: GibbsFM, model: nn.Module) -> None:
        arrays = core.samples.arrays(*core.state.v.shape, len(core.state.cutpoints))
        kept = thinned(len(arrays["w0"]), self.config.training.kept_samples)
        _posterior(model).load_samples(arrays["w0"][kept], arrays["w"][kept], arrays["v"][kept],
                                       arrays["cutpoints"][kept], core.target_range)

    def from_tensors(self, tensors: dict[str, np.ndarray]) -> GibbsFM:
        return GibbsFM.from_tensors(tensors)


def thinned(available: int, wanted: int) -> np.ndarray:
    """Indices of ``wanted`` of ``available`` samples, evenly spaced, the last always among them."""
    if wanted > available:
        raise ConfigError(f"training.samples: the chain kept {available} samples, fewer than the {wanted} the model "
                          "holds (raise training.sweeps or lower training.burn_in)")
    return evenly_spaced(available, wanted)


class ALSSolver(SweepSolver):
    """Alternating least squares (``ALSFM``) with λ = ``training.als_l2`` on w and V: one parameter set."""

    name = "als"

    def num_features(self, model: nn.Module) -> int:
        return _fm(model).embedding.weight.shape[0]

    def chain_settings(self) -> dict[str, Any]:
        return {"als_l2": self.config.training.als_l2}

    def run(self, core: ALSFM | None, model: nn.Module, design, labels: np.ndarray, task: Task,
            after_sweep: Callable) -> ALSFM:
        resume = core is not None
        if core is None:
            l2 = self.config.training.als_l2
            core = ALSFM(self.config.model.embed_dim, l2_w=l2, l2_v=l2, seed=self.config.training.seed)
        return core.fit(design, labels, sweeps=self.config.training.sweeps,
                        callback=lambda record: after_sweep(core, record), resume=resume)

    def store(self, core: ALSFM, model: nn.Module) -> None:
        set_fm_parameters(_fm(model), np.array([core.w0]), core.w[None], core.v[None])

    def from_tensors(self, tensors: dict[str, np.ndarray]) -> ALSFM:
        return ALSFM.from_tensors(tensors)


def _posterior(model: nn.Module) -> PosteriorFM:
    assert isinstance(model, PosteriorFM), "the mcmc solver fills a PosteriorFM (deepfm.models.model_for_run)"
    return model


def _fm(model: nn.Module) -> FactorizationMachine:
    assert isinstance(model, FactorizationMachine) and model.output_dim == 1, "the als solver fills an FM"
    return model


__all__ = ["ALSSolver", "MCMCSolver", "SweepSolver", "thinned"]
