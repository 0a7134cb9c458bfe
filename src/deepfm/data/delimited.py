"""Delimited text (CSV, TSV, Criteo's raw TSV): the header, and text -> an Arrow table of strings."""

from __future__ import annotations

import csv as pycsv
import re
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from deepfm.data.formats import CRITEO_COLUMNS, converted, first_line, locate_bad_utf8, open_text
from deepfm.data.frame import DECIMAL_PATTERN, repeated_names, rows_without_values
from deepfm.errors import DataError, warn_data

BLOCK_SIZE = 16 << 20  # the longest line Arrow can parse here (a line must fit in one block)
# Bytes Arrow parses per task where a source can be read again with ``BLOCK_SIZE`` blocks should a
# line be longer: a 14 MB chunk of the long-tail benchmark (39 columns) parsed in 1 MB blocks took
# 70-108 ms CPU against 124-203 ms in one block, 141-216 against 252-406 ms wall on two cores.
PARSE_BLOCK_SIZE = 1 << 20


OTHER_DELIMITERS = ("::", ";", "|")  # separators deepfm does not read, which a one-column header gives away


def delimiter_of(fmt: str) -> str:
    return "," if fmt == "csv" else "\t"


def unlabelled_criteo_rows(path: str | Path, features: list[str]) -> bool:
    """Whether ``path`` holds Criteo's rows without the label, as Kaggle's test.txt does (39 tab-separated fields and no
    header line), for a model of Criteo's features: auto-detection reads such a file as a TSV whose first row is its
    header, since a Criteo row starts with its 0/1 label."""
    if features != list(CRITEO_COLUMNS[1:]):
        return False
    try:
        fields = first_line(path).split("\t")
    except (DataError, OSError):  # the reader says what is wrong with the file
        return False
    return len(fields) == len(CRITEO_COLUMNS) - 1 and not set(fields) & set(CRITEO_COLUMNS)


def tab_separated_name(path: Path) -> str:
    """The name of ``path``'s tab-separated copy: its data suffix (.dat, .txt, .csv, .data, ...) made .tsv, else .tsv
    added, so that two files of one stem get two names (MovieLens' u.item and u.user: u.item.tsv, u.user.tsv)."""
    name = Path(path.name.removesuffix(".gz"))
    return (name.with_suffix(".tsv") if name.suffix.lower() in (".dat", ".txt", ".csv", ".tsv", ".data", ".psv") else
            name.with_name(name.name + ".tsv")).name


def header_names(count: int, mark: str = "\t") -> str:
    """A header line of ``count`` columns, to add to a file that has none, as printf writes it: MovieLens' four
    (user, item, rating, timestamp), else c1, c2, ..."""
    columns = ("user", "item", "rating", "timestamp") if count == 4 else [f"c{i}" for i in range(1, count + 1)]
    return mark.join(columns).replace("\t", "\\t")


def delimited_layout(path: Path, fmt: str, label_optional: bool = False) -> tuple[list[str], int, int]:
    """(column names, header lines to skip, line number of the first data row). Criteo rows have no header:
    ``label_optional`` (rows to predict) reads rows of one field fewer as rows without the label (Kaggle's test.txt)."""
    if fmt == "criteo":
        unlabelled = label_optional and len(first_line(path).split("\t")) == len(CRITEO_COLUMNS) - 1
        return list(CRITEO_COLUMNS[1:] if unlabelled else CRITEO_COLUMNS), 0, 1
    names = _header(path, delimiter_of(fmt))
    other = next((mark for mark in OTHER_DELIMITERS if len(names) == 1 and names[0].count(mark) > 0), None)
    if other is not None:  # e.g. a spreadsheet's export in a locale whose decimal mark is the comma; MovieLens' .dat
        convert = (f"tr '{other}' '\\t'" if len(other) == 1 else f"sed 's/{other}/\\t/g'")
        fields = names[0].split(other)
        headerless = any(not field or re.match(DECIMAL_PATTERN, field) for field in fields)  # data: a header on top
        if headerless:
            convert = f"{{ printf '{header_names(len(fields))}\\n'; {convert}; }}"
        what = "convert it and add a header line naming the columns (rename them)" if headerless else "convert it"
        latin = locate_bad_utf8(path, None).line is not None  # (MovieLens' u.item): recoded on the way
        steps = ("iconv -f latin1 -t utf-8", convert) if latin else (convert,)
        what += " as UTF-8 text (it is not)" if latin else ""
        raise DataError(path, f"the first line is one column ({names[0][:60]!r}) that holds {other!r}: deepfm reads "
                        f"comma- or tab-separated text, and this file looks {other!r}-separated; {what}, e.g. "
                        + converted(path, "", *steps, name=tab_separated_name(path)) + " (where no value holds a tab)",
                        line=1, column=1)
    if len(names) > 1 and all(re.match(DECIMAL_PATTERN, n) for n in names):
        mark = delimiter_of(fmt)
        header = header_names(len(names), mark)
        shown = mark.join(names[:4]).replace("\t", "\\t")
        raise DataError(path, f"the first line looks like data, not a header ({shown}...): {fmt.upper()} files need a "
                        f"header line naming the columns, e.g. {header}: "
                        + converted(path, "with-header-", f"{{ printf '{header}\\n'; cat; }}"), line=1, column=1)
    if fmt == "tsv" and len(names) == len(CRITEO_COLUMNS) + 1 and names[0] in ("0", "1") and names[-1] == "":
        raise DataError(path, "the first line is Criteo's 40 fields (a 0/1 label first) with a tab after the last, not a "
                              f"header: remove the trailing tabs, e.g. sed 's/\\t$//' < {path} > "
                              f"{path.with_suffix('.clean.txt')}", line=1, column=len(names))
    duplicates = repeated_names(names)
    if duplicates:
        raise DataError(path, f"duplicate column names in the header: {duplicates}", line=1)
    return names, 1, 2


TO_LINE_FEEDS = "tr '\\r' '\\n'"  # each carriage return a line feed


def _header(path: Path, delimiter: str) -> list[str]:
    line = first_line(path)
    if not line.strip():
        raise DataError(path, "file is empty", line=1)
    if "\r" in line:  # the whole file, or its first lines, read as one line
        raise DataError(path, "the lines end in a carriage return alone (CR, as classic Mac OS wrote text): deepfm "
                        f"reads lines ending in LF or CR LF; convert it, e.g. {converted(path, 'lf-', TO_LINE_FEEDS)}",
                        line=1, column=line.index("\r") + 1)
    try:
        return next(pycsv.reader([line], delimiter=delimiter, strict=True))
    except pycsv.Error as error:
        if "unexpected end of data" not in str(error):  # (an odd header such as a,"b"x: read as before)
            return next(pycsv.reader([line], delimiter=delimiter))
        opened = line.rfind('"')
        raise DataError(path, "the header leaves a quote open: a column name runs over a line break? (the header names "
                              "every column on the first line)", line=1, column=line[:opened].count(delimiter) + 1) from None


def parse_delimited(source, path: Path, names: list[str], skip: int, delimiter: str, first_line: int,
                    lines: Callable[[], list[str]] | None = None, quoted: bool = True) -> pa.Table:
    """Parse delimited text (a stream over the whole file, or an in-memory chunk of whole lines)
    into string columns.

    A ragged row is reported at its line of ``path``; ``lines`` gives a chunk's own text lines
    (data row ``i`` of the chunk on line ``first_line + i``) for locating it. ``quoted``: the text may hold a
    quote. Arrow then reads a quoted value on past its line's end (``newlines_in_values``), so a quote left
    open makes a row of too few fields, which is reported; without it, Arrow dropped the rest of the block
    after such a quote without a word (thousands of rows). Text without a quote (``quoted=False``) parses ~15%
    faster."""
    invalid: list[int] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        invalid.append(row.actual_columns)
        return "skip"

    def read(text, block_size: int) -> pa.Table:
        invalid.clear()
        return pacsv.read_csv(
            text,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=skip, block_size=block_size),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid, ignore_empty_lines=False,
                                             newlines_in_values=quoted),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                null_values=[""],
                strings_can_be_null=True,
            ),
        )

    rereadable = isinstance(source, pa.NativeFile) and source.seekable()
    start = source.tell() if rereadable else 0
    try:
        try:
            table = read(source, PARSE_BLOCK_SIZE if rereadable else BLOCK_SIZE)
        except pa.ArrowInvalid as error:
            if not rereadable or "straddl" not in str(error):
                raise
            # a line longer than a small block: parse again from a copy read at the start's offset, not
            # from ``source`` after a seek, as the failed read's readahead may still move its position
            table = read(pa.BufferReader(source.read_at(source.size() - start, start)), BLOCK_SIZE)
    except pa.ArrowInvalid as error:
        if "invalid UTF8" in str(error) or _RAGGED.search(str(error)):  # (a ragged row whose text is not UTF-8 never
            bad_text = locate_bad_utf8(path, delimiter)  # reached ``on_invalid``: Arrow failed to decode it for the call)
            if "invalid UTF8" in str(error) or bad_text.line is not None:
                raise bad_text from None
        if "Could not skip initial" in str(error):  # a header line and nothing after it, not even its line end
            raise DataError(path, "file has no data rows", line=first_line) from None
        if "Empty CSV file" in str(error):  # a headerless file (Criteo's) of no bytes, plain or compressed
            raise DataError(path, "file is empty", line=1) from None
        raise DataError(path, f"cannot parse: {error}") from None
    if invalid:
        unlabelled = names == CRITEO_COLUMNS[1:]  # the first line decided that (``delimited_layout``): said instead
        error = (_locate_ragged(path, delimiter, len(names), skip, advise=not unlabelled) if lines is None else
                 _locate_ragged(path, delimiter, len(names), 0, lines(), first_line, advise=not unlabelled))
        if unlabelled:
            error = DataError(path, f"{error.message} (the first line has {len(names)} fields, so the file is read as "
                                    "Criteo rows without the label)", line=error.line, column=error.column)
        elif names == CRITEO_COLUMNS and error.line == first_line and error.column == len(names):  # 39 fields at once
            error = DataError(path, f"expected {len(names)} fields, found {len(names) - 1}: Criteo's features without "
                                    "the label, which training and evaluating read first on each row (deepfm predict "
                                    "scores such rows)", line=error.line, column=error.column)
        raise error
    return table


_RAGGED = re.compile(r"Expected \d+ columns, got \d+")


def _quiet_undecodable_invalid_rows(unraisable, passed_on=sys.unraisablehook) -> None:
    """``sys.unraisablehook``, less Arrow's report of a ragged row it could not decode for ``on_invalid`` (the parse
    then fails, and ``parse_delimited`` says where the file stops being UTF-8)."""
    if not (isinstance(unraisable.exc_value, UnicodeDecodeError)
            and getattr(unraisable.object, "__qualname__", "") == "parse_delimited.<locals>.on_invalid"):
        passed_on(unraisable)


sys.unraisablehook = _quiet_undecodable_invalid_rows


def text_lines(data: bytes) -> list[str]:
    """``data``'s lines with their line ends, split at '\n' only (as the chunks and Arrow count lines; not at the
    other breaks ``str.splitlines`` knows, such as U+2028 inside a value)."""
    parts = data.decode("utf-8").split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


MAX_LINES_IN_VALUE = 100  # a quoted value over more lines than this is a quote left open, not text


def lines_before_rows(table: pa.Table, path: Path, first_line: int, delimiter: str,
                      lines: Callable[[], list[str]] | None = None, placed: np.ndarray | None = None) -> np.ndarray | None:
    """For each row of text parsed with quotes, the line breaks inside the quoted values of the rows before it (row
    ``i`` begins on line ``first_line + i + that``); None where no value holds one. A ``DataError`` where a value
    holds more than MAX_LINES_IN_VALUE (a quote opened in one row and closed by a later row's quote reads every
    line between as one value, so those rows would vanish), or where the last row's quote never closes (Arrow
    ends such a value at the end of the text, taking the rows after it). ``lines``: the text's own lines (a
    chunk's; else the file is read from the last row's line). ``placed``: the same where the text was read for it,
    which also counts a lone CR (``row_ends.lines_before_rows_of``), returned and used for the errors' lines."""
    breaks = {name: pc.fill_null(pc.count_substring(column, "\n"), 0) for name, column in zip(table.column_names, table.columns)
              if pa.types.is_string(column.type)}
    worst = {name: pc.max(count).as_py() or 0 for name, count in breaks.items()}
    if max(worst.values(), default=0) == 0:
        if placed is not None and last_row_holds(table, "\r"):  # a quote left open on a last line that ends in a CR
            _refuse_an_open_last_row(path, delimiter, lines() if lines is not None else None, first_line,  # alone
                                     first_line + table.num_rows - 1 + int(placed[-1]))
        return placed
    per_row = sum(count.to_numpy(zero_copy_only=False).astype(np.int64) for count in breaks.values())
    before = np.concatenate([[0], np.cumsum(per_row)[:-1]]) if placed is None else placed
    name = next((n for n, most in worst.items() if most > MAX_LINES_IN_VALUE), None)
    if name is not None:
        row = int(np.argmax(breaks[name].to_numpy(zero_copy_only=False) > MAX_LINES_IN_VALUE))
        raise DataError(path, f"the quoted value of column '{name}' runs on over {worst[name]:,} lines, so the rows on "
                              "them would read as one: a quote left open? (a value may hold line breaks, up to "
                              f"{MAX_LINES_IN_VALUE})", line=first_line + row + int(before[row]),
                        column=table.column_names.index(name) + 1)
    if per_row[-1]:  # the last row runs on over line ends: its quote may never close
        _refuse_an_open_last_row(path, delimiter, lines() if lines is not None else None, first_line,
                                 first_line + len(per_row) - 1 + int(before[-1]))
    _refuse_rows_inside_values(table, breaks, worst, path, first_line, before, delimiter)
    return before


def last_row_holds(table: pa.Table, text: str) -> bool:
    """Whether a value of ``table``'s last row holds ``text``."""
    last = table.slice(table.num_rows - 1)
    return any(pc.any(pc.match_substring(column, text)).as_py() for column in last.columns if pa.types.is_string(column.type))


def _refuse_rows_inside_values(table: pa.Table, breaks: dict[str, pa.Array], worst: dict[str, int], path: Path,
                               first_line: int, before: np.ndarray, delimiter: str) -> None:
    """A ``DataError`` where a quoted value spans lines that each read, on their own, as a whole row (the header's
    field count: the line it opens on, every line inside it, the line it closes on): a stray quote (``"Heat``) opened
    a value that a later quote (``12" Pizza``) closed, and the rows between would be one value, lost without a word.
    A value that truly holds line breaks splits its row, so its first or last line is short of fields (in the last
    column, its lines would all need the header's count of delimiters too). A value over two such lines is read as
    it is written (text such as ``"hello⏎world, again"`` in the last column is one), with a ``DataWarning`` at the
    first: a stray quote there loses exactly one row."""
    fields = table.num_columns
    for name, most in worst.items():
        if most < 1:
            continue
        counts = breaks[name].to_numpy(zero_copy_only=False)
        column = table.column_names.index(name)  # fields before the value on its first line
        rows = np.flatnonzero(counts >= 1)
        parts = pc.split_pattern(table.column(name).take(pa.array(rows)), "\n").combine_chunks()  # each value's lines
        offsets = parts.offsets.to_numpy()
        first, last = offsets[:-1], offsets[1:] - 1
        delimiters = pc.count_substring(parts.flatten(), delimiter).to_numpy()  # on each line
        opens = column + delimiters[first] + 1  # the first line's fields, read alone
        closes = delimiters[last] + fields - column  # the last line's
        whole = delimiters == fields - 1  # a line inside the value that reads as a whole row
        whole[first], whole[last] = True, True
        inner_rows = np.bincount(np.repeat(np.arange(len(rows)), np.diff(offsets)), weights=~whole, minlength=len(rows)) == 0
        found = np.flatnonzero((opens == fields) & (closes == fields) & inner_rows)
        for at in found[counts[rows[found]] >= 2][:1]:
            row, lines = int(rows[at]), int(counts[rows[at]]) + 1
            raise DataError(path, f"the quoted value of column '{name}' runs on over {lines} lines, each of which reads "
                                  f"as a row of {fields} fields on its own: a stray quote? (a quote inside a value is "
                                  "written twice, \"\", with the whole value quoted)",
                            line=first_line + row + int(before[row]), column=column + 1)
        if len(found):
            row = int(rows[found[0]])
            warn_data(f"{path}:{first_line + row + int(before[row])}:{column + 1}: the quoted value of column "
                      f"'{name}' runs on over 2 lines, each of which reads as a row of {fields} fields on its own, "
                      f"and is read as one value{f' (the first of {len(found):,})' if len(found) > 1 else ''}: if a "
                      "stray quote opened it, a row is lost there (a quote inside a value is written twice, \"\", "
                      "with the whole value quoted)")


def refuse_repeated_header(table: pa.Table, path: Path, first_line: int, before: np.ndarray | None) -> None:
    """A ``DataError`` at a row that repeats the header, every value its column's name: files joined with their
    headers, whose later header was read as a row of values (a class 'label', a value 'user') where no numeric column
    refuses it. One comparison a chunk where no value of the first text column is its name."""
    if not all(pa.types.is_string(column.type) or pa.types.is_large_string(column.type) for column in table.columns):
        return  # a numeric column refuses its own name as not a number, at its line
    same = None
    for name, column in zip(table.column_names, table.columns):
        equal = pc.fill_null(pc.equal(column, name), False)
        same = equal if same is None else pc.and_(same, equal)
        if not pc.any(same).as_py():
            return
    row = int(np.flatnonzero(same.to_numpy(zero_copy_only=False))[0])
    raise DataError(path, "this line repeats the header: files joined with their headers? (remove the line, or read "
                          "the files as one quoted glob pattern, 'part_*.csv')",
                    line=first_line + row + (int(before[row]) if before is not None else 0), column=1)


def refuse_empty_lines(table: pa.Table, path: Path, first_line: int, before: np.ndarray | None,
                       lines: Callable[[], list[str]] | None = None) -> None:
    """A ``DataError`` at the first empty line of the text ``table`` was parsed from (Arrow reads one as a row whose
    every value is missing, which prediction would score as a row of its own). Checked for the rows with no value
    at all only (``,,`` is such a row too, and is kept); the lines are read from ``lines()`` (a chunk's own) or the
    file. ``before``: ``lines_before_rows``."""
    rows = rows_without_values(table.columns)
    if not len(rows):
        return
    numbers = first_line + rows + (before[rows] if before is not None else 0)
    if lines is not None:
        text = lines()
        found = {int(n): text[int(n) - first_line] for n in numbers}
    else:
        wanted = set(int(n) for n in numbers)
        with open_text(path) as handle:
            found = {at: line for at, line in enumerate(handle, start=1) if at in wanted}
    empty = next((n for n in sorted(found) if not found[n].strip("\r\n")), None)
    if empty is not None:
        raise DataError(path, "empty line: remove it (a prediction is made for every row, and this line holds none)",
                        line=empty, column=1)


def _refuse_an_open_last_row(path: Path, delimiter: str, lines: list[str] | None, first_line: int, begins: int) -> None:
    """A ``DataError`` where the row that begins on line ``begins`` (the text's last) leaves a quote open."""
    if lines is not None:
        tail = lines[begins - first_line:]
    else:
        with open_text(path) as handle:
            tail = [line for at, line in enumerate(handle, start=1) if at >= begins]
    try:
        for _ in pycsv.reader(tail, delimiter=delimiter, strict=True):
            pass
    except pycsv.Error as error:
        if "unexpected end of data" in str(error):
            raise _unclosed_quote(path, delimiter, tail, begins, begins) from None  # the tail in hand, not read again


def _locate_ragged(path: Path, delimiter: str, expected: int, skip: int, lines: list[str] | None = None,
                   first_line: int = 1, advise: bool = True) -> DataError:
    """Find the first row whose field count is wrong, at the line it begins on (runs only on the error path).
    ``lines``: a chunk's text lines, its first on ``first_line`` of ``path``; else the file from its first line."""
    with (nullcontext(lines) if lines is not None else open_text(path, newline="\n")) as handle:  # lines as counted
        reader = pycsv.reader(handle, delimiter=delimiter)
        while True:
            begins = first_line + reader.line_num  # a quoted value may hold line breaks: rows are not lines
            try:
                fields = next(reader)
            except StopIteration:
                break
            except pycsv.Error as error:  # a quote never closed: the rest of the text reads as one value, past the field limit
                if "new-line character seen in unquoted field" in str(error):
                    return _lone_carriage_return(path, delimiter, lines, first_line, first_line + reader.line_num - 1)
                return _unclosed_quote(path, delimiter, lines, first_line, begins)
            if begins >= first_line + skip:
                error = _ragged(path, fields, expected, begins, advise)
                if error is not None:
                    return error
    return DataError(path, f"a row does not have {expected} fields")


def _lone_carriage_return(path: Path, delimiter: str, lines: list[str] | None, first_line: int, number: int) -> DataError:
    """The error for a row that a carriage return alone (CR, not before a LF) outside quotes broke in two on line
    ``number``: Arrow, as Python's csv and pandas, reads it as a line end, so the row's fields were cut there."""
    text = _line(path, lines, first_line, number)
    at = text.find("\r")
    column = text[:at].count(delimiter) + 1 if at >= 0 else None
    return DataError(path, "a carriage return (CR, not followed by a line feed) outside quotes ends a row here, as "
                           "the CSV readers read one, so this line's fields are cut in two: remove it, e.g. "
                           f"{converted(path, 'no-cr-', TO_NO_LONE_CR)}, or quote the value that holds it",
                     line=number, column=column)


TO_NO_LONE_CR = r"sed 's/\r\(.\)/\1/g'"  # each CR inside a line removed (a CR LF's stays: nothing follows it)


def _line(path: Path, lines: list[str] | None, first_line: int, number: int) -> str:
    """Line ``number`` of ``path`` (ended at LF alone), from a chunk's ``lines`` (its first on ``first_line``) or the
    file."""
    if lines is not None:
        return lines[number - first_line]
    with open_text(path, newline="\n") as handle:
        return next((line for at, line in enumerate(handle, start=1) if at == number), "")


def _unclosed_quote(path: Path, delimiter: str, lines: list[str] | None, first_line: int, number: int) -> DataError:
    """The error for a quote opened on line ``number`` that is never closed, at the field it opens."""
    text = _line(path, lines, first_line, number)
    try:
        column = len(next(pycsv.reader([text.rstrip("\r\n")], delimiter=delimiter), [""])) or None  # (0: a CR first)
    except pycsv.Error:  # a carriage return inside the line, say: the line, not its field
        column = None
    return DataError(path, "the quote that opens this field is never closed, so the rest of the text would read as one "
                           "value: close it or remove it", line=number, column=column)


def _ragged(path: Path, fields: list[str], expected: int, number: int, advise: bool = True) -> DataError | None:
    """The error for a row of ``fields`` that begins on line ``number``, or None where it has ``expected`` fields;
    ``advise``: with what usually fixes a row of too many or too few fields."""
    if not fields:
        return DataError(path, "empty line", line=number, column=1)
    if len(fields) == expected:
        return None
    runs_on = next((i for i, field in enumerate(fields) if "\n" in field or "\r" in field), None)
    if runs_on is not None and len(fields) < expected:  # a quote left open swallows the lines after it, fields and all
        return DataError(path, f"expected {expected} fields, found {len(fields)}: the quote that opens "
                               f"field {runs_on + 1} is not closed on its line, so the row runs on into the "
                               "lines after it", line=number, column=runs_on + 1)
    spans = (f" (field {runs_on + 1} holds a line break inside quotes, so the row ends on a later line)"
             if runs_on is not None else "")
    what_to_do = ("" if spans or not advise else ": a value holding the delimiter needs quotes around it"
                  if len(fields) > expected else ": every row needs a field, empty or not, for each column")
    return DataError(path, f"expected {expected} fields, found {len(fields)}{spans}{what_to_do}", line=number,
                     column=len(fields) + 1 if len(fields) < expected else expected + 1)
