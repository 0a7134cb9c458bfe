"""Which reader a file needs: ``--format auto`` resolved from the name and first line."""

from __future__ import annotations

import csv
import gzip
import itertools
import re
import shlex
import zlib
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from deepfm.errors import DataError

FORMATS = ("csv", "tsv", "parquet", "criteo", "libfm", "libffm")

AUTO_RULE = (
    "auto: a trailing .gz is ignored; .parquet/.pq -> parquet; .libfm/.libsvm/.svm -> libfm; "
    ".libffm/.ffm -> libffm; otherwise the first line decides: 'label idx:val ...' -> libfm, "
    "'label field:idx:val ...' -> libffm, 40 tab-separated fields starting with 0 or 1 -> criteo, "
    "a tab in the line (or a .tsv name) -> tsv, else csv"
)

GLOB_CHARACTERS = "*?["  # what makes --train a pattern of files (deepfm.data.filelist)
CRITEO_COLUMNS = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]


def is_gzip(path: str | Path) -> bool:
    """Whether a file is gzipped: its name ends in ``.gz``, in any case (``data.CSV.GZ``).
    The one place that decides it, for every reader."""
    return Path(path).suffix.lower() == ".gz"


def open_text(path: str | Path, newline: str = ""):
    """Open a text file, transparently decompressing ``.gz``; ``newline``: as ``open``'s (``"\n"``: lines end at LF
    alone, as the chunks count them; a lone CR stays inside its line)."""
    if is_gzip(path):
        return gzip.open(path, "rt", encoding="utf-8", newline=newline)
    return open(path, encoding="utf-8", newline=newline)


def open_bytes(path: str | Path):
    """Open a file for reading bytes, transparently decompressing ``.gz``."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def input_stream(path: str | Path) -> "pa.NativeFile":
    """An Arrow input stream over a file's (decompressed) bytes, for Arrow's readers. A .gz file is decompressed by
    Python's gzip, as ``open_bytes`` reads it chunk by chunk (Arrow's refused the zero bytes that pad some gzip
    files, which Python's and GNU gzip read past), buffered: not seekable, as Arrow's was not."""
    import pyarrow as pa  # here, so the command can set Arrow's allocator before pyarrow loads

    return pa.input_stream(gzip.open(path, "rb"), buffer_size=1 << 20) if is_gzip(path) else pa.input_stream(str(path))


def check_data_file(path: str | Path) -> Path:
    """``path``, which must be an existing regular file: not found, a directory, a pipe or a device (which
    cannot be read twice: the format and header are read before the rows) is a ``DataError``."""
    path = Path(path)
    if str(path) == "-":
        raise DataError(path, "standard input is not read: save the rows to a file and give its path")
    if not path.exists():
        pattern = any(character in path.name for character in GLOB_CHARACTERS)
        raise DataError(path, "file not found" + (" (a pattern of files is read by deepfm train, predict and evaluate "
                                                  "only: give one file here)" if pattern else ""))
    if path.is_dir():
        raise DataError(path, "is a directory, not a data file" + _pattern_hint(path))
    if not path.is_file():
        raise DataError(path, "is not a regular file (a pipe or a device, as <(...) gives): deepfm reads a file more "
                              "than once; save the rows to a file and give its path")
    return path


def _whole_lines(path: str | Path) -> int:
    """Lines of a damaged .gz file that decompress whole, before the damage."""
    lines = 0
    try:
        with gzip.open(path, "rb") as handle:
            for _ in handle:
                lines += 1
    except (EOFError, zlib.error, OSError):
        pass
    return lines


def _pattern_hint(directory: Path) -> str:
    """How to read a folder of data files (Spark's output, say): a quoted pattern of its commonest file ending."""
    endings = Counter("".join(file.suffixes[-2:] if file.suffix.lower() == ".gz" else file.suffixes[-1:])
                      for file in directory.iterdir() if file.is_file() and not file.name.startswith((".", "_"))
                      and file.suffix)  # (Spark's _SUCCESS, .crc files; clicks.2024-01-01.csv ends in .csv)
    if not endings:
        return ""
    return f"; its files are read as a quoted pattern: '{directory / ('*' + endings.most_common(1)[0][0])}'"


@contextmanager
def gzip_errors(path: str | Path) -> Iterator[None]:
    """Turn truncated or corrupt .gz data met while reading ``path`` (Python's gzip: ``EOFError``,
    ``BadGzipFile``, ``zlib.error``; Arrow's: a plain ``OSError``) into a ``DataError`` at the first
    line that does not decompress whole."""
    try:
        yield
    except (EOFError, zlib.error, OSError) as error:
        if not is_gzip(path) or not (isinstance(error, (EOFError, zlib.error, gzip.BadGzipFile)) or type(error) is OSError):
            raise
        if "CRC check failed" in str(error):  # (checked at the end of a gzip member: the damage is anywhere before)
            raise DataError(path, f"corrupt gzip file: its check failed where its data ends, at this line ({error}); "
                            "the damage may lie anywhere before it, in lines that decompressed as other text",
                            line=_whole_lines(path) + 1) from None
        raise DataError(path, f"truncated or corrupt gzip file, unreadable from this line on ({error})",
                        line=_whole_lines(path) + 1) from None


def first_line(path: str | Path) -> str:
    """The file's first line, without its end and a UTF-8 byte-order mark (spreadsheets write one); a byte
    that is not UTF-8 in it is a located ``DataError``."""
    with open_bytes(path) as handle:
        line = handle.readline()
    kind = _binary_kind(line[:4], path)
    if kind is not None:
        raise DataError(path, kind, line=1)
    try:
        return line.decode("utf-8").removeprefix("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError:
        raise locate_bad_utf8(path, "\t" if b"\t" in line else ",") from None


def recoded(path: str | Path, source: str) -> str:
    """The command that writes ``path`` as UTF-8 text beside it (``source``: its encoding), as an error suggests it."""
    return converted(path, "utf8-", f"iconv -f {source} -t utf-8")


def converted(path: str | Path, prefix: str, *text_filters: str, name: str | None = None) -> str:
    """The shell command that writes ``path``'s text through ``text_filters`` (piped one into the next) into ``prefix``
    + its name in the folder the command runs in (not beside ``path``, whose folder may be shared or read-only), as an
    error suggests it: a gzip file is decompressed first and compressed again (the filter would read the compressed
    bytes); names are quoted for the shell. ``name``: the new file's name instead (with .gz added for a gzip file;
    never the source's own name, which the shell would empty before the filter reads it, run in the source's folder)."""
    path = Path(path)
    new = name or prefix + path.name
    new = new + ".gz" if is_gzip(path) and not new.endswith(".gz") else new
    source, target = shlex.quote(str(path)), shlex.quote("converted-" + new if new == path.name else new)
    if is_gzip(path):
        return f"gunzip -c -- {source} | {' | '.join(text_filters)} | gzip > {target}"
    first, *rest = text_filters
    return f"{first} < {source}" + "".join(f" | {step}" for step in rest) + f" > {target}"


def _binary_kind(start: bytes, path: str | Path) -> str | None:
    """What a file that starts with the bytes ``start`` is, where it is not UTF-8 text deepfm reads, and what to do."""
    if start[:2] in (b"\xff\xfe", b"\xfe\xff"):  # e.g. a spreadsheet's "Unicode text"
        return ("UTF-16 text (it starts with a UTF-16 byte-order mark); deepfm reads UTF-8: re-encode the file, e.g. "
                + recoded(path, "utf-16"))
    if start == b"PK\x03\x04":
        return "a zip archive (a spreadsheet saved as .xlsx?), not text: export the sheet as CSV"
    if start[:2] == b"\x1f\x8b":
        return (f"gzip-compressed, without the name that says so: deepfm decompresses a file whose name ends in .gz "
                f"(mv {shlex.quote(str(path))} {shlex.quote(str(path) + '.gz')})")
    if start == b"PAR1":
        if Path(path).suffix.lower() in (".parquet", ".pq"):  # named so, and read as text: a --format said otherwise
            return "a Parquet file, read as text by the --format given: leave --format out, or give --format parquet"
        return "a Parquet file: name it .parquet (or .pq), or give --format parquet"
    bzip2 = b"BZh" + start[3:4] if start[3:4] in (b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9") else None
    for magic, kind, command in ((bzip2, "bzip2", "bunzip2 -k"), (b"\xfd7zX", "xz", "unxz -k"),
                                 (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"), (b"7z\xbc\xaf", "7-Zip", "7z x")):
        if magic is not None and start.startswith(magic):  # (bzip2: 'BZh' and its block size, not a header 'BZh_')
            return (f"compressed with {kind}, which deepfm does not read (it reads gzip): decompress it "
                    f"({command} {shlex.quote(str(path))}), or recompress it with gzip")
    return None


LINE_READER_DELIMITER = b"\x1f"  # the byte ``sparse.read_lines`` splits fields at: a libFM line holding it is refused


def _non_ascii_word(text: str) -> str:
    """The first word of ``text`` (delimited by ASCII spaces, tabs and separators) that holds a character beyond
    ASCII, up to 24 characters (a non-breaking space is a character of its word here, not a delimiter)."""
    return next(word for word in re.split(r"[ \t\r\n,;|]+", text) if not word.isascii())[:24]


def _utf8_text_after(handle, number: int, lines: int = 100_000) -> tuple[int, str] | None:
    """A line of non-ASCII UTF-8 text among the next ``lines`` of ``handle`` (after line ``number``), or None."""
    for offset, line in enumerate(itertools.islice(handle, lines), start=1):
        if not line.isascii():
            try:
                return number + offset, _non_ascii_word(line.decode("utf-8"))
            except UnicodeDecodeError:
                continue
    return None


def _utf8_advice(path: str | Path, utf8_text: tuple[int, str] | None) -> str:
    """What to do with a byte that is not UTF-8: recode a Latin-1 file; but a file whose other lines are UTF-8 text
    would have that text garbled by recoding (Köln as KÃ¶ln), so there the line is to be fixed, or such bytes dropped."""
    if utf8_text is None:
        return f"re-encode the file, e.g. {recoded(path, 'latin1')}"
    number, word = utf8_text
    return (f"the file's other text is UTF-8 (line {number}: {word!r}), which re-encoding it from Latin-1 would garble: "
            f"fix this line, or drop the bytes that are not UTF-8 (this value changes), e.g. "
            f"{converted(path, 'utf8-', 'iconv -f utf-8 -t utf-8 -c')}")


def locate_bad_utf8(path: str | Path, delimiter: str | None) -> DataError:
    """Where the file stops being UTF-8 text: its first line that does not decode, the column being the
    field of the bad byte (``delimiter``), or its character position (None: libFM/libFFM lines, where a
    unit separator byte, which the line reader splits at, is located too). Runs only on the error path
    (a pass over the file's bytes)."""
    with open_bytes(path) as handle:
        kind = _binary_kind(handle.read(4), path)
    if kind is not None:
        return DataError(path, kind, line=1)
    with open_bytes(path) as handle:
        utf8_text: tuple[int, str] | None = None  # a line of non-ASCII text that is UTF-8 (the file's own encoding?)
        for number, line in enumerate(handle, start=1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                before = line[: error.start]
                column = _field_number(before.decode("utf-8"), delimiter) if delimiter else len(before.decode("utf-8")) + 1
                utf8_text = utf8_text or _utf8_text_after(handle, number)
                return DataError(path, f"not UTF-8 text (byte 0x{line[error.start]:02x}); deepfm reads UTF-8: "
                                       + _utf8_advice(path, utf8_text), line=number, column=column)
            if utf8_text is None and not text.isascii():
                utf8_text = (number, _non_ascii_word(text))
            if delimiter is None and LINE_READER_DELIMITER in line:  # UTF-8, but a byte the line reader splits at
                column = len(line[: line.index(LINE_READER_DELIMITER)].decode("utf-8")) + 1
                return DataError(path, "a control character (byte 0x1f, the unit separator) in the line: a libFM/libFFM "
                                       "line holds a label and idx:value tokens, separated by spaces or tabs",
                                 line=number, column=column)
    return DataError(path, "not UTF-8 text")


def _field_number(before: str, delimiter: str) -> int:
    """The field (from 1) that the text ``before`` ends in, a delimiter inside quotes not ending a field."""
    return len(next(csv.reader([before + "x"], delimiter=delimiter)))


def detect_format(path: str | Path) -> str:
    """Resolve ``--format auto`` for one file by ``AUTO_RULE``."""
    path = check_data_file(path)
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
    with gzip_errors(path):
        line = first_line(path)
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
