"""libFM / libFFM lines read in one compiled pass (numba; this module is imported on first use).

The Arrow path (``sparse._arrow_rows``) checks and splits the lines with Arrow's string kernels: trim, split at
whitespace, split each token at ':', a regular expression per part, a cast per part. Each step writes a new array of
every token: ~16-25 MB of text a second. ``scan`` reads the lines' bytes once: it finds each token, checks its parts
against the same rules and parses the indices (and fields) as it goes. A value written as a whole number of at most 7
digits (the 1 of one-hot features) is exact in float32 and parsed here too; any other value goes to Arrow's own cast,
as on the Arrow path, so every value is the same float. Where any line of the chunk is one this pass does not read as
valid (an error to locate, a byte outside printable ASCII), ``scan`` returns None and the Arrow path reads the whole
chunk, and says what is wrong, as it always has.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfm.compiled import compiled
from deepfm.data.frame import within_reach

INVALID = -1  # what the pass returns where the lines need the Arrow path

EXACT_DIGITS = 7  # a whole number of this many digits or fewer is exact in float32 (< 2²⁴)
INDEX_DIGITS = 18  # at most this many digits in an index or a field (the Arrow path's rule, ^\d{1,18}$: always an int64)


@compiled
def _space(c):  # pragma: no cover - compiled
    return c == 32 or c == 9 or c == 11 or c == 12 or c == 13  # ASCII whitespace within a line


@compiled
def _digits(c):  # pragma: no cover - compiled
    return 48 <= c <= 57


@compiled
def _after_digits(data, i, end):  # pragma: no cover - compiled
    while i < end and _digits(data[i]):
        i += 1
    return i


@compiled
def _decimal_end(data, i, end):  # pragma: no cover - compiled
    """Where a number (frame.DECIMAL: [-+]?(\\d+\\.?\\d*|\\.\\d+)([eE][-+]?\\d+)?) that starts at i ends, or -1."""
    if i < end and (data[i] == 43 or data[i] == 45):
        i += 1
    whole = _after_digits(data, i, end)
    fraction = whole
    if whole < end and data[whole] == 46:
        fraction = _after_digits(data, whole + 1, end)
    if whole == i and fraction <= whole + 1:
        return -1  # no digit before or after the point
    i = fraction
    if i < end and (data[i] == 101 or data[i] == 69):
        i += 1
        if i < end and (data[i] == 43 or data[i] == 45):
            i += 1
        exponent = _after_digits(data, i, end)
        if exponent == i:
            return -1
        i = exponent
    return i


@compiled
def _scan(data, offsets, parts, starts, fields, indices, values, value_at, label_spans):  # pragma: no cover - compiled
    """Each line's label span and first token; each token's field, index, where its value starts and, for a whole
    number of at most EXACT_DIGITS digits, the value (else NaN: Arrow's cast reads it). The number of tokens, or
    INVALID."""
    t = 0
    for r in range(len(offsets) - 1):
        i, end = offsets[r], offsets[r + 1]
        while i < end and _space(data[i]):
            i += 1
        if i == end:
            return INVALID  # an empty line
        label_spans[r, 0] = i
        while i < end and not _space(data[i]):
            c = data[i]
            if c == 58:
                return INVALID  # a feature where the label should be
            if c < 32 or c >= 127:  # (the features' grammar admits neither)
                return INVALID  # a control byte or non-ASCII text: the Arrow path's rules of whitespace apply
            i += 1
        label_spans[r, 1] = i
        starts[r] = t
        while True:
            while i < end and _space(data[i]):
                i += 1
            if i == end:
                break
            if t == len(indices):
                return INVALID
            for part in range(parts - 1):  # the field (libFFM), then the index: 1-18 digits and a ':'
                number, digits = 0, 0
                while i < end and _digits(data[i]):
                    number = number * 10 + (data[i] - 48)
                    i += 1
                    digits += 1
                if digits == 0 or digits > INDEX_DIGITS or i == end or data[i] != 58:
                    return INVALID
                i += 1
                if part == parts - 2:
                    indices[t] = number
                else:
                    fields[t] = number
            stop = _decimal_end(data, i, end)
            if stop < 0 or (stop < end and not _space(data[stop])):
                return INVALID
            value_at[t] = i
            k, negative = i, data[i] == 45
            if data[k] == 43 or data[k] == 45:
                k += 1
            values[t] = np.nan
            if stop - k <= EXACT_DIGITS:
                number = 0
                while k < stop and _digits(data[k]):
                    number = number * 10 + (data[k] - 48)
                    k += 1
                if k == stop:
                    values[t] = -float(number) if negative else float(number)
            i = stop
            t += 1
    starts[len(offsets) - 1] = t
    return t


@compiled
def _value_stops(data, value_at, tokens, line_ends, stops):  # pragma: no cover - compiled
    """Where the value of each of ``tokens`` ends (``_decimal_end`` again, within its line)."""
    for n in range(len(tokens)):
        stops[n] = _decimal_end(data, value_at[tokens[n]], line_ends[n])


@compiled
def _copy_spans(data, starts, stops, text):  # pragma: no cover - compiled
    """``data[starts[n]:stops[n]]`` for each n, laid end to end in ``text``."""
    written = 0
    for n in range(len(starts)):
        for i in range(starts[n], stops[n]):
            text[written] = data[i]
            written += 1


@compiled
def _count(data, start, stop, byte):  # pragma: no cover - compiled
    """How many times ``byte`` occurs in ``data[start:stop]``."""
    found = 0
    for i in range(start, stop):
        if data[i] == byte:
            found += 1
    return found


def scan(lines: pa.Array, fmt: str) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None] | None:
    """``(labels, starts, indices, values, fields)`` of libFM (``fmt`` "libfm") or libFFM (else) text lines, as the
    Arrow path reads them; None where that path must read them (an error to locate, text outside printable ASCII)."""
    if not isinstance(lines, pa.StringArray) or lines.null_count or len(lines) == 0:
        return None
    _, offsets_buffer, data_buffer = lines.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32)[lines.offset: lines.offset + len(lines) + 1].astype(np.int64)
    data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    parts = 2 if fmt == "libfm" else 3
    tokens = _count(data, offsets[0], offsets[-1], ord(":")) // (parts - 1)  # (a wrong count fails below)
    starts, label_spans = np.empty(len(lines) + 1, np.int64), np.empty((len(lines), 2), np.int64)
    fields = np.empty(tokens if parts == 3 else 0, np.int64)
    indices, values, value_at = np.empty(tokens, np.int64), np.empty(tokens, np.float32), np.empty(tokens, np.int64)
    if _scan(data, offsets, parts, starts, fields, indices, values, value_at, label_spans) != tokens:
        return None
    rest = np.flatnonzero(np.isnan(values))
    if len(rest):  # the values Arrow's cast reads, as on the Arrow path
        line_ends = offsets[np.searchsorted(starts, rest, side="right")]  # (each token's line r: starts[r] <= t)
        value_stops = np.empty(len(rest), np.int64)
        _value_stops(data, value_at, rest, line_ends, value_stops)
        values[rest] = pc.cast(_strings(data, value_at[rest], value_stops), pa.float32()).to_numpy()
        if not within_reach(values[rest]).all():
            return None  # 1e999 or 1e30: the Arrow path names it
    labels = _strings(data, label_spans[:, 0], label_spans[:, 1])
    return labels, starts, indices, values, (fields if parts == 3 else None)


def _strings(data: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> pa.Array:
    """The texts ``data[starts[n]:stops[n]]`` as a string array."""
    ends = np.zeros(len(starts) + 1, np.int64)
    np.cumsum(stops - starts, out=ends[1:])
    text = np.empty(int(ends[-1]), np.uint8)
    _copy_spans(data, starts, stops, text)
    return pa.StringArray.from_buffers(len(starts), pa.py_buffer(ends.astype(np.int32)), pa.py_buffer(text))
