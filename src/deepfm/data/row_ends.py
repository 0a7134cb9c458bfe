"""Where the last whole row of delimited text ends, read as Arrow and Python's csv read quotes: a quote opens a
value only at a field's start, "" inside a value is a quote, and a quote anywhere else is text (5'11").

The cut of a chunk where its quotes do not pair up (``readers._record_end`` counts them where they do): one pass
over the bytes, compiled (numba, loaded here only), with no limit on a value's length.
"""

from __future__ import annotations

import numpy as np

from deepfm.compiled import compiled

_QUOTE, _LINE_END = ord('"'), ord("\n")
_FIELD_START, _UNQUOTED, _QUOTED, _QUOTE_IN_QUOTED = 0, 1, 2, 3


@compiled
def _last_row_end(text: np.ndarray, delimiter: int) -> int:
    state, last = _FIELD_START, 0
    for i in range(len(text)):
        c = text[i]
        if state == _QUOTED:
            if c == _QUOTE:
                state = _QUOTE_IN_QUOTED
        elif state == _QUOTE_IN_QUOTED and c == _QUOTE:  # "" within the value
            state = _QUOTED
        elif c == _LINE_END:
            state, last = _FIELD_START, i + 1
        elif c == delimiter:
            state = _FIELD_START
        elif c == _QUOTE and state == _FIELD_START:
            state = _QUOTED
        else:  # text, or text after a value's closing quote
            state = _UNQUOTED
    return last


def last_row_end(buffer, length: int, delimiter: bytes) -> int:
    """The end of the last row of ``buffer[:length]`` (which begins at a row's start) whose line end lies outside
    quoted values; 0 if there is none."""
    return int(_last_row_end(np.frombuffer(buffer, np.uint8, length), delimiter[0]))


_CARRIAGE_RETURN = ord("\r")


@compiled
def _lines_before_row_starts(text: np.ndarray, delimiter: int, rows: int) -> np.ndarray:
    starts = np.zeros(rows, np.int64)
    state, line_ends, row, n = _FIELD_START, 0, 1, len(text)
    for i in range(n):
        c = text[i]
        if state == _QUOTED:
            if c == _QUOTE:
                state = _QUOTE_IN_QUOTED
            elif c == _LINE_END:
                line_ends += 1
            continue
        if state == _QUOTE_IN_QUOTED and c == _QUOTE:
            state = _QUOTED
            continue
        ends_row = c == _LINE_END or (c == _CARRIAGE_RETURN and (i + 1 == n or text[i + 1] != _LINE_END))
        if c == _LINE_END:
            line_ends += 1
        if ends_row:
            state = _FIELD_START
            if i + 1 < n:  # (text after the last row end is a last row of its own)
                if row == rows:
                    return starts[:0]  # more rows than the parse found: not read as Arrow read it
                starts[row] = line_ends
                row += 1
        elif c == _CARRIAGE_RETURN:  # before a LF: the LF ends the row
            pass
        elif c == delimiter:
            state = _FIELD_START
        elif c == _QUOTE and state == _FIELD_START:
            state = _QUOTED
        else:
            state = _UNQUOTED
    return starts if row == rows else starts[:0]


def lines_before_rows_of(text, delimiter: bytes, rows: int) -> np.ndarray | None:
    """For each of the ``rows`` rows parsed from ``text`` (delimited, quotes as above; a row ends at a LF, a CRLF or a CR
    alone outside quoted values), the lines (LFs) before its start less the rows before it: row ``i`` of text whose
    first row is on line ``first`` is on line ``first + i + that``. A CR alone ends a row without ending a line; a LF
    inside a quoted value ends a line without ending a row. None where the text does not give ``rows`` rows."""
    if rows == 0:
        return None
    starts = _lines_before_row_starts(np.frombuffer(text, np.uint8), delimiter[0], rows)  # (rows ≥ 1: row 0 at 0)
    return starts - np.arange(rows) if len(starts) == rows else None
