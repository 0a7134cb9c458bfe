"""The validating reading of a request: JSON -> the same ``RawFrame`` a training file gives, or a 4xx
``RequestError`` naming the row and field. It is the reference the columnar path
(``deepfm.serving.columnar``) must agree with, and it reads every body that path hands back.

A body is ``{"rows": [{field: raw value}, ...]}`` or ``{"columns": {field: [raw value, ...]}}``, with
values exactly as they appear in the training files. Every JSON number is taken as its own text
(``123`` is ``"123"``, ``1.50`` is ``"1.50"``), so a value sent as a number or as a string encodes
like the same CSV cell. ``null`` and ``""`` are a missing value (an empty cell). A field the model
reads must be present in every row, or as a column (send ``null`` for missing); keys the model does
not read (the label, ignored columns) are ignored. Multi-valued fields take the file's text
(``"a|b:0.5"``) or a JSON list (``["a", "b:0.5"]``); the single-valued fields of a model of libFM/libFFM rows take
``"id:value"`` (or the id alone: value 1; a field whose training values were all 1 takes no other).
"""

from __future__ import annotations

import codecs
import json
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfm.data.batch import EncodedData
from deepfm.data.encoders import FeatureEncoder, FieldSpec
from deepfm.data.frame import WITHIN_REACH, RawFrame, within_reach
from deepfm.data.readers import frame_from_table, split_multi
from deepfm.data.tables import closest_name
from deepfm.errors import DataError
from deepfm.serving.limits import Limits

SOURCE = "request"


class RequestError(Exception):
    """A request the server refuses: ``status`` (400, 413, 422) and a message naming row and field."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


@dataclass
class Columns:
    """A request's values, one sequence per field the model reads (in the encoder's order), from either
    body: ``{"rows": [{field: value}, ...]}`` or ``{"columns": {field: [value, ...]}}``."""

    values: dict[str, Sequence[Any]]
    num_rows: int
    body: str = "rows"  # which body they came from, for error messages

    def where(self, row: int, name: str) -> str:
        """How an error names a value: ``rows[3].price`` or ``columns.price[3]``."""
        return f"rows[{row}].{name}" if self.body == "rows" else f"columns.{name}[{row}]"


SHAPE = 'the body must be a JSON object {"rows": [{field: value, ...}, ...]} or {"columns": {field: [value, ...], ...}}'


def parse_body(body: bytes, limits: Limits, names: Sequence[str]) -> Columns:
    """The exact reading of a body (every JSON number kept as its text), every shape checked:
    ``RequestError`` 400/413/422 naming the row and field of the first problem found."""
    if len(body) > limits.max_bytes:
        raise RequestError(413, f"the body has {len(body)} bytes; the limit is {limits.max_bytes}")
    try:
        text = body.decode("utf-8-sig")  # JSON over HTTP is UTF-8 (RFC 8259); bytes alone would be tried as UTF-16/32
    except UnicodeDecodeError as error:
        at = error.start + (len(codecs.BOM_UTF8) if body.startswith(codecs.BOM_UTF8) else 0)  # (counted after a BOM)
        raise RequestError(400, f"the body is not UTF-8 text: byte {at} ({body[at:at + 1]!r}) cannot be decoded; send "
                                "JSON encoded as UTF-8") from None
    try:
        data = json.loads(text, parse_int=str, parse_float=str, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        raise RequestError(400, f"malformed JSON: {error}") from None
    if not isinstance(data, dict) or ("rows" in data) == ("columns" in data):
        raise RequestError(422, SHAPE)
    return _rows_columns(data["rows"], limits, names) if "rows" in data else _columns(data["columns"], limits, names)


def _count(n: int, limits: Limits, what: str) -> int:
    if n == 0:
        raise RequestError(422, f'"{what}" is empty')
    if n > limits.max_rows:
        raise RequestError(413, f"{n} rows; the limit is {limits.max_rows} per request")
    return n


def _rows_columns(rows: Any, limits: Limits, names: Sequence[str]) -> Columns:
    if not isinstance(rows, list):
        raise RequestError(422, f'"rows" must be a list of objects, got {_kind(rows)}')
    _count(len(rows), limits, "rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RequestError(422, f"rows[{i}]: expected an object {{field: value}}, got {_kind(row)}")
    try:
        return Columns({name: [row[name] for row in rows] for name in names}, len(rows), "rows")
    except KeyError:
        raise missing_fields(rows, names) from None


def _columns(columns: Any, limits: Limits, names: Sequence[str]) -> Columns:
    if not isinstance(columns, dict):
        raise RequestError(422, f'"columns" must be an object {{field: [value, ...]}}, got {_kind(columns)}')
    absent = [name for name in names if name not in columns]
    if absent:
        raise RequestError(422, "columns." + ", columns.".join(absent) + f": missing{renames(absent, columns, names)} "
                                "(send null for a missing value)")
    for name in names:
        if not isinstance(columns[name], list):
            raise RequestError(422, f"columns.{name}: expected a list of values, got {_kind(columns[name])}")
    lengths = {name: len(columns[name]) for name in names}
    if len(set(lengths.values())) > 1:  # the odd ones out, against the length most of the columns have
        usual = Counter(lengths.values()).most_common(1)[0][0]
        odd = [f"columns.{name} has {length}" for name, length in lengths.items() if length != usual]
        others = len(lengths) - len(odd)
        raise RequestError(422, f"the columns differ in length: {', '.join(odd)}, against {usual} in "
                                f"{'the other' if others == 1 else f'the {others} others'}")
    n = _count(lengths[names[0]], limits, "columns")
    return Columns({name: columns[name] for name in names}, n, "columns")


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    return "null" if value is None else "a string or number"


def _scalar(value: Any, where: str) -> str | None:
    """A raw cell as text (None: missing)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise RequestError(422, f"{where}: got a boolean; send the value as text, exactly as in the training file")
    raise RequestError(422, f"{where}: expected a string, number or null, got {_kind(value)}")


def _cell(value: Any, spec: FieldSpec, separator: str, where: str) -> str | None:
    if spec.kind == "multi" and isinstance(value, list):
        return separator.join(t for t in (_scalar(v, f"{where}[{j}]") for j, v in enumerate(value)) if t is not None)
    return _scalar(value, where)


def text_column(columns: Columns, spec: FieldSpec, separator: str, index_values: bool = False
                ) -> tuple[pa.Array, pa.Array | None]:
    """One field's values as the text a training file holds ("" and null: missing), and the weights of a
    single-valued weighted field. ``index_values``: the model read libFM/libFFM rows, so a single-valued field's
    value may come as "index:value", whose value must be 1 where the training values all were (not ``weighted``).
    Strings and nulls (the common case) skip the per-value checks."""
    name, values = spec.name, columns.values[spec.name]
    weights = None
    if not all(v is None or type(v) is str for v in values):
        values = [_cell(v, spec, separator, columns.where(i, name)) for i, v in enumerate(values)]
    if spec.single_valued and (spec.weighted or index_values):
        split = [_split_weight(v, columns.where(i, name)) for i, v in enumerate(values)]
        values, weights = [v for v, _ in split], pa.array([w for _, w in split], pa.float32())
        if not spec.weighted:
            other = next((i for i, (_, w) in enumerate(split) if w != 1), None)
            if other is not None:
                raise RequestError(422, f"{columns.where(other, name)}: the field's training values were all 1, so it "
                                        f"takes an index alone or 'index:1', not {values[other]}:{split[other][1]:g}")
            weights = None
    column = pa.array(values, pa.string())
    return pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column), weights


def columns_to_frame(columns: Columns, fields: Sequence[FieldSpec], label: str, separator: str = "|",
                     index_values: bool = False) -> RawFrame:
    """The frame ``fields`` of the encoder read, as a training file would give it (``index_values``: ``text_column``)."""
    texts = {spec.name: text_column(columns, spec, separator, index_values) for spec in fields}
    frame = frame_from_table(pa.table({n: t for n, (t, _) in texts.items()}), SOURCE, label=label, require_label=False)
    for spec in fields:
        if not spec.single_valued:
            with refused_as_422(frame):  # a weight that is not a number the model can square
                frame.columns[spec.name], frame.weights[spec.name] = split_multi(frame, spec.name, separator)
            frame.kinds[spec.name] = "multi"
    frame.weights.update({n: w for n, (_, w) in texts.items() if w is not None})
    return frame


def missing_fields(rows: list[dict], names: Sequence[str]) -> RequestError:
    """The 422 for rows that lack fields the model reads: every missing field, each with the first row
    that lacks it (and how many others do)."""
    missing = []
    for name in names:
        lacking = [i for i, row in enumerate(rows) if name not in row]
        if lacking:
            others = len(lacking) - 1
            more = f" (and {others} more row{'s' if others > 1 else ''})" if others else ""
            hint = renames([name], rows[lacking[0]], names)
            missing.append(f"rows[{lacking[0]}].{name}: the field is missing{hint}{more}")
    return RequestError(422, "; ".join(missing) + " (send null for a missing value)")


def renames(absent: Sequence[str], sent: Iterable[str], names: Sequence[str]) -> str:
    """" (it has 'cty': rename it 'city')" for the ``absent`` fields that a key ``sent`` but not read (not in ``names``)
    spells closely; else ""."""
    unknown = sorted(key for key in sent if key not in names)
    pairs = [(close, name) for name in absent if (close := closest_name(name, unknown))]
    if not pairs:
        return ""
    return (f" (it has {', '.join(repr(close) for close, _ in pairs)}: rename {'it' if len(pairs) == 1 else 'them'} "
            f"{', '.join(repr(name) for _, name in pairs)})")


def encode_frame(encoder: FeatureEncoder, frame: RawFrame) -> EncodedData:
    """``encoder.transform``, with a value it refuses (a numeric field given "abc") as a 422 naming the row."""
    with refused_as_422(frame):
        return encoder.transform(frame, with_labels=False)


@contextmanager
def refused_as_422(frame: RawFrame) -> Iterator[None]:
    """A ``DataError`` about a row of the request's ``frame`` as a 422 naming the row (``rows[3]: ...``)."""
    try:
        yield
    except DataError as error:
        row = f"rows[{error.line - frame.first_line}]: " if error.line is not None else ""
        raise RequestError(422, row + error.message) from None


def _split_weight(text: str | None, where: str) -> tuple[str | None, float]:
    """``"id:value"`` -> (id, value); a bare id has value 1."""
    if text is None or ":" not in text:
        return text, 1.0
    value, _, weight = text.rpartition(":")
    try:
        number = float(weight)
    except ValueError:
        raise RequestError(422, f"{where}: the value after ':' in {text!r} is not a number") from None
    if not within_reach(np.float64(number)):
        raise RequestError(422, f"{where}: the value after ':' in {text!r} must be {WITHIN_REACH}")
    return value, number
