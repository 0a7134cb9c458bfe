"""Each rank its rows of the training file (in memory), and its share of the held-out rows (streaming)."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from deepfm.data.batch import EncodedData, id_dtype
from deepfm.data.encoders import FeatureEncoder
from deepfm.data.frame import RawFrame
from deepfm.data.holdout import hashed_mask
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


def encode_held_out_share(file, encoder: FeatureEncoder, rows_per_chunk: list[int], fraction: float, seed: int,
                          ctx: Context) -> EncodedData:
    """The rows ``hashed_mask`` holds out of this rank's block of the chunks of ``file`` (a
    ``ChunkedFile`` or ``ChunkedFiles``): chunks ⌊C·rank/world⌋ to ⌊C·(rank + 1)/world⌋ - 1 of C,
    encoded in file order (maybe none). In rank order the blocks are the file, so the ranks'
    shares, gathered (``gather_rows``), are the rows one process holds out, in the same order."""
    chunks = len(rows_per_chunk)
    block = range(chunks * ctx.rank // ctx.world, chunks * (ctx.rank + 1) // ctx.world)
    first_rows = np.cumsum([0, *rows_per_chunk])
    parts = [EncodedData(ids=np.empty((0, len(encoder.single_fields)), id_dtype(encoder.num_features)), values=None,
                         labels=np.empty(0, np.float32))]
    for chunk, frame in zip(block, file.frames(block, layout=encoder.layout)):
        held = np.flatnonzero(hashed_mask(int(first_rows[chunk]), frame.num_rows, fraction, seed))
        if len(held):
            parts.append(encoder.transform(frame).take(held))
    return EncodedData.concat(parts)
