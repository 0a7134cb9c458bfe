"""libFM/libFFM lines are read by one compiled pass (``deepfm.data.sparse_scan``) where it can read them, and every
file, valid or not, reads exactly as the Arrow path reads it: the same rows and values bit for bit, or the same
located error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from deepfm.data import sparse, sparse_scan
from deepfm.data.readers import ChunkedFile
from deepfm.data.sparse import read_lines, sparse_frame
from deepfm.data.sparse_scan import scan
from deepfm.errors import DataError

VALUES = ["1", "0.5", "-2", "3.25e-1", "+7", "1.", ".5", "0.1234567", "12345678", "9999999", "-0", "1E3", "0", "2e+2",
          "123456789012345678901234e-10", "0.30000000000000004"]


def _text(fmt: str, rows: int, seed: int) -> str:
    """Random valid lines: labels of several forms, 0-11 features, values of every written form, mixed whitespace."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(rows):
        features = []
        indices = rng.choice(10**6, int(rng.integers(0, 12)), replace=False)
        indices[: int(rng.random() < 0.05)] = 999_999_999_999_999_999  # 18 digits, the most an index may have
        for index in indices:
            value = VALUES[int(rng.integers(len(VALUES)))]
            features.append(f"{rng.integers(0, 40)}:{index}:{value}" if fmt == "libffm" else f"{index}:{value}")
        gap = [" ", "\t", "  ", " \t ", "\v", " \f"][int(rng.integers(6))]
        label = ["0", "1", "-1", "4.5", "+1"][int(rng.integers(5))]
        lines.append([" ", ""][int(rng.integers(2))] + gap.join([label] + features) + ["", " ", "\t\v\f"][int(rng.integers(3))])
    return "\n".join(lines) + "\n"


def _both(path: Path, fmt: str):
    lines = read_lines(path)
    return (sparse_frame(lines, path, fmt, compiled=True), sparse_frame(lines, path, fmt, compiled=False))


@pytest.mark.parametrize("fmt", ["libfm", "libffm"])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_compiled_pass_reads_valid_lines_as_the_arrow_path_does_bit_for_bit(write_text, fmt, seed):
    path = write_text(f"data.{fmt}", _text(fmt, 3000, seed))
    assert scan(read_lines(path), fmt) is not None  # the pass itself read these lines
    fast, arrow = _both(path, fmt)
    assert fast.labels.equals(arrow.labels)
    for name in ("starts", "indices", "fields"):
        a, b = getattr(fast.sparse, name), getattr(arrow.sparse, name)
        assert (a is None and b is None) or (a.dtype == b.dtype and np.array_equal(a, b)), name
    assert np.array_equal(fast.sparse.values.view(np.uint32), arrow.sparse.values.view(np.uint32))  # -0 stays -0
    assert fast.kinds == arrow.kinds and list(fast.columns) == list(arrow.columns)
    for name in fast.columns:
        assert fast.columns[name].equals(arrow.columns[name]) and (name in fast.weights) == (name in arrow.weights)


def test_whole_numbers_up_to_seven_digits_are_parsed_by_the_pass_and_the_rest_by_arrows_cast(write_text):
    path = write_text("data.libfm", "1 1:9999999 2:12345678 3:-0 4:+5 5:1.5 6:1e3\n")
    labels, starts, indices, values, fields = scan(read_lines(path), "libfm")
    assert labels.to_pylist() == ["1"] and starts.tolist() == [0, 6] and indices.tolist() == [1, 2, 3, 4, 5, 6]
    assert values.tolist() == [9999999.0, 12345678.0, -0.0, 5.0, 1.5, 1000.0] and np.signbit(values[2])
    assert fields is None


BAD = {  # text the pass leaves to the Arrow path, which locates what is wrong (or reads it: the non-ASCII label)
    "empty line": "1 1:1\n\n0 2:1\n",
    "whitespace-only line": "1 1:1\n \t\n",
    "no label": "1:1 2:1\n",
    "token without a value": "1 1:1 2\n",
    "token with a colon too many": "1 1:1:1\n",
    "value not a number": "1 1:abc\n",
    "value with a trailing colon": "1 1:1:\n",
    "index not a number": "1 x:1\n",
    "negative index": "1 -1:1\n",
    "index of 19 digits": "1 1234567890123456789:1\n",
    "value beyond float32's square root": "1 1:1e30\n",
    "value beyond float32": "1 1:1e999\n",
    "nan value": "1 1:nan\n",
    "a point alone": "1 1:.\n",
    "a sign alone": "1 1:+\n",
    "an exponent without digits": "1 1:1e+\n",
    "two points": "1 1:1.2.3\n",
    "non-ASCII label": "é 1:1\n",
    "a control byte": "1 1:1\x1c2:1\n",
    "a control byte in the label": "1\x1c 1:1\n",
    "a NUL byte": "1 1:1\x00\n",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_lines_the_pass_cannot_read_read_exactly_as_on_the_arrow_path(write_text, case):
    path = write_text("data.libfm", BAD[case])
    assert scan(read_lines(path), "libfm") is None
    outcomes = []
    for compiled in (True, False):
        try:
            frame = sparse_frame(read_lines(path), path, "libfm", compiled=compiled)
            outcomes.append((frame.labels.to_pylist(), frame.sparse.indices.tolist(), frame.sparse.values.tolist()))
        except DataError as error:
            outcomes.append(str(error))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("text", ["1 1:1 2\n", "1 0:1:1 3\n", "1 0:1\n", "1 1:1:1:1\n"])
def test_libffm_tokens_of_the_wrong_shape_are_left_to_the_arrow_path(write_text, text):
    path = write_text("data.libffm", text)
    assert scan(read_lines(path), "libffm") is None
    with pytest.raises(DataError, match="expected field:idx:value"):
        sparse_frame(read_lines(path), path, "libffm", compiled=True)


def test_a_slice_of_the_lines_reads_as_those_lines_alone(write_text):
    lines = read_lines(write_text("data.libfm", "1 1:1 2:0.5\n0 3:1\n1 4:2 5:1\n0 6:1\n"))
    labels, starts, indices, values, _ = scan(lines.slice(1, 2), "libfm")
    assert labels.to_pylist() == ["0", "1"] and starts.tolist() == [0, 1, 3]
    assert indices.tolist() == [3, 4, 5] and values.tolist() == [1.0, 2.0, 1.0]
    assert scan(pa.chunked_array([lines]), "libfm") is None  # (not one array: the Arrow path reads it)


def test_a_file_of_compiled_from_bytes_or_more_is_read_by_the_pass_chunk_by_chunk(write_text, monkeypatch):
    path = write_text("data.libfm", _text("libfm", 400, 2))
    calls = []
    monkeypatch.setattr(sparse_scan, "scan", lambda lines, fmt: calls.append(len(lines)) or scan(lines, fmt))
    monkeypatch.setattr(sparse, "COMPILED_FROM", path.stat().st_size)
    monkeypatch.setattr(sparse, "numba_loaded", lambda: False)
    reader = ChunkedFile(path, chunk_bytes=4096)
    rows = sum(frame.num_rows for frame in reader.frames())
    assert rows == 400 and sum(calls) == 400 and len(calls) > 1
    monkeypatch.setattr(sparse, "COMPILED_FROM", path.stat().st_size + 1)
    calls.clear()
    assert sum(frame.num_rows for frame in ChunkedFile(path, chunk_bytes=4096).frames()) == 400
    assert calls == []  # a smaller file: Arrow's kernels


@pytest.mark.parametrize("chunk_bytes", [1 << 20, 1024])
def test_a_unit_separator_byte_is_located_at_its_line_and_column(write_text, chunk_bytes):
    path = write_text("data.libfm", "1 1:1 2:1\n" * 300 + "0 3:1\x1f4:1\n")
    with pytest.raises(DataError, match="unit separator") as error:
        list(ChunkedFile(path, chunk_bytes=chunk_bytes).frames())
    assert (error.value.line, error.value.column) == (301, 6)
