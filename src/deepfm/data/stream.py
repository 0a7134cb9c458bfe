"""Files larger than memory: line-aligned chunks, a streaming encoder fit, a streaming BatchSource.

A text file (CSV/TSV/Criteo/libFM/libFFM, plain or .gz) is cut into chunks of whole lines
(about ``chunk_bytes`` each; one record per line, so no newlines inside quoted fields); a
Parquet file into its row groups. Each chunk is read and encoded on its own, so memory holds a
few chunks, never the file, and errors name the line of the file, not of the chunk.

``StreamSource`` shuffles in two stages, both fixed by ``(seed, epoch)`` so a resumed run
sees the same batches: the order of chunks (plain files and Parquet; .gz is read in order)
and a permutation of the rows of ``window`` chunks at a time.
"""

from __future__ import annotations

import gzip
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from deepfm.config import DataConfig
from deepfm.data.batch import Bag, EncodedData, id_dtype
from deepfm.data.encoders import FeatureEncoder
from deepfm.data.formats import detect_format
from deepfm.data.frame import RawFrame
from deepfm.data.readers import (
    _read_lines, delimited_frame, delimited_layout, frame_from_table, parse_delimited, read_frame, sparse_frame,
    split_multi,
)
from deepfm.errors import DataError

CHUNK_BYTES = 64 << 20


@dataclass(frozen=True)
class Chunk:
    """Where one chunk lies: a byte range of whole lines (text) or a row group (Parquet)."""

    start: int  # byte offset in the (decompressed) text, or the row group's number
    size: int  # bytes (0 for Parquet)
    first_line: int  # line of the chunk's first row (Parquet: its row number, from 1)


class ChunkedFile:
    """One data file read chunk by chunk, with the same parsing as ``read_frame``."""

    def __init__(self, path: str | Path, fmt: str = "auto", label: str = "label", multi: Sequence[str] = (),
                 separator: str = "|", require_label: bool = True, chunk_bytes: int = CHUNK_BYTES):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(self.path, "file not found")
        self.format = detect_format(self.path) if fmt == "auto" else fmt
        self.label, self.multi, self.separator = label, tuple(multi), separator
        self.require_label = require_label
        self.chunk_bytes = max(int(chunk_bytes), 1 << 10)
        self.compressed = self.path.suffix == ".gz"
        self._chunks: list[Chunk] | None = None
        self._layout: tuple[list[str], int, int] | None = None
        if self.format in ("csv", "tsv", "criteo"):
            self._layout = delimited_layout(self.path, self.format)

    @property
    def seekable(self) -> bool:
        """Chunks can be read in any order (not for .gz, which is read front to back)."""
        return not self.compressed

    # -- the index of chunks ----------------------------------------------------------------------

    def chunks(self) -> list[Chunk]:
        """Every chunk, found by one scan for line ends (text) or from the footer (Parquet)."""
        if self._chunks is None:
            self._chunks = self._parquet_chunks() if self.format == "parquet" else list(self._text_chunks())
            if not self._chunks:  # read whole, so an empty file gets read_frame's own error
                self._chunks = [Chunk(0, 0, 1)]
        return self._chunks

    def _parquet_chunks(self) -> list[Chunk]:
        meta = pq.ParquetFile(self.path).metadata
        chunks, row = [], 1
        for group in range(meta.num_row_groups):
            chunks.append(Chunk(group, 0, row))
            row += meta.row_group(group).num_rows
        return chunks

    def _open(self):
        return gzip.open(self.path, "rb") if self.compressed else open(self.path, "rb")

    def _text_chunks(self) -> Iterator[Chunk]:
        skip_lines = self._layout[1] if self._layout else 0
        with self._open() as handle:
            for _ in range(skip_lines):
                handle.readline()
            offset, line = handle.tell(), 1 + skip_lines
            for block in _line_blocks(handle, self.chunk_bytes):
                yield Chunk(offset, len(block), line)
                offset += len(block)
                line += block.count(b"\n")

    # -- reading ----------------------------------------------------------------------------------

    def frames(self, order: Sequence[int] | None = None) -> Iterator[RawFrame]:
        """The chunks as ``RawFrame``s, in file order or in ``order`` (chunk numbers)."""
        chunks = self.chunks()
        if len(chunks) == 1:  # a small file: exactly what read_frame gives
            yield read_frame(self.path, self.format, self.label, self.multi, self.separator, self.require_label)
            return
        if order is None or not self.seekable:
            order = range(len(chunks))
        if self.format == "parquet":
            parquet = pq.ParquetFile(self.path)
            for number in order:
                yield self._parquet_frame(parquet, chunks[number])
                _release_arrow_memory()
            return
        if self.seekable:
            with open(self.path, "rb") as handle:
                for number in order:
                    chunk = chunks[number]
                    handle.seek(chunk.start)
                    yield self._text_frame(handle.read(chunk.size), chunk.first_line)
                    _release_arrow_memory()
            return
        for chunk, block in zip(chunks, self._blocks_in_order()):
            yield self._text_frame(block, chunk.first_line)
            _release_arrow_memory()

    def _blocks_in_order(self) -> Iterator[bytes]:
        skip_lines = self._layout[1] if self._layout else 0
        with self._open() as handle:
            for _ in range(skip_lines):
                handle.readline()
            yield from _line_blocks(handle, self.chunk_bytes)

    def _text_frame(self, block: bytes, first_line: int) -> RawFrame:
        if self.format in ("libfm", "libffm"):
            frame = sparse_frame(_read_lines(pa.BufferReader(block)), self.path, self.format, first_line)
        else:
            names, _, _ = self._layout
            delimiter = "," if self.format == "csv" else "\t"
            table = parse_delimited(pa.BufferReader(block), self.path, names, 0, delimiter, first_line,
                                    lines=lambda: block.decode("utf-8").splitlines())
            frame = delimited_frame(table, str(self.path), self.format, names, self.label, self.require_label, first_line)
        return self._with_multi(frame)

    def _parquet_frame(self, parquet: pq.ParquetFile, chunk: Chunk) -> RawFrame:
        try:
            table = parquet.read_row_group(chunk.start)
        except (pa.ArrowInvalid, OSError) as error:
            raise DataError(self.path, f"cannot read Parquet: {error}") from None
        frame = frame_from_table(table, str(self.path), self.label, self.require_label, fmt="parquet")
        frame.first_line = chunk.first_line
        return self._with_multi(frame)

    def _with_multi(self, frame: RawFrame) -> RawFrame:
        for name in self.multi:
            if name not in frame.columns:
                raise DataError(frame.path, f"--multi names column '{name}', which is not in the file", line=1)
            frame.columns[name], frame.weights[name] = split_multi(frame, name, self.separator)
            frame.kinds[name] = "multi"
        return frame


def _release_arrow_memory() -> None:
    """Hand the pages of a parsed chunk back to the OS, so resident memory stays flat."""
    pa.default_memory_pool().release_unused()


def _line_blocks(handle, size: int) -> Iterator[bytes]:
    """Blocks of about ``size`` bytes that end at a line end (the last may lack one)."""
    rest = b""
    while True:
        data = handle.read(size)
        if not data:
            if rest.strip():
                yield rest if rest.endswith(b"\n") else rest + b"\n"
            return
        data = rest + data
        cut = data.rfind(b"\n") + 1
        if cut == 0:  # one line longer than the block: keep reading
            rest = data
            continue
        rest = data[cut:]
        yield data[:cut]


def fit_streaming(file: ChunkedFile, config: DataConfig) -> tuple[FeatureEncoder, list[int]]:
    """Fit an encoder in one pass over the chunks; also count each chunk's rows."""
    rows: list[int] = []

    def counted() -> Iterator[RawFrame]:
        for frame in file.frames():
            rows.append(frame.num_rows)
            yield frame

    encoder = FeatureEncoder.fit(counted(), config)
    return encoder, rows


def count_rows(file: ChunkedFile) -> list[int]:
    """Rows of each chunk (one reading pass; used when the encoder is already known)."""
    return [frame.num_rows for frame in file.frames()]


class StreamSource:
    """A ``BatchSource`` that reads, encodes and shuffles a file chunk by chunk.

    Memory holds about ``window`` encoded chunks plus the chunk being read. Every row is in
    exactly one batch per epoch; all batches but the epoch's last have ``batch_size`` rows.
    """

    def __init__(self, file: ChunkedFile, encoder: FeatureEncoder, rows_per_chunk: Sequence[int], window: int = 4):
        if len(rows_per_chunk) != len(file.chunks()):
            raise ValueError("rows_per_chunk must give one count per chunk")
        self.file, self.encoder = file, encoder
        self.rows_per_chunk = list(rows_per_chunk)
        self.window = max(1, int(window))

    @property
    def num_rows(self) -> int:
        return sum(self.rows_per_chunk)

    def steps_per_epoch(self, batch_size: int) -> int:
        return -(-self.num_rows // batch_size)

    def chunk_order(self, seed: int, epoch: int) -> np.ndarray:
        chunks = len(self.rows_per_chunk)
        if not self.file.seekable:
            return np.arange(chunks)
        return np.random.default_rng([seed, epoch, 1]).permutation(chunks)

    def batches(self, batch_size: int, seed: int, epoch: int, skip: int = 0) -> Iterator[EncodedData]:
        """The epoch's batches: chunks in ``chunk_order``, rows permuted within each window."""
        rng = np.random.default_rng([seed, epoch])
        order = self.chunk_order(seed, epoch)
        frames = self.file.frames(order)
        carry: EncodedData | None = None
        number = 0
        for start in range(0, len(order), self.window):
            chunks = order[start : start + self.window]
            held = [carry] if carry is not None and len(carry) else []
            total = sum(len(c) for c in held) + sum(self.rows_per_chunk[i] for i in chunks)
            encoded = (self.encoder.transform(next(frames)) for _ in chunks)
            data = assemble(itertools.chain(held, encoded), total, self.encoder, self.file.path)  # one chunk at a time
            held = carry = None
            permutation = rng.permutation(len(data))
            last = start + self.window >= len(order)
            full = len(data) if last else len(data) // batch_size * batch_size
            for begin in range(0, full, batch_size):
                if number >= skip:
                    yield data.take(permutation[begin : min(begin + batch_size, full)])
                number += 1
            carry = None if last else data.take(permutation[full:])
            del data


def encode_file(file: ChunkedFile, encoder: FeatureEncoder, rows_per_chunk: Sequence[int]) -> EncodedData:
    """The whole file encoded in memory, read chunk by chunk into preallocated columns, so the
    raw text of only one chunk is held at a time."""
    return assemble((encoder.transform(frame) for frame in file.frames()), sum(rows_per_chunk), encoder, file.path)


def assemble(parts: Iterable[EncodedData], total: int, encoder: FeatureEncoder, path: str | Path = "") -> EncodedData:
    """Encoded parts of ``total`` rows in all, copied one by one into preallocated columns: the
    whole is never held twice, as concatenating the parts would. Parts with another number of
    rows than counted earlier (the file changed between passes) are a ``DataError`` on ``path``."""
    fields = len(encoder.single_fields)
    value_fields: tuple[int, ...] | None = encoder.value_fields  # None once some part needs every column
    ids = np.empty((total, fields), dtype=id_dtype(encoder.num_features))
    values: np.ndarray | None = None
    labels: np.ndarray | None = None
    weights: np.ndarray | None = None
    bags: list[list] = [[] for _ in encoder.multi_fields]
    start = 0
    for part in parts:
        stop = start + len(part)
        if stop > total:
            raise DataError(path, f"the file changed while being read: more than the {total:,} rows counted before")
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


def chunk_bytes_for(path: str | Path, chunk_rows: int, probe: int = 1 << 20) -> int:
    """Bytes of text that hold about ``chunk_rows`` rows, from the mean line length of the first MiB."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        head = handle.read(probe)
    lines = max(head.count(b"\n"), 1)
    return max(int(len(head) / lines * chunk_rows), 1 << 10)


def should_stream(path: str | Path, mode: str, expansion: float = 1.5) -> bool:
    """``mode`` "on"/"off" decide; "auto" streams when the file, encoded in memory (about
    ``expansion`` × its size on disk for text), would take over half the available memory.
    Encoded Criteo-shaped rows (int32 ids, 13 value columns) take 212 bytes against ~221 bytes of
    CSV; 1.5 leaves room for the chunk being parsed. Compressed files count 8× their size."""
    if mode != "auto":
        return mode == "on"
    size = Path(path).stat().st_size * (8.0 if str(path).endswith((".gz", ".parquet", ".pq")) else expansion)
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return False
    return size > available / 2
