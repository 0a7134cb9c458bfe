"""Deterministic Criteo-shaped synthetic data with a known answer.

Labels are drawn from a hidden model with first-order effects, pairwise (FM-like)
interactions and a non-linear term, so the true click probability of every row is
known: the AUC it achieves is the ceiling no model can beat on that data. Used by
``deepfm demo``, the tests and the benchmarks; nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class SyntheticSpec:
    rows: int = 20_000
    categorical: int = 8
    numeric: int = 3
    vocabulary: int = 2_000  # distinct ids over all categorical fields (split unevenly)
    latent_dim: int = 4
    missing_rate: float = 0.05
    seed: int = 0


def _vocab_sizes(spec: SyntheticSpec) -> np.ndarray:
    """Uneven field widths (like Criteo's 3 to 10^6) that add up to ``spec.vocabulary``."""
    shares = np.geomspace(1, 300, spec.categorical)
    sizes = np.maximum(2, np.floor(shares / shares.sum() * spec.vocabulary)).astype(np.int64)
    return sizes


def make_ctr_table(spec: SyntheticSpec, rows: int | None = None, part: int = 0) -> tuple[pa.Table, np.ndarray]:
    """(table with ``label``, ``I1..``, ``C1..`` columns; true click probability per row).

    The hidden model depends on ``spec.seed`` only; ``part`` draws a different sample of
    rows from the same model (use part 0/1/2 for train/valid/test).
    """
    model_rng = np.random.default_rng([spec.seed, 7])
    rng = np.random.default_rng([spec.seed, 11, part])
    n = rows or spec.rows
    sizes = _vocab_sizes(spec)
    bias = [model_rng.normal(0, 0.6, size) for size in sizes]
    latent = [model_rng.normal(0, 0.45, (size, spec.latent_dim)) for size in sizes]
    numeric_weight = model_rng.normal(0, 0.5, spec.numeric)

    ids = np.empty((n, spec.categorical), dtype=np.int64)
    for f, size in enumerate(sizes):
        skew = rng.random(n) ** 2.5  # popular ids are far more frequent, as in real logs
        ids[:, f] = np.minimum((skew * size).astype(np.int64), size - 1)
    counts = np.floor(rng.lognormal(1.0, 1.3, (n, spec.numeric)))
    z = (np.log1p(counts) - 1.2) / 0.9

    logit = np.full(n, -1.3)
    vectors = np.stack([latent[f][ids[:, f]] for f in range(spec.categorical)], axis=1)  # (n, F, d)
    logit += sum(bias[f][ids[:, f]] for f in range(spec.categorical))
    logit += 0.5 * (vectors.sum(1) ** 2 - (vectors**2).sum(1)).sum(1)
    logit += z @ numeric_weight
    logit += 0.8 * np.tanh(vectors[:, 0, 0] * z[:, 0] * 2)  # a higher-order, non-linear effect
    probability = 1 / (1 + np.exp(-logit))
    labels = (rng.random(n) < probability).astype(np.int64)

    columns: dict[str, pa.Array] = {"label": pa.array(labels)}
    for j in range(spec.numeric):
        missing = rng.random(n) < spec.missing_rate
        columns[f"I{j + 1}"] = pa.array(counts[:, j], mask=missing)
    for f in range(spec.categorical):
        missing = rng.random(n) < spec.missing_rate
        values = pc.cast(pa.array(ids[:, f] + 1000 * (f + 1)), pa.string())
        columns[f"C{f + 1}"] = pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), values)
    return pa.table(columns), probability
