"""A request body -> ``EncodedData``: the scan, the columnar path, or the exact one wherever they could differ.

Plain bodies of a model without multi-valued or weighted fields (strings without escapes, numbers,
nulls) are read by one compiled pass over their bytes (``deepfm.serving.scan``) whose value spans
are encoded directly: no JSON parser, no Python object per value. Other bodies take the columnar path,
which parses with orjson (C) and moves values field by field with C loops (``itemgetter``
over the rows, ``zip`` to transpose, Arrow to convert): no Python runs per row or per value. It
hands anything it cannot read exactly as the exact path would (malformed JSON, a wrong shape or
type, a missing field, a number whose JSON text matters) to ``deepfm.serving.rows``, which
validates every value and names the row and field of a problem. So both paths answer the same,
and errors cost a second parse.
"""

from __future__ import annotations

import logging
from operator import itemgetter
from typing import Any

import orjson

from deepfm.data.batch import EncodedData
from deepfm.data.encoders import FeatureEncoder
from deepfm.serving.columnar import ColumnEncoder, NotColumnar
from deepfm.serving.limits import Limits
from deepfm.serving.rows import Columns, RequestError, columns_to_frame, encode_frame, parse_body
from deepfm.serving.scan import BodyScanner

log = logging.getLogger(__name__)


class RequestDecoder:
    """Reads ``/predict`` bodies for one model: ``decode(body) -> EncodedData`` or a ``RequestError``."""

    def __init__(self, encoder: FeatureEncoder, separator: str = "|", limits: Limits = Limits()):
        self.encoder, self.separator, self.limits = encoder, separator, limits
        self.names = [spec.name for spec in encoder.fields]
        self._row_values = itemgetter(*self.names)
        self.scanner: BodyScanner | None = None
        try:
            self.columnar: ColumnEncoder | None = ColumnEncoder(encoder, separator)
        except ValueError as error:  # two vocabulary values share a lookup key: every request takes the exact path
            log.warning("serving without the columnar path: %s", error)
            self.columnar = None
        if self.columnar is not None and not self.columnar.rest.fields:
            self.scanner = BodyScanner([spec.name for spec in encoder.single_fields], limits.max_rows)
            self.decode(orjson.dumps({"rows": [dict.fromkeys(self.names)]}))  # the first request's one-time costs, now

    def decode(self, body: bytes) -> EncodedData:
        if self.scanner is not None and len(body) <= self.limits.max_bytes:
            spans = self.scanner.scan(body)
            if spans is not None:
                try:
                    return self.columnar.encode_spans(spans, body)
                except NotColumnar:
                    return self.decode_exactly(body)
        if self.columnar is not None:
            try:
                columns = self.read(body)
                return self.columnar.encode(columns, body)
            except NotColumnar:
                pass
        return self.decode_exactly(body)

    def decode_exactly(self, body: bytes) -> EncodedData:
        """The reference path: every value validated, every number kept as its JSON text."""
        columns = parse_body(body, self.limits, self.names)
        return encode_frame(self.encoder, columns_to_frame(columns, self.encoder.fields, self.encoder.label, self.separator,
                                                           index_values=self.encoder.sparse_format is not None))

    def read(self, body: bytes) -> Columns:
        """The body's values per field, or ``NotColumnar``; 413 when it has too many rows."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise NotColumnar from None
        if type(data) is not dict or ("rows" in data) == ("columns" in data):
            raise NotColumnar
        columns = self._from_rows(data["rows"]) if "rows" in data else self._from_columns(data["columns"])
        if columns.num_rows > self.limits.max_rows:
            raise RequestError(413, f"{columns.num_rows} rows; the limit is {self.limits.max_rows} per request")
        return columns

    def _from_rows(self, rows: Any) -> Columns:
        if type(rows) is not list or not rows:
            raise NotColumnar
        try:
            table = list(map(self._row_values, rows))  # KeyError: a missing field; TypeError: not an object
        except (KeyError, TypeError):
            raise NotColumnar from None
        values = list(zip(*table)) if len(self.names) > 1 else [table]
        return Columns(dict(zip(self.names, values)), len(rows), "rows")

    def _from_columns(self, columns: Any) -> Columns:
        if type(columns) is not dict:
            raise NotColumnar
        try:
            values = [columns[name] for name in self.names]
        except KeyError:
            raise NotColumnar from None
        n = len(values[0]) if type(values[0]) is list else 0
        if n == 0 or any(type(v) is not list or len(v) != n for v in values):
            raise NotColumnar
        return Columns(dict(zip(self.names, values)), n, "columns")
