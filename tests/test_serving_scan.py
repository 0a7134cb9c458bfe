"""Plain request bodies of single-valued models are read by one compiled pass over their bytes
(``deepfm.serving.scan``), and every body, plain or not, is answered exactly as the validating path
answers it: the same encoded rows, or the same 4xx naming row and field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from deepfm.config import DataConfig
from deepfm.data.encoders import FeatureEncoder
from deepfm.data.readers import read_frame
from deepfm.serving.decode import RequestDecoder
from deepfm.serving.limits import Limits
from deepfm.serving.rows import RequestError
from deepfm.serving.scan import NULL, NUMBER, STRING, BodyScanner, parse_decimals

HEADER = ["label", "user", "city", "price", "hour"]
CITIES = ["paris", "oslo", "zürich", "são paulo", "東京"]  # multi-byte UTF-8 too


def _rows(n: int, seed: int) -> list[list[str]]:
    """user: integer ids, city: text, price: decimals with trailing zeros, hour: 0-23; ~1 in 10 cells empty."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        row = [str(int(rng.integers(0, 2))), str(int(rng.integers(100, 130))), CITIES[int(rng.integers(0, 5))],
               f"{rng.uniform(1, 9):.2f}0", str(int(rng.integers(0, 24)))]
        rows.append([v if j == 0 or rng.random() > 0.1 else "" for j, v in enumerate(row)])
    return rows + [["1", "-0", "oslo", "1.0", "-0"], ["0", "15", "paris", "2", "7"]]


def _decoder(tmp_path: Path, data: dict, max_rows: int = 1000) -> RequestDecoder:
    path = tmp_path / "train.csv"
    path.write_text("\n".join(",".join(r) for r in [HEADER] + _rows(300, 0)) + "\n", encoding="utf-8")
    encoder = FeatureEncoder.fit([read_frame(path)], DataConfig(**data))
    assert not encoder.multi_fields
    return RequestDecoder(encoder, limits=Limits(max_rows=max_rows))


def _as_json(rng: np.random.Generator, text: str, style: str) -> object:
    """A raw cell as a client may send it: missing as null or "", else as text or (where it is a number) as one."""
    if text == "":
        return None if rng.random() < 0.5 else ""
    if style == "text" or (style == "mixed" and rng.random() < 0.5):
        return text
    try:
        return int(text) if text.lstrip("-").isdigit() and text != "-0" else float(text)
    except ValueError:
        return text


def _outcome(decode, body: bytes):
    try:
        data = decode(body)
    except RequestError as error:
        return error.status, error.message
    return data.ids.tolist(), None if data.values is None else data.dense_values().tolist()


DATA = {"scaled": {"numeric": ("price",)},
        "bucketed-hashed": {"numeric": ("price",), "numeric_encoding": "bucket", "hash_buckets": 10},
        "price-categorical": {"categorical": ("price",)},
        "kinds-interleaved": {"numeric": ("user", "price"), "categorical": ("city", "hour")},
        "integers-scaled": {"numeric": ("user", "hour")}}


@pytest.mark.parametrize("data", DATA.values(), ids=DATA.keys())
def test_plain_bodies_are_scanned_and_encode_as_the_validating_path(tmp_path, data):
    """Text, JSON numbers (1.50 and -0 keep their text) or both, with spacing, label and other keys, as rows or
    columns: one compiled pass, no JSON parser, the validating path's ids and values."""
    decoder = _decoder(tmp_path, data)
    exact = decoder.decode_exactly
    decoder.read = decoder.decode_exactly = None  # would fail if called
    rng = np.random.default_rng(3)
    rows = _rows(200, 3)
    names = HEADER[1:]
    for trial in range(12):
        style = ("text", "numbers", "mixed")[trial % 3]
        chosen = [rows[i] for i in rng.choice(len(rows), size=int(rng.integers(1, 60)))]
        cells = [{"label": int(r[0]), **{n: _as_json(rng, v, style) for n, v in zip(names, r[1:])}, "note": True}
                 for r in chosen]
        bodies = [{"rows": cells}, {"columns": {n: [c[n] for c in cells] for n in ["note", *names]}}]
        for body in bodies:
            spaced = dict(indent=trial % 3 or None, separators=(",", ":") if trial % 2 else None)
            for raw in (json.dumps(body, ensure_ascii=False), json.dumps(body, ensure_ascii=False, **spaced)):
                raw = raw.encode().replace(b"-0.0", b"-0")  # a JSON -0, which Python writes as -0.0
                assert _outcome(decoder.decode, raw) == _outcome(exact, raw), raw[:200]


def test_the_scanner_marks_each_values_span_and_kind():
    scanner = BodyScanner(["b", "a"], max_rows=10)
    body = b'{"rows": [{"a": 1.50, "x": [1, {"y": 2}], "b": "q"}, {"b": null, "a": ""}]}'
    assert scanner.scan(body) is None  # a nested value, even in a key the model does not read: not plain
    body = b' {"rows":[{"a": 1.50, "x": false, "b": "q"} ,{"b":null,"a":""}]} \n'
    spans = scanner.scan(body)
    assert spans.num_rows == 2
    texts = [[body[s:e].decode() for s, e in zip(starts, stops)] for starts, stops in zip(spans.starts, spans.stops)]
    assert texts == [["q", ""], ["1.50", ""]]
    assert spans.kinds.tolist() == [[STRING, NULL], [NUMBER, STRING]]


NOT_PLAIN = [
    b'{"rows": [', b'{"rows": [{"user": NaN}]}', b"[1, 2]", b'{"rows": {"user": 1}}', b'{"rows": []}', b'{"rows": [7]}',
    b'{"rows": [{}]}', b'{"rows": [{"user": 1, "city": "oslo", "price": 2, "hour": 3}, {"user": 1, "price": 2, "hour": 3}]}',
    b'{"rows": [{"user": {"id": 1}, "city": "oslo", "price": 2, "hour": 3}]}',
    b'{"rows": [{"user": 1, "city": true, "price": 2, "hour": 3}]}',
    b'{"rows": [{"user": 1, "city": ["oslo"], "price": 2, "hour": 3}]}',
    b'{"rows": [{"user": 1, "city": "oslo", "price": "cheap", "hour": 3}]}',
    b'{"rows": [{"user": 1, "user": 2, "city": "oslo", "price": 2, "hour": 3}]}',
    b'{"rows": [{"user": 01, "city": "oslo", "price": 2, "hour": 3}]}',
    b'{"rows": [{"user": 1., "city": "oslo", "price": 2, "hour": 3}]}',
    b'{"rows": [{"user": -, "city": "oslo", "price": 2, "hour": 3}]}',
    b'{"rows": [{"user": 1e5, "city": "o\\"slo", "price": 2E-1, "hour": 3}]}',
    b'{"rows": [{"user": 1, "city": "o\\u0073lo", "price": 2, "hour": 3}]}',
    b'{"rows": [{"user": 1, "city": "oslo", "price": 2, "hour": 3}], "other": 1}',
    b'{"rows": [{"user": 1, "city": "oslo", "price": 2, "hour": 3}]} x',
    b'{"rows": [{"user": 1, "city": "oslo", "price": 2, "hour": 3},]}',
    b'{"rows": [{"user": 1, "city": "\xff", "price": 2, "hour": 3}]}',
    b'{"columns": {"user": [1], "city": ["a"], "price": [1]}}',
    b'{"columns": {"user": [1, 2], "city": ["a"], "price": [1, 2], "hour": [1, 2]}}',
    b'{"columns": {"user": [], "city": [], "price": [], "hour": []}}',
    b'{"columns": {"user": [1, true], "city": ["a", "b"], "price": [1, 2], "hour": [1, 2]}}',
    b'{"columns": {"user": 1, "city": ["a"], "price": [1], "hour": [1]}}',
    b'{"rows": [], "columns": {}}',
    b'{"rows": [' + b", ".join([b'{"user": 1, "city": "a", "price": 1, "hour": 3}'] * 6) + b"]}",
    b'{"columns": {"user": [1, 1, 1, 1, 1, 1], "city": ["a", "a", "a", "a", "a", "a"], '
    b'"price": [1, 1, 1, 1, 1, 1], "hour": [1, 1, 1, 1, 1, 1]}}',
]


@pytest.mark.parametrize("body", NOT_PLAIN)
def test_other_bodies_get_the_validating_paths_answer(tmp_path, body):
    """Malformed JSON, escapes, wrong types, missing or repeated fields, too many rows (limit 5): the
    general path answers, so the answer (rows or the 4xx naming row and field) is the validating path's."""
    decoder = _decoder(tmp_path, DATA["scaled"], max_rows=5)
    assert _outcome(decoder.decode, body) == _outcome(decoder.decode_exactly, body)


def test_plain_decimal_spans_parse_as_arrow_casts_them_or_are_handed_back():
    """A numeric field's spans of plain decimals of up to 15 digits (mantissa and power of ten exact in float64,
    so one division rounds as a correct parser does) are parsed in the compiled pass, as Arrow casts their text;
    missing values are NaN; anything else hands the request back (False)."""
    rng = np.random.default_rng(0)
    drawn = [f"{rng.integers(0, 10 ** rng.integers(1, 16)) / 10 ** rng.integers(0, 8):.{rng.integers(0, 8)}f}"
             for _ in range(3000)]
    plain = ["0", "-0", "7", "-12", "999999999999999", "-100000000000000", "2.50", "-0.0", "0.1", "007",
             "123456789.012345", "0.30000000000000", "", None] + [t for t in drawn if sum(map(str.isdigit, t)) <= 15]
    others = ["1e3", "1234567890123456", "0.0000000000000001", " 1", "+1", "-", "0x1", "1 ", "1.", ".5", "1.2.3",
              "-.5", "1.-5"]
    for texts, parsed in [(plain, True)] + [(["3", text], False) for text in others]:
        data = np.frombuffer("".join(t or "" for t in texts).encode(), np.uint8)
        lengths = np.array([len(t or "") for t in texts])
        stops = np.cumsum(lengths)
        kinds = np.array([NULL if t is None else STRING for t in texts], np.int8)
        out = np.empty(len(texts))
        assert parse_decimals(data, stops - lengths, stops, kinds, out) is parsed, texts
        if parsed:
            expected = pa.array([t or None for t in texts]).cast(pa.float64()).to_numpy(zero_copy_only=False)
            np.testing.assert_array_equal(out, expected)
            assert np.signbit(out).tolist() == np.signbit(expected).tolist()  # -0 stays -0
