"""A Bayesian FM: S posterior samples of an FM (the MCMC solver's), predicting their average.

Sample s is an FM ŷ_s(x) = w0_s + Σ_i w_is x_i + Σ_{i<j} <v_is, v_js> x_i x_j; the S samples are
one ``FactorizationMachine`` with S outputs. The prediction averages what each sample predicts
(Freudenthaler, Rendle & Schmidt-Thieme 2011), in the task's terms:

- gaussian (regression): the mean rating (1/S) Σ_s clip(ŷ_s, min y, max y), each sample clipped to the training
  labels' range as libFM does, as the logit the regression head reads;
- probit (binary): p̄ = (1/S) Σ_s Φ(ŷ_s), returned as its logit log p̄ − log(1 − p̄), so that the
  binary head's sigmoid gives p̄ back (the average of the probabilities, not of the scores);
- ordered probit (ordinal): log P̄(y = j) with P̄(y = j) = (1/S) Σ_s [Φ(c_sj − ŷ_s) − Φ(c_s,j−1 − ŷ_s)],
  the log class probabilities the ordinal head reads.

Φ is computed in float64 from a rational approximation of erfc accurate to 1.2e-7 relative in both
tails (elementary operators: onnxruntime has no float64 ``Erf``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from deepfm.data.batch import Batch
from deepfm.models.fm import FactorizationMachine

LIKELIHOODS = {"regression": "gaussian", "binary": "probit", "ordinal": "ordered_probit"}
TINY = 1e-300  # probabilities below this (far in a tail) count as this, so that their log is finite


# erfc(z) = t·exp(−z² + P(t)), t = 1/(1 + z/2), z ≥ 0: Chebyshev fit with a relative error below 1.2e-7
# everywhere (Press et al., Numerical Recipes, §6.2), coefficients of P from t⁰ up.
ERFC_COEFFICIENTS = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398,
                     1.48851587, -0.82215223, 0.17087277)


def erfc(x: torch.Tensor) -> torch.Tensor:
    """The complementary error function, relatively exact in the tail (where 1 − erf(x) is all rounding);
    elementary operators only, so an ONNX graph holds it."""
    z = x.abs()
    t = 1.0 / (1.0 + 0.5 * z)
    poly = torch.full_like(t, ERFC_COEFFICIENTS[-1])
    for coefficient in ERFC_COEFFICIENTS[-2::-1]:
        poly = poly * t + coefficient
    tail = t * torch.exp(poly - z * z)
    return torch.where(x >= 0, tail, 2.0 - tail)


def normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Φ(x) = ½ erfc(−x / √2): exact to about 1e-7 relative, so Φ(−8) ≈ 6e-16 keeps its digits."""
    return 0.5 * erfc(-x * math.sqrt(0.5))


class PosteriorFM(nn.Module):
    """S FM samples (``samples``: an FM with S outputs; ``cutpoints``: (S, C − 1) for the ordered
    probit) and ``groups`` (n,), the hyperprior group of each feature (its field), which the chain
    that drew them used. Forward: the posterior-average prediction as the task head's logits."""

    def __init__(self, num_features: int, embed_dim: int, num_samples: int, likelihood: str, num_classes: int = 0):
        super().__init__()
        if likelihood not in LIKELIHOODS.values():
            raise ValueError(f"likelihood: expected one of {', '.join(LIKELIHOODS.values())}, got {likelihood!r}")
        self.likelihood, self.num_samples, self.embed_dim = likelihood, num_samples, embed_dim
        self.samples = FactorizationMachine(num_features, embed_dim, output_dim=num_samples)
        self.register_buffer("cutpoints", torch.zeros(num_samples, max(num_classes - 1, 0)))
        self.register_buffer("groups", torch.zeros(num_features, dtype=torch.int64))
        # gaussian: the training labels' min and max, which bound each sample's ŷ (±inf: unbounded)
        self.register_buffer("target_range", torch.tensor([-math.inf, math.inf]))
        self.output_dim = num_classes if likelihood == "ordered_probit" else 1

    def forward(self, batch: Batch) -> torch.Tensor:  # (B,), or (B, C) log class probabilities
        scores = self.samples(batch).reshape(batch.size, self.num_samples)  # (B, S): ŷ_s of every row
        if self.likelihood == "gaussian":
            return torch.clamp(scores, self.target_range[0], self.target_range[1]).mean(dim=1)
        scores = scores.double()
        if self.likelihood == "probit":
            positive = normal_cdf(scores).mean(dim=1).clamp_min(TINY)
            negative = normal_cdf(-scores).mean(dim=1).clamp_min(TINY)
            return (positive.log() - negative.log()).float()
        below = normal_cdf(self.cutpoints.double().unsqueeze(0) - scores.unsqueeze(2))  # (B, S, C − 1): P(y ≤ j)
        zeros, ones = below.new_zeros(*below.shape[:2], 1), below.new_ones(*below.shape[:2], 1)
        cumulative = torch.cat([zeros, below, ones], dim=2)
        probabilities = (cumulative[:, :, 1:] - cumulative[:, :, :-1]).mean(dim=1)  # (B, C)
        return probabilities.clamp_min(TINY).log().float()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a model directory written before the clip has no target_range: it predicts as it did, unbounded
        state_dict.setdefault(prefix + "target_range", torch.tensor([-math.inf, math.inf]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def load_samples(self, w0, w, v, cutpoints=None, target_range=(-math.inf, math.inf)) -> None:
        """Set the S samples from arrays: w0 (S,), w (S, n), v (S, n, k), cutpoints (S, C − 1), and the range that
        bounds a gaussian sample's ŷ."""
        if (len(w0), np.shape(v)[2]) != (self.num_samples, self.embed_dim):
            raise ValueError(f"samples: {len(w0)} of rank {np.shape(v)[2]}; this model holds {self.num_samples} "
                             f"of rank {self.embed_dim}")
        set_fm_parameters(self.samples, w0, w, v)
        if cutpoints is not None:
            self.cutpoints.copy_(torch.as_tensor(cutpoints, dtype=torch.float32))
        self.target_range.copy_(torch.as_tensor(target_range, dtype=torch.float32))


@torch.no_grad()
def set_fm_parameters(fm: FactorizationMachine, w0, w, v) -> None:
    """Set an FM with S outputs from S parameter sets: w0 (S,), w (S, n), v (S, n, k) (output s owns
    the latent columns s·k … s·k + k − 1 of the table)."""
    w0, w, v = (torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in (w0, w, v))
    num_samples, num_features, rank = v.shape
    fm.linear.bias.copy_(w0.reshape(fm.linear.bias.shape))
    fm.linear.weights.weight.copy_(w.T)
    fm.embedding.weight.copy_(v.permute(1, 0, 2).reshape(num_features, num_samples * rank))
