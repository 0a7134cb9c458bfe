"""A request's columns -> ``EncodedData`` in a fixed number of array operations, whatever the rows.

``FeatureEncoder.transform`` runs a few Arrow kernels per field: about 1-3 ms for a 39-field
request of one row, most of a request's cost. Here fields of a kind are encoded together:

- categorical fields (vocabulary or hashed): their values are concatenated into one string
  array and looked up by one compiled pass in a table of every field's vocabulary
  (``deepfm.serving.vocabulary``: hash, binary search, string comparison).
- numeric fields: one cast to float64, then the scaling or bucketing of every field at once.
- multi-valued and weighted fields: ``FeatureEncoder.transform`` on those fields alone.

The ids and values are exactly ``FeatureEncoder.transform``'s (the tests compare them). Any input
this path does not read exactly as ``deepfm.serving.rows`` would (a number in a categorical field
whose text JSON does not keep, a value it cannot cast, a wrong type) raises ``NotColumnar``, and
the request is read by that exact, validating path instead.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import chain
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfm.data.batch import EncodedData, id_dtype
from deepfm.data.encoders import MISSING, FeatureEncoder, signed_log
from deepfm.data.frame import RawFrame, to_float
from deepfm.errors import DataError
from deepfm.serving.rows import SOURCE, Columns, columns_to_frame, encode_frame
from deepfm.serving.scan import NULL, Spans, parse_decimals
from deepfm.serving.vocabulary import VocabularyTable

CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, OverflowError)


class NotColumnar(Exception):
    """This request is not for the columnar path: read it with the exact one."""


class ColumnEncoder:
    """``FeatureEncoder.transform`` for request columns, with the lookup tables built once."""

    def __init__(self, encoder: FeatureEncoder, separator: str = "|"):
        self.encoder, self.separator = encoder, separator
        single = encoder.single_fields
        self.width, self.id_type = len(single), id_dtype(encoder.num_features)
        self.categorical = [j for j, spec in enumerate(single) if spec.kind == "categorical" and not spec.weighted]
        self.numeric = [j for j, spec in enumerate(single) if spec.kind == "numeric"]
        self.scaled = [j for j in self.numeric if single[j].edges is None]
        self.bucketed = [j for j in self.numeric if single[j].edges is not None]
        self.others = [j for j, spec in enumerate(single) if spec.weighted]  # and every multi-valued field
        self.rest = replace(encoder, fields=[single[j] for j in self.others] + encoder.multi_fields)
        self.single = single
        # the same positions as slices or index arrays, built once: indexing with a list builds its index array
        # on every request (~5 us each, a third of a one-row request's encoding)
        self._categorical, self._numeric, self._scaled = map(_selector, (self.categorical, self.numeric, self.scaled))
        self._scaled_rows = _selector([self.numeric.index(j) for j in self.scaled])  # their rows among the numeric
        self._with_values = bool(self.scaled or self.others)  # else every value is 1: EncodedData.values is None
        self._lookup = VocabularyTable([single[j] for j in self.categorical])
        scaled = [single[j] for j in self.scaled]
        self._mean = np.array([[s.mean] for s in scaled], np.float64)
        self._std = np.array([[s.std] for s in scaled], np.float64)
        self._scaled_offset = np.array([[s.offset] for s in scaled], np.int64)

    def encode(self, columns: Columns, body: bytes = b"") -> EncodedData:
        """The encoded rows of ``columns``; ``NotColumnar`` where the exact path must decide. ``body``: the
        JSON they came from (a JSON integer is its own text unless it is ``-0``, which parses as 0)."""
        n = columns.num_rows
        ids = np.empty((n, self.width), self.id_type)
        values = np.ones((n, self.width), np.float32)
        if self.categorical:
            text = _text([columns.values[self.single[j].name] for j in self.categorical], body)
            if self.encoder.sparse_format and pc.any(pc.match_substring(text, ":")).as_py():
                raise NotColumnar  # "index:value" of a libFM/libFFM model: the exact path reads it
            ids[:, self._categorical] = self._lookup.encode(text, n).reshape(len(self.categorical), n).T
        if self.numeric:
            x = _numbers([columns.values[self.single[j].name] for j in self.numeric]).reshape(len(self.numeric), n)
            self._encode_numeric(x, ids, values)
        bags = []
        if self.rest.fields:
            try:
                rest = encode_frame(self.rest, columns_to_frame(columns, self.rest.fields, self.encoder.label, self.separator))
            except Exception as error:  # the exact path names the row and field
                raise NotColumnar from error
            if self.others:
                ids[:, self.others] = rest.ids
                rest_values = rest.dense_values()
                if rest_values is not None:
                    values[:, self.others] = rest_values
            bags = rest.bags
        return EncodedData(ids=ids, values=None if (values == 1).all() else values, bags=bags)

    def encode_spans(self, spans: Spans, body: bytes) -> EncodedData:
        """The encoded rows of a scanned body (``deepfm.serving.scan``, fields in ``encoder.single_fields``'
        order, no weighted or multi-valued field); ``NotColumnar`` where the exact path must decide."""
        n, data = spans.num_rows, np.frombuffer(body, np.uint8)
        ids = np.empty((n, self.width), self.id_type)
        values = np.ones((n, self.width), np.float32) if self._with_values else None
        if self.categorical:
            where = self._categorical
            if self.encoder.sparse_format and _colon_within(data, spans.starts[where].ravel(), spans.stops[where].ravel()):
                raise NotColumnar  # "index:value" of a libFM/libFFM model: the exact path reads it
            valid = spans.kinds[where].ravel() != NULL
            ids[:, where] = self._lookup.encode_spans(data, spans.starts[where].ravel(), spans.stops[where].ravel(),
                                                      valid, n).reshape(len(self.categorical), n).T
        if self.numeric:
            where = self._numeric
            starts, stops, kinds = spans.starts[where].ravel(), spans.stops[where].ravel(), spans.kinds[where].ravel()
            x = np.empty(len(starts))
            if not parse_decimals(data, starts, stops, kinds, x):  # exponents, over 15 digits, other text: Arrow's cast
                x = _as_float(_gathered(data, starts, stops, kinds))
            self._encode_numeric(x.reshape(len(self.numeric), n), ids, values)
        return EncodedData(ids=ids, values=None if values is None or (values == 1).all() else values, bags=[])

    def _encode_numeric(self, x: np.ndarray, ids: np.ndarray, values: np.ndarray) -> None:
        missing = ~np.isfinite(x)
        if self.scaled:
            xs, absent = x[self._scaled_rows], missing[self._scaled_rows]
            scaled = np.where(absent, 1.0, (signed_log(np.nan_to_num(xs)) - self._mean) / self._std)
            ids[:, self._scaled] = (self._scaled_offset + np.where(absent, MISSING, 1)).T
            values[:, self._scaled] = scaled.astype(np.float32).T
        for j in self.bucketed:
            spec, row = self.single[j], self.numeric.index(j)
            bucket = 1 + np.searchsorted(np.asarray(spec.edges), x[row], side="right")
            ids[:, j] = spec.offset + np.where(missing[row], MISSING, bucket)


def _colon_within(data: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> bool:
    """Whether a ':' lies within any span [start, stop) of the body's bytes ``data``."""
    before = np.concatenate([[0], np.cumsum(data == ord(":"))])
    return bool((before[stops] - before[starts] > 0).any())


def _selector(positions: list[int]) -> slice | np.ndarray:
    """``positions`` as an index: a slice (a view) where they are consecutive, else an index array."""
    if positions and positions == list(range(positions[0], positions[-1] + 1)):
        return slice(positions[0], positions[-1] + 1)
    return np.array(positions, np.intp)


def _arrow(values: Sequence[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except CONVERSION_ERRORS as error:
        raise NotColumnar from error


def _grouped(columns: list[Sequence[Any]], convert) -> Any:
    """``convert`` applied to the fields' values at once; field by field if their types differ."""
    try:
        return convert(_arrow(list(chain.from_iterable(columns))))
    except NotColumnar:
        if len(columns) == 1:
            raise
    parts = [convert(_arrow(column)) for column in columns]
    return pa.concat_arrays(parts) if isinstance(parts[0], pa.Array) else np.concatenate(parts)


def _gathered(data: np.ndarray, starts: np.ndarray, stops: np.ndarray, kinds: np.ndarray) -> pa.Array:
    """The strings ``data[starts[i]:stops[i]]`` (null where ``kinds`` is ``NULL``) as one Arrow array."""
    lengths = stops - starts
    offsets = np.zeros(len(starts) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    validity = np.packbits(kinds != NULL, bitorder="little")
    return pa.LargeStringArray.from_buffers(len(starts), pa.py_buffer(offsets), pa.py_buffer(data[gather]),
                                            pa.py_buffer(validity))


def _text(columns: list[Sequence[Any]], body: bytes) -> pa.Array:
    """Categorical values as text (null and ``""``: missing): strings, nulls and integers (unless ``body`` has a ``-0``)."""

    def convert(array: pa.Array) -> pa.Array:
        if (pa.types.is_integer(array.type) and b"-0" not in body) or pa.types.is_null(array.type):
            return array.cast(pa.string())
        if not pa.types.is_string(array.type):
            raise NotColumnar(f"{array.type} values")
        return array

    return _grouped(columns, convert)


def _numbers(columns: list[Sequence[Any]]) -> np.ndarray:
    """Numeric values as float64 (NaN: missing), read as ``deepfm.data.frame.to_float`` reads their text."""
    return _grouped(columns, _as_float)


def _as_float(array: pa.Array) -> np.ndarray:
    """One array of numeric values (text, numbers or nulls) as float64; ``NotColumnar`` for anything else."""
    text = pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
    if text:
        array = pc.if_else(pc.equal(array, ""), pa.scalar(None, array.type), array)
    elif not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type) or pa.types.is_null(array.type)):
        raise NotColumnar(f"{array.type} values")
    try:  # an integer that float64 cannot hold exactly is refused here (its text would round)
        return to_float(_FRAME, array if text else array.cast(pa.float64()), "")
    except (DataError, *CONVERSION_ERRORS) as error:
        raise NotColumnar from error


_FRAME = RawFrame(path=SOURCE, format="request", columns={}, kinds={}, column_numbers={})
