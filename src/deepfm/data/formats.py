"""Which reader a file needs: ``--format auto`` resolved from the name and first line."""

from __future__ import annotations

import gzip
from pathlib import Path

from deepfm.errors import DataError

FORMATS = ("csv", "tsv", "parquet", "criteo", "libfm", "libffm")

AUTO_RULE = (
    "auto: a trailing .gz is ignored; .parquet/.pq -> parquet; .libfm/.libsvm/.svm -> libfm; "
    ".libffm/.ffm -> libffm; otherwise the first line decides: 'label idx:val ...' -> libfm, "
    "'label field:idx:val ...' -> libffm, 40 tab-separated fields starting with 0 or 1 -> criteo, "
    "a tab in the line (or a .tsv name) -> tsv, else csv"
)

CRITEO_COLUMNS = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]


def is_gzip(path: str | Path) -> bool:
    """Whether a file is gzipped: its name ends in ``.gz``, in any case (``data.CSV.GZ``).
    The one place that decides it, for every reader."""
    return Path(path).suffix.lower() == ".gz"


def open_text(path: str | Path):
    """Open a text file, transparently decompressing ``.gz``."""
    if is_gzip(path):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def open_bytes(path: str | Path):
    """Open a file for reading bytes, transparently decompressing ``.gz``."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def input_stream(path: str | Path) -> "pa.NativeFile":
    """An Arrow input stream over a file's (decompressed) bytes, for Arrow's readers."""
    import pyarrow as pa  # here, so the command can set Arrow's allocator before pyarrow loads

    return pa.input_stream(str(path), compression="gzip" if is_gzip(path) else None)


def first_line(path: str | Path) -> str:
    with open_text(path) as handle:
        return handle.readline().rstrip("\r\n")


def detect_format(path: str | Path) -> str:
    """Resolve ``--format auto`` for one file by ``AUTO_RULE``."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    suffixes = [s.lower() for s in path.suffixes]
    if is_gzip(path):
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in (".parquet", ".pq"):
        return "parquet"
    if last in (".libfm", ".libsvm", ".svm"):
        return "libfm"
    if last in (".libffm", ".ffm"):
        return "libffm"
    try:
        line = first_line(path)
    except UnicodeDecodeError:
        raise DataError(path, "not UTF-8 text and not a .parquet file", line=1) from None
    if not line.strip():
        raise DataError(path, "file is empty", line=1)
    tokens = line.split()
    if len(tokens) > 1 and all(":" in t for t in tokens[1:]) and "," not in line:
        return "libffm" if tokens[1].count(":") == 2 else "libfm"
    fields = line.split("\t")
    if len(fields) == len(CRITEO_COLUMNS) and fields[0] in ("0", "1"):
        return "criteo"
    if last == ".tsv" or "\t" in line:
        return "tsv"
    return "csv"
