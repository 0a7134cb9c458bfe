"""``RawFrame``: the columns of one file (or chunk) before encoding, with what locates its rows."""

from __future__ import annotations

import dataclasses
import shlex
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfm.errors import DataError

Kind = Literal["auto", "categorical", "numeric", "multi"]

DECIMAL = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"  # the one rule for what a written number is
DECIMAL_PATTERN = rf"^\s*{DECIMAL}\s*$"  # a finite number, as a whole value (headers, weights, libFM values)
NUMBER_PATTERN = rf"{DECIMAL_PATTERN}|^\s*[-+]?(nan|NaN|NAN|inf|Inf|INF|infinity|Infinity)\s*$"  # a numeric cell
FLOAT_MARK = r"[.eE]|nan|inf|NaN|Inf"  # what makes a number a float, not an integer id
# Words that R, pandas, SQL exports and spreadsheets write for a missing number (pandas' read_csv reads them as NaN):
# missing in a numeric column, as an empty cell is (a categorical column keeps them as values: 'NA' may be Namibia).
MISSING_WORDS = ("NA", "N/A", "n/a", "#N/A", "NULL", "null", "None", "<NA>")

# The FM term squares each feature value (Σ_f v_if² x_i²) and the squared error each rating, in float32: a number
# beyond √(float32's largest) ≈ 1.8e19 overflows there, and the prediction turns NaN. Where such a value is read
# (a weight, a libFM value, a label) it is a located DataError instead (``within_reach``).
LARGEST_VALUE = float(np.sqrt(np.finfo(np.float32).max))
WITHIN_REACH = f"a finite number of magnitude at most {LARGEST_VALUE:.2g} (the model squares it in float32)"


def repeated_names(names: list[str]) -> list[str]:
    """The column names that ``names`` holds more than once, sorted (a header's, an Arrow table's)."""
    return sorted(name for name, count in Counter(names).items() if count > 1)


def within_reach(values: np.ndarray) -> np.ndarray:
    """Where ``values`` are finite and at most ``LARGEST_VALUE`` in magnitude (a bool mask)."""
    return np.abs(values) <= LARGEST_VALUE


@dataclass
class RawFrame:
    """Raw columns of one file or chunk.

    ``columns`` hold strings (categorical or not yet typed), float64 (numeric) or
    ``list<string>`` (multi-valued). ``weights`` optionally gives each value a weight
    (libFM/libFFM values, ``id:weight`` tokens), shaped like its column.
    Row ``i`` sits on line ``first_line + i`` of ``path`` (``line_of``: later where quoted values hold line breaks).
    """

    path: str
    format: str
    columns: dict[str, pa.Array]
    kinds: dict[str, Kind]
    column_numbers: dict[str, int]
    labels: pa.Array | None = None
    label_column_number: int = 1
    weights: dict[str, pa.Array] = field(default_factory=dict)
    first_line: int = 1
    sparse: Any = None  # readers.SparseRows for libFM/libFFM: lets a model re-lay the columns out
    empty_rows: np.ndarray | None = None  # rows with no value at all, once columns were left out (``with_columns``)
    lines_before: np.ndarray | None = None  # line breaks in quoted values before each row (``lines_before_rows``)

    @property
    def num_rows(self) -> int:
        if self.labels is not None:
            return len(self.labels)
        return len(next(iter(self.columns.values()))) if self.columns else 0

    @property
    def holder(self) -> str:
        """What the rows came in, as messages name it: "table" (an Arrow table or DataFrame given in Python), else "file"."""
        return "table" if self.format == "table" else "file"

    def error(self, row: int, name: str | None, message: str) -> DataError:
        column = self.label_column_number if name is None else self.column_numbers.get(name)
        return DataError(self.path, message, line=self.line_of(row), column=column)

    def line_of(self, row: int) -> int:
        """The line of ``path`` that row ``row`` begins on."""
        return self.first_line + int(row) + (int(self.lines_before[int(row)]) if self.lines_before is not None else 0)

    def missing_label(self, row: int) -> DataError:
        """The located error for a row without a label; a row with no value at all is said to be an empty line."""
        if self.empty_rows is not None:
            empty = bool(np.isin(int(row), self.empty_rows))
        else:
            empty = self.sparse is None and bool(self.columns) and all(
                not column[int(row)].is_valid for column in self.columns.values())
        return self.error(row, None, "the label is missing" + (" (the line is empty: remove it)" if empty else
                                                               ": give the row its label, or remove the row"))

    def with_columns(self, columns: dict[str, pa.Array]) -> "RawFrame":
        """This frame with only ``columns``, still able to say which of its rows were empty lines."""
        empty = np.zeros(0, np.int64)
        if self.sparse is None and self.labels is not None and self.columns:
            empty = rows_without_values([self.labels, *self.columns.values()])
        return dataclasses.replace(self, columns=columns, empty_rows=empty)


def rows_without_values(columns: list[pa.Array] | list[pa.ChunkedArray]) -> np.ndarray:
    """The rows where every one of ``columns`` is missing (a blank line of text reads as one), ascending."""
    blank = None
    for column in columns:
        if column.null_count == 0:
            return np.zeros(0, np.int64)
        nulls = column.is_null().to_numpy(zero_copy_only=False)
        blank = nulls if blank is None else blank & nulls
    return np.flatnonzero(blank) if blank is not None else np.zeros(0, np.int64)


def to_float(frame: RawFrame, array: pa.Array, name: str | None, fitted: bool = False) -> np.ndarray:
    """Cast a column to float64, or raise a ``DataError`` naming the first value that is not a number.

    Nulls become NaN. ``name=None`` means the label column. ``fitted``: the column is a fitted model's numeric field
    (the error says so, rather than offering to read the column as categories, which only training can).
    """
    if (pa.types.is_floating(array.type) or pa.types.is_integer(array.type) or pa.types.is_boolean(array.type)
            or pa.types.is_null(array.type)):  # (null: a column of None only, e.g. a request's row {"x": None})
        return pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
    for cleaned in (False, True):  # the words for a missing number looked for only where the cast fails
        array = without_missing_words(array) if cleaned else array
        try:
            return pc.cast(pc.utf8_trim_whitespace(array), pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    ok = pc.fill_null(pc.match_substring_regex(array, NUMBER_PATTERN), True).to_numpy(zero_copy_only=False)
    if ok.all():  # the regex and Arrow disagree: find the value Arrow refuses, one at a time (error path only)
        for row in range(len(array)):
            try:
                pc.cast(pc.utf8_trim_whitespace(array.slice(row, 1)), pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                ok[row] = False
                break
    bad = int(np.flatnonzero(~ok)[0])
    what = "the label" if name is None else f"column '{name}'"
    fix = ("" if name is None else ": fix the value (the model reads this column as numbers)" if fitted else
           f": fix the value, or train with the column as categories (--categorical {shlex.quote(name)})")
    raise frame.error(bad, name, f"{what} must be a number, got {array[bad].as_py()!r}{fix}")


def without_missing_words(array: pa.Array) -> pa.Array:
    """Text ``array`` with the ``MISSING_WORDS`` as nulls (the same array where it holds none)."""
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return array
    words = pc.is_in(array, value_set=pa.array(MISSING_WORDS, array.type))
    return pc.if_else(words, pa.scalar(None, array.type), array) if pc.any(words).as_py() else array


def looks_float(array: pa.Array) -> bool:
    """The inference rule for untyped text: numeric iff every value is a number and one has a '.' or exponent."""
    if pa.types.is_floating(array.type):
        return True
    if not pa.types.is_string(array.type) and not pa.types.is_large_string(array.type):
        return False
    present = pc.drop_null(without_missing_words(array))
    if len(present) == 0:
        return False
    if all_digits(present):  # integer ids: the common case, told without the regex
        return False
    if not pc.all(pc.match_substring_regex(present, NUMBER_PATTERN)).as_py():
        return False
    return bool(pc.any(pc.match_substring_regex(present, FLOAT_MARK)).as_py())


INTEGER_TEXT = r"^-?(0|[1-9][0-9]{0,17})$"  # an integer as written, no leading zero or sign ('007', '+1555...': ids)


def as_numbers_where_written_so(array: pa.Array) -> pa.Array:
    """Text read from CSV as the numbers it spells, as pandas and Arrow's own CSV reader would type it: int64 where
    every value is an integer without a leading zero that int64 holds, float64 where every value is a number and one
    is not an integer and none is an integer of 16 digits or more (which float64 would round); otherwise (an id such as
    '007', or of 20 digits) as it is. Nulls stay null."""
    if not pa.types.is_string(array.type) and not pa.types.is_large_string(array.type):
        return array
    present = pc.drop_null(array)
    if len(present) == 0:
        return array
    if pc.all(pc.match_substring_regex(present, r"^[-+]?[0-9]+$")).as_py():  # integers: int64, or ids as text
        return pc.cast(array, pa.int64()) if pc.all(pc.match_substring_regex(present, INTEGER_TEXT)).as_py() else array
    leading_zero = pc.any(pc.match_substring_regex(present, r"^[-+]?0[0-9]")).as_py()
    # an integer of 16 digits or more (an id such as 100000000000000013) is not a float64's: its digits stay as written
    beyond_float = pc.any(pc.match_substring_regex(present, r"^\s*[-+]?[0-9]{16,}\s*$")).as_py()
    if not leading_zero and not beyond_float and pc.all(pc.match_substring_regex(present, DECIMAL_PATTERN)).as_py():
        numbers = pc.cast(pc.utf8_trim_whitespace(array), pa.float64())
        return numbers if pc.all(pc.is_finite(pc.drop_null(numbers))).as_py() else array  # '1e400': kept as written
    return array


def typed_alone_as(array: pa.Array, kind: pa.DataType) -> np.ndarray:
    """Which values of text ``array`` ``as_numbers_where_written_so`` would type as ``kind`` on their own (int64: an
    integer as written; float64: any number without a leading zero; nulls: any type); (N,) bool."""
    if pa.types.is_integer(kind):
        alone = pc.match_substring_regex(array, INTEGER_TEXT)
    elif pa.types.is_floating(kind):
        alone = pc.and_(pc.match_substring_regex(array, DECIMAL_PATTERN),
                        pc.invert(pc.match_substring_regex(array, r"^\s*[-+]?0[0-9]")))
    else:
        return np.ones(len(array), dtype=bool)
    return pc.fill_null(alone, True).to_numpy(zero_copy_only=False)


def all_digits(array: pa.Array) -> bool:
    """Every value that is not null is ASCII digits only: a number by ``NUMBER_PATTERN`` with no
    ``FLOAT_MARK``, told by a character test that costs a small part of the regex's time."""
    return bool(pc.all(pc.ascii_is_decimal(array)).as_py())
