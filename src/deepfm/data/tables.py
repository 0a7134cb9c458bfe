"""The one table -> ``RawFrame`` normaliser, used by every path: delimited text and Parquet files
(whole or chunk by chunk), Arrow tables and DataFrames given to the API, and serving's requests.

It drops a pandas index stored as columns, splits the label off (an unknown label is an error
with a "did you mean"), and splits ``--multi`` columns into weighted value lists.
"""

from __future__ import annotations

import difflib
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfm.data.frame import DECIMAL, WITHIN_REACH, RawFrame, repeated_names, within_reach
from deepfm.errors import DataError

DEFAULT_LABEL = "label"

# ``value:weight`` — only a trailing ``:number`` is a weight, and ``\:`` is a colon that is not one.
_WEIGHTED_TOKEN = rf"(^|[^\\]):{DECIMAL}\s*$"


ARROW_CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


def table_from_pandas(frame, source: str = "<table>", name: str = "df") -> pa.Table:
    """A pandas DataFrame as an Arrow table (its index left out). A column Arrow cannot hold is a ``DataError`` at
    its first row that does not convert with the rows before it (values of two types: a 'yes' among integers), with
    the cast that makes it one type; ``name``: what the caller calls the DataFrame, for that hint."""
    twice = sorted({str(column) for column in frame.columns[frame.columns.duplicated()]})
    if twice:
        raise DataError(source, f"the DataFrame has more than one column named {', '.join(map(repr, twice))}: "
                                "rename or drop all but one", line=None)
    frame = _as_arrow_reads_them(frame)
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except ARROW_CONVERSION_ERRORS as error:
        raise _unconvertible(frame, error, source, name) from None


def _as_arrow_reads_them(frame):
    """``frame`` with the columns Arrow would hold as something deepfm cannot read as values replaced: ``pd.cut``'s
    intervals and periods by their text ('(30, 50]', '2020-01'; Arrow's struct and raw count), durations in
    nanoseconds whatever unit pandas gave them (pandas 2's default; ids that another unit would turn into unseen ones)."""
    import pandas as pd

    replaced = None
    for position, column in enumerate(frame.columns):
        values = frame.iloc[:, position]
        kind = values.dtype.categories.dtype if isinstance(values.dtype, pd.CategoricalDtype) else values.dtype
        if isinstance(kind, (pd.IntervalDtype, pd.PeriodDtype)):
            values = values.astype(str).where(values.notna(), None)
        elif pd.api.types.is_timedelta64_dtype(values.dtype):
            values = values.astype("timedelta64[ns]")
        else:
            continue
        replaced = frame.copy(deep=False) if replaced is None else replaced
        replaced.isetitem(position, values)
    return frame if replaced is None else replaced


def _unconvertible(frame, error: Exception, source: str, name: str) -> DataError:
    """Where ``frame`` stops converting: the first column that fails alone, and its first row that fails with the
    rows before it (found by halving: an error path, a column's prefixes converted a few dozen times)."""
    hint = f"give each column one type (e.g. {name}[col].astype(str))"
    for number, column in enumerate(frame.columns, start=1):
        values = frame[column]
        if _converts(values):
            continue
        good, bad = 0, len(values)  # the first `good` rows convert, the first `bad` do not
        while bad - good > 1:
            middle = (good + bad) // 2
            good, bad = (middle, bad) if _converts(values.iloc[:middle]) else (good, middle)
        if good == 0:  # its first value alone (complex numbers, say): Arrow's own words
            return DataError(source, f"column {column!r} does not convert to an Arrow column ({error}): give it as numbers "
                             f"or text (e.g. {name}[{column!r}].astype(str))", line=1, column=number)
        value, earlier = values.iloc[good], values.iloc[:good].dropna()
        kinds = ", ".join(sorted({type(v).__name__ for v in earlier})) or "missing values"
        label = values.index[good]
        label = label.item() if isinstance(label, np.generic) else label  # 39214, not np.int64(39214)
        where = "" if label == good else f" at index {label!r}"  # line: the row's position, 1-based
        numbers = len(earlier) > 0 and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                                           for v in earlier)
        cell = f"{name}[{column!r}]"
        fix = (f"fix the value, make it missing (pd.to_numeric({cell}, errors='coerce')) or read the column as text "
               f"({cell}.astype(str))" if numbers and isinstance(value, str) else
               f"give the column one type (e.g. {cell}.astype(str))")
        return DataError(source, f"column {column!r} holds {value!r} ({type(value).__name__}){where} after rows of "
                         f"{kinds}: {fix}", line=good + 1, column=number)
    return DataError(source, f"the DataFrame does not convert to Arrow columns ({error}); {hint}")


def _converts(values) -> bool:
    try:
        pa.array(values, from_pandas=True)
    except ARROW_CONVERSION_ERRORS:
        return False
    return True


def frame_from_table(table: pa.Table, source: str, label: str = DEFAULT_LABEL, require_label: bool = False,
                     fmt: str = "table", first_line: int = 1, multi: Sequence[str] = (),
                     separator: str = "|", lines_before: np.ndarray | None = None) -> RawFrame:
    """A ``RawFrame`` over an Arrow table whose row ``i`` is on line ``first_line + i`` of ``source`` (plus
    ``lines_before[i]``, the line breaks inside quoted values of the rows before it, where there are any).

    Columns are numbered from 1 in table order (a CSV's field numbers); Criteo fixes I1..I13
    numeric and C1..C26 categorical. Columns that hold a pandas index are not data.
    """
    table = drop_pandas_index(table)
    names = table.column_names
    duplicates = repeated_names(names)  # (a delimited header's are refused as it is read)
    if duplicates:
        raise DataError(source, f"duplicate column names: {duplicates}", line=1)
    columns = {n: table.column(n).combine_chunks() for n in names}
    numbers = {n: i + 1 for i, n in enumerate(names)}
    labels = columns.pop(label, None)
    if labels is None and require_label:
        raise missing_label(source, label, names)
    if fmt == "criteo":
        kinds = {n: "numeric" if n.startswith("I") else "categorical" for n in columns}
    else:
        kinds = {n: "auto" for n in columns}
    frame = RawFrame(path=str(source), format=fmt, columns=columns, kinds=kinds, column_numbers=numbers,
                     labels=labels, label_column_number=numbers.get(label, 1), first_line=first_line,
                     lines_before=lines_before)
    empty_is_null = fmt not in ("csv", "tsv", "criteo")  # those read an empty cell as null already

    def readable(name: str | None, column: pa.Array) -> pa.Array:  # (name None: the label)
        if pa.types.is_decimal(column.type):  # Parquet's decimals: prices and rates numbers, as float64 reads them;
            # whole decimals (scale 0: account ids of 20 digits) their exact digits, as an integer column's text
            column = pc.cast(column, pa.string() if column.type.scale == 0 else pa.float64())
        text = as_text(frame, name, column)
        return empty_as_null(text) if empty_is_null else text

    frame.labels = None if labels is None else readable(None, labels)
    for name in list(columns):
        columns[name] = readable(name, columns[name])
    lists = [n for n, column in columns.items() if is_id_list(column.type) and n not in multi]  # multi-valued as they are
    return apply_multi(frame, [*multi, *lists], separator)


def as_text(frame: RawFrame, name: str | None, column: pa.Array) -> pa.Array:
    """A column of bytes (Parquet's or Arrow's binary, plain or dictionary-encoded) as the text it holds, other columns
    as they are; bytes that are not UTF-8 are a ``DataError`` at the first row that holds them (``name`` None: the
    label)."""
    kind = column.type
    encoded = pa.types.is_dictionary(kind)
    values = column.dictionary if encoded else column
    if not (pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type)):
        return column
    try:
        text = pc.cast(values, pa.large_string() if pa.types.is_large_binary(values.type) else pa.string())
    except pa.ArrowInvalid:
        bad = _first_not_utf8(values)
        row = int(pc.index(column.indices, bad).as_py()) if encoded else bad
        what = f"column '{name}'" if name is not None else "the label"
        raise frame.error(row, name, f"{what} holds bytes that are not UTF-8 text ({values[bad].as_py()[:24]!r}): "
                                     "deepfm reads text, numbers and lists of them; decode the column first, or leave "
                                     "it out (--ignore, data.ignore)") from None
    return pa.DictionaryArray.from_arrays(column.indices, text) if encoded else text


def _first_not_utf8(values: pa.Array) -> int:
    """The first of ``values`` (bytes) that is not UTF-8, by halving (only on the error path)."""
    low, high = 0, len(values)  # it is in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        try:
            pc.cast(values.slice(low, middle - low), pa.string())
            low = middle
        except pa.ArrowInvalid:
            high = middle
    return low


def empty_as_null(column: pa.Array) -> pa.Array:
    """A text column (plain or dictionary-encoded) with its empty strings as nulls: an empty value is missing in
    every input, as an empty CSV cell and a served ``""`` are (Parquet, Arrow and pandas kept it as a value of its
    own, so the same rows scored differently by how they came). Other columns as they are."""
    kind = column.type
    if pa.types.is_dictionary(kind) and (pa.types.is_string(kind.value_type) or pa.types.is_large_string(kind.value_type)):
        empty = pc.index(column.dictionary, "").as_py()
        if empty < 0:
            return column
        indices = pc.if_else(pc.equal(column.indices, empty), pa.scalar(None, column.indices.type), column.indices)
        return pa.DictionaryArray.from_arrays(indices, column.dictionary)
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return column
    empty = pc.equal(column, "")
    if not pc.any(empty).as_py():
        return column
    return pc.if_else(empty, pa.scalar(None, kind), column)


def is_list(kind: pa.DataType) -> bool:
    """A column of lists of any items (a pandas column of Python lists, a Parquet list column)."""
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def is_id_list(kind: pa.DataType) -> bool:
    """A column of lists of ids (text, integers, booleans): a multi-valued field as it is. Lists of floats (an
    embedding, say) or of lists are not read: ``resolve_kinds`` names them unless ``--ignore`` does."""
    if not is_list(kind):
        return False
    item = kind.value_type
    item = item.value_type if pa.types.is_dictionary(item) else item
    return (pa.types.is_string(item) or pa.types.is_large_string(item) or pa.types.is_integer(item)
            or pa.types.is_boolean(item) or pa.types.is_null(item))  # null: every list empty (a row without tags)


def drop_pandas_index(table: pa.Table) -> pa.Table:
    """The table without the columns pandas stored its index in (``__index_level_0__``, a named
    index), as its schema's pandas metadata lists them."""
    metadata = table.schema.pandas_metadata
    index = [c for c in (metadata or {}).get("index_columns", []) if isinstance(c, str)]  # a RangeIndex is a dict
    present = [c for c in index if c in table.column_names]
    return table.drop_columns(present) if present else table


def closest_name(name: str, names: Sequence[str]) -> str | None:
    """The column of ``names`` that ``name`` most likely means: the same but for case, else one close in
    spelling (difflib ratio ≥ 0.75, as config keys' "did you mean"), else None."""
    same = [other for other in names if other.casefold() == name.casefold()]
    return same[0] if same else next(iter(difflib.get_close_matches(name, names, n=1, cutoff=0.75)), None)


def missing_label(source: str, label: str, names: Sequence[str]) -> DataError:
    """No label column: suggest the closest column name, and the ``--label`` flag (``data.label``) only
    when the default label was looked for (a named label was given already)."""
    message = f"no label column '{label}' (columns: {', '.join(names)})"
    close = closest_name(label, names)
    if len(names) == 1 and label in names[0].split("\t"):  # a TSV file read as CSV (--format csv)
        message += "; the header is one column holding tabs: a tab-separated file reads with --format tsv"
    elif len(names) == 1 and label in names[0].split(","):  # a CSV file read as TSV (a .tsv name, --format tsv)
        message += "; the header is one column holding commas: a comma-separated file reads with --format csv"
    elif close and label != DEFAULT_LABEL:
        message += f"; did you mean '{close}'?"
    elif close:
        message += f"; did you mean --label {close} (data.label)?"
    elif label == DEFAULT_LABEL:
        message += ("; training names it with --label (data.label in a config file or in Estimator(data=...)), and "
                    "evaluate reads the model's label column unless its --label names this file's")
    return DataError(source, message, line=1)


# -- multi-valued columns ---------------------------------------------------------------------


def apply_multi(frame: RawFrame, names: Sequence[str], separator: str) -> RawFrame:
    """Split each ``--multi`` column of ``frame`` in place (see ``split_multi``)."""
    for name in names:
        if name not in frame.columns:
            known = ", ".join(frame.columns)
            raise DataError(frame.path, f"--multi names column '{name}', which is not in the {frame.holder} (columns: "
                            f"{known})", line=1)
        frame.columns[name], frame.weights[name] = split_multi(frame, name, separator)
        frame.kinds[name] = "multi"
    return frame


def _list_tokens(column: pa.Array) -> pa.ListArray:
    """A column of lists of ids as lists of text tokens (null items and lists left out), which ``split_multi``
    reads as it reads a cell's ``a|b:0.5`` tokens, so a list and its text give the same values and weights."""
    items, rows = pc.list_flatten(column), pc.list_parent_indices(column)
    present = pc.is_valid(items)
    items, rows = items.filter(present), rows.filter(present)
    if pa.types.is_dictionary(items.type):
        items = items.dictionary_decode()
    if not pa.types.is_string(items.type):
        items = pc.cast(items, pa.string())
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows.to_numpy(), minlength=len(column)))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), items)


def _refuse_written_lists(frame: RawFrame, name: str, column: pa.Array) -> None:
    """A multi-valued column whose every cell reads ``[...]``: a list written out as its repr (pandas' to_csv of a
    column of lists), which would be one unseen id per row; a ``DataError`` at its first cell."""
    present = column.drop_null()
    if len(present) and pc.all(pc.match_substring_regex(present, r"^\[.*\]$")).as_py():
        first = int(pc.index(pc.is_valid(column), True).as_py())
        raise frame.error(first, name, f"multi-valued column '{name}' holds {present[0].as_py()[:40]!r}: a list written "
                                       "as text (pandas' to_csv of a column of lists); write each cell as a|b, e.g. "
                                       f"df['{name}'].str.join('|') before to_csv")


def split_multi(frame: RawFrame, name: str, separator: str) -> tuple[pa.Array, pa.Array]:
    """``"a|b:0.5|c"`` -> ``[a, b, c]`` with weights ``[1, 0.5, 1]``; null or empty -> empty list.

    Only a trailing ``:number`` is a weight: ``url:x`` is the value ``url:x``, and ``12\\:30`` the
    value ``12:30`` (a backslash before the colon keeps a numeric tail part of the value).
    """
    column = frame.columns[name]
    if is_id_list(column.type):
        lists = _list_tokens(column)
    elif is_list(column.type):
        raise DataError(frame.path, f"multi-valued column '{name}' holds lists of {column.type.value_type}: deepfm reads "
                        "lists of ids (text, integers); leave the column out (--ignore, data.ignore), or give its numbers "
                        "as numeric columns of their own", line=1)
    else:
        if not pa.types.is_string(column.type):
            column = pc.cast(column, pa.string())
        column = pc.if_else(pc.equal(pc.fill_null(column, ""), ""), pa.scalar(None, pa.string()), column)
        _refuse_written_lists(frame, name, column)
        lists = pc.split_pattern(column, separator)
        lists = pc.if_else(pc.is_null(column), pa.scalar([], pa.list_(pa.string())), lists)
    tokens = pc.list_flatten(lists)
    empty = pc.equal(tokens, "").to_numpy(zero_copy_only=False)
    if empty.any():  # 'a|', 'a||b', '|': an empty value is missing, here as in every input, not a value ''
        kept = np.bincount(pc.list_parent_indices(lists).to_numpy()[~empty], minlength=len(lists))
        tokens = tokens.filter(pa.array(~empty))
        lists = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(kept)]), pa.int32()), tokens)
    offsets = lists.offsets
    if not pc.any(pc.match_substring(tokens, ":")).as_py():  # the common case: no weights, no colons
        return lists, pa.ListArray.from_arrays(offsets, pa.array(np.ones(len(tokens), np.float32)))
    weighted = pc.match_substring_regex(tokens, _WEIGHTED_TOKEN)
    ids = pc.if_else(weighted, pc.replace_substring_regex(tokens, r":[^:]*$", ""), tokens)
    ids = pc.replace_substring(ids, "\\:", ":")
    weight_text = pc.if_else(weighted, pc.utf8_trim_whitespace(pc.replace_substring_regex(tokens, r"^.*:", "")), "1")
    weights = pc.cast(weight_text, pa.float32())
    reached = within_reach(weights.to_numpy(zero_copy_only=False))
    if not reached.all():  # e.g. 1e999, beyond float32's range, or 1e30, whose square is
        token = int(np.flatnonzero(~reached)[0])
        row = int(np.searchsorted(lists.offsets.to_numpy()[1:], token, side="right"))
        raise frame.error(row, name, f"multi-valued column '{name}': the weight in {tokens[token].as_py()!r} must be "
                                     + WITHIN_REACH)
    return pa.ListArray.from_arrays(offsets, ids), pa.ListArray.from_arrays(offsets, weights)
