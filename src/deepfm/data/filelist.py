"""Several training files read as one: a glob such as ``--train 'day_*.gz'``.

``open_chunked`` gives a ``ChunkedFile`` for one path, and a ``ChunkedFiles`` for a pattern: the
matching files in name order, each read by its own ``ChunkedFile`` (so errors name that file's
line), their chunks numbered one after the other. Streaming, the chunk order can then mix files
(when none is .gz) and ranks share the files' chunks as they share one file's.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Callable, Iterator, Sequence

from deepfm.config import DataConfig
from deepfm.data.frame import RawFrame
from deepfm.data.readers import Chunk, ChunkedFile
from deepfm.data.sparse import Layout
from deepfm.data.formats import GLOB_CHARACTERS
from deepfm.errors import DataError, warn_data

ChunkIndex = list[list[Chunk]]  # each file's chunks


def is_pattern(path: str | Path) -> bool:
    return any(c in str(path) for c in GLOB_CHARACTERS)


def training_files(path: str | Path) -> list[Path]:
    """The files ``path`` names: itself, or the files a glob pattern matches, in name order (none: a
    ``DataError``)."""
    if not is_pattern(path):
        return [Path(path)]
    files = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
    if not files:
        raise DataError(path, "no file matches this pattern")
    return files


class ChunkedFiles:
    """Files with the same columns as one ``ChunkedFile``: the chunks of the first file, then the
    second's, ...; ``seekable`` when every file is (no .gz)."""

    def __init__(self, pattern: str | Path, files: Sequence[ChunkedFile], ignore: Sequence[str] = (),
                 read: Sequence[str] | None = None, every_or_none: Sequence[str] = ()):
        """``ignore``: columns left out of the data (``data.ignore``), which some files may lack; ``read``: the
        columns a fitted model reads (scoring), which every file must have, beside any others, and of
        ``every_or_none`` (the weights) each in every file or in none."""
        self.path = Path(pattern)
        self.files = list(files)
        self.chunk_bytes = self.files[0].chunk_bytes
        same_format(pattern, self.files)
        if read is None:
            same_columns(pattern, self.files, ignore)
        else:
            columns_read(pattern, self.files, read, every_or_none)

    @property
    def seekable(self) -> bool:
        return all(f.seekable for f in self.files)

    @property
    def layout(self) -> Layout | None:
        return self.files[0].layout

    def chunk_index(self) -> ChunkIndex:
        return [f.chunks() for f in self.files]

    def chunks(self) -> list[Chunk]:
        return [chunk for f in self.files for chunk in f.chunks()]

    def chunk_runs(self) -> list[list[int]]:
        """Each file's ``chunk_runs``, numbered as ``chunks`` numbers them."""
        runs, before = [], 0
        for f in self.files:
            runs.extend([before + number for number in run] for run in f.chunk_runs())
            before += len(f.chunks())
        return runs

    def frames(self, order: Sequence[int] | None = None, layout: Layout | None = None) -> Iterator[RawFrame]:
        """The chunks in order (all files', numbered one after the other), or in ``order``; each
        run of consecutive chunks of one file is read by that file."""
        owners = [(number, local) for number, f in enumerate(self.files) for local in range(len(f.chunks()))]
        order = range(len(owners)) if order is None else order
        run: list[int] = []
        for position, number in enumerate(order):
            owner, local = owners[number]
            run.append(local)
            if position + 1 == len(order) or owners[order[position + 1]][0] != owner:
                file, first = self.files[owner], self.files[0]
                if layout is None and file is not first and first.layout is not None:  # libFM/libFFM: later files
                    file.follow_first_rows(first)  # follow the columns the first chunk read decided
                yield from file.frames(run, layout=layout)
                run = []


def same_format(pattern: str | Path, files: Sequence[ChunkedFile]) -> None:
    """Every file of ``pattern`` is in the first one's format (CSV, TSV, Parquet, libFM, ...; gzip or not): a file in
    another is a ``DataError`` naming both, before any is read (a CSV beside a Parquet file failed deep in Arrow)."""
    for file in files[1:]:
        if file.format != files[0].format:
            raise DataError(file.path, f"it is {file.format}, while {files[0].path}, the first file of '{pattern}', is "
                            f"{files[0].format}; every file of a pattern needs one format (convert the odd one out, or "
                            "match the files with a narrower pattern)")


def same_columns(pattern: str | Path, files: Sequence[ChunkedFile], ignore: Sequence[str] = ()) -> None:
    """Every file of ``pattern`` names the same columns as the first (in any order; ``ignore``d ones aside): a
    file that lacks one or has another is a ``DataError`` at its header, before any is read (a column missing
    from some rows, or read from some files only, would train on what the other files lack)."""

    def used(file: ChunkedFile) -> list[str] | None:
        names = file.column_names()
        return None if names is None else [name for name in names if name not in ignore]

    first = used(files[0])
    for file in files[1:]:
        names = used(file)
        if first is None or names is None or set(names) == set(first):
            continue
        lacks, extra = [n for n in first if n not in names], [n for n in names if n not in first]
        differences = ([f"lacks {', '.join(lacks)}"] if lacks else []) + ([f"has {', '.join(extra)} too"] if extra else [])
        raise DataError(file.path, f"its columns differ from those of {files[0].path}, the first file of '{pattern}': "
                        f"it {' and '.join(differences)}; every file of a pattern needs the same columns", line=1)


def columns_read(pattern: str | Path, files: Sequence[ChunkedFile], read: Sequence[str],
                 every_or_none: Sequence[str] = ()) -> None:
    """Every file of ``pattern`` holds the columns ``read`` (a fitted model's), and each of ``every_or_none`` is in
    every file or in none: a file that breaks either is a ``DataError`` at its header, before any is read; other
    columns may differ from file to file."""
    names = {file.path: file.column_names() for file in files}
    for file in files:
        lacks = [name for name in read if names[file.path] is not None and name not in names[file.path]]
        if lacks:
            raise DataError(file.path, f"lacks column(s) {', '.join(lacks)}, which the model reads (a file of "
                            f"'{pattern}')", line=1)
    for column in every_or_none:
        holding = [path for path, columns in names.items() if columns is not None and column in columns]
        lacking = [path for path, columns in names.items() if columns is not None and column not in columns]
        if holding and lacking:
            raise DataError(lacking[0], f"lacks column {column!r}, which {holding[0].name} of '{pattern}' holds: the "
                            "files of a pattern hold it all or none", line=1)


def open_chunked(path: str | Path, config: DataConfig, chunk_bytes: int,
                 index: ChunkIndex | None = None) -> ChunkedFile | ChunkedFiles:
    """The training file ``path`` (or the files of a pattern, less those without rows) chunked by ``chunk_bytes``;
    ``index``: the chunks ``chunk_index`` gave before (e.g. on another rank), which spares scanning for them."""
    def opened(file: Path) -> ChunkedFile:
        return ChunkedFile(file, config.format, config.label, config.multi, config.multi_separator,
                           chunk_bytes=chunk_bytes, chunk_rows=config.chunk_rows)

    files = [opened(Path(path))] if not is_pattern(path) else files_with_rows(path, opened)
    if index is not None and len(index) != len(files):  # (another rank saw other files, or others empty)
        raise DataError(path, f"{len(files)} file(s) with rows here, where rank 0 indexed {len(index)}: the files "
                        "changed while the run started")
    for file, chunks in zip(files, index or ()):
        file.use_index(chunks)
    return files[0] if not is_pattern(path) else ChunkedFiles(path, files, config.ignore)


NO_ROWS = ("file has no data rows", "file is empty")  # how a reader refuses a file without rows


def files_with_rows(pattern: str | Path, opened: Callable[[Path], ChunkedFile]) -> list[ChunkedFile]:
    """The files of ``pattern``, each ``opened``, less those without a data row (a header alone, no bytes, a Parquet
    file of no rows: what Spark and Hive write for an empty partition), which a ``DataWarning`` names; a pattern
    whose every file is so is a ``DataError``."""
    files, empty = [], []
    for path in training_files(pattern):
        try:
            file = opened(path)
            kept = file.holds_rows()
        except DataError as error:
            if error.message not in NO_ROWS:
                raise
            kept = False
        if kept:
            files.append(file)
        else:
            empty.append(path.name)
    if not files:
        raise DataError(pattern, f"no file of this pattern has a data row ({len(empty)} file(s))")
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        warn_data(f"{pattern}: {len(empty)} of its files {'has' if len(empty) == 1 else 'have'} no data rows, left "
                  f"out: {shown}")
    return files


def chunk_index(file: ChunkedFile | ChunkedFiles) -> ChunkIndex:
    return file.chunk_index() if isinstance(file, ChunkedFiles) else [file.chunks()]
