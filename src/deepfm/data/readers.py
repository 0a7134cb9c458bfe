"""File readers: CSV/TSV/Parquet/Criteo/libFM/libFFM (plain or .gz) into a ``RawFrame``.

Everything is columnar (PyArrow); Python touches single lines only to locate an error.
"""

from __future__ import annotations

import csv as pycsv
import re
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from deepfm.data.formats import CRITEO_COLUMNS, detect_format, open_text
from deepfm.data.frame import RawFrame
from deepfm.errors import DataError

BLOCK_SIZE = 16 << 20
_NUMBER_TEXT = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def read_frame(
    path: str | Path,
    fmt: str = "auto",
    label: str = "label",
    multi: Sequence[str] = (),
    separator: str = "|",
    require_label: bool = True,
) -> RawFrame:
    """Read one file whole. ``require_label=False`` allows prediction files without labels."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt in ("csv", "tsv", "criteo"):
        frame = _read_delimited(path, fmt, label, require_label)
    elif fmt == "parquet":
        frame = _read_parquet(path, label, require_label)
    elif fmt in ("libfm", "libffm"):
        frame = _read_sparse_lines(path, fmt)
    else:  # pragma: no cover - the config validates formats
        raise DataError(path, f"unknown format {fmt!r}")
    if frame.num_rows == 0:
        raise DataError(path, "file has no data rows", line=frame.first_line)
    for name in multi:
        if name not in frame.columns:
            raise _unknown_column(frame, name, "--multi")
        frame.columns[name], frame.weights[name] = split_multi(frame, name, separator)
        frame.kinds[name] = "multi"
    return frame


def _unknown_column(frame: RawFrame, name: str, option: str) -> DataError:
    known = ", ".join(frame.columns)
    return DataError(frame.path, f"{option} names column '{name}', which is not in the file (columns: {known})", line=1)


# -- delimited text ---------------------------------------------------------------------------


def _header(path: Path, delimiter: str) -> list[str]:
    with open_text(path) as handle:
        line = handle.readline()
    if not line.strip():
        raise DataError(path, "file is empty", line=1)
    return next(pycsv.reader([line], delimiter=delimiter))


def _read_delimited(path: Path, fmt: str, label: str, require_label: bool) -> RawFrame:
    delimiter = "," if fmt == "csv" else "\t"
    names, skip, first_line = delimited_layout(path, fmt)
    table = parse_delimited(path, path, names, skip, delimiter, first_line)
    return delimited_frame(table, str(path), fmt, names, label, require_label, first_line)


def delimited_layout(path: Path, fmt: str) -> tuple[list[str], int, int]:
    """(column names, header lines to skip, line number of the first data row)."""
    if fmt == "criteo":
        return list(CRITEO_COLUMNS), 0, 1
    names = _header(path, "," if fmt == "csv" else "\t")
    if len(names) > 1 and all(_NUMBER_TEXT.match(n) for n in names):
        raise DataError(path, f"the first line looks like data, not a header ({','.join(names[:4])}...): {fmt.upper()} "
                        "files need a header line naming the columns, e.g. user,item,rating,timestamp", line=1, column=1)
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise DataError(path, f"duplicate column names in the header: {sorted(duplicates)}", line=1)
    return names, 1, 2


def parse_delimited(source, path: Path, names: list[str], skip: int, delimiter: str, first_line: int,
                    lines: Callable[[], Iterable[str]] | None = None) -> pa.Table:
    """Parse delimited text (a path, or an in-memory chunk of whole lines) into string columns.

    A ragged row is reported at its line of ``path``; ``lines`` gives a chunk's own text lines
    (data row ``i`` of the chunk on line ``first_line + i``) for locating it.
    """
    invalid: list[int] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        invalid.append(row.actual_columns)
        return "skip"

    try:
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=skip, block_size=BLOCK_SIZE),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                null_values=[""],
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as error:
        raise DataError(path, f"cannot parse: {error}") from None
    if invalid:
        if lines is None:
            raise _locate_ragged(path, delimiter, len(names), skip)
        raise _locate_ragged(path, delimiter, len(names), 0, lines(), first_line)
    return table


def delimited_frame(table: pa.Table, path: str, fmt: str, names: list[str], label: str, require_label: bool,
                    first_line: int) -> RawFrame:
    """A ``RawFrame`` over parsed delimited text whose first row is on line ``first_line``."""
    columns = {n: table.column(n).combine_chunks() for n in names}
    numbers = {n: i + 1 for i, n in enumerate(names)}
    labels = columns.pop(label, None)
    if labels is None and require_label:
        raise DataError(path, f"no label column '{label}' (columns: {', '.join(names)}); name the label with --label when training", line=1)
    kinds = {n: ("numeric" if fmt == "criteo" and n.startswith("I") else "categorical" if fmt == "criteo" else "auto") for n in columns}
    return RawFrame(
        path=str(path), format=fmt, columns=columns, kinds=kinds, column_numbers=numbers, labels=labels,
        label_column_number=numbers.get(label, 1), first_line=first_line,
    )


def _locate_ragged(path: Path, delimiter: str, expected: int, skip: int, lines: Iterable[str] | None = None,
                   first_line: int = 1) -> DataError:
    """Find the first row whose field count is wrong (runs only on the error path)."""
    with (nullcontext(lines) if lines is not None else open_text(path)) as handle:
        for number, fields in enumerate(pycsv.reader(handle, delimiter=delimiter), start=first_line):
            if number < first_line + skip:
                continue
            if not fields:
                return DataError(path, "empty line", line=number, column=1)
            if len(fields) != expected:
                return DataError(
                    path, f"expected {expected} fields, found {len(fields)}", line=number,
                    column=min(len(fields), expected) + 1 if len(fields) < expected else expected + 1,
                )
    return DataError(path, f"a row does not have {expected} fields")


# -- parquet ----------------------------------------------------------------------------------


def _read_parquet(path: Path, label: str, require_label: bool) -> RawFrame:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(path, f"cannot read Parquet: {error}") from None
    return frame_from_table(table, str(path), label, require_label, fmt="parquet")


def frame_from_table(table: pa.Table, source: str, label: str = "label", require_label: bool = False,
                     fmt: str = "table") -> RawFrame:
    """A ``RawFrame`` over an in-memory Arrow table (Parquet, Python API, HTTP requests).

    Rows are numbered from 1 for error messages.
    """
    names = table.column_names
    columns = {n: table.column(n).combine_chunks() for n in names}
    numbers = {n: i + 1 for i, n in enumerate(names)}
    labels = columns.pop(label, None)
    if labels is None and require_label:
        raise DataError(source, f"no label column '{label}' (columns: {', '.join(names)}); name the label with --label when training", line=1)
    return RawFrame(path=source, format=fmt, columns=columns, kinds={n: "auto" for n in columns},
                    column_numbers=numbers, labels=labels, label_column_number=numbers.get(label, 1), first_line=1)


# -- multi-valued columns ---------------------------------------------------------------------


def split_multi(frame: RawFrame, name: str, separator: str) -> tuple[pa.Array, pa.Array]:
    """``"a|b:0.5|c"`` -> ``[a, b, c]`` with weights ``[1, 0.5, 1]``; null or empty -> empty list."""
    column = frame.columns[name]
    if not pa.types.is_string(column.type):
        column = pc.cast(column, pa.string())
    column = pc.if_else(pc.equal(pc.fill_null(column, ""), ""), pa.scalar(None, pa.string()), column)
    lists = pc.split_pattern(column, separator)
    lists = pc.if_else(pc.is_null(column), pa.scalar([], pa.list_(pa.string())), lists)
    tokens = pc.list_flatten(lists)
    has_weight = pc.match_substring(tokens, ":")
    ids = pc.replace_substring_regex(tokens, r":[^:]*$", "")
    weight_text = pc.if_else(has_weight, pc.replace_substring_regex(tokens, r"^.*:", ""), "1")
    try:
        weights = pc.cast(weight_text, pa.float32())
    except pa.ArrowInvalid:
        ok = pc.match_substring_regex(weight_text, r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$").to_numpy(zero_copy_only=False)
        token = int(np.flatnonzero(~ok)[0])
        row = int(np.searchsorted(lists.offsets.to_numpy()[1:], token, side="right"))
        raise frame.error(row, name, f"multi-valued column '{name}': weight in {tokens[token].as_py()!r} is not a number") from None
    offsets = lists.offsets
    return pa.ListArray.from_arrays(offsets, ids), pa.ListArray.from_arrays(offsets, weights)


# -- libFM / libFFM ---------------------------------------------------------------------------


def _read_lines(path: Path) -> pa.Array:
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=["line"], block_size=BLOCK_SIZE),
        parse_options=pacsv.ParseOptions(delimiter="\x1f", quote_char=False, escape_char=False, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(column_types={"line": pa.string()}, strings_can_be_null=False),
    )
    return table.column("line").combine_chunks()


def _char_column(path: Path, line: int, token: int) -> int:
    """1-based character position of whitespace-separated token ``token`` (0-based) on ``line``."""
    with open_text(path) as handle:
        for number, text in enumerate(handle, start=1):
            if number == line:
                position, seen = 0, -1
                for i, ch in enumerate(text):
                    if not ch.isspace() and (i == 0 or text[i - 1].isspace()):
                        seen += 1
                        if seen == token:
                            return i + 1
                    position = i
                return position + 1
    return 1


def _read_sparse_lines(path: Path, fmt: str) -> RawFrame:
    try:
        lines = _read_lines(path)
    except pa.ArrowInvalid:  # pyarrow refuses a file with no bytes at all
        raise DataError(path, "file is empty", line=1) from None
    if len(lines) == 0:
        raise DataError(path, "file is empty", line=1)
    return sparse_frame(lines, path, fmt)


def sparse_frame(lines: pa.Array, path: Path, fmt: str, first_line: int = 1) -> RawFrame:
    """A ``RawFrame`` over libFM/libFFM text lines, the first on line ``first_line`` of ``path``."""
    trimmed = pc.utf8_trim_whitespace(lines)
    empty = pc.equal(trimmed, "").to_numpy(zero_copy_only=False)
    if empty.any():
        raise DataError(path, "empty line", line=int(np.flatnonzero(empty)[0]) + first_line, column=1)
    tokens = pc.split_pattern_regex(trimmed, r"\s+")
    labels = pc.list_element(tokens, 0)
    features = pc.list_slice(tokens, 1)
    counts = pc.list_value_length(features).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    flat = pc.list_flatten(features)
    parts = pc.split_pattern(flat, ":")
    expected = 2 if fmt == "libfm" else 3
    part_counts = pc.list_value_length(parts).to_numpy(zero_copy_only=False)

    def fail(token: int, message: str) -> DataError:
        row = int(np.searchsorted(starts[1:], token, side="right"))
        within = token - int(starts[row]) + 1
        return DataError(path, message, line=row + first_line, column=_char_column(path, row + first_line, within))

    bad = np.flatnonzero(part_counts != expected)
    if len(bad):
        shape = "idx:value" if fmt == "libfm" else "field:idx:value"
        raise fail(int(bad[0]), f"expected {shape}, got {flat[int(bad[0])].as_py()!r}")

    def column(position: int, dtype: pa.DataType, what: str) -> np.ndarray:
        text = pc.list_element(parts, position)
        integer = pa.types.is_integer(dtype)
        pattern = r"^\d{1,18}$" if integer else r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"
        ok = pc.match_substring_regex(text, pattern).to_numpy(zero_copy_only=False)
        if not ok.all():
            token = int(np.flatnonzero(~ok)[0])
            kind = "non-negative integer of at most 18 digits" if integer else "number"
            raise fail(token, f"{what} must be a {kind}, got {text[token].as_py()!r}")
        parsed = pc.cast(text, dtype).to_numpy(zero_copy_only=False)
        if not integer and not np.isfinite(parsed).all():  # e.g. 1e999, or beyond float32's range
            token = int(np.flatnonzero(~np.isfinite(parsed))[0])
            raise fail(token, f"{what} must be a finite number, got {text[token].as_py()!r}")
        return parsed

    values = column(expected - 1, pa.float32(), "feature value")
    indices = column(expected - 2, pa.int64(), "feature index")
    fields = column(0, pa.int64(), "field") if fmt == "libffm" else None
    frame = RawFrame(path=str(path), format=fmt, columns={}, kinds={}, column_numbers={}, labels=labels, first_line=first_line)
    frame.sparse = SparseRows(len(lines), starts, indices, values, fields)
    layout_sparse(frame)
    return frame


@dataclass
class SparseRows:
    """libFM/libFFM features of N rows as flat arrays; row r owns ``[starts[r], starts[r+1])``."""

    num_rows: int
    starts: np.ndarray  # (N + 1,) int64
    indices: np.ndarray  # (nnz,) int64
    values: np.ndarray  # (nnz,) float32
    fields: np.ndarray | None  # (nnz,) int64, libFFM only

    @property
    def rows(self) -> np.ndarray:
        return np.repeat(np.arange(self.num_rows), np.diff(self.starts))


def layout_sparse(frame: RawFrame, layout: dict[str, str] | None = None) -> None:
    """Lay a libFM/libFFM frame out as columns: ``layout`` (name -> kind, from a fitted model)
    fixes the columns; without one the data decides (used when fitting).

    libFM: fixed-width rows whose positions hold disjoint index ranges become positional fields
    ``f1..fn`` (as in Frappe and iPinYou); anything else is one multi-valued ``features``.
    libFFM: one column ``field<k>`` per field; scalar where every row has exactly one feature of
    it, else multi-valued. A field a row lacks is missing; fields the model does not know are left out.
    """
    sparse = frame.sparse
    frame.columns, frame.weights, frame.kinds, frame.column_numbers = {}, {}, {}, {}
    if sparse.fields is None:
        _libfm_columns(frame, sparse, layout)
    else:
        _libffm_columns(frame, sparse, layout)
    for name in frame.columns:
        frame.column_numbers[name] = None  # character columns are located per token


def _ids_text(ids: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    return pc.cast(pa.array(ids, mask=mask), pa.string())


def _libfm_columns(frame: RawFrame, sparse: SparseRows, layout: dict[str, str] | None) -> None:
    counts = np.diff(sparse.starts)
    positional = None
    if layout is not None:
        if set(layout) != {"features"}:
            positional = len(layout)
            bad = np.flatnonzero(counts != positional)
            if len(bad):
                raise frame.error(int(bad[0]), None, f"the model reads {positional} positional features per row, "
                                  f"this row has {int(counts[bad[0]])}")
    else:
        width = int(counts[0]) if len(counts) else 0
        if width > 0 and (counts == width).all():
            grid = sparse.indices.reshape(-1, width)
            lows, highs = grid.min(0), grid.max(0)
            if (highs[:-1] < lows[1:]).all():
                positional = width
    if positional:
        grid = sparse.indices.reshape(-1, positional)
        grid_values = sparse.values.reshape(-1, positional)
        unit = bool((sparse.values == 1).all())
        for j in range(positional):
            name = f"f{j + 1}"
            frame.columns[name] = _ids_text(grid[:, j])
            frame.kinds[name] = "categorical"
            if not unit:
                frame.weights[name] = pa.array(grid_values[:, j])
        return
    offsets = pa.array(sparse.starts.astype(np.int32))
    frame.columns["features"] = pa.ListArray.from_arrays(offsets, _ids_text(sparse.indices))
    frame.weights["features"] = pa.ListArray.from_arrays(offsets, pa.array(sparse.values))
    frame.kinds["features"] = "multi"


def _libffm_columns(frame: RawFrame, sparse: SparseRows, layout: dict[str, str] | None) -> None:
    n, rows = sparse.num_rows, sparse.rows
    order = np.lexsort((rows, sparse.fields))
    fields, rows = sparse.fields[order], rows[order]
    indices, values = sparse.indices[order], sparse.values[order]
    names = layout or {f"field{int(f)}": None for f in np.unique(fields)}
    for name, kind in names.items():
        field = int(name[len("field"):])
        lo, hi = np.searchsorted(fields, [field, field + 1])
        per_row = np.bincount(rows[lo:hi], minlength=n)
        kind = kind or ("categorical" if (per_row == 1).all() else "multi")
        frame.kinds[name] = kind
        if kind != "multi":
            if (per_row > 1).any():
                row = int(np.flatnonzero(per_row > 1)[0])
                raise frame.error(row, None, f"field {field} has one value per row in the model, this row has {int(per_row[row])}")
            grid_ids, grid_values = np.zeros(n, np.int64), np.ones(n, np.float32)
            grid_ids[rows[lo:hi]], grid_values[rows[lo:hi]] = indices[lo:hi], values[lo:hi]
            frame.columns[name] = _ids_text(grid_ids, mask=per_row == 0)
            if not (values[lo:hi] == 1).all():
                frame.weights[name] = pa.array(grid_values)
        else:
            offsets = pa.array(np.concatenate([[0], np.cumsum(per_row)]).astype(np.int32))
            frame.columns[name] = pa.ListArray.from_arrays(offsets, _ids_text(indices[lo:hi]))
            frame.weights[name] = pa.ListArray.from_arrays(offsets, pa.array(values[lo:hi]))
