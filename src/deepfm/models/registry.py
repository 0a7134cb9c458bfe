"""Model names → constructors, built from a ``ModelConfig`` and the feature schema."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from deepfm.config import ModelConfig, RunConfig, check_solver
from deepfm.models.deepfm import DeepFM
from deepfm.models.layers import FeaturesLinear
from deepfm.models.fm import FactorizationMachine
from deepfm.models.fnn import FNN
from deepfm.models.heads import CumulativeLink
from deepfm.models.lr import LogisticRegression
from deepfm.models.pnn import PNN
from deepfm.models.posterior import LIKELIHOODS, PosteriorFM
from deepfm.models.wide_deep import FMAndDNN, WideAndDeep

Builder = Callable[[ModelConfig, int, int, int], nn.Module]  # (config, features, fields, outputs)

MODELS: dict[str, Builder] = {
    "lr": lambda c, n, m, o: LogisticRegression(n, o),
    "fm": lambda c, n, m, o: FactorizationMachine(n, c.embed_dim, o),
    "deepfm": lambda c, n, m, o: DeepFM(n, m, c.embed_dim, c.mlp, c.dropout, c.activation, c.batch_norm, o,
                                        start_as_fm=c.mlp_output_init == "zero"),
    "fnn": lambda c, n, m, o: FNN(n, m, c.embed_dim, c.mlp, c.dropout, c.activation, c.batch_norm, o),
    "ipnn": lambda c, n, m, o: PNN(n, m, c.embed_dim, c.mlp, c.dropout, c.activation, c.batch_norm, "inner", o),
    "opnn": lambda c, n, m, o: PNN(n, m, c.embed_dim, c.mlp, c.dropout, c.activation, c.batch_norm, "outer", o),
    "pnn": lambda c, n, m, o: PNN(n, m, c.embed_dim, c.mlp, c.dropout, c.activation, c.batch_norm, "both", o),
    "wide_deep": lambda c, n, m, o: WideAndDeep(n, m, c.embed_dim, c.mlp, c.dropout, c.activation, c.batch_norm, o),
    "fm_dnn": lambda c, n, m, o: FMAndDNN(n, m, c.embed_dim, c.mlp, c.dropout, c.activation, c.batch_norm, o),
}


def build_model(config: ModelConfig, num_features: int, num_fields: int,
                output_prior: float | Sequence[float] = 0.0, output_dim: int = 1) -> nn.Module:
    """Instantiate ``config.name`` for a table of ``num_features`` rows over ``num_fields`` fields,
    with ``output_dim`` logits per row (the task head's width).

    ``output_prior`` starts the model's output bias at the training data's mean (a rating, or the
    log-odds of the click rate; one per output), so early steps learn interactions instead of
    climbing to the mean.
    """
    if config.name not in MODELS:
        from deepfm.errors import ConfigError

        raise ConfigError(f"model.name: {config.name!r} is not available; choose from {sorted(MODELS)}")
    model = MODELS[config.name](config, num_features, num_fields, output_dim)
    prior = torch.as_tensor(output_prior, dtype=torch.float32)
    if bool((prior != 0).any()):
        with torch.no_grad():
            output_bias(model).copy_(prior.expand_as(output_bias(model)))
    return model


def output_bias(model: nn.Module) -> nn.Parameter:
    """The bias added to every logit (one per output): w0 of the first-order term, else the last layer's bias."""
    linear = getattr(model, "linear", None)
    if isinstance(linear, FeaturesLinear):
        return linear.bias
    width = getattr(model, "output_dim", 1)
    last = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == width]
    if not last:
        raise ValueError(f"{type(model).__name__} has no output bias")
    return last[-1].bias


def model_for_run(run: RunConfig, num_features: int, num_fields: int, task,
                  field_sizes: Sequence[int] | None = None) -> nn.Module:
    """The module a run fits and its model directory holds, for ``task`` (a ``deepfm.tasks.Task``):
    with ``--solver mcmc``, an FM holding the posterior samples (``PosteriorFM``); for an ordinal
    task, the model's score under a cumulative link (``CumulativeLink``); otherwise ``build_model``.
    ``field_sizes`` (features per field, in table order) set the posterior's hyperprior groups, one
    per field. A solver that cannot fit the task (ALS for binary labels) is a ``ConfigError``."""
    from deepfm.errors import ConfigError

    try:
        check_solver(run.training.solver, run.model.name, task.name)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if run.training.solver == "mcmc":
        model = PosteriorFM(num_features, run.model.embed_dim, run.training.kept_samples, LIKELIHOODS[task.name],
                            task.output_dim if task.name == "ordinal" else 0)
        if field_sizes is not None:
            model.groups.copy_(torch.repeat_interleave(torch.arange(len(field_sizes)), torch.tensor(list(field_sizes))))
        return model
    if task.name == "ordinal":
        return CumulativeLink(build_model(run.model, num_features, num_fields), task.initial_cutpoints())
    return build_model(run.model, num_features, num_fields, task.prior, task.output_dim)
