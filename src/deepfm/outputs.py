"""Where a command writes a file, checked before any work (a wrong path would otherwise fail at the end), and
``predict``'s output file, written a chunk of rows at a time."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from deepfm.errors import ConfigError


def check_writable_file(path: str | Path, flag: str) -> None:
    """A ``ConfigError`` naming ``flag`` where ``path`` could not be written as a file: it is a folder, a folder on
    its way is a file, or the nearest folder that exists is not writable. Folders it names that do not exist yet
    are the writer's to create."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: that is a folder; name a file in it")
    existing = path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise ConfigError(f"{flag} {path}: {existing} is not writable")


PARQUET_SUFFIXES, CSV_SUFFIXES, TSV_SUFFIXES = (".parquet", ".pq"), (".csv", ".txt"), (".tsv", ".tab")


def output_layout(out: str) -> tuple[str, bool]:
    """How ``predict --out`` writes its file, from the name: ("parquet" | "," | "\\t", gzipped). A trailing .gz
    compresses a .csv/.txt/.tsv/.tab file, as the readers read it; "" where the name says none of these."""
    path = Path(out.lower())
    gzipped = path.suffix == ".gz"
    suffix = path.with_suffix("").suffix if gzipped else path.suffix
    if suffix in PARQUET_SUFFIXES:
        return ("parquet" if not gzipped else ""), False
    return ("," if suffix in CSV_SUFFIXES else "\t" if suffix in TSV_SUFFIXES else ""), gzipped


def writable_output(out: str, scored: Sequence[str | Path] = ()) -> None:
    """Check ``predict --out`` (a .csv or .parquet file, or ``-``) before any work: ConfigError where it could not
    be written, or where it is one of the ``scored`` files (its rows would be replaced by their predictions). Folders
    it names that do not exist yet are created when the file is opened (``TableFile``)."""
    if out == "-":
        return
    if Path(out).exists() and any(Path(file).exists() and os.path.samefile(out, file) for file in scored):
        raise ConfigError(f"--out {out}: that is the file being scored, whose rows the predictions would replace; "
                          "write them to another file (--keep COLUMNS puts columns of the rows beside them)")
    if out == os.devnull:  # (renaming a finished file onto it would replace the device)
        raise ConfigError(f"--out {out}: to score without keeping the predictions (to time scoring, say), leave out --out "
                          f"and send the CSV on stdout there: deepfm predict MODEL DATA > {out}")
    if not output_layout(out)[0]:
        raise ConfigError(f"--out {out}: use a .csv, .tsv or .parquet file name (.txt is written as CSV and .tab as TSV, "
                          "as the readers read them; .csv.gz, .tsv.gz: gzipped; Parquet compresses itself), or - for CSV "
                          "on stdout")
    check_writable_file(out, "--out")


class ColumnTypeChanged(ValueError):
    """A table's column does not take the type the file's first table gave it (Parquet holds one type a column)."""

    def __init__(self, name: str, before, now):
        super().__init__(f"column {name!r} reads as {now} here, as {before} in the rows before")
        self.name, self.before = name, before


ROW_GROUP_ROWS = 65_536  # Parquet: tables are gathered into row groups of at least this many rows


class TableFile:
    """``predict --out``: tables written one after another as one file, a .csv/.tsv (either maybe .gz) or .parquet
    (``writable_output`` checked the name), or ``-`` for CSV on stdout. A file is written under a temporary name
    beside it and takes its name when closed without an error, so a run that fails leaves none (and no earlier file
    of that name is lost to it, nor the folders created for it); stdout gets each table as it comes. The file gets
    the mode a new file gets (0666 less the umask), or the mode of the file it replaces."""

    def __init__(self, out: str):
        self.out, self.rows = out, 0
        self._layout, self._gzipped = (",", False) if out == "-" else output_layout(out)
        self._file = self._parquet = self._temporary = self._schema = None
        self._pending: list = []  # Parquet: tables not yet written, fewer than ROW_GROUP_ROWS rows together
        self._pending_rows = 0
        self._created: list[Path] = []  # folders made for the file, deepest first
        self._header_written = False

    def __enter__(self) -> "TableFile":
        import pyarrow as pa

        if self.out == "-":
            return self
        path = Path(self.out)
        folder = path.parent
        while not folder.exists():
            self._created.append(folder)
            folder = folder.parent
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(handle)
        self._temporary = Path(name)
        os.chmod(name, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~current_umask())
        if self._layout != "parquet":
            self._file = pa.CompressedOutputStream(name, "gzip") if self._gzipped else open(name, "wb")
        return self

    def write(self, table) -> None:
        """``table``'s rows after those written before; its columns those of the first table (cast to the first
        table's types in Parquet: ``ColumnTypeChanged`` where one does not cast)."""
        if self._layout == "parquet":
            if self._schema is None:
                self._schema = table.schema
            self._pending.append(self._as_first(table))
            self._pending_rows += len(table)
            if self._pending_rows >= ROW_GROUP_ROWS:
                self._flush()
        else:
            file = self._file if self._file is not None else sys.stdout.buffer
            if self.out == "-":
                sys.stdout.flush()  # what print left there comes first
            write_csv(table, file, delimiter=self._layout, header=not self._header_written)
            self._header_written = True
            if self.out == "-":
                file.flush()
        self.rows += len(table)

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self._temporary, self._schema)
        if self._pending:
            self._parquet.write_table(pa.concat_tables(self._pending))
        self._pending, self._pending_rows = [], 0

    def text_column(self, name: str) -> bool:
        """Whether the Parquet file's column ``name`` holds text (by the first table written)."""
        return self._schema is not None and is_text(self._schema.field(name).type)

    def _as_first(self, table):
        """``table`` with the types of the first table's columns: numbers widened (int64 to float64), anything as
        text where the first held text, a column of nulls as any; not text as numbers (``ColumnTypeChanged``: '007'
        is not 7)."""
        import pyarrow as pa

        for field in self._schema:
            now = table.schema.field(field.name).type
            if now.equals(field.type):
                continue
            try:
                if table[field.name].null_count == len(table):
                    column = pa.nulls(len(table), field.type)
                elif is_text(now) and not is_text(field.type):
                    raise pa.ArrowInvalid("text as numbers")
                else:
                    column = table[field.name].cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise ColumnTypeChanged(field.name, field.type, now) from None
            table = table.set_column(table.schema.get_field_index(field.name), field, column)
        return table

    def __exit__(self, kind, error, trace) -> None:
        failed = kind is not None
        try:
            if not failed and self._schema is not None:
                self._flush()  # the last row group
        except BaseException:
            failed = True
            raise
        finally:
            for closing in (self._parquet, self._file):
                if closing is not None:
                    closing.close()
            if self._temporary is not None:
                self._finish(failed)

    def _finish(self, failed: bool) -> None:
        if not failed:
            os.replace(self._temporary, self.out)
            return
        self._temporary.unlink(missing_ok=True)
        for folder in self._created:  # deepest first; one that something else put a file in stays
            try:
                folder.rmdir()
            except OSError:
                break


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_text(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def write_csv(table, file, delimiter: str = ",", header: bool = True) -> None:
    """``table`` as CSV (TSV with ``delimiter="\\t"``), quoted as a spreadsheet would write it: nowhere unless a
    value or name needs it (the delimiter, a quote or line break in it; an empty string, told apart from a missing
    value). Arrow's writer quotes every string and name; where some value needs quotes, or a column is neither a
    number, a time nor plain text (a dictionary, bytes), Arrow's quoting is kept (every string value quoted).
    ``header``: the column names first."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    special = f'["{re.escape(delimiter)}\r\n]'

    def plain(column) -> bool:
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return not pc.any(pc.or_(pc.match_substring_regex(column, special), pc.equal(column, ""))).as_py()
        return any(is_kind(kind) for is_kind in (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean,
                                                 pa.types.is_timestamp, pa.types.is_date, pa.types.is_null))

    def name(text: str) -> str:
        return '"' + text.replace('"', '""') + '"' if re.search(special, text) else text

    if header:
        file.write((delimiter.join(name(text) for text in table.column_names) + "\n").encode())
    quoting = "none" if all(plain(column) for column in table.columns) else "needed"
    pacsv.write_csv(table, file, pacsv.WriteOptions(include_header=False, quoting_style=quoting, delimiter=delimiter))
