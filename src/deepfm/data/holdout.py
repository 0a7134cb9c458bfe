"""Validation rows held out of the training file when no validation file is given (``data.valid_fraction``).

One rule for every path (in memory, streaming, distributed), fixed by the run's seed, so a rerun, every
rank of a distributed run and a streamed read of the same file hold out the same rows: row ``g`` of the
file (0-based) is held out when a hash of ``(seed, g)`` falls in the fraction. Each chunk decides its
rows from their positions alone, so the rows are known while the file is first read: the encoders are
fitted on the training rows only (vocabularies, counts for ``--min-count`` and the data rules, numeric
statistics, the label's mean and class rates), and a held-out value the training rows lack is unseen
(id 1), as it would be in production. Only the task's classes come from every label, so held-out
labels encode. The share is ``fraction`` on average (~``fraction`` × rows held out); a small file whose
hashes hold out no row trains without validation, and one whose hashes hold out every row is refused
(``split_encoded``). The share is lowered for files so large that the held-out rows, which validation holds
in memory, would exceed ``STREAM_HELD_OUT_ROWS``, from the file's estimated rows, before it is read
(``Estimator._held_out_fraction``), so the encoders leave out the same rows; streamed or not, the same share
(a run resumed the other way holds out what its checkpoint's encoders left out). Reading the held-out rows costs
one reading pass before training when streaming.

Held-out rows are not trained on; early stopping selects the epoch on them (``training.refit``, the
default for FM and DeepFM on ratings, then trains a new model on every row for that many epochs, with the same
encoders).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from deepfm.data.encoded import EncodedData
from deepfm.data.encoders import FeatureEncoder, HeldOutRule
from deepfm.data.readers import ChunkedFile
from deepfm.errors import DataError

HASH_RULE = "the rows whose position's seeded hash falls in the fraction"

def held_out_rule(fraction: float, seed: int) -> HeldOutRule:
    """``hashed_mask`` of ``fraction`` and ``seed``: which rows of a chunk are held out, from their positions."""
    return functools.partial(hashed_mask, fraction=fraction, seed=seed)


def hashed_mask(first_row: int, rows: int, fraction: float, seed: int) -> np.ndarray:
    """(rows,) bool: which of the file's rows ``first_row .. first_row + rows`` the rule holds out (a
    splitmix64 hash of the seed and the row's position, below ``fraction`` of its range; positions count from
    1 in the hash, so that seed 0 does not send row 0, whose hash would be 0, to every fraction)."""
    with np.errstate(over="ignore"):
        x = np.arange(first_row + 1, first_row + rows + 1, dtype=np.uint64) + np.uint64(seed % 2**63) * np.uint64(0x9E3779B97F4A7C15)
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

    def describe(self, purpose: str = "early stopping",
                 otherwise: str = "--valid-fraction 0 (data.valid_fraction) turns this off") -> str:
        """The log's line; ``purpose``: what the held-out rows are for (a sampler only scores them at its end);
        ``otherwise``: how to do without them."""
        rows = f"{self.rows:,} training row{'s' if self.rows != 1 else ''}"
        return (f"validation: no --valid file, so {rows} (about {self.fraction:g} of them: {self.rule}, seed {self.seed}) "
                f"{'are' if self.rows != 1 else 'is'} held out for {purpose}, and left out of the vocabularies; "
                f"{otherwise}")

    def to_dict(self) -> dict[str, object]:
        return {"source": "held out of the training file", "fraction": self.fraction, "rows": self.rows,
                "rule": self.rule, "seed": self.seed}


def split_encoded(data: EncodedData, fraction: float, seed: int,
                  source: str = "data.train") -> tuple[EncodedData, EncodedData | None, Holdout | None]:
    """``data`` (a whole file's rows, in order) as (training rows, held-out rows, how), each part in file
    order; ``(data, None, None)`` where the rule holds out no row (a small file whose hashes all miss the
    fraction). Every row held out is a ``DataError``: there is nothing to train on."""
    mask = hashed_mask(0, len(data), fraction, seed)
    if not mask.any():
        return data, None, None
    if mask.all():
        raise DataError(source, f"--valid-fraction {fraction:g} holds out every one of the file's {len(data)} "
                        "rows; give a --valid file or a smaller fraction")
    held = np.flatnonzero(mask)
    return data.take(np.flatnonzero(~mask)), data.take(held), Holdout(fraction, len(held), HASH_RULE, seed)


STREAM_HELD_OUT_ROWS = 1_000_000  # the held-out rows live in memory (streamed too), so about this many at most


def stream_fraction(rows: int, fraction: float) -> float:
    """The share a file of ``rows`` rows holds out: ``fraction``, lowered so that about
    ``STREAM_HELD_OUT_ROWS`` rows at most are held (in memory) for validation."""
    return min(fraction, STREAM_HELD_OUT_ROWS / max(rows, 1))


def encode_hashed(file: ChunkedFile, encoder: FeatureEncoder, fraction: float, seed: int) -> EncodedData | None:
    """The rows of ``file`` that ``hashed_mask`` holds out, encoded chunk by chunk (memory: those rows
    and one chunk), or None where it holds out none."""
    parts, first = [], 0
    for frame in file.frames(layout=encoder.layout):
        held = np.flatnonzero(hashed_mask(first, frame.num_rows, fraction, seed))
        first += frame.num_rows
        if len(held):
            parts.append(encoder.transform(frame).take(held))
    return EncodedData.concat(parts) if parts else None
