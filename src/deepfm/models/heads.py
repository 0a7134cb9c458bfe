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
        """P(y = j) = σ(c_j − η) − σ(c_{j−1} − η) = σ(c_j − η) σ(η − c_{j−1}) (1 − e^{−(c_j − c_{j−1})}),
        in logs: accurate in both tails."""
        eta = self.score(batch).float()
        distance = self.cutpoints() - eta.unsqueeze(1)  # (B, C − 1): c_j − η
        # log P(y ≤ j), log P(y > j) as −softplus(−x), torch's logsigmoid: exported to ONNX as Softplus, accurate in
        # the tails, where logsigmoid exports as Log(Sigmoid), and ONNX Runtime's Sigmoid is 0 below about −18 (−inf)
        log_below, log_above = -F.softplus(-distance), -F.softplus(distance)
        middle = log_below[:, 1:] + log_above[:, :-1] + log_one_minus_exp_negative(F.softplus(self.gaps))
        return torch.cat([log_below[:, :1], middle, log_above[:, -1:]], dim=1)


def log_one_minus_exp_negative(gap: torch.Tensor) -> torch.Tensor:
    """log(1 − e^{−g}) for g > 0, exact for small g too (a series there; ONNX has no Expm1)."""
    series = gap * (1 - gap * (0.5 - gap / 6))  # 1 − e^{−g} = g − g²/2 + g³/6 − …
    return torch.log(torch.where(gap < 1e-2, series, 1 - torch.exp(-gap)))
