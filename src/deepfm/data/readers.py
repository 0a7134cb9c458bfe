"""The one reader: a data file (CSV/TSV/Criteo/libFM/libFFM, plain or .gz, or Parquet) as
``RawFrame``s, chunk by chunk; a whole file is one chunk.

A text file is cut into chunks of whole rows (about ``chunk_bytes`` each, ending at a line end outside quotes: a
quoted value may hold line breaks, up to ``delimited.MAX_LINES_IN_VALUE``); a Parquet file into its row groups. Every chunk goes through the
same parsing, and delimited and Parquet chunks through the one table normaliser
(``deepfm.data.tables.frame_from_table``), so errors name the line of the file, not of the chunk.
Everything is columnar (PyArrow); Python touches single lines only to locate an error.
"""

from __future__ import annotations

import mmap
import queue
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from deepfm.data.delimited import (delimited_layout, delimiter_of, last_row_holds, lines_before_rows, parse_delimited,
                                   refuse_empty_lines, refuse_repeated_header, text_lines)
from deepfm.data.formats import check_data_file, detect_format, gzip_errors, input_stream, is_gzip, locate_bad_utf8, open_bytes
from deepfm.data.frame import RawFrame, repeated_names
from deepfm.data import sparse as sparse_text
from deepfm.data.sparse import Layout, SparseRows, layout_sparse, read_lines, sparse_frame
from deepfm.data.tables import apply_multi, frame_from_table, split_multi
from deepfm.errors import DataError

__all__ = ["CHUNK_BYTES", "Chunk", "ChunkedFile", "Layout", "SparseRows", "frame_from_table", "layout_sparse",
           "read_frame", "split_multi"]

CHUNK_BYTES = 64 << 20


def read_frame(
    path: str | Path,
    fmt: str = "auto",
    label: str = "label",
    multi: Sequence[str] = (),
    separator: str = "|",
    require_label: bool = True,
    layout: Layout | None = None,
) -> RawFrame:
    """Read one file whole. ``require_label=False`` allows prediction files without labels;
    ``layout`` (a fitted encoder's) lays libFM/libFFM features out as that model's columns."""
    return ChunkedFile(path, fmt, label, multi, separator, require_label, layout=layout).whole()


@dataclass(frozen=True)
class Chunk:
    """Where one chunk lies: a byte range of whole lines (text) or a row group (Parquet)."""

    start: int  # byte offset in the (decompressed) text, or the row group's number
    size: int  # bytes (Parquet: the chunk's first row within its row group, from 0)
    first_line: int  # line of the chunk's first row (Parquet: its row number, from 1)


class ChunkedFile:
    """One data file, read whole or chunk by chunk with the same parsing.

    ``layout`` fixes the columns of libFM/libFFM data (a fitted encoder's ``layout``); without
    one, the first chunk read decides and later chunks follow it.
    """

    def __init__(self, path: str | Path, fmt: str = "auto", label: str = "label", multi: Sequence[str] = (),
                 separator: str = "|", require_label: bool = True, chunk_bytes: int = CHUNK_BYTES,
                 layout: Layout | None = None, chunks: Sequence[Chunk] | None = None, chunk_rows: int | None = None):
        """``chunks``: the index ``chunks()`` gave for this file and ``chunk_bytes`` (e.g. on another
        rank), which spares the scan for line ends. ``chunk_rows``: Parquet row groups of more than twice as many
        rows are read in chunks of that many (pyarrow writes groups of up to 1M rows, Spark of 128 MB); None: a
        chunk a group."""
        self.path = check_data_file(path)
        self.format = detect_format(self.path) if fmt == "auto" else fmt
        self.label, self.multi, self.separator = label, tuple(multi), separator
        self.require_label = require_label
        self.chunk_bytes = max(int(chunk_bytes), 1 << 10)
        self.chunk_rows = chunk_rows
        self.layout = layout
        self._layout_of_first_rows = False  # ``layout`` is the file's first chunk's, not a model's
        self.compressed = is_gzip(self.path)
        self._chunks: list[Chunk] | None = list(chunks) if chunks is not None else None
        self._delimited: tuple[list[str], int, int] | None = None  # (names, header lines, first data line)
        if self.format in ("csv", "tsv", "criteo"):
            with gzip_errors(self.path):
                self._delimited = delimited_layout(self.path, self.format, label_optional=not require_label)
        elif self.format not in ("parquet", "libfm", "libffm"):  # pragma: no cover - the config validates formats
            raise DataError(self.path, f"unknown format {self.format!r}")
        # libFM/libFFM: every chunk of a large file read by the compiled pass (a gzip file measured by its size on disk)
        self._compiled_sparse = True if self.path.stat().st_size >= sparse_text.COMPILED_FROM else None

    def use_index(self, chunks: Sequence[Chunk]) -> None:
        """Read by the chunks that ``chunks()`` gave for this file (on another rank, say): no scan for them."""
        self._chunks = list(chunks)

    def holds_rows(self) -> bool:
        """Whether the file has a data row: a Parquet footer's count; text with more than blank lines after its
        header (read until its first other character)."""
        if self.format == "parquet":
            try:
                return pq.ParquetFile(self.path).metadata.num_rows > 0
            except (pa.ArrowInvalid, OSError) as error:
                raise DataError(self.path, f"cannot read Parquet: {error}") from None
        with gzip_errors(self.path), open_bytes(self.path) as handle:
            for _ in range(self._header_lines):
                handle.readline()
            while block := handle.read(1 << 16):  # (blank lines before the first row: read on past them)
                if block.strip():
                    return True
            return False

    @property
    def seekable(self) -> bool:
        """Chunks can be read in any order (not for .gz, which is read front to back)."""
        return not self.compressed

    def column_names(self) -> list[str] | None:
        """The columns its header (CSV/TSV), schema (Parquet) or format (Criteo) names; None for libFM/libFFM."""
        if self._delimited is not None:
            return list(self._delimited[0])
        if self.format == "parquet":
            try:
                schema = pq.read_schema(self.path)
            except (pa.ArrowInvalid, OSError) as error:  # a truncated, corrupt or empty file of a pattern
                raise DataError(self.path, f"cannot read Parquet: {error}") from None
            index = [c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)]
            return [name for name in schema.names if name not in index]  # as reading drops pandas' index
        return None

    # -- the index of chunks ----------------------------------------------------------------------

    def chunks(self) -> list[Chunk]:
        """Every chunk, found by one scan for line ends (text) or from the footer (Parquet)."""
        if self._chunks is None:
            with gzip_errors(self.path):
                found = self._parquet_chunks() if self.format == "parquet" else list(self._text_chunks())
            self._chunks = at_least_one(found)
        return self._chunks

    def _parquet_chunks(self) -> list[Chunk]:
        try:
            meta = pq.ParquetFile(self.path).metadata
        except (pa.ArrowInvalid, OSError) as error:
            raise DataError(self.path, f"cannot read Parquet: {error}") from None
        chunks, row = [], 1
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            each = self.chunk_rows if self.chunk_rows and rows > 2 * self.chunk_rows else max(rows, 1)
            chunks.extend(Chunk(group, offset, row + offset) for offset in range(0, max(rows, 1), each))
            row += rows
        return chunks

    def chunk_runs(self) -> list[list[int]]:
        """The chunks in runs that read best one after the other: a Parquet row group's chunks (each group is
        decoded front to back); each other chunk a run of its own."""
        runs: list[list[int]] = []
        for number, chunk in enumerate(self.chunks()):
            if self.format == "parquet" and chunk.size > 0:
                runs[-1].append(number)
            else:
                runs.append([number])
        return runs

    @property
    def _quoting(self) -> bytes | None:
        """The delimiter of text whose fields may be quoted (CSV, TSV, Criteo); None for libFM/libFFM lines."""
        return delimiter_of(self.format).encode() if self._delimited else None

    @property
    def _header_lines(self) -> int:
        return self._delimited[1] if self._delimited else 0

    def _text_chunks(self) -> Iterator[Chunk]:
        with open_bytes(self.path) as handle:
            for _ in range(self._header_lines):
                handle.readline()
            offset, line = handle.tell(), 1 + self._header_lines
            if self.seekable:
                yield from _chunks_read_in_place(handle, offset, line, self.chunk_bytes, self._quoting)
                return
            for block in _line_blocks(handle, self.chunk_bytes, self._quoting):
                yield Chunk(offset, len(block), line)
                offset += len(block)
                line += block.count(b"\n")

    # -- reading ----------------------------------------------------------------------------------

    def follow_first_rows(self, first: "ChunkedFile") -> None:
        """Lay libFM/libFFM rows out as ``first`` (another file of a glob) laid its first chunk out."""
        self.layout, self._layout_of_first_rows = first.layout, first._layout_of_first_rows

    def whole(self, layout: Layout | None = None) -> RawFrame:
        """The whole file as one frame (one chunk)."""
        if self.format == "parquet":
            try:
                table = pq.read_table(self.path)
            except (pa.ArrowInvalid, OSError) as error:
                raise parquet_error(self.path, error) from None
            frame = self._table_frame(table, 1)
        else:
            first_line = self._delimited[2] if self._delimited else 1
            with gzip_errors(self.path):
                if self._delimited and not self.seekable:  # decompressed once, parsed and searched for a lone CR
                    with open_bytes(self.path) as handle:
                        data = handle.read()
                    frame = self._text_frame(pa.BufferReader(data), first_line, self._header_lines, None, layout,
                                             text=self._rows_text(data))
                else:
                    frame = self._text_frame(input_stream(self.path), first_line, self._header_lines, None, layout,
                                             text=self._rows_text_if_lone_carriage_return())
        if frame.num_rows == 0:
            raise DataError(self.path, "file has no data rows", line=frame.first_line)
        return frame

    def frames(self, order: Sequence[int] | None = None, layout: Layout | None = None) -> Iterator[RawFrame]:
        """The chunks as ``RawFrame``s, in file order or in ``order`` (chunk numbers; a file that is
        not ``seekable`` gives the chunks of ``order`` in file order, skipping the others unparsed).
        A chunk's freed memory stays with the allocator for the next chunk to reuse (handing it back to the
        OS after each chunk made every chunk page-fault its memory in afresh); whoever reads a whole pass
        hands the rest back once (``deepfm.runtime.release_free_memory``). Read in file order before the chunks are
        known, a plain text file's chunks are parsed as the index finds them (``_frames_as_indexed``)."""
        if order is None and self._chunks is None and self.seekable and self.format != "parquet":
            yield from self._frames_as_indexed(layout)
            return
        chunks = self.chunks()
        if len(chunks) == 1:  # a small file: read whole
            yield self.whole(layout)
            return
        if order is None:
            order = range(len(chunks))
        if self.format == "parquet":
            yield from self._parquet_frames(chunks, order)
            return
        line_ends = {chunk.start: after.first_line - chunk.first_line for chunk, after in zip(chunks, chunks[1:])}
        for chunk, block in gzip_errors_in(self.path, self._blocks(chunks, order)):
            yield self._chunk_frame(chunk, block, line_ends.get(chunk.start), layout)

    def _parquet_frames(self, chunks: list[Chunk], order: Sequence[int]) -> Iterator[RawFrame]:
        """The Parquet chunks of ``order``: a row group read whole where it is one chunk; else its chunks decoded
        from one pass over the group (``_GroupRows``), which chunks of the group that follow each other continue."""
        parquet = pq.ParquetFile(self.path)
        ends = [after.size if after.start == chunk.start else parquet.metadata.row_group(chunk.start).num_rows
                for chunk, after in zip(chunks, [*chunks[1:], Chunk(-1, 0, 0)])]
        group = None
        try:
            for number in order:
                chunk = chunks[number]
                if chunk.size == 0 and ends[number] == parquet.metadata.row_group(chunk.start).num_rows:
                    table = parquet.read_row_group(chunk.start)  # the group whole, one chunk
                else:
                    if group is None or not group.continues_at(chunk):  # batches of chunk_rows, not of a tail's size
                        group = _GroupRows(parquet, chunk, self.chunk_rows or ends[number] - chunk.size)
                    table = group.take(ends[number] - chunk.size)
                yield self._table_frame(table, chunk.first_line)
        except (pa.ArrowInvalid, OSError) as error:
            raise DataError(self.path, f"cannot read Parquet: {error}") from None

    def _frames_as_indexed(self, layout: Layout | None) -> Iterator[RawFrame]:
        """``frames`` of a seekable text file whose chunks are not known yet: each chunk parsed as soon as the index,
        running on a thread (``_ChunksAhead``), has found the next, so that the index's single-threaded pass and the
        parsing share the cores. The index is kept (``chunks``) once every chunk is found."""
        found = _ChunksAhead(self)
        try:
            first = next(found, None)
            following = next(found, None)
            if following is None:  # at most one chunk: read whole
                yield self.whole(layout)
            else:
                with open(self.path, "rb") as handle:
                    chunk = first
                    while chunk is not None:
                        handle.seek(chunk.start)
                        block = handle.read(chunk.size)
                        line_ends = None if following is None else following.first_line - chunk.first_line
                        yield self._chunk_frame(chunk, block, line_ends, layout)
                        chunk, following = following, next(found, None)
            self._chunks = found.every_chunk()
        finally:
            found.stop()

    def _chunk_frame(self, chunk: Chunk, block: bytes, line_ends: int | None, layout: Layout | None) -> RawFrame:
        """One chunk's bytes as a frame; ``line_ends``: its LFs where the index counted them (every chunk's but the
        last)."""
        lines = (lambda text=block: text_lines(text))
        quoted, lone_carriage_return = b'"' in block, holds_lone_carriage_return(block)
        lines_as_rows = rows_if_one_a_line(block, line_ends) if quoted and not lone_carriage_return else None
        return self._text_frame(pa.BufferReader(block), chunk.first_line, 0, lines, layout, quoted=quoted,
                                lines_as_rows=lines_as_rows, text=block if lone_carriage_return else None)

    def in_order(self, rows: int) -> Iterator[RawFrame]:
        """The file front to back in frames of about ``rows`` rows: text in ``frames``' chunks (``chunk_bytes``, set
        for that many rows), Parquet in batches of ``rows`` rows whatever its row groups (``frames`` reads a group
        whole)."""
        if self.format != "parquet":
            yield from self.frames()
            return
        try:
            parquet = pq.ParquetFile(self.path)
            first_row, batches = 1, parquet.iter_batches(batch_size=rows)
            for batch in batches:
                if batch.num_rows:
                    table = pa.Table.from_batches([batch]).replace_schema_metadata(parquet.schema_arrow.metadata)
                    yield self._table_frame(table, first_row)  # (pandas' metadata: its index column is left out)
                    first_row += batch.num_rows
        except (pa.ArrowInvalid, OSError) as error:
            raise DataError(self.path, f"cannot read Parquet: {error}") from None
        if first_row == 1:
            raise DataError(self.path, "file has no data rows", line=1)

    def _blocks(self, chunks: list[Chunk], order: Sequence[int]) -> Iterator[tuple[Chunk, bytes]]:
        if self.seekable:
            with open(self.path, "rb") as handle:
                for number in order:
                    handle.seek(chunks[number].start)
                    yield chunks[number], handle.read(chunks[number].size)
            return
        with open_bytes(self.path) as handle:
            for _ in range(self._header_lines):
                handle.readline()
            wanted = set(int(number) for number in order)
            last = max(wanted, default=-1)
            for number, (chunk, block) in enumerate(zip(chunks, _line_blocks(handle, self.chunk_bytes, self._quoting))):
                if number > last:
                    return
                if number in wanted:
                    yield chunk, block

    def _text_frame(self, source, first_line: int, skip: int, lines, layout: Layout | None,
                    quoted: bool = True, lines_as_rows: int | None = None, text: bytes | None = None) -> RawFrame:
        """Text (the whole file's stream after ``skip`` header lines, or a chunk) as a frame; ``quoted``: it may
        hold a quote (``parse_delimited``). ``lines_as_rows``: how many rows a chunk parses into where no quoted value
        holds a line end (``rows_if_one_a_line``). ``text``: the rows' bytes where they hold a CR alone, which ends a
        row but not a line (the rows after it are placed by reading them: ``row_ends.lines_before_rows_of``)."""
        if self.format in ("libfm", "libffm"):
            try:
                text = read_lines(source)
            except pa.ArrowInvalid as error:  # pyarrow refuses a file with no bytes at all, or bytes not UTF-8
                if "Empty CSV file" in str(error):
                    raise DataError(self.path, "file is empty", line=1) from None
                raise locate_bad_utf8(self.path, None) from None  # (binary data, gzip without .gz: named as such)
            frame = sparse_frame(text, self.path, self.format, first_line, layout or self.layout,
                                 compiled=self._compiled_sparse, first_rows=layout is None and self._layout_of_first_rows)
            if self.layout is None and layout is None:
                self.layout = dict(frame.kinds)  # later chunks follow the first chunk's columns
                self._layout_of_first_rows = True
            return apply_multi(frame, self.multi, self.separator)
        names = self._delimited[0]
        table = parse_delimited(source, self.path, names, skip, delimiter_of(self.format), first_line, lines=lines,
                                quoted=quoted)
        quoted = quoted and not one_row_a_line(table, lines_as_rows)
        placed = None
        if text is not None:
            from deepfm.data.row_ends import lines_before_rows_of  # (numba: loaded here only)

            placed = lines_before_rows_of(text, delimiter_of(self.format).encode(), table.num_rows)
        before = (lines_before_rows(table, self.path, first_line, delimiter_of(self.format), lines, placed) if quoted
                  else placed)
        if not self.require_label:  # a training or evaluation file's empty line is a missing label (``RawFrame``)
            refuse_empty_lines(table, self.path, first_line, before, lines)
        if self.format != "criteo":  # (no header)
            refuse_repeated_header(table, self.path, first_line, before)
        return self._table_frame(table, first_line, before)  # its lines known before a multi-valued column is read

    def _rows_text_if_lone_carriage_return(self) -> bytes | None:
        """A plain file read whole: its bytes after the header lines where they hold a CR alone (``_text_frame``'s
        ``text``), else None. The check maps the file (``whole`` searches a .gz file's bytes as it parses them)."""
        if self.format in ("libfm", "libffm") or self.path.stat().st_size == 0:
            return None
        with open(self.path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return self._rows_text(mapped)  # (copied only where it holds a CR alone)

    def _rows_text(self, data) -> bytes | None:
        """``data``'s bytes after the header lines where they hold a CR alone, else None."""
        if not holds_lone_carriage_return(data):
            return None
        start = 0
        for _ in range(self._header_lines):
            start = data.find(b"\n", start) + 1
        return data[start:] if start or not self._header_lines else None

    def _table_frame(self, table: pa.Table, first_line: int, lines_before: np.ndarray | None = None) -> RawFrame:
        return frame_from_table(table, str(self.path), self.label, self.require_label, fmt=self.format,
                                first_line=first_line, multi=self.multi, separator=self.separator,
                                lines_before=lines_before)


class _GroupRows:
    """One Parquet row group's rows, decoded front to back in batches (``iter_batches``), so that memory holds a chunk
    of it, not the whole group; it starts at ``chunk`` (rows before it in the group are decoded and dropped)."""

    def __init__(self, parquet: pq.ParquetFile, chunk: Chunk, batch_rows: int):
        self.group, self.next_row = chunk.start, chunk.size
        self.batches = parquet.iter_batches(batch_size=batch_rows, row_groups=[chunk.start])
        self.metadata = parquet.schema_arrow.metadata  # pandas' (its index column is left out, as a group read whole)
        self.held: list[pa.RecordBatch] = []
        skip = chunk.size
        while skip > 0:
            batch = next(self.batches)
            if batch.num_rows > skip:
                self.held.append(batch.slice(skip))
            skip -= batch.num_rows

    def continues_at(self, chunk: Chunk) -> bool:
        return chunk.start == self.group and chunk.size == self.next_row

    def take(self, rows: int) -> pa.Table:
        """The group's next ``rows`` rows."""
        while sum(batch.num_rows for batch in self.held) < rows:
            self.held.append(next(self.batches))
        table = pa.Table.from_batches(self.held).replace_schema_metadata(self.metadata)
        rest = table.slice(rows)
        self.held = rest.to_batches() if rest.num_rows else []
        self.next_row += rows
        return table.slice(0, rows)


def at_least_one(chunks: list[Chunk]) -> list[Chunk]:
    """A file's index: its chunks, or one empty chunk where it has none (read whole, so an empty file gets the whole
    file's error)."""
    return chunks or [Chunk(0, 0, 1)]


class _ChunksAhead:
    """A text file's chunks (``ChunkedFile._text_chunks``) as a thread finds them: iterated in file order, each as
    soon as it is found; the thread's error raised where the iteration reaches it. ``stop`` ends the thread at its
    next chunk (an iteration left unfinished)."""

    def __init__(self, file: ChunkedFile):
        self._found: queue.SimpleQueue = queue.SimpleQueue()
        self._chunks: list[Chunk] = []
        self._stopped = threading.Event()
        self._ended = False
        threading.Thread(target=self._index, args=(file,), name="deepfm-chunk-index", daemon=True).start()

    def _index(self, file: ChunkedFile) -> None:
        try:
            for chunk in file._text_chunks():
                if self._stopped.is_set():
                    return
                self._found.put(chunk)
            self._found.put(None)
        except BaseException as error:  # noqa: BLE001 - raised in the reading thread
            self._found.put(error)

    def __iter__(self) -> "_ChunksAhead":
        return self

    def __next__(self) -> Chunk:
        if self._ended:
            raise StopIteration
        found = self._found.get()
        if isinstance(found, BaseException):
            self._ended = True
            raise found
        if found is None:
            self._ended = True
            raise StopIteration
        self._chunks.append(found)
        return found

    def every_chunk(self) -> list[Chunk]:
        """Every chunk, once the iteration has ended (``ChunkedFile.chunks``'s list)."""
        return at_least_one(self._chunks)

    def stop(self) -> None:
        self._stopped.set()


def parquet_error(path: Path, error: Exception) -> DataError:
    """What Arrow's failure to read a Parquet file means: its columns' names repeated (Arrow's message lists its
    dataset's internal fields), or Arrow's own words."""
    try:
        repeated = repeated_names(pq.read_schema(path).names)
    except (pa.ArrowException, OSError):
        repeated = []
    if repeated:
        return DataError(path, f"duplicate column names: {repeated}", line=1)
    return DataError(path, f"cannot read Parquet: {error}")


def gzip_errors_in(path: Path, blocks: Iterator[tuple[Chunk, bytes]]) -> Iterator[tuple[Chunk, bytes]]:
    """``blocks``, with ``gzip_errors`` around reading them (not around what the caller does with each)."""
    with gzip_errors(path):
        yield from blocks


def _chunks_read_in_place(handle, offset: int, line: int, size: int, delimiter: bytes | None) -> Iterator[Chunk]:
    """The chunks of ``_line_blocks`` (the same cuts) of a seekable file from ``offset``, each window read
    into one reused buffer and searched there: no block is joined to the last one's rest, sliced or kept
    (the index of 221 MB of Criteo-shaped text: 0.17-0.19 s, against 0.31-0.61 s the other way)."""
    buffer = bytearray(2 * size)
    read_end, length, cut = offset, 0, 1  # where ``_line_blocks`` would have read to: the next window ends further
    while True:
        read_end += size if cut else max(size, length)  # no row end in the window: it doubles, as ``rest`` does there
        length = read_end - offset
        if len(buffer) < length:
            buffer = bytearray(2 * length)
        handle.seek(offset)
        got = handle.readinto(memoryview(buffer)[:length])
        cut = _record_end(buffer, got, delimiter, give_up=got >= give_up_bytes(size))
        if cut:
            yield Chunk(offset, cut, line)
            line += _line_ends_in(buffer, cut)
            offset += cut
        if got < length:  # the end of the file: what follows the last line end is a last line of its own
            if buffer[cut:got].strip():  # + the line end ``_line_blocks`` adds where the rest lacks one
                yield Chunk(offset, got - cut + (buffer[got - 1] != ord("\n")), line)
            return


GROW_LIMIT = 8  # a window this many blocks long is cut at its last line end, quotes or not (``_record_end``),
GIVE_UP_BYTES = 4 << 20  # or this long, where blocks are small (a valid value over 100 lines of 40 KB fits)


def give_up_bytes(size: int) -> int:
    """How long a window of blocks of ``size`` bytes grows before it is cut at its last line end, quotes or not: a
    quote left open would otherwise take every later line end inside its value, and the window the whole file."""
    return max(GROW_LIMIT * size, GIVE_UP_BYTES)


def _record_end(buffer, length: int, delimiter: bytes | None, give_up: bool = False) -> int:
    """Where the last whole row of ``buffer[:length]`` (which begins at a row's start) ends: after its last line
    end outside quoted values (a quoted value may hold line ends, and a chunk cut inside one would read as two
    broken rows); 0 where there is none. ``delimiter``: the text's (None: lines without quoting, libFM/libFFM).
    ``give_up``: the last line end, quotes or not (a quote left open would otherwise keep every later line end
    inside). A quote opens a value only at a field's start, as Arrow and Python's csv read it: 5'11" is text."""
    cut = buffer.rfind(b"\n", 0, length) + 1
    if give_up or not cut or delimiter is None or buffer.find(b'"', 0, cut) < 0:
        return cut
    quotes = _quotes_if_they_pair_up(buffer, cut, delimiter)
    if quotes is None:  # a quote inside an unquoted value: read the quotes one by one
        from deepfm.data.row_ends import last_row_end

        return last_row_end(buffer, cut, delimiter)
    while cut and quotes % 2:  # every other quote opens a value: a line end after an odd count is inside one
        previous = buffer.rfind(b"\n", 0, cut - 1) + 1
        quotes -= buffer.count(b'"', previous, cut)
        cut = previous
    return cut


def rows_if_one_a_line(block: bytes, line_ends: int | None = None) -> int:
    """How many rows ``block`` (whole lines; the last may lack its line end; no lone CR, which Arrow also reads as a
    line end and could make up for a line joined: ``frames`` asks only of other blocks) parses into where no quoted
    value holds a line end: its lines (a blank line is a row). Parsed into as many rows, no value holds one (each would
    join two lines into one row), so their count over every column is not needed (``lines_before_rows``).
    ``line_ends``: the block's LFs where the chunk index counted them already (every chunk's but the last)."""
    return (block.count(b"\n") if line_ends is None else line_ends) + (not block.endswith(b"\n"))


def holds_lone_carriage_return(text) -> bool:
    """Whether ``text`` (bytes, or a mapped file) holds a CR not followed by a LF (CSV readers, Arrow's among them,
    end a row there)."""
    return text.find(b"\r") >= 0 and _LONE_CARRIAGE_RETURN.search(text) is not None


_LONE_CARRIAGE_RETURN = re.compile(rb"\r(?!\n)")


def one_row_a_line(table: pa.Table, lines_as_rows: int | None) -> bool:
    """Whether no value of ``table``, parsed from a block of ``rows_if_one_a_line`` rows, holds a line end: as many rows
    as that, and none in the last row (a quote left open on the block's last line runs on over its line end alone)."""
    if lines_as_rows is None or table.num_rows != lines_as_rows:
        return False
    return not last_row_holds(table, "\n")


def _quotes_if_they_pair_up(buffer, length: int, delimiter: bytes) -> int | None:
    """How many quotes ``buffer[:length]`` holds, where every other one (the 1st, 3rd, ...) stands where a quote opens
    a value: at a field's start (after the delimiter or a line end) or right after the quote before it (a doubled
    quote, "", within a value). Then quotes alternate opening and closing values, and their count tells a line end
    inside a value from one between rows. None where one stands elsewhere: it is text, and the count says nothing."""
    text = np.frombuffer(buffer, np.uint8, length)
    opens_after = np.zeros(256, bool)  # the bytes an opening quote may follow
    opens_after[np.frombuffer(delimiter + b'\n"', np.uint8)] = True
    quotes = 0
    for start, is_quote in _pieces_equal_to(text, ord('"')):  # (a quarter MB at a time: 50 → 33 ms a 14 MB window)
        at = np.flatnonzero(is_quote) + start
        opening = at[quotes % 2::2]  # the 1st, 3rd, ... quote of the text
        if not opens_after[text[opening[opening > 0] - 1]].all():
            return None
        quotes += len(at)
    return quotes


PIECE_BYTES = 1 << 18


def _pieces_equal_to(text: np.ndarray, byte: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, text[start:start + PIECE_BYTES] == byte) for each piece of ``text``, in one reused buffer (a mask
    of the whole window took as many bytes as the window and missed the cache)."""
    mask = np.empty(min(PIECE_BYTES, len(text)), bool)
    for start in range(0, len(text), PIECE_BYTES):
        piece = text[start:start + PIECE_BYTES]
        yield start, np.equal(piece, byte, out=mask[:len(piece)])


def _line_ends_in(buffer, length: int) -> int:
    """How many LFs ``buffer[:length]`` holds (``bytearray.count`` took 1.7× as long)."""
    return sum(int(np.count_nonzero(is_line_end)) for _, is_line_end in
               _pieces_equal_to(np.frombuffer(buffer, np.uint8, length), ord("\n")))


def _line_blocks(handle, size: int, delimiter: bytes | None) -> Iterator[bytes]:
    """Blocks of about ``size`` bytes that end at a row's end (``_record_end``; the last may lack one)."""
    rest, grown = b"", False
    while True:
        data = handle.read(max(size, len(rest)) if grown else size)
        if not data:
            if rest.strip():
                yield rest if rest.endswith(b"\n") else rest + b"\n"
            return
        data = rest + data
        cut = _record_end(data, len(data), delimiter, give_up=len(data) >= give_up_bytes(size))
        rest, grown = data[cut:], cut == 0  # no row end in the block (a row longer than it): twice as much is read
        if cut:
            yield data[:cut]
