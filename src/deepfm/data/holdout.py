"""Validation rows held out of the training file when no validation file is given (``data.valid_fraction``).

Two rules, both fixed by the run's seed, so a rerun (and every rank of a distributed run) holds out
the same rows:

- in memory and distributed: a seeded permutation of the file's rows; its first
  ``round(fraction × rows)`` are held out (at least one, never all);
- streaming: row ``g`` of the file (0-based) is held out when a hash of ``(seed, g)`` falls in the
  fraction. Each chunk decides its rows from their positions alone, so nothing is permuted or kept
  per row and no pass over the file is needed to choose them; the share is ``fraction`` on average,
  lowered for files so large that the held-out rows, which validation holds in memory, would exceed
  ``STREAM_HELD_OUT_ROWS``. Reading the held-out rows costs one reading pass before training.

Held-out rows are not trained on; early stopping selects the epoch on them (``training.refit``, the
default for FM on ratings, then trains a new model on every row for that many epochs). The encoders are
fitted on the whole file, held-out rows included (as the file's vocabulary, not its labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepfm.data.encoded import EncodedData
from deepfm.data.encoders import FeatureEncoder
from deepfm.data.readers import ChunkedFile
from deepfm.errors import DataError

PERMUTATION_RULE = "a seeded permutation of the training rows"
HASH_RULE = "the training rows whose position hash falls in the fraction (streaming)"
_STREAM = 0x5EED_0F_0A11D  # separates the hold-out's random stream from the shuffling's


def held_out_count(rows: int, fraction: float) -> int:
    """How many of ``rows`` a permutation split holds out: ``round(fraction × rows)``, at least one and
    at most ``rows - 1`` (0 when ``fraction`` is 0 or there are fewer than two rows)."""
    if fraction <= 0 or rows < 2:
        return 0
    return int(min(rows - 1, max(1, round(fraction * rows))))


def held_out_mask(rows: int, fraction: float, seed: int) -> np.ndarray:
    """(rows,) bool: the rows a seeded permutation holds out."""
    mask = np.zeros(rows, dtype=bool)
    mask[np.random.default_rng([seed, _STREAM]).permutation(rows)[: held_out_count(rows, fraction)]] = True
    return mask


def hashed_mask(first_row: int, rows: int, fraction: float, seed: int) -> np.ndarray:
    """(rows,) bool: which of the file's rows ``first_row .. first_row + rows`` the streaming rule holds
    out (a splitmix64 hash of the seed and the row's position, below ``fraction`` of its range)."""
    with np.errstate(over="ignore"):
        x = np.arange(first_row, first_row + rows, dtype=np.uint64) + np.uint64(seed % 2**63) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) < fraction * 2.0**53


@dataclass(frozen=True)
class Holdout:
    """How the validation rows were chosen, as ``metrics.json`` records it."""

    fraction: float
    rows: int
    rule: str
    seed: int

    def describe(self) -> str:
        rows = f"{self.rows:,} training row{'s' if self.rows != 1 else ''}"
        return (f"validation: no --valid file, so {rows} ({self.fraction:g} of them, {self.rule}, seed {self.seed}) "
                f"{'are' if self.rows != 1 else 'is'} held out for early stopping; --valid-fraction 0 turns this off")

    def to_dict(self) -> dict[str, object]:
        return {"source": "held out of the training file", "fraction": self.fraction, "rows": self.rows,
                "rule": self.rule, "seed": self.seed}


def split_encoded(data: EncodedData, fraction: float, seed: int) -> tuple[EncodedData, EncodedData, Holdout]:
    """``data`` as (training rows, held-out rows, how), by a seeded permutation; each part in file order."""
    mask = held_out_mask(len(data), fraction, seed)
    held = np.flatnonzero(mask)
    return data.take(np.flatnonzero(~mask)), data.take(held), Holdout(fraction, len(held), PERMUTATION_RULE, seed)


STREAM_HELD_OUT_ROWS = 1_000_000  # streaming: the held-out rows live in memory, so about this many at most


def stream_fraction(rows: int, fraction: float) -> float:
    """The share a streamed file of ``rows`` rows holds out: ``fraction``, lowered so that about
    ``STREAM_HELD_OUT_ROWS`` rows at most are held (in memory) for validation."""
    return min(fraction, STREAM_HELD_OUT_ROWS / max(rows, 1))


def encode_hashed(file: ChunkedFile, encoder: FeatureEncoder, fraction: float, seed: int) -> tuple[EncodedData, Holdout]:
    """The rows of ``file`` that ``hashed_mask`` holds out, encoded chunk by chunk (memory: those rows
    and one chunk)."""
    parts, first = [], 0
    for frame in file.frames(layout=encoder.layout):
        held = np.flatnonzero(hashed_mask(first, frame.num_rows, fraction, seed))
        first += frame.num_rows
        if len(held):
            parts.append(encoder.transform(frame).take(held))
    if not parts:
        raise DataError(str(file.path), f"--valid-fraction {fraction:g} holds out no row of this file; "
                        "give a --valid file or a larger fraction", line=1)
    data = EncodedData.concat(parts)
    return data, Holdout(fraction, len(data), HASH_RULE, seed)
