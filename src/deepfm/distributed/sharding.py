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
    parts, start = [], 0
    for frame in frames:
        keep = np.flatnonzero(shard_mask(start, frame.num_rows, total_rows, ctx))
        start += frame.num_rows
        if len(keep):
            parts.append(encoder.transform(frame).take(keep))
    if not parts:
        raise ValueError(f"rank {ctx.rank} has no training rows: {total_rows} rows for {ctx.world} ranks")
    return EncodedData.concat(parts) if len(parts) > 1 else parts[0]
