"""Each rank its rows of the training file."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from deepfm.data.batch import EncodedData
from deepfm.data.encoders import FeatureEncoder
from deepfm.data.frame import RawFrame
from deepfm.distributed.process import Context


def shard_mask(first_row: int, rows: int, total: int, ctx: Context) -> np.ndarray:
    """Which of the rows ``first_row .. first_row + rows`` of a ``total``-row file rank ``ctx.rank`` keeps:
    global row g is kept iff ``g % world == rank`` and ``g // world < total // world``. Shape (rows,) bool."""
    g = np.arange(first_row, first_row + rows, dtype=np.int64)
    return (g % ctx.world == ctx.rank) & (g // ctx.world < total // ctx.world)


def encode_shard(frames: Iterable[RawFrame], encoder: FeatureEncoder, total_rows: int, ctx: Context) -> EncodedData:
    """This rank's rows of a file, encoded chunk by chunk (``frames``: the file's chunks in order),
    so memory holds the shard and one chunk."""
    return encode_shard_and_held_out(frames, encoder, total_rows, ctx)[0]


def encode_shard_and_held_out(frames: Iterable[RawFrame], encoder: FeatureEncoder, total_rows: int, ctx: Context,
                              held: np.ndarray | None = None) -> tuple[EncodedData, EncodedData | None]:
    """``encode_shard`` of the rows ``held`` (a (total_rows,) bool mask, the same on every rank) leaves
    out, which are sharded as if they were the whole file, and every held-out row (the same on every
    rank: the validation rows), or None without ``held``."""
    kept_total = total_rows - (int(held.sum()) if held is not None else 0)
    parts, held_parts, start, kept_before = [], [], 0, 0
    for frame in frames:
        here = held[start : start + frame.num_rows] if held is not None else np.zeros(frame.num_rows, dtype=bool)
        start += frame.num_rows
        training = np.flatnonzero(~here)
        keep = training[shard_mask(kept_before, len(training), kept_total, ctx)]
        kept_before += len(training)
        if len(keep) or here.any():
            encoded = encoder.transform(frame)
            if len(keep):
                parts.append(encoded.take(keep))
            if here.any():
                held_parts.append(encoded.take(np.flatnonzero(here)))
    if not parts:
        raise ValueError(f"rank {ctx.rank} has no training rows: {kept_total} rows for {ctx.world} ranks")
    held_out = None if held is None else EncodedData.concat(held_parts) if held_parts else None
    return (EncodedData.concat(parts) if len(parts) > 1 else parts[0]), held_out
