"""Solvers: what fits a model's parameters to the training data.

A solver is chosen by ``training.solver`` (``deepfm train --solver``): ``gradient`` (minibatch
gradient descent, the default), ``mcmc`` (Gibbs sampling of a Bayesian FM, libFM's MCMC) and
``als`` (alternating least squares); each is a class with the ``Solver`` protocol in ``SOLVERS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

from torch import nn

from deepfm.config import RunConfig
from deepfm.data.batch import BatchSource, EncodedData
from deepfm.errors import ConfigError
from deepfm.solvers.gradient import GradientSolver
from deepfm.tasks import Task
from deepfm.training.trainer import TrainResult


class Solver(Protocol):
    """Fits ``model`` in place on ``train`` (selecting by ``valid``); with ``checkpoint_dir`` it
    checkpoints there and, with ``resume``, continues from the checkpoint it finds."""

    def fit(self, model: nn.Module, task: Task, train: EncodedData | BatchSource, valid: EncodedData | None = None,
            checkpoint_dir: Path | None = None, resume: bool = False) -> TrainResult: ...


SolverFactory = Callable[[RunConfig, bool, Callable[[str], None] | None], Solver]

SOLVERS: dict[str, SolverFactory] = {
    "gradient": lambda config, progress, log: GradientSolver(config, progress=progress, log=log),
    "mcmc": lambda config, progress, log: _sweeps().MCMCSolver(config, progress=progress, log=log),
    "als": lambda config, progress, log: _sweeps().ALSSolver(config, progress=progress, log=log),
}


def _sweeps():
    """The sampling and ALS solvers, imported when one is used: they load numba and SciPy (~60 MB that a
    gradient run does not need; benchmarks/README.md, issue 13)."""
    from deepfm.solvers import sweeps

    return sweeps


def __getattr__(name: str):
    if name in ("ALSSolver", "MCMCSolver"):
        return getattr(_sweeps(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_solver(config: RunConfig, progress: bool = True, log: Callable[[str], None] | None = None) -> Solver:
    """The solver ``config.training.solver`` names."""
    name = config.training.solver
    if name not in SOLVERS:
        raise ConfigError(f"training.solver: {name!r} is not available; choose from {sorted(SOLVERS)}")
    return SOLVERS[name](config, progress, log)


__all__ = ["ALSSolver", "GradientSolver", "MCMCSolver", "SOLVERS", "Solver", "build_solver"]
