"""Model names → constructors, built from a ``ModelConfig`` and the feature schema."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from deepfm.config import ModelConfig
from deepfm.models.deepfm import DeepFM
from deepfm.models.layers import FeaturesLinear
from deepfm.models.fm import FactorizationMachine
from deepfm.models.fnn import FNN
from deepfm.models.lr import LogisticRegression
from deepfm.models.pnn import PNN
from deepfm.models.wide_deep import FMAndDNN, WideAndDeep

Builder = Callable[[ModelConfig, int, int], nn.Module]

MODELS: dict[str, Builder] = {
    "lr": lambda c, n, m: LogisticRegression(n),
    "fm": lambda c, n, m: FactorizationMachine(n, c.embed_dim),
    "deepfm": lambda c, n, m: DeepFM(n, m, c.embed_dim, c.mlp, c.dropout, c.activation, c.batch_norm),
    "fnn": lambda c, n, m: FNN(n, m, c.embed_dim, c.mlp, c.dropout, c.activation, c.batch_norm),
    "ipnn": lambda c, n, m: PNN(n, m, c.embed_dim, c.mlp, c.dropout, c.activation, c.batch_norm, product="inner"),
    "opnn": lambda c, n, m: PNN(n, m, c.embed_dim, c.mlp, c.dropout, c.activation, c.batch_norm, product="outer"),
    "pnn": lambda c, n, m: PNN(n, m, c.embed_dim, c.mlp, c.dropout, c.activation, c.batch_norm, product="both"),
    "wide_deep": lambda c, n, m: WideAndDeep(n, m, c.embed_dim, c.mlp, c.dropout, c.activation, c.batch_norm),
    "fm_dnn": lambda c, n, m: FMAndDNN(n, m, c.embed_dim, c.mlp, c.dropout, c.activation, c.batch_norm),
}


def build_model(config: ModelConfig, num_features: int, num_fields: int, output_prior: float = 0.0) -> nn.Module:
    """Instantiate ``config.name`` for a table of ``num_features`` rows over ``num_fields`` fields.

    ``output_prior`` starts the model's output bias at the training data's mean (a rating, or the
    log-odds of the click rate), so early steps learn interactions instead of climbing to the mean.
    """
    if config.name not in MODELS:
        from deepfm.errors import ConfigError

        raise ConfigError(f"model.name: {config.name!r} is not available; choose from {sorted(MODELS)}")
    model = MODELS[config.name](config, num_features, num_fields)
    if output_prior:
        with torch.no_grad():
            output_bias(model).fill_(output_prior)
    return model


def output_bias(model: nn.Module) -> nn.Parameter:
    """The scalar bias added to every logit: w0 of the first-order term, else the last layer's bias."""
    linear = getattr(model, "linear", None)
    if isinstance(linear, FeaturesLinear):
        return linear.bias
    last = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == 1]
    if not last:
        raise ValueError(f"{type(model).__name__} has no output bias")
    return last[-1].bias
