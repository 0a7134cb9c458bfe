"""Files larger than memory: a streaming encoder fit, chunk-by-chunk encoding, a streaming BatchSource.

The chunks come from ``deepfm.data.readers.ChunkedFile``. Each chunk is read and encoded on its
own, so memory holds a few chunks, never the file.

``StreamSource`` shuffles in two stages, both fixed by ``(seed, epoch)`` so a resumed run
sees the same batches: the order of chunks (plain files and Parquet; .gz is read in order)
and a permutation of the rows of ``window`` chunks at a time.

On several ranks (``part=(rank, world)``), the epoch's rows, in that chunk order, are cut into
``world`` equal runs of ``rows // world`` (``rank_share``): each rank streams its own run, so the
ranks' rows are disjoint, every rank takes the same number of steps, and the partition changes
every epoch with the order. At most ``world - 1`` rows (the order's last) sit out an epoch.
"""

from __future__ import annotations

import gzip
import itertools
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from deepfm.config import DataConfig
from deepfm.data.encoded import Bag, EncodedData
from deepfm.data.encoders import FeatureEncoder, HeldOutRule
from deepfm.data.filelist import ChunkedFiles, training_files
from deepfm.data.formats import check_data_file, gzip_errors, is_gzip, open_bytes
from deepfm.data.frame import RawFrame
from deepfm.data.readers import CHUNK_BYTES, Chunk, ChunkedFile
from deepfm.errors import DataError
from deepfm.runtime import release_free_memory

__all__ = ["CHUNK_BYTES", "Chunk", "ChunkedFile", "Piece", "StreamSource", "assemble", "chunk_bytes_for", "count_rows",
           "encode_file", "estimated_rows", "fit_and_encode", "fit_streaming", "rank_share", "should_stream"]

Piece = tuple[int, int, int]  # (chunk, first, stop): rows first..stop-1 of a chunk's kept rows


def with_progress(frames: Iterable[RawFrame], file: ChunkedFile | ChunkedFiles, what: str, progress: bool) -> Iterable[RawFrame]:
    """``frames`` with a bar counting chunks on stderr, when ``progress`` and stderr is a terminal
    and the file has more than one chunk."""
    if not progress or not sys.stderr.isatty() or len(file.chunks()) < 2:
        return frames
    return tqdm(frames, total=len(file.chunks()), desc=f"{what} {file.path.name}", unit="chunk", leave=False)

def fit_streaming(file: ChunkedFile | ChunkedFiles, config: DataConfig, progress: bool = False,
                  held_out: HeldOutRule | None = None) -> tuple[FeatureEncoder, list[int]]:
    """Fit an encoder in one pass over the chunks (on the rows ``held_out`` leaves: ``FeatureEncoder.fit``);
    also count each chunk's rows."""
    rows: list[int] = []

    def counted() -> Iterator[RawFrame]:
        for frame in with_progress(file.frames(), file, "fitting", progress):
            rows.append(frame.num_rows)
            yield frame

    encoder = FeatureEncoder.fit(counted(), config, held_out)
    return encoder, rows


def fit_and_encode(file: ChunkedFile | ChunkedFiles, config: DataConfig, progress: bool = False,
                   held_out: HeldOutRule | None = None) -> tuple[FeatureEncoder, list[int], EncodedData]:
    """``fit_streaming`` and ``encode_file`` (of every row, held out or not) in one reading pass where the
    encoder can keep each chunk's columns as codes of its values (``FeatureEncoder.fit_and_transform``);
    otherwise in two."""
    rows: list[int] = []

    def counted() -> Iterator[RawFrame]:
        for frame in with_progress(file.frames(), file, "reading", progress):
            rows.append(frame.num_rows)
            yield frame

    encoder, encode_into = FeatureEncoder.fit_and_transform(counted(), config, held_out)
    release_free_memory()  # what parsing freed, before the encoded columns are allocated (the pass's peak)
    if encode_into is None:
        return encoder, rows, encode_file(file, encoder, rows, progress=progress)
    ids = encoder.new_ids(sum(rows))
    return encoder, rows, assemble(encode_into(ids), sum(rows), encoder, file.path, ids)


def count_rows(file: ChunkedFile | ChunkedFiles, progress: bool = False) -> list[int]:
    """Rows of each chunk (one reading pass; used when the encoder is already known)."""
    return [frame.num_rows for frame in with_progress(file.frames(), file, "counting", progress)]


def rank_share(order: Sequence[int], rows: Sequence[int], rank: int, world: int) -> list[Piece]:
    """Rank ``rank``'s part of the rows of the chunks ``order`` (``rows[c]``: chunk c's rows): their
    sequence, in that order, cut into ``world`` runs of ``sum // world`` rows; the rank's run as
    pieces of chunks, in order. The runs are disjoint and equal; the last ``sum % world`` rows are
    in none. One rank: every chunk, whole."""
    share = sum(rows[c] for c in order) // world
    begin, end = rank * share, (rank + 1) * share
    pieces, start = [], 0
    for chunk in order:
        stop = start + rows[chunk]
        if stop > begin and start < end:
            pieces.append((int(chunk), max(begin, start) - start, min(end, stop) - start))
        start = stop
    return pieces


class StreamSource:
    """A ``BatchSource`` that reads, encodes and shuffles a file chunk by chunk.

    Memory holds about ``window`` encoded chunks plus the chunk being read. Every row is in
    exactly one batch per epoch; all batches but the epoch's last have ``batch_size`` rows.
    With ``part=(rank, world)``, this rank's share of every epoch (``rank_share``) instead.
    """

    def __init__(self, file: ChunkedFile | ChunkedFiles, encoder: FeatureEncoder, rows_per_chunk: Sequence[int], window: int = 4,
                 exclude: Callable[[int, int], np.ndarray] | None = None, part: tuple[int, int] = (0, 1)):
        """``exclude(first_row, rows)``: which of those rows of the file to leave out (a (rows,) bool
        mask decided from positions alone, e.g. ``deepfm.data.holdout.hashed_mask``)."""
        if len(rows_per_chunk) != len(file.chunks()):
            raise ValueError("rows_per_chunk must give one count per chunk")
        self.file, self.encoder = file, encoder
        self.rows_per_chunk = list(rows_per_chunk)
        self.window = max(1, int(window))
        self.exclude = exclude
        self.rank, self.world = part
        self.first_rows = np.cumsum([0, *self.rows_per_chunk])[:-1].tolist()
        self.kept_per_chunk = self.rows_per_chunk if exclude is None else [
            int(n - exclude(first, n).sum()) for first, n in zip(self.first_rows, self.rows_per_chunk)]
        if self.world > 1 and self.num_rows == 0:
            raise DataError(str(file.path), f"no training rows for each of {self.world} ranks "
                            f"({sum(self.kept_per_chunk)} rows in all)", line=1)

    @property
    def num_rows(self) -> int:
        """Rows of an epoch (this rank's share: the same every epoch)."""
        return sum(self.kept_per_chunk) // self.world

    def _encode(self, piece: Piece, frame: RawFrame) -> EncodedData:
        chunk, first, stop = piece
        encoded = self.encoder.transform(frame, side_by_side=False)  # (training runs meanwhile)
        if self.exclude is not None:
            encoded = encoded.take(np.flatnonzero(~self.exclude(self.first_rows[chunk], frame.num_rows)))
        if len(encoded) != self.kept_per_chunk[chunk]:
            raise DataError(self.file.path, f"the file changed while being read: {len(encoded):,} rows in a chunk "
                            f"where {self.kept_per_chunk[chunk]:,} were counted before", line=frame.first_line)
        return encoded if (first, stop) == (0, len(encoded)) else encoded.slice(first, stop)

    def steps_per_epoch(self, batch_size: int) -> int:
        return -(-self.num_rows // batch_size)

    def chunk_order(self, seed: int, epoch: int) -> np.ndarray:
        """The epoch's chunks: in file order (.gz), else the file's runs of chunks (``chunk_runs``: a Parquet row
        group's, decoded front to back) in a seeded random order, each run's chunks in order."""
        if not self.file.seekable:
            return np.arange(len(self.rows_per_chunk))
        runs = self.file.chunk_runs()
        order = np.random.default_rng([seed, epoch, 1]).permutation(len(runs))
        return np.array([number for run in order for number in runs[run]], dtype=np.int64)

    def pieces(self, seed: int, epoch: int) -> list[Piece]:
        """What this rank reads in an epoch: its share of the chunks in ``chunk_order``."""
        return rank_share(self.chunk_order(seed, epoch), self.kept_per_chunk, self.rank, self.world)

    def batches(self, batch_size: int, seed: int, epoch: int, skip: int = 0) -> Iterator[EncodedData]:
        """The epoch's batches: this rank's pieces in order, rows permuted within each window."""
        rng = np.random.default_rng([seed, epoch] if self.world == 1 else [seed, epoch, 2, self.rank])
        pieces = self.pieces(seed, epoch)
        frames = self.file.frames([chunk for chunk, _, _ in pieces], layout=self.encoder.layout)
        carry: EncodedData | None = None
        number = 0
        for start in range(0, len(pieces), self.window):
            window = pieces[start : start + self.window]
            held = [carry] if carry is not None and len(carry) else []
            total = sum(len(c) for c in held) + sum(stop - first for _, first, stop in window)
            encoded = (self._encode(piece, next(frames)) for piece in window)
            data = assemble(itertools.chain(held, encoded), total, self.encoder, self.file.path)  # one chunk at a time
            held = carry = None
            permutation = rng.permutation(len(data))
            last = start + self.window >= len(pieces)
            full = len(data) if last else len(data) // batch_size * batch_size
            for begin in range(0, full, batch_size):
                if number >= skip:
                    yield data.take(permutation[begin : min(begin + batch_size, full)])
                number += 1
            carry = None if last else data.take(permutation[full:])
            del data


def encode_file(file: ChunkedFile | ChunkedFiles, encoder: FeatureEncoder, rows_per_chunk: Sequence[int],
                progress: bool = False) -> EncodedData:
    """The whole file encoded in memory, read chunk by chunk into preallocated columns, so the
    raw text of only one chunk is held at a time."""
    frames = with_progress(file.frames(layout=encoder.layout), file, "encoding", progress)
    total = sum(rows_per_chunk)
    ids = encoder.new_ids(total)

    def parts() -> Iterator[EncodedData]:  # each chunk's ids written in place while they fit (assemble tells a changed file)
        start = 0
        for frame in frames:
            stop = start + frame.num_rows
            yield encoder.transform(frame, ids=ids[start:stop] if stop <= total else None)
            start = stop

    return assemble(parts(), total, encoder, file.path, ids)


def assemble(parts: Iterable[EncodedData], total: int, encoder: FeatureEncoder, path: str | Path = "",
             ids: np.ndarray | None = None) -> EncodedData:
    """Encoded parts of ``total`` rows in all, copied one by one into preallocated columns: the
    whole is never held twice, as concatenating the parts would. ``ids``: the (total, fields) array
    to fill (``FeatureEncoder.new_ids``), into whose rows the parts may have written their ids already
    (``FeatureEncoder.transform(ids=...)``); a part's ids found in place are not copied. Parts with
    another number of rows than counted earlier (the file changed between passes) are a
    ``DataError`` on ``path``."""
    fields = len(encoder.single_fields)
    value_fields: tuple[int, ...] | None = encoder.value_fields  # None once some part needs every column
    ids = encoder.new_ids(total) if ids is None else ids
    values: np.ndarray | None = None
    labels: np.ndarray | None = None
    weights: np.ndarray | None = None
    bags: list[list] = [[] for _ in encoder.multi_fields]
    start = 0
    for part in parts:
        stop = start + len(part)
        if stop > total:
            raise DataError(path, f"the file changed while being read: more than the {total:,} rows counted before")
        if not written_in_place(part.ids, ids, start):
            ids[start:stop] = part.ids
        if part.values is not None:
            if values is None:
                values = np.ones((total, fields if part.value_fields is None else len(part.value_fields)), np.float32)
                value_fields = part.value_fields
            elif value_fields is not None and part.value_fields != value_fields:  # rare: widen what is stored so far to every field
                dense = EncodedData(ids[:start], values[:start], value_fields=value_fields).dense_values()
                values, value_fields = np.ones((total, fields), np.float32), None
                values[:start] = dense
            values[start:stop] = part.values if value_fields == part.value_fields else part.dense_values()
        if part.labels is not None:
            if labels is None:
                labels = np.empty(total, dtype=np.float32)
            labels[start:stop] = part.labels
        if part.weights is not None:
            if weights is None:
                weights = np.empty(total, dtype=np.float32)
            weights[start:stop] = part.weights
        for collected, bag in zip(bags, part.bags):
            collected.append(bag)
        start = stop
    if start != total:
        raise DataError(path, f"the file changed while being read: {start:,} rows where {total:,} were counted before")
    return EncodedData(ids=ids, values=values, bags=[Bag.concat(b) for b in bags], labels=labels,
                       value_fields=value_fields, weights=weights)


def written_in_place(part: np.ndarray, whole: np.ndarray, start: int) -> bool:
    """Whether ``part`` is rows ``start``.. of ``whole`` (the same memory, not a copy)."""
    return (part.dtype == whole.dtype and part.strides == whole.strides and part.shape[1:] == whole.shape[1:]
            and part.ctypes.data == whole.ctypes.data + start * whole.strides[0])


def chunk_bytes_for(path: str | Path, chunk_rows: int, probe: int = 1 << 20) -> int:
    """Bytes of text that hold about ``chunk_rows`` rows, from the mean line length of the first MiB."""
    first = check_data_file(training_files(path)[0])  # a pattern: its first file
    with gzip_errors(first), open_bytes(first) as handle:
        head = handle.read(probe)
    lines = max(head.count(b"\n"), 1)
    return max(int(len(head) / lines * chunk_rows), 1 << 10)


def estimated_rows(path: str | Path, probe: int = 1 << 20) -> int:
    """About how many rows ``path`` (or a pattern's files) holds, before reading it: a Parquet file's own
    count; for text, its size over the mean line length of its first MiB (a .gz file's size scaled by how
    much that MiB of text had been compressed)."""
    total = 0
    for file in training_files(path):
        with open(check_data_file(file), "rb") as raw:
            parquet = raw.read(4) == b"PAR1"
        if parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                total += pq.ParquetFile(file).metadata.num_rows
            except (pa.ArrowInvalid, OSError) as error:
                raise DataError(file, f"cannot read Parquet: {error}") from None
            continue
        with gzip_errors(file), open(file, "rb") as raw:
            if is_gzip(file):
                with gzip.GzipFile(fileobj=raw) as text:
                    head = text.read(probe)
                size = file.stat().st_size * len(head) / max(raw.tell(), 1)  # the text's size, about
            else:
                head, size = raw.read(probe), file.stat().st_size
        if head:  # (an empty file has no rows; reading it is refused elsewhere)
            total += int(size / (len(head) / max(head.count(b"\n"), 1)))
    return total


def should_stream(path: str | Path, mode: str, expansion: float = 1.5) -> bool:
    """``mode`` "on"/"off" decide; "auto" streams when the file (or a pattern's files), encoded in memory (about
    ``expansion`` × its size on disk for text), would take over half the available memory.
    Encoded Criteo-shaped rows (int32 ids, 13 value columns) take 212 bytes against ~221 bytes of
    CSV; 1.5 leaves room for the chunk being parsed. Compressed files count 8× their size."""
    if mode != "auto":
        return mode == "on"
    size = 0.0
    for file in training_files(path):  # a pattern: all its files
        compressed = is_gzip(file) or file.suffix.lower() in (".parquet", ".pq")
        size += file.stat().st_size * (8.0 if compressed else expansion)
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return False
    return size > available / 2
