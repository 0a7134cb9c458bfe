"""Output heads that turn a model's score into the probabilities of ordered classes."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deepfm.data.batch import Batch


class CumulativeLink(nn.Module):
    """C ordered classes from one score η per row (McCullagh 1980, proportional odds):

        P(y ≤ j) = σ(c_j − η),   c_0 < … < c_{C−2}

    The cutpoints stay ordered as c_0 plus positive gaps (softplus). Returns the log class
    probabilities log P(y = j), shape (B, C): the ordinal task's softmax gives them back as
    probabilities, and its cross-entropy is −log P(class)."""

    def __init__(self, model: nn.Module, cutpoints: Sequence[float]):
        super().__init__()
        if len(cutpoints) < 1:
            raise ValueError("cutpoints: ordered classes need at least two classes, so one cutpoint")
        start = torch.tensor(list(cutpoints), dtype=torch.float32)
        gaps = (start[1:] - start[:-1]).clamp_min(1e-3)
        self.score = model
        self.first = nn.Parameter(start[:1].clone())
        self.gaps = nn.Parameter(gaps + torch.log(-torch.expm1(-gaps)))  # softplus⁻¹(gaps)
        self.output_dim = len(cutpoints) + 1

    def cutpoints(self) -> torch.Tensor:  # (C − 1,)
        return torch.cat([self.first, self.first + torch.cumsum(F.softplus(self.gaps), 0)])

    def forward(self, batch: Batch) -> torch.Tensor:  # (B, C) log P(y = j)
        eta = self.score(batch).float()
        distance = self.cutpoints() - eta.unsqueeze(1)  # (B, C − 1): c_j − η
        return ordered_log_probabilities(F.logsigmoid(distance), F.logsigmoid(-distance))


def ordered_log_probabilities(log_below: torch.Tensor, log_above: torch.Tensor) -> torch.Tensor:
    """log P(y = j) from log F(c_j − η) and log(1 − F(c_j − η)), (..., C − 1) each, for a CDF F:

        P(y = j) = F(c_j − η) − F(c_{j−1} − η) = F(c_j − η) (1 − F(c_{j−1} − η)) (1 − e^{d})

    with d = log F(c_{j−1} − η) + log(1 − F(c_j − η)) − log F(c_j − η) − log(1 − F(c_{j−1} − η))
    (for the logistic F, d = c_{j−1} − c_j): in logs, accurate in both tails."""
    first, last = log_below[..., :1], log_above[..., -1:]
    upper_below, lower_below = log_below[..., 1:], log_below[..., :-1]
    upper_above, lower_above = log_above[..., 1:], log_above[..., :-1]
    d = (lower_below + upper_above - upper_below - lower_above).clamp_max(-1e-12)
    middle = upper_below + lower_above + torch.log(-torch.expm1(d))
    return torch.cat([first, middle, last], dim=-1)

