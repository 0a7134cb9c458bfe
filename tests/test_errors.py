"""Bad input is a DataError reading exactly ``path:line:column: message`` (1-based line and column)."""

from __future__ import annotations

import gzip
import subprocess
import warnings
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from deepfm.api import Estimator
from deepfm.config import DataConfig
from deepfm.data.encoders import FeatureEncoder
from deepfm.data.readers import ChunkedFile, read_frame
from deepfm.errors import DataError, DataWarning, DeepFMError
from deepfm.training.trainer import NOT_FINITE


def error_of(call, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as caught:
        call(*args, **kwargs)
    return caught.value


def fit(path, **config) -> FeatureEncoder:
    cfg = DataConfig(**config)
    return FeatureEncoder.fit([read_frame(path, multi=cfg.multi)], cfg)


def test_data_error_formats_path_line_and_column():
    error = DataError("data.csv", "something is wrong", line=3, column=7)
    assert str(error) == "data.csv:3:7: something is wrong"
    assert (error.path, error.line, error.column, error.message) == ("data.csv", 3, 7, "something is wrong")


def test_data_error_without_a_place_has_only_the_path():
    assert str(DataError("data.csv", "file not found")) == "data.csv: file not found"
    assert str(DataError("data.csv", "file is empty", line=1)) == "data.csv:1: file is empty"


def test_data_error_is_a_user_error():
    assert issubclass(DataError, DeepFMError)


# -- ragged rows ------------------------------------------------------------------------------


def test_csv_row_with_too_few_fields_points_at_the_first_missing_field(write_text):
    path = write_text("data.csv", "label,a,b\n1,x,1.5\n0,y,2\n1,z\n0,w,3\n")
    assert str(error_of(read_frame, path)) == f"{path}:4:3: expected 3 fields, found 2: every row needs a field, empty or not, for each column"


def test_csv_row_with_too_many_fields_points_at_the_first_extra_field(write_text):
    path = write_text("data.csv", "label,a,b\n1,x,1.5\n0,y,2,9,9\n")
    assert str(error_of(read_frame, path)) == f"{path}:3:4: expected 3 fields, found 5: a value holding the delimiter needs quotes around it"


def test_a_quote_never_closed_is_named_at_the_field_that_opens_it(write_text):
    path = write_text("data.csv", 'label,a,b\n1,x,1.5\n0,"y,2\n1,z,3\n0,w,4\n')
    assert str(error_of(read_frame, path)) == (f'{path}:3:2: expected 3 fields, found 2: the quote that opens field 2 is '
                                               "not closed on its line, so the row runs on into the lines after it")


def test_a_row_with_a_quoted_line_break_and_a_field_too_many_points_at_the_extra_field_not_at_the_quote(write_text):
    path = write_text("data.csv", 'label,a,b\n1,x,1.5\n0,"two\nlines",2,9\n1,z,3\n')
    assert str(error_of(read_frame, path)) == (f"{path}:3:4: expected 3 fields, found 4 (field 2 holds a line break "
                                               "inside quotes, so the row ends on a later line)")


def test_tsv_ragged_row_is_located(write_text):
    path = write_text("data.tsv", "label\ta\tb\n1\tx\t1\n0\ty\n")
    assert str(error_of(read_frame, path)) == f"{path}:3:3: expected 3 fields, found 2: every row needs a field, empty or not, for each column"


def test_gzipped_csv_ragged_row_is_located(write_text):
    path = write_text("data.csv.gz", "label,a,b\n1,x,1.5\n0,y\n")
    assert str(error_of(read_frame, path)) == f"{path}:3:3: expected 3 fields, found 2: every row needs a field, empty or not, for each column"


def test_criteo_row_with_39_fields_is_located(criteo_row, write_text):
    good = "\t".join("" if v is None else str(v) for v in criteo_row(1))
    path = write_text("day_0.txt", good + "\n" + good + "\n" + good.rsplit("\t", 1)[0] + "\n")
    assert str(error_of(read_frame, path)) == f"{path}:3:40: expected 40 fields, found 39: every row needs a field, empty or not, for each column"


# -- values that are not numbers ---------------------------------------------------------------


@pytest.mark.parametrize("name, header, row, bad_at", [
    ("latin.csv", "label,user,city", "1,u{i},c{i}", (2001, 3)),  # far past the first line's block
    ("latin.tsv", "label\tuser\tcity", "1\tu{i}\tc{i}", (2001, 3)),
    ("latin.csv", "label,us{bad}r,city", "1,u{i},c{i}", (1, 2)),  # in the header
    ("latin.libfm", None, "1 0:1 {i}:1", (2001, 9))])  # libFM: the character position
def test_a_byte_that_is_not_utf8_is_located_with_what_to_do(tmp_path, name, header, row, bad_at):
    lines = ([header.format(bad="\xe9")] if header else []) + [row.format(i=i % 90 + 100) for i in range(3000)]
    if not header or "{bad}" not in header:
        lines[2000] = lines[2000][:-3] + "\xe9" + lines[2000][-2:] if name.endswith("libfm") else \
            lines[2000].replace("c", "\xe9", 1)
    path = tmp_path / name
    path.write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    error = error_of(lambda: fit(path))
    assert (error.line, error.column) == bad_at, str(error)
    assert "not UTF-8 text (byte 0xe9)" in str(error)
    assert f"iconv -f latin1 -t utf-8 < {path} > {'utf8-' + name}" in str(error)  # runnable where the user is


@pytest.mark.parametrize("utf8_line, word", [(2, "Köln"), (5, "Köln"),  # UTF-8 text before the bad byte, or after it
                                             (2, "A\u00a0B")])  # a non-breaking space, the line's only non-ASCII
def test_a_bad_byte_in_a_file_of_utf8_text_is_not_answered_with_a_latin1_recoding(tmp_path, utf8_line, word):
    """A new user recoded a UTF-8 file with one bad byte as the error advised (iconv -f latin1): Köln became KÃ¶ln in
    the vocabulary, so served requests missed it. Where other lines are UTF-8 text, the advice is to fix the line or
    drop the bad bytes; the command given does that, and the values that were UTF-8 stay as they were."""
    import subprocess

    lines = ["city,label"] + [f"c{i},{i % 2}" for i in range(6)]
    lines[utf8_line] = f"{word},1"
    path = tmp_path / "u8.csv"
    path.write_bytes("\n".join(lines[:3]).encode() + b"\nBad\xff,1\n" + "\n".join(lines[3:]).encode() + b"\n")
    error = error_of(lambda: fit(path))
    assert (error.line, error.column) == (4, 1)
    line_of_utf8 = utf8_line + 1 + (utf8_line >= 3)
    assert (f"the file's other text is UTF-8 (line {line_of_utf8}: {word!r}), which re-encoding it from Latin-1 would "
            "garble: fix this line, or drop the bytes that are not UTF-8 (this value changes), e.g. ") in str(error)
    command = str(error).rsplit("e.g. ", 1)[1]
    subprocess.run(command, shell=True, check=True, cwd=tmp_path)
    assert f"{word},1" in (tmp_path / "utf8-u8.csv").read_text(encoding="utf-8")


def test_a_bad_byte_after_a_quoted_comma_is_in_the_field_it_is_in(tmp_path):
    path = tmp_path / "quoted.csv"
    path.write_bytes(b'label,place,city\n1,"Paris, France",caf\xe9\n')
    error = error_of(lambda: fit(path))
    assert (error.line, error.column) == (2, 3), str(error)


def test_a_gzip_file_that_is_not_utf8_is_told_a_command_that_keeps_it_compressed(tmp_path):
    import gzip
    import subprocess

    path = tmp_path / "latin.csv.gz"
    path.write_bytes(gzip.compress("label,city\n1,caf\xe9\n0,b\n".encode("latin-1")))
    error = error_of(lambda: fit(path))
    command = f"gunzip -c -- {path} | iconv -f latin1 -t utf-8 | gzip > utf8-latin.csv.gz"  # where the user runs it
    assert command in str(error)
    subprocess.run(command, shell=True, check=True, cwd=tmp_path)  # as the user would: a gzip file of UTF-8 text
    assert gzip.decompress((tmp_path / "utf8-latin.csv.gz").read_bytes()).decode("utf-8") == "label,city\n1,café\n0,b\n"


def rows_with_quotes(path, rows: int, quoted: dict[int, str]) -> None:
    """A CSV of ``rows`` rows (label,user,city) whose line n (from 1, the header) has its user written as
    ``quoted[n]`` (e.g. '"u12': a quote opened)."""
    lines = ["label,user,city"] + [f"{i % 2},u{i % 97},c{i % 13}" for i in range(rows)]
    for number, user in quoted.items():
        label, _, city = lines[number - 1].split(",")
        lines[number - 1] = f"{label},{user},{city}"
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("rows", [3_000, 60_000])  # one block, and far past Arrow's first 1 MiB block
@pytest.mark.parametrize("stream", ["off", "on"])
def test_a_quote_left_open_is_located_not_a_block_of_rows_lost(tmp_path, rows, stream):
    """Arrow dropped the rest of its block after a quote that never closes (7,379 rows of 12,000, exit 0)."""
    path = tmp_path / "open.csv"
    rows_with_quotes(path, rows, {1801: '"u5'})
    error = error_of(lambda: Estimator(model={"name": "lr"}, data={"stream": stream, "chunk_rows": 4096},
                                       training={"epochs": 1}).fit(path, progress=False))
    assert (error.line, error.column) == (1801, 2), str(error)
    assert "the quote that opens" in str(error) and "closed" in str(error)


@pytest.mark.parametrize("rows, line", [(3_000, 2_960), (60_000, 1_801), (60_000, 59_990), (60_000, 60_001)])
@pytest.mark.parametrize("stream", ["off", "on"])
def test_a_quote_left_open_in_the_last_column_is_located_too(tmp_path, rows, line, stream):
    """There the row keeps its field count: Arrow ended the value at the end of the text (a chunk's or the file's),
    and the rows after it were gone without a word."""
    path = tmp_path / "open_last.csv"
    lines = ["label,user,city"] + [f"{i % 2},u{i % 97},c{i % 13}" for i in range(rows)]
    lines[line - 1] = lines[line - 1].rsplit(",", 1)[0] + ',"c5'
    path.write_text("\n".join(lines) + "\n")
    error = error_of(lambda: Estimator(model={"name": "lr"}, data={"stream": stream, "chunk_rows": 4096},
                                       training={"epochs": 1}).fit(path, progress=False))
    assert (error.line, error.column) == (line, 3), str(error)
    assert "never closed" in str(error) or "a quote left open?" in str(error)  # past 100 lines: the runaway value


@pytest.mark.parametrize("stream", ["off", "on"])
def test_a_lone_carriage_return_that_makes_up_for_a_value_over_two_lines_still_counts_that_values_line(tmp_path, stream):
    """A chunk of as many rows as lines holds no value over two lines, so its values are not searched for line ends,
    unless a lone CR (a line end to Arrow) split a line as a value joined two: then a later row's line would be one
    short. The lone CR ends a row, not a line: the row after the 'x' is on line 3002 of 'sed -n' and 'grep -n'."""
    path = tmp_path / "cr.csv"
    lines = ["label,user,city"] + [f'{i % 2},"u{i % 97}",c{i % 13}' for i in range(12_000)]
    lines[100] = '1,"u1\nsecond line",c1'  # lines 101-102
    lines[2000] = '0,"u3",c4\r1,"u5",c6'  # two rows on line 2002
    lines[3000] = 'x,"u4",c5'  # line 3002
    path.write_bytes(("\n".join(lines) + "\n").encode())
    error = error_of(lambda: Estimator(model={"name": "lr"}, data={"stream": stream, "chunk_rows": 4096},
                                       training={"epochs": 1}).fit(path, progress=False))
    assert (error.line, error.column) == (3002, 1), str(error)
    assert "the label must be a number, got 'x'" in str(error)


@pytest.mark.parametrize("chunk_rows", [100, 4_096, 100_000])  # the CR in an earlier chunk, in the same, the file whole
@pytest.mark.parametrize("bad, said", [("x,u4,c5", "the label must be a number, got 'x'"),
                                       ("label,user,city", "this line repeats the header"),
                                       ("", "the label is missing (the line is empty"),
                                       ('0,u9,"open', "quote")])  # (it runs on over every later line)
def test_rows_after_a_lone_carriage_return_between_two_rows_keep_the_lines_sed_and_grep_count(tmp_path, chunk_rows,
                                                                                              bad, said):
    """A CR alone between two well-formed rows ends a row, as Arrow, Python's csv and pandas read it, but not a line:
    the rows after it are placed at their LF-counted lines (read whole they were one line late, and chunk by chunk
    too inside the CR's own chunk)."""
    lines = ["label,user,city"] + [f"{i % 2},u{i % 97},c{i % 13}" for i in range(12_000)]
    lines[100] = "0,u3,c4\r1,u5,c6"  # two rows on line 101
    lines[150] = "1,u1,c2\r0,u2,c3"  # and on line 151
    lines[2000] = bad  # line 2001
    path = tmp_path / "cr.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode())
    error = error_of(lambda: Estimator(model={"name": "lr"}, data={"chunk_rows": chunk_rows},
                                       training={"epochs": 1}).fit(path, progress=False))
    assert error.line == 2001, str(error)
    assert said in str(error)


@pytest.mark.parametrize("chunk_rows", [4_096, 100_000])  # the CR in the error's chunk; one chunk: read whole
def test_a_gzip_file_places_the_rows_after_a_lone_carriage_return_at_their_lines(tmp_path, chunk_rows):
    error = error_of(lambda: Estimator(model={"name": "lr"}, data={"chunk_rows": chunk_rows},
                                       training={"epochs": 1}).fit(_gzip_file_with_a_lone_cr(tmp_path), progress=False))
    assert error.line == 2001, str(error)


def _gzip_file_with_a_lone_cr(tmp_path, bad: str = "x,u4,c5", name: str = "cr.csv.gz"):
    lines = ["label,user,city"] + [f"{i % 2},u{i % 97},c{i % 13}" for i in range(12_000)]
    lines[100] = "0,u3,c4\r1,u5,c6"  # two rows on line 101
    lines[2000] = bad  # line 2001
    path = tmp_path / name
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def test_a_gzip_file_read_whole_places_the_rows_after_a_lone_carriage_return_at_their_lines(tmp_path):
    """``Estimator.read`` and ``read_frame`` decompress a .gz file once, parse it and search it for a CR alone (they
    did not search it: the rows after such a CR were a line late)."""
    from deepfm.data.readers import read_frame

    path = _gzip_file_with_a_lone_cr(tmp_path, bad="label,user,city")  # (read whole: a repeated header is refused)
    assert error_of(lambda: Estimator(model={"name": "lr"}).read(path)).line == 2001
    assert error_of(lambda: read_frame(path)).line == 2001
    path = _gzip_file_with_a_lone_cr(tmp_path, bad="1,u4,c5", name="fine.csv.gz")
    plain = tmp_path / "fine.csv"
    plain.write_bytes(gzip.decompress(path.read_bytes()))
    frame, expected = read_frame(path), read_frame(plain)
    assert frame.num_rows == expected.num_rows == 12_001
    rows = (98, 99, 100, 101, 2001, 12_000)  # rows 99 and 100 on line 101
    assert [frame.line_of(row) for row in rows] == [expected.line_of(row) for row in rows] == [100, 101, 101, 102, 2002, 12_001]


@pytest.mark.parametrize("name", ["open.csv", "open.csv.gz"])
@pytest.mark.parametrize("text, column", [('label,a,b,c\n1,x,0.5,t\r1,z,0.1,"open\n', 4),
                                          ('label,a,b,c\r\n\r1,z,0.1,"open\r\n', None)])  # (a CR first: the line)
def test_a_quote_left_open_in_the_row_after_a_lone_carriage_return_is_named_at_that_rows_line(tmp_path, name, text,
                                                                                             column):
    """Found by a new user: line 3 where grep -n says 2."""
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    error = error_of(lambda: Estimator(model={"name": "lr"}, training={"epochs": 1}).fit(path, progress=False))
    assert (error.line, error.column) == (2, column), str(error)
    assert "the quote that opens this field is never closed" in str(error)


@pytest.mark.parametrize("name", ["open.csv", "open.csv.gz"])
def test_a_quote_left_open_on_a_last_line_that_ends_in_a_lone_carriage_return_is_refused_plain_as_gzipped(tmp_path, name):
    """Found by a new user: the plain file trained (its last value 'open<CR>'), its .gz copy was refused."""
    text = 'label,a,b,c\n1,x,0.5,t\n0,z,0.1,"open\r'
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    error = error_of(lambda: Estimator(model={"name": "lr"}, training={"epochs": 1}).fit(path, progress=False))
    assert (error.line, error.column) == (3, 4), str(error)
    assert "the quote that opens this field is never closed" in str(error)


def test_a_closed_quoted_value_that_holds_a_lone_carriage_return_on_the_last_line_trains(tmp_path):
    path = tmp_path / "closed.csv"
    path.write_bytes(b'label,a,b,c\n1,x,0.5,t\n0,"z\ry",0.1,t\r')
    Estimator(model={"name": "lr"}, training={"epochs": 1}).fit(path, progress=False)


def test_a_lone_carriage_return_inside_a_quoted_value_ends_no_row(tmp_path):
    lines = ["label,user,city"] + [f"{i % 2},u{i % 97},c{i % 13}" for i in range(300)]
    lines[10] = '0,"u3\rstill u3",c4\r1,u5,c6'  # the first CR is text, the second ends a row: line 11 holds two
    lines[200] = "x,u4,c5"  # line 201
    path = tmp_path / "cr.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode())
    error = error_of(lambda: Estimator(model={"name": "lr"}, training={"epochs": 1}).fit(path, progress=False))
    assert error.line == 201, str(error)


@pytest.mark.parametrize("name", ["cr.csv", "cr.csv.gz"])
@pytest.mark.parametrize("chunk_rows", [100, 100_000])  # chunk by chunk, and the file whole
def test_a_lone_carriage_return_that_cuts_a_rows_fields_is_located_as_such_not_as_a_quote_left_open(
        tmp_path, name, chunk_rows):
    """Arrow reads a CR alone as a line end, so '0,u3<CR>,c4' is two ragged rows: chunk by chunk that was 'the quote
    that opens this field is never closed' (the file holds no quote), whole 'expected 3 fields, found 2'."""
    lines = ["label,user,city"] + [f"{i % 2},u{i % 97},c{i % 13}" for i in range(3_000)]
    lines[100] = "0,u3\r,c4"
    text = ("\n".join(lines) + "\n").encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    error = error_of(lambda: Estimator(model={"name": "lr"}, data={"chunk_rows": chunk_rows},
                                       training={"epochs": 1}).fit(path, progress=False))
    assert (error.line, error.column) == (101, 2), str(error)
    assert "a carriage return (CR, not followed by a line feed) outside quotes ends a row here" in str(error)
    assert "sed 's/\\r\\(.\\)/\\1/g'" in str(error)


def test_a_value_whose_quotes_open_and_close_thousands_of_lines_apart_is_refused(tmp_path):
    path = tmp_path / "far.csv"
    rows_with_quotes(path, 20_000, {1801: '"u5', 9001: 'u7"'})  # valid CSV: one value over 7,200 lines
    error = error_of(lambda: fit(path))
    assert (error.line, error.column) == (1801, 2), str(error)
    assert "runs on over 7,200 lines" in str(error)


@pytest.mark.parametrize("stream", ["off", "on"])
@pytest.mark.parametrize("suffix", ["csv", "tsv"])
def test_a_stray_quote_that_a_later_rows_quote_closes_is_refused_not_a_run_of_rows_read_as_one_value(
        tmp_path, stream, suffix):
    """A new user's titles '"Heat' and '12" Pizza' 50 lines apart: valid CSV, one value over 51 lines, 50 rows gone
    from training, evaluate and predict without a word (under the 100-line limit of a runaway value)."""
    path = tmp_path / f"titles.{suffix}"
    rows_with_quotes(path, 3_000, {101: '"u5', 151: 'u7" x'})
    if suffix == "tsv":
        path.write_text(path.read_text().replace(",", "\t"))
    error = error_of(lambda: Estimator(model={"name": "lr"}, data={"stream": stream, "chunk_rows": 4096},
                                       training={"epochs": 1}).fit(path, progress=False))
    assert (error.line, error.column) == (101, 2), str(error)
    assert "runs on over 51 lines, each of which reads as a row of 3 fields on its own: a stray quote?" in str(error)


@pytest.mark.parametrize("stream", ["off", "on"])
def test_a_stray_quote_that_the_next_rows_quote_closes_is_noted_where_it_loses_a_row(tmp_path, stream):
    """'"Heat' and '12" Pizza' on neighbouring lines make one valid value over 2 lines: a row lost without a word
    (a text value over 2 lines can read so too, so it is read as written, with a note at its line)."""
    path = tmp_path / "titles.csv"
    rows_with_quotes(path, 3_000, {101: '"u5', 102: 'u7" x'})
    with pytest.warns(DataWarning) as noted:
        estimator = Estimator(model={"name": "lr"}, data={"stream": stream, "chunk_rows": 4096, "valid_fraction": 0},
                              training={"epochs": 1}).fit(path, progress=False)
    message = str(next(w.message for w in noted if "runs on over" in str(w.message)))
    assert message.startswith(f"{path}:101:2: the quoted value of column 'user' runs on over 2 lines, each of which "
                              "reads as a row of 3 fields on its own, and is read as one value: if a stray quote")
    assert estimator.metrics["rows"] == 2_999


def test_a_value_that_truly_holds_a_line_break_is_read_without_a_note(tmp_path):
    path = tmp_path / "text.csv"
    rows_with_quotes(path, 300, {101: '"first line\nsecond, line"', 102: '"one\ntwo"'})
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        estimator = Estimator(model={"name": "lr"}, data={"valid_fraction": 0}, training={"epochs": 1}).fit(path, progress=False)
    assert estimator.metrics["rows"] == 300


@pytest.mark.parametrize("name, text", [("train.csv", b"label,user\n1,a\n0,b\n"), ("train.libfm", b"1 3:1\n0 4:1\n")])
def test_gzip_data_whose_name_lacks_gz_is_named_as_such_not_taken_for_latin1_text(tmp_path, name, text):
    """(a libFM file's said 'file is empty', a reviewer found)"""
    path = tmp_path / name
    path.write_bytes(gzip.compress(text))
    error = error_of(lambda: Estimator(model={"name": "lr"}).fit(path, progress=False))
    assert error.line == 1 and f"gzip-compressed, without the name that says so" in str(error)
    assert f"(mv {path} {path}.gz)" in str(error)


@pytest.mark.parametrize("module, kind, command", [("bz2", "bzip2", "bunzip2 -k"), ("lzma", "xz", "unxz -k")])
def test_a_bzip2_or_xz_file_is_named_as_such_not_taken_for_latin1_text(tmp_path, module, kind, command):
    """A new user's .csv.bz2 got 'not UTF-8 text (byte 0xe3) ... iconv -f latin1'."""
    import importlib

    path = tmp_path / f"train.csv.{module}"
    path.write_bytes(importlib.import_module(module).compress(b"label,user\n1,a\n0,b\n"))
    error = error_of(lambda: Estimator(model={"name": "lr"}).fit(path, progress=False))
    assert error.line == 1 and f"compressed with {kind}, which deepfm does not read (it reads gzip)" in str(error)
    assert f"({command} {path})" in str(error)
    header = tmp_path / "bzh.csv"  # a reviewer's: a header that starts 'BZh' is text
    header.write_text("BZh_score,label\n1.5,1\n2.5,0\n")
    assert fit(header).id_counts.rows == 2


@pytest.mark.parametrize("text", ['label,user,note\n1,u1,"first line\nsecond, with a comma\nthird"\n0,u2,plain\n1,u3,x\n',
                                  'label,note,user\n1,"first line\nred, green, blue\nlast line",a\n0,plain,b\n1,x,a\n'])
def test_a_quoted_value_whose_lines_do_not_read_as_rows_keeps_its_line_breaks(tmp_path, text):
    """The second: a reviewer's value whose middle line has the header's field count; its first line does not."""
    path = tmp_path / "notes.csv"
    path.write_text(text)
    encoder = fit(path)
    assert encoder.id_counts.rows == 3


def test_a_row_after_quoted_values_that_hold_line_breaks_is_located_at_its_own_line(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text('label,user,note\n1,u1,"two\nlines"\n0,u2,"three\nmore\nlines"\n1,u3,x\nyes,u4,y\n')
    error = error_of(lambda: Estimator(model={"name": "lr"}, training={"epochs": 1}).fit(path, progress=False))
    assert (error.line, error.column) == (8, 1), str(error)  # the 4th row, after 3 line breaks in quoted values


def test_a_quoted_value_over_a_few_lines_is_read_as_text(tmp_path):
    path = tmp_path / "text.csv"
    path.write_text('label,user,note\n1,u1,"two\nlines"\n0,u2,plain\n1,u3,"a, b"\n')
    frame = read_frame(path)
    assert frame.columns["note"].to_pylist() == ["two\nlines", "plain", "a, b"]


@pytest.mark.parametrize("mark", [";", "|"])
def test_a_file_separated_by_another_mark_is_named_as_such_not_as_a_missing_label(write_text, mark):
    path = write_text("semi.csv", f"label{mark}user{mark}city\n1{mark}u1{mark}c1\n0{mark}u2{mark}c2\n")
    error = error_of(lambda: fit(path))
    assert (error.line, error.column) == (1, 1)
    assert f"looks '{mark}'-separated" in str(error) and "comma- or tab-separated" in str(error)


def test_movielens_double_colon_rows_are_named_as_such_with_a_header_to_add(write_text):
    """MovieLens-1M's ratings.dat: '::'-separated, no header (it was "no label column 'label' (columns: 5488::...)")."""
    path = write_text("ratings.dat", "5488::488::3::959821507\n5698::1682::4::958593778\n")
    error = error_of(lambda: fit(path))
    assert "looks '::'-separated; convert it and add a header line naming the columns (rename them)" in str(error)
    command = str(error).split(", e.g. ")[1].removesuffix(" (where no value holds a tab)")
    assert command == f"{{ printf 'user\\titem\\trating\\ttimestamp\\n'; sed 's/::/\\t/g'; }} < {path} > ratings.tsv"
    subprocess.run(command, shell=True, check=True, cwd=path.parent)  # the command it gives: a TSV with a header
    assert read_frame(path.parent / "ratings.tsv", "tsv", label="rating").num_rows == 2


def test_a_conversion_hint_neither_overwrites_its_source_nor_names_gzip_bytes_tsv(tmp_path):
    """'tr ... < pipes.tsv > pipes.tsv' run in the file's folder emptied it; a .gz source's command wrote gzip bytes
    into a .tsv name, which deepfm read as text (a reviewer's two cases)."""
    pipes = tmp_path / "pipes.tsv"
    pipes.write_text("a|b\nc|d\n")
    ratings = tmp_path / "ratings.dat.gz"
    ratings.write_bytes(gzip.compress(b"1::2::3::4\n5::6::7::8\n"))
    for path, made in ((pipes, "converted-pipes.tsv"), (ratings, "ratings.tsv.gz")):
        command = str(error_of(lambda: fit(path))).split(", e.g. ")[1].removesuffix(" (where no value holds a tab)")
        assert command.endswith(f"> {made}")
        subprocess.run(command, shell=True, check=True, cwd=tmp_path)
    assert pipes.read_text() == "a|b\nc|d\n" and read_frame(tmp_path / "converted-pipes.tsv", "tsv", label="a").num_rows == 1
    assert read_frame(tmp_path / "ratings.tsv.gz", "tsv", label="rating").num_rows == 2


def test_a_pipe_separated_file_of_text_and_numbers_gets_a_header_too(write_text):
    """MovieLens-100K's u.item: its first line holds text, but it is data ('tr' alone left a file without a header, which
    then read '1' and '0' as column names)."""
    path = write_text("u.item", "1|Toy Story (1995)|01-Jan-1995||0\n2|GoldenEye (1995)|01-Jan-1995||1\n")
    command = str(error_of(lambda: fit(path))).split(", e.g. ")[1].removesuffix(" (where no value holds a tab)")
    assert command == f"{{ printf 'c1\\tc2\\tc3\\tc4\\tc5\\n'; tr '|' '\\t'; }} < {path} > u.item.tsv"  # u.user: its own
    subprocess.run(command, shell=True, check=True, cwd=path.parent)
    assert read_frame(path.parent / "u.item.tsv", "tsv", label="c5").num_rows == 2
    path.write_bytes("1|Toy Story (1995)|01-Jan-1995||0\n2|Les Misérables (1995)|01-Jan-1995||1\n".encode("latin-1"))
    said = str(error_of(lambda: fit(path)))
    command = said.split(", e.g. ")[1].removesuffix(" (where no value holds a tab)")
    assert "as UTF-8 text (it is not), e.g. iconv -f latin1 -t utf-8 < " in said  # recoded on the way, one command
    subprocess.run(command, shell=True, check=True, cwd=path.parent)
    recoded = read_frame(path.parent / "u.item.tsv", "tsv", label="c5").columns["c2"].to_pylist()  # (as u.item's line 544)
    assert recoded == ["Toy Story (1995)", "Les Misérables (1995)"]


def test_non_numeric_value_in_a_numeric_column_is_located_when_fitting(write_table):
    path = write_table("train.csv", {"label": [1, 0, 1, 0], "city": ["a", "b", "c", "d"], "price": ["1.5", "2", "oops", "4"]})
    error = error_of(fit, path, numeric=("price",))
    assert str(error) == (f"{path}:4:3: column 'price' must be a number, got 'oops': fix the value, or train "
                          "with the column as categories (--categorical price)")


def test_non_numeric_value_in_a_numeric_column_is_located_when_transforming(write_table):
    train = write_table("train.csv", {"label": [1, 0, 1], "price": ["1.5", "2", "3"]})
    valid = write_table("valid.csv", {"price": ["2.5", "1", "twelve"], "label": [0, 1, 0]})
    encoder = fit(train, numeric=("price",))
    error = error_of(encoder.transform, read_frame(valid))
    assert str(error) == (f"{valid}:4:1: column 'price' must be a number, got 'twelve': fix the value (the model "
                          "reads this column as numbers)")  # (not to train again: that is no fix for rows to score)


def test_non_numeric_value_in_a_criteo_integer_field_is_located(criteo_row, write_criteo):
    row = criteo_row(0, seed=1)
    row[1 + 4] = "five"  # I5
    path = write_criteo("day_0.txt", [criteo_row(1), row])
    error = error_of(fit, path)
    assert str(error) == (f"{path}:2:6: column 'I5' must be a number, got 'five': fix the value, or train "
                          "with the column as categories (--categorical I5)")


def test_space_padded_number_in_an_inferred_numeric_column_is_not_reported_as_bad(write_text):
    # The number pattern used to infer kinds accepts surrounding spaces, so fitting must not fail
    # on ' 2.5' -- and must never blame a value that is a plain number ('1.5' here).
    path = write_text("train.csv", "label,price\n1,1.5\n0, 2.5\n1,3.5\n")
    fit(path)


def test_error_line_counts_blank_lines_in_the_file(write_text):
    path = write_text("train.csv", "label,price\n1,1.5\n\n0,oops\n")
    error = error_of(fit, path, numeric=("price",))
    assert str(error) == (f"{path}:4:2: column 'price' must be a number, got 'oops': fix the value, or train "
                          "with the column as categories (--categorical price)")


# -- labels -----------------------------------------------------------------------------------


def test_binary_label_outside_zero_and_one_is_located_in_the_label_column(write_table):
    path = write_table("train.csv", {"city": ["a", "b", "c"], "label": [1, 0, 2]})
    encoder = fit(path, task="binary")
    error = error_of(encoder.transform, read_frame(path))
    assert str(error) == (f"{path}:4:2: binary labels must be 0 or 1, got 2 (the model is binary; "
                          "for ratings, train with --task regression (data.task))")


def test_minus_one_label_in_a_csv_is_not_binary(write_table):
    path = write_table("train.csv", {"label": [1, -1, 0], "city": ["a", "b", "c"]})
    encoder = fit(path, task="binary")
    error = error_of(encoder.transform, read_frame(path))
    assert str(error) == (f"{path}:3:1: binary labels must be 0 or 1, got -1 (the model is binary; "
                          "for ratings, train with --task regression (data.task))")


def test_an_empty_line_is_said_to_be_one_where_its_label_is_missing(write_text):
    path = write_text("train.csv", "label,city\n1,a\n\n0,b\n")
    encoder = fit(path)
    error = error_of(encoder.transform, read_frame(path))
    assert str(error) == f"{path}:3:1: the label is missing (the line is empty: remove it)"


@pytest.mark.parametrize("line, empty", [("", True), (",a", False), ("NaN,b", False)])
def test_training_says_a_line_is_empty_only_when_it_is(write_text, line, empty):
    from deepfm import Estimator

    path = write_text("train.csv", f"label,city\n1,a\n{line}\n0,b\n")
    with pytest.raises(DataError) as caught:
        Estimator(training={"epochs": 1}).fit(path, progress=False)  # one reading pass: kept frames, fewer columns
    message = "the label is missing" + (" (the line is empty: remove it)" if empty else
                                        ": give the row its label, or remove the row")
    assert str(caught.value) == f"{path}:3:1: {message}"


def test_missing_label_is_located(write_table):
    path = write_table("train.csv", {"city": ["a", "b", "c"], "label": [1, None, 0]})
    encoder = fit(path)
    assert str(error_of(encoder.transform, read_frame(path))) == f"{path}:3:2: the label is missing: give the row its label, or remove the row"


def test_non_numeric_label_is_located(write_table):
    path = write_table("train.csv", {"city": ["a", "b"], "label": [1, "yes"]})
    assert str(error_of(fit, path)) == (f"{path}:3:2: the label must be a number, got 'yes'; for text labels name "
                                        "the value that means 1 with --positive VALUE (data.positive), or use --task multiclass (values seen: '1', 'yes')")


def test_a_libfm_model_given_a_csv_says_it_reads_libfm_rows(write_text):
    """'column 'f1' is required by the model but not in the file' alone left a new user to guess what f1 was."""
    encoder = fit(write_text("train.libfm", "1 0:1 5:1\n0 1:1 6:1\n"))
    csv = write_text("test.csv", "label,user,item\n1,0,5\n")
    assert str(error_of(encoder.transform, read_frame(csv))) == (
        f"{csv}:1: column 'f1' is required by the model but not in the file (the model was trained on libfm rows, whose "
        "fields it names f1, f2: give it libfm rows)")


def test_non_numeric_libfm_label_is_located_at_the_line_start(write_text):
    path = write_text("train.libfm", "1 0:1 5:1\nabc 1:1 6:1\n")
    assert str(error_of(fit, path)).startswith(f"{path}:2:1: the label must be a number, got 'abc'; ")


# -- empty files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["empty.csv", "empty.tsv", "empty.txt", "empty.csv.gz"])
def test_empty_text_file_is_a_data_error(write_text, name):
    path = write_text(name, "")
    assert str(error_of(read_frame, path)) == f"{path}:1: file is empty"


@pytest.mark.parametrize("fmt", ["csv", "tsv", "criteo"])
def test_empty_file_with_an_explicit_delimited_format_is_a_data_error(write_text, fmt):
    path = write_text("empty.dat", "")
    assert str(error_of(read_frame, path, fmt=fmt)) == f"{path}:1: file is empty"


def test_an_empty_gzip_file_of_criteo_rows_is_said_to_be_empty(tmp_path):
    path = tmp_path / "day_1.gz"  # ('cannot parse: Empty CSV file' before)
    path.write_bytes(gzip.compress(b""))
    assert str(error_of(read_frame, path, fmt="criteo")) == f"{path}:1: file is empty"


@pytest.mark.parametrize("name", ["empty.libfm", "empty.libffm"])
def test_empty_sparse_file_is_a_data_error(write_text, name):
    path = write_text(name, "")
    assert str(error_of(read_frame, path)) == f"{path}:1: file is empty"


@pytest.mark.parametrize("text", ["label,a\n", "label,a"])
def test_csv_with_only_a_header_has_no_data_rows(write_text, text):
    path = write_text("header.csv", text)  # without its line end Arrow's words were 'Could not skip initial 1 rows'
    assert str(error_of(read_frame, path)) == f"{path}:2: file has no data rows"


def test_parquet_with_no_rows_has_no_data_rows(tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"label": pa.array([], pa.int64()), "a": pa.array([], pa.string())}), path)
    assert str(error_of(read_frame, path)) == f"{path}:1: file has no data rows"


@pytest.mark.parametrize("kind", ["DataFrame", "Arrow table"])
def test_a_table_of_no_rows_is_no_training_data_as_a_file_of_none(kind):
    """A model of no rows would predict a constant (and read its task from no labels)."""
    table = pa.table({"user": pa.array([], pa.string()), "label": pa.array([], pa.float64())})
    data = table.to_pandas() if kind == "DataFrame" else table
    with pytest.raises(DataError, match="no rows to train on"):
        Estimator(model={"name": "fm"}, training={"epochs": 1}).fit(data, progress=False)


def test_zero_byte_parquet_file_is_a_data_error(tmp_path):
    path = tmp_path / "empty.parquet"
    path.write_bytes(b"")
    assert str(error_of(read_frame, path)).startswith(f"{path}: cannot read Parquet")



def test_corrupt_parquet_file_is_a_data_error_when_read_chunk_by_chunk(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"label": [0, 1] * 50, "a": ["x", "y"] * 50}), path)
    path.write_bytes(path.read_bytes()[:300])  # the footer is gone
    assert str(error_of(ChunkedFile(path).chunks)).startswith(f"{path}: cannot read Parquet: ")


def truncated_gzip(tmp_path, lines: int = 2000):
    """A .gz CSV of ``lines`` data rows cut in half, and the line its data breaks off in."""
    text = "label,a\n" + "".join(f"{i % 2},value{i}\n" for i in range(lines))
    data = gzip.compress(text.encode())[: len(gzip.compress(text.encode())) // 2]
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(data)
    return path, zlib.decompressobj(31).decompress(data).count(b"\n") + 1


def test_truncated_gzip_file_is_a_data_error_at_the_line_it_breaks_off_in(tmp_path):
    path, line = truncated_gzip(tmp_path)
    assert str(error_of(read_frame, path)).startswith(f"{path}:{line}: truncated or corrupt gzip file")


def test_truncated_gzip_file_is_a_data_error_when_read_chunk_by_chunk(tmp_path):
    path, line = truncated_gzip(tmp_path)
    error = error_of(lambda: list(ChunkedFile(path, chunk_bytes=1 << 10).frames()))
    assert str(error).startswith(f"{path}:{line}: truncated or corrupt gzip file")


@pytest.mark.parametrize("padding, error", [(b"\0" * 512, None), (b"garbage", "truncated or corrupt gzip file")])
def test_bytes_after_the_gzip_data_read_whole_and_chunk_by_chunk_alike(tmp_path, padding, error):
    """Zero bytes that pad a .gz file (tape and block devices write them; gzip reads past them) were read past chunk by
    chunk (Python's gzip) and refused whole (Arrow's); other bytes after the data are refused both ways."""
    text = "label,a\n" + "".join(f"{i % 2},value{i}\n" for i in range(2000))
    path = tmp_path / "padded.csv.gz"
    path.write_bytes(gzip.compress(text.encode()) + padding)
    reads = [lambda: [read_frame(path)], lambda: list(ChunkedFile(path, chunk_bytes=1 << 10).frames())]
    for read in reads:
        if error is None:
            assert sum(frame.num_rows for frame in read()) == 2000
        else:
            assert str(error_of(read)).startswith(f"{path}:2002: {error}")


def test_a_plain_file_named_gz_is_a_data_error(write_text, tmp_path):
    path = tmp_path / "plain.csv.gz"
    path.write_text("label,a\n1,x\n")
    assert str(error_of(read_frame, path)).startswith(f"{path}:1: truncated or corrupt gzip file")


def test_a_directory_is_not_a_data_file(tmp_path):
    assert str(error_of(read_frame, tmp_path)) == f"{tmp_path}: is a directory, not a data file"


def test_blank_line_in_a_libfm_file_is_located(write_text):
    path = write_text("data.libfm", "1 0:1\n\n0 1:1\n")
    assert str(error_of(read_frame, path)) == f"{path}:2:1: empty line"


# -- unknown column names ---------------------------------------------------------------------


@pytest.mark.parametrize("option", ["categorical", "numeric", "ignore"])
def test_option_naming_a_column_not_in_the_file_is_a_data_error(write_table, option):
    path = write_table("train.csv", {"label": [1, 0], "city": ["a", "b"], "price": ["1.5", "2.5"]})
    error = error_of(fit, path, **{option: ("city", "colour")})
    assert str(error) == (f"{path}:1: --{option} (data.{option}) names column 'colour', which is not in the file "
                          "(columns: city, price)")
    error = error_of(fit, path, **{option: ("cty",)})  # a misspelled name: the column it most likely means
    assert str(error).endswith("(columns: city, price); did you mean 'city'?")


@pytest.mark.parametrize("option", ["categorical", "numeric"])
def test_option_naming_the_label_says_it_is_the_label(write_table, option):
    path = write_table("train.csv", {"label": [1, 0], "city": ["a", "b"]})
    error = error_of(fit, path, **{option: ("label",)})
    assert str(error) == (f"{path}:1: --{option} (data.{option}) names column 'label', the label (--label): it cannot be "
                          "a feature or a weight too")


def test_ignoring_the_label_says_it_is_the_column_the_model_learns(write_table):
    # it would be trained on all the same: a user who meant another label learns it here, not from the metrics
    path = write_table("train.csv", {"label": [1, 0], "city": ["a", "b"]})
    assert str(error_of(fit, path, ignore=("label",))) == (
        f"{path}:1: --ignore (data.ignore) names column 'label', the label (--label): the label is never a feature, and "
        "this one is the column the model learns; to learn another column, name it with --label")


def test_multi_naming_a_column_not_in_the_file_is_a_data_error(write_table):
    path = write_table("train.csv", {"label": [1, 0], "city": ["a", "b"]})
    error = error_of(read_frame, path, multi=["tags"])
    assert str(error) == f"{path}:1: --multi names column 'tags', which is not in the file (columns: city)"


def test_unknown_label_column_is_a_data_error(write_table):
    path = write_table("train.csv", {"label": [1, 0], "city": ["a", "b"]})
    error = error_of(read_frame, path, label="clicked")
    assert str(error) == f"{path}:1: no label column 'clicked' (columns: label, city)"  # --label was given


def test_a_tab_separated_file_read_as_csv_is_said_to_need_format_tsv(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("user\titem\tlabel\n1\t2\t5\n")
    error = error_of(read_frame, path, fmt="csv")
    assert str(error) == (f"{path}:1: no label column 'label' (columns: user\titem\tlabel); the header is one column "
                          "holding tabs: a tab-separated file reads with --format tsv")


def test_unknown_label_column_suggests_the_closest_name(write_table):
    path = write_table("train.csv", {"clicks": [1, 0], "city": ["a", "b"]})
    error = error_of(read_frame, path, label="click")
    assert str(error) == f"{path}:1: no label column 'click' (columns: clicks, city); did you mean 'clicks'?"
    path = write_table("other.csv", {"labels": [1, 0], "city": ["a", "b"]})
    error = error_of(read_frame, path)  # the default label: the setting that names another is suggested
    assert str(error) == f"{path}:1: no label column 'label' (columns: labels, city); did you mean --label labels (data.label)?"


def test_a_far_name_is_not_suggested_and_a_name_in_another_case_is(write_table, tmp_path):
    path = write_table("adult.csv", {"age": [30, 40], "capital-loss": [0, 1], "income": ["<=50K", ">50K"]})
    error = error_of(read_frame, path, label="marital-status")  # difflib's ratio to capital-loss is 0.62
    assert "did you mean" not in str(error)
    est = Estimator(data={"categorical": ("city",)}, model={"name": "lr"}, training={"epochs": 1})
    est.fit(pa.table({"label": [1, 0, 1, 0], "city": ["a", "b", "a", "c"]}), progress=False)
    error = error_of(est.predict, pa.table({"City": ["a", "b"]}))
    assert str(error).endswith("column 'city' is required by the model but not in the table (it has 'City': rename it 'city')")


REACH = "must be a finite number of magnitude at most 1.8e+19 (the model squares it in float32)"


@pytest.mark.parametrize("weight", ["1e999", "1e30", "-2e19"])  # beyond float32, or a square beyond it (NaN predictions)
def test_a_weight_the_model_cannot_square_in_a_multi_column_is_located(write_table, weight):
    path = write_table("train.csv", {"label": [1, 0, 1], "tags": ["a|b:1.7e19", "c", f"d|e:{weight}"]})
    error = error_of(read_frame, path, multi=["tags"])
    assert str(error) == f"{path}:4:2: multi-valued column 'tags': the weight in 'e:{weight}' {REACH}"


def test_a_row_whose_prediction_overflows_is_a_located_error_not_a_nan(write_table):
    # values within reach can still overflow a model's arithmetic: predict and evaluate name the row, not NaN or a traceback
    est = Estimator(data={"categorical": ("city",)}, model={"name": "lr"}, training={"epochs": 1})
    est.fit(pa.table({"label": [1, 0, 1, 0], "city": ["a", "b", "a", "c"]}), progress=False)
    path = write_table("score.csv", {"label": [1, 0, 1, 0], "city": ["a", "b", "c", "a"]})
    assert est.classes is None  # binary: one probability a row
    c = int(est.encode(pa.table({"city": ["c"]})).ids[0, 0])
    with torch.no_grad():  # the logit of a row of 'c' overflows: 3e38 + 3e38
        est.model.linear.bias.fill_(3e38)
        est.model.linear.weights.weight[c] = 3e38
    for method in (est.predict, est.evaluate):
        assert str(error_of(method, path)) == f"{path}:4: {NOT_FINITE}"
    assert est.predict(pa.table({"city": pa.array([], pa.string())})).shape == (0,)  # no rows: none to refuse


def test_a_bad_weight_after_a_quoted_value_that_holds_line_breaks_is_located_at_its_own_line(write_text):
    path = write_text("tags.csv", 'label,note,tags\n1,"x\ny",t1\n0,b,t2:1e999\n')
    error = error_of(read_frame, path, multi=["tags"])
    assert str(error) == f"{path}:4:3: multi-valued column 'tags': the weight in 't2:1e999' {REACH}"


# -- libFM / libFFM tokens --------------------------------------------------------------------


def test_libfm_token_without_a_colon_is_located_by_character(write_text):
    path = write_text("data.libfm", "1 0:1 5:1\n0 1:1 6\n")
    assert str(error_of(read_frame, path)) == f"{path}:2:7: expected idx:value, got '6'"


def test_libfm_non_numeric_value_is_located_by_character(write_text):
    path = write_text("data.libfm", "1 0:1 5:1\n0 12:1  6:x\n")
    assert str(error_of(read_frame, path)) == f"{path}:2:9: feature value must be a number, got 'x'"


def test_libfm_non_integer_index_is_located_by_character(write_text):
    path = write_text("data.libfm", "1 0:1\n1 0:1\n0 a:1\n")
    assert str(error_of(read_frame, path)) == f"{path}:3:3: feature index must be a non-negative integer of at most 18 digits, got 'a'"


def test_libfm_negative_index_is_rejected(write_text):
    path = write_text("data.libfm", "1 0:1 -4:1\n")
    assert str(error_of(read_frame, path)) == f"{path}:1:7: feature index must be a non-negative integer of at most 18 digits, got '-4'"


def test_libfm_infinite_value_and_overlong_index_are_located(write_text):
    path = write_text("data.libfm", "1 0:1 5:1\n0 3:1e999\n")
    assert str(error_of(read_frame, path)) == f"{path}:2:3: feature value {REACH}, got '1e999'"
    path = write_text("big.libfm", "1 0:1 5:1.7e19\n0 2:1 3:-1e30\n")  # finite in float32, its square is not
    assert str(error_of(read_frame, path)) == f"{path}:2:7: feature value {REACH}, got '-1e30'"
    path = write_text("data2.libfm", "1 0:1\n0 99999999999999999999:1\n")
    assert str(error_of(read_frame, path)) == (
        f"{path}:2:3: feature index must be a non-negative integer of at most 18 digits, got '99999999999999999999'")


def test_libfm_character_column_counts_leading_whitespace(write_text):
    path = write_text("data.libfm", "1 0:1\n   0 1:1 2;1\n")
    assert str(error_of(read_frame, path)) == f"{path}:2:10: expected idx:value, got '2;1'"


def test_libffm_token_with_two_parts_is_located(write_text):
    path = write_text("data.ffm", "1 0:1:1 1:2:1\n0 0:1:1 2:1\n")
    assert str(error_of(read_frame, path)) == f"{path}:2:9: expected field:idx:value, got '2:1'"


def test_libffm_non_integer_field_is_located(write_text):
    path = write_text("data.ffm", "1 0:1:1\n0 x:1:1\n")
    assert str(error_of(read_frame, path)) == f"{path}:2:3: field must be a non-negative integer of at most 18 digits, got 'x'"


def test_gzipped_libfm_bad_token_is_located(write_text):
    path = write_text("data.libfm.gz", "1 0:1\n0 1:1 2:?\n")
    assert str(error_of(read_frame, path)) == f"{path}:2:7: feature value must be a number, got '?'"


# -- a model that does not match the data -----------------------------------------------------


def test_file_lacking_a_column_the_encoder_needs_is_a_data_error(write_table):
    train = write_table("train.csv", {"label": [1, 0], "city": ["a", "b"], "shop": ["x", "y"]})
    test = write_table("test.csv", {"label": [1, 0], "city": ["a", "b"]})
    encoder = fit(train)
    error = error_of(encoder.transform, read_frame(test))
    assert str(error) == f"{test}:1: column 'shop' is required by the model but not in the file"


def test_model_directory_applied_to_a_file_lacking_a_column_is_a_data_error(tmp_path, ctr_csv, write_table):
    from deepfm.api import Estimator

    train = ctr_csv("train.csv", rows=200)
    model_dir = tmp_path / "model"
    Estimator(model={"name": "fm", "embed_dim": 4}, training={"epochs": 1, "batch_size": 64}).fit(
        train, out=model_dir, progress=False)
    table = read_frame(train)
    columns = {"label": table.labels.to_pylist()}
    columns.update({n: a.to_pylist() for n, a in table.columns.items() if n != "C3"})
    test = write_table("test.csv", columns)
    error = error_of(Estimator.load(model_dir).evaluate, test)
    assert str(error) == f"{test}:1: column 'C3' is required by the model but not in the file"


def test_single_valued_model_column_given_as_multi_valued_is_a_data_error(write_table):
    train = write_table("train.csv", {"label": [1, 0], "tags": ["a|b", "c"]})
    encoder = fit(train, multi=("tags",))
    error = error_of(encoder.transform, read_frame(train))  # read without --multi
    assert str(error) == f"{train}:1: column 'tags' must be multi-valued (--multi)"


def test_a_headerless_delimited_file_is_told_to_add_a_header(tmp_path):
    from deepfm.data.readers import ChunkedFile, read_frame
    from deepfm.errors import DataError

    path = tmp_path / "u.data"
    path.write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    with pytest.raises(DataError, match="looks like data, not a header") as error:
        read_frame(path, "tsv", label="rating")
    assert str(error.value).startswith(f"{path}:1:1: the first line looks like data, not a header (196\\t242\\t3\\t")
    command = str(error.value).split("e.g. user\\titem\\trating\\ttimestamp: ")[1]  # in the file's own separator
    subprocess.run(command, shell=True, check=True, cwd=tmp_path)  # the command it gives adds that header
    assert read_frame(tmp_path / "with-header-u.data", "tsv", label="rating").num_rows == 2


def test_a_pipe_or_standard_input_is_refused_saying_to_save_the_rows_to_a_file(tmp_path):
    import os

    fifo = tmp_path / "rows.csv"
    os.mkfifo(fifo)
    assert "is not a regular file (a pipe or a device" in str(error_of(read_frame, fifo))
    assert "standard input is not read" in str(error_of(read_frame, "-"))


@pytest.mark.parametrize("content, says", [
    ("label,user\n1,a\n0,b\n".encode("utf-16"), "UTF-16 text (it starts with a UTF-16 byte-order mark)"),
    (b"PK\x03\x04" + bytes(range(200)), "a zip archive (a spreadsheet saved as .xlsx?), not text")])
def test_utf16_text_and_a_zip_archive_are_named_as_such(tmp_path, content, says):
    path = tmp_path / "export.csv"
    path.write_bytes(content)
    error = error_of(lambda: fit(path))
    assert says in str(error) and error.line == 1


def test_the_did_you_mean_for_a_column_skips_columns_the_model_reads_itself():
    est = Estimator(data={"categorical": ("city", "City")}, model={"name": "lr"}, training={"epochs": 1})
    est.fit(pa.table({"label": [1, 0, 1, 0], "city": ["a", "b", "a", "c"], "City": ["x", "y", "x", "y"]}), progress=False)
    error = error_of(est.predict, pa.table({"City": ["a", "b"]}))
    assert str(error) == "<table>:1: column 'city' is required by the model but not in the table"  # not "the file"
    error = error_of(Estimator(data={"categorical": ("colour",)}).fit, pa.table({"label": [1, 0], "color": ["a", "b"]}))
    assert str(error).startswith("<table>:1: --categorical (data.categorical) names column 'colour', which is not in the "
                                 "table (columns: color); did you mean 'color'?")


def test_a_parquet_file_named_like_text_says_how_to_read_it(tmp_path):
    path = tmp_path / "rows.csv"
    pq.write_table(pa.table({"label": [1, 0], "user": ["a", "b"]}), path)
    assert "a Parquet file: name it .parquet (or .pq), or give --format parquet" in str(error_of(lambda: fit(path)))
    named = tmp_path / "rows.parquet"  # named so, read as CSV by a --format: renaming it is not the fix (a new user's)
    pq.write_table(pa.table({"label": [1, 0], "user": ["a", "b"]}), named)
    assert str(error_of(read_frame, named, fmt="csv")).endswith(
        "a Parquet file, read as text by the --format given: leave --format out, or give --format parquet")


def test_lines_ending_in_a_carriage_return_alone_are_named_with_the_conversion(tmp_path):
    """Classic Mac OS line ends: every line read as the first (it was csv's "new-line character seen in unquoted
    field" traceback)."""
    text = b"label,user,city\r1,u1,c1\r0,u2,c2\r"
    (tmp_path / "mac.csv").write_bytes(text)
    (tmp_path / "my mac.csv.gz").write_bytes(gzip.compress(text))
    plain, compressed = error_of(read_frame, tmp_path / "mac.csv"), error_of(read_frame, tmp_path / "my mac.csv.gz")
    assert (plain.line, plain.column) == (compressed.line, compressed.column) == (1, 16)
    assert "end in a carriage return alone" in str(plain)
    assert str(plain).endswith(f"tr '\\r' '\\n' < {tmp_path / 'mac.csv'} > lf-mac.csv")
    assert str(compressed).endswith(f"gunzip -c -- '{tmp_path / 'my mac.csv.gz'}' | tr '\\r' '\\n' | gzip > "
                                    "'lf-my mac.csv.gz'")  # the shell's quotes; not tr on gzip bytes


# -- in-memory tables: what Arrow holds that no file column does -----------------------------------


def test_an_arrow_table_with_a_repeated_column_name_is_refused_naming_it():
    table = pa.table([pa.array([1, 2] * 10), pa.array([3, 4] * 10), pa.array([0, 1] * 10)], names=["age", "age", "label"])
    assert str(error_of(Estimator(training={"epochs": 1}).fit, table, progress=False)) == (
        "<table>:1: duplicate column names: ['age']")


@pytest.mark.parametrize("column", [pa.array([{"a": 1}, {"a": 2}] * 10),
                                    pa.array([[("k", 1)], [("j", 2)]] * 10, pa.map_(pa.string(), pa.int64()))],
                         ids=["struct", "map"])
def test_a_struct_or_map_column_is_refused_naming_it_and_how_to_leave_it_out(column):
    table = pa.table({"city": ["a", "b"] * 10, "parts": column, "label": [0, 1] * 10})
    error = error_of(Estimator(training={"epochs": 1}).fit, table, progress=False)
    assert str(error) == (f"<table>:1:2: column 'parts' holds {column.type} values: deepfm reads text, numbers, booleans, "
                          "times and lists of ids; give its parts as columns of their own, or leave it out (--ignore, "
                          "data.ignore)")
    Estimator(training={"epochs": 1}, data={"ignore": ["parts"]}).fit(table, progress=False)  # as it says


def test_a_dataframe_of_complex_numbers_is_a_value_error_naming_the_column():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"v": [1 + 1j, 2 + 0j] * 10, "label": [0, 1] * 10})
    with pytest.raises(ValueError, match="Conversion failed for column v with type complex128"):
        Estimator(training={"epochs": 1}).fit(frame, progress=False)


def test_a_dataframe_column_of_two_types_is_a_data_error_at_its_first_row_of_the_other():
    """A 'yes' among a label column's integers was a ConfigError naming no row (a new user's DataFrame)."""
    pd = pytest.importorskip("pandas")
    from deepfm.sklearn import FMClassifier

    frame = pd.DataFrame({"user": ["a", "b", "c", "d"] * 1500, "label": pd.Series([0, 1, 0, 1] * 1500, dtype=object)})
    frame.loc[4997, "label"] = "yes"
    error = error_of(Estimator(training={"epochs": 1}).fit, frame, progress=False)
    assert isinstance(error, DataError) and (error.line, error.column) == (4998, 2)
    assert str(error) == ("<table>:4998:2: column 'label' holds 'yes' (str) after rows of int: fix the value, make it "
                          "missing (pd.to_numeric(df['label'], errors='coerce')) or read the column as text "
                          "(df['label'].astype(str))")
    frame.index = range(1000, 1000 + len(frame))  # the row's index is said beside its position
    assert "holds 'yes' (str) at index 5997 after rows of int" in str(error_of(Estimator().fit, frame, progress=False))
    frame.index = pd.Index(np.arange(2000, 2000 + len(frame)))  # a shuffled or sampled frame's: numpy's integers
    assert "holds 'yes' (str) at index 6997 after" in str(error_of(Estimator().fit, frame, progress=False))  # not np.int64(…)
    frame.index = range(1000, 1000 + len(frame))
    frame["user"] = frame["user"].astype(object)
    frame.loc[1003, "user"] = 5
    assert str(error_of(Estimator().fit, frame, progress=False)).startswith(
        "<table>:4:1: column 'user' holds 5 (int) at index 1003 after rows of str: give the column one type (e.g. "
        "df['user'].astype(str))")
    X = pd.DataFrame({"user": ["a", "b"] * 10, "price": pd.Series([float(i) for i in range(20)], dtype=object)})
    X.loc[10, "price"] = "abc"
    with pytest.raises(DataError, match=r"^X:11:2: column 'price' holds 'abc' \(str\) after rows of float"):
        FMClassifier(epochs=1).fit(X, [0, 1] * 10)
    y = pd.Series([0, 1] * 10, dtype=object)
    y[5] = "yes"  # scikit-learn's check said only "Unknown label type: unknown"
    with pytest.raises(ValueError, match=r"^y: position 5 holds 'yes' \(str\) after labels of int: give y one type"):
        FMClassifier(epochs=1).fit(X.assign(price=1.0), y)


def test_encoding_or_predicting_before_a_fit_says_to_fit_or_load_first():
    for method in (Estimator().encode, Estimator().predict):
        with pytest.raises(RuntimeError, match=r"call fit\(\) or Estimator.load\(\)"):
            method(pa.table({"city": ["a"]}))


@pytest.mark.parametrize("fmt, lines, first", [("libfm", "1 3:1 5:1\n0 2:1 4:1\n", "3:1 5:1\n"),
                                               ("libffm", "1 0:3:1 1:5:1\n0 0:2:1 1:4:1\n", "0:3:1 1:5:1\n")])
def test_a_libfm_line_without_its_label_is_located_not_its_first_feature_read_as_one(tmp_path, fmt, lines, first):
    """predict reads no label: a file of features alone lost each line's first feature without a word."""
    from deepfm.cli import main

    (tmp_path / f"train.{fmt}").write_text(lines * 4)
    (tmp_path / f"score.{fmt}").write_text(lines + first)
    assert main(["train", "--train", str(tmp_path / f"train.{fmt}"), "--model", "fm", "--epochs", "1",
                 "--out", str(tmp_path / "m"), "--quiet"]) == 0
    error = error_of(lambda: Estimator.load(tmp_path / "m").predict(tmp_path / f"score.{fmt}"))
    assert (error.line, error.column) == (3, 1)
    assert f"the line starts with a feature ('{first.split()[0]}'), not a label" in str(error)


@pytest.mark.parametrize("stream", ["off", "on"])
def test_a_line_that_repeats_the_header_is_located_not_read_as_a_row(tmp_path, stream):
    """Two CSVs joined with their headers: the second header was a class 'label' in multiclass training, and a row
    scored by predict, where no numeric column refused it."""
    rows = [f"u{i % 31},i{i % 17},{i % 3}" for i in range(3000)]
    path = tmp_path / "joined.csv"
    path.write_text("\n".join(["user,item,label", *rows[:1500], "user,item,label", *rows[1500:]]) + "\n")
    error = error_of(lambda: Estimator(model={"name": "lr"}, data={"task": "multiclass", "stream": stream, "chunk_rows": 1000},
                                       training={"epochs": 1}).fit(path, progress=False))
    assert (error.line, error.column) == (1502, 1) and "this line repeats the header" in str(error), str(error)


def test_a_libfm_row_that_breaks_the_positions_ranges_after_the_first_chunk_is_located(tmp_path):
    """The first chunk's rows made positional fields f1..f5; a later row's field-1 index at position 2 was then
    trained as a value of f2 without a word. Streamed, it is located; in memory (or read in one piece), the file is one
    multi-valued field."""
    lines = [f"{i % 2} " + " ".join(f"{j * 20 + (i * 7 + j) % 20}:1" for j in range(5)) for i in range(600)]
    tokens = lines[500].split()
    tokens[2] = "9:1"  # position 2 (f2's range 20-39) holds an index of f1's range (0-19)
    lines[500] = " ".join(tokens)
    path = tmp_path / "positions.libfm"
    path.write_text("\n".join(lines) + "\n")
    error = error_of(lambda: Estimator(model={"name": "fm"}, data={"stream": "on", "chunk_rows": 100},
                                       training={"epochs": 1}).fit(path, progress=False))
    assert error.line == 501 and "so the file was read as 5 positional fields (f1..f5)" in str(error), str(error)
    for chunk_rows in (100, 10_000):
        whole = Estimator(model={"name": "fm"}, data={"chunk_rows": chunk_rows}, training={"epochs": 1}).fit(
            path, progress=False)
        assert [spec.name for spec in whole.encoder.fields] == ["features"]


def test_the_first_libfm_row_that_joins_the_positions_ranges_is_the_one_located(tmp_path):
    """Rows 302 and 303 each fit the first chunk's ranges, but not together: 303 is the row that breaks them
    (a reviewer's: row 301, which broke nothing, was blamed)."""
    lines = [f"{i % 2} {i % 20}:1 {100 + i % 20}:1" for i in range(300)] + ["1 5:1 105:1", "0 18:1 50:1", "1 60:1 110:1"]
    path = tmp_path / "pos.libfm"
    path.write_text("\n".join(lines) + "\n")
    error = error_of(lambda: Estimator(model={"name": "fm"}, data={"stream": "on", "chunk_rows": 100},
                                       training={"epochs": 1}).fit(path, progress=False))
    assert error.line == 303 and "this row's indices [60, 110] fall in other positions' ranges" in str(error), str(error)


@pytest.mark.parametrize("name, fmt, hint", [("comma.tsv", "auto", "one column holding commas: a comma-separated file "
                                                                   "reads with --format csv"),
                                             ("tabs.csv", "csv", "one column holding tabs: a tab-separated file reads "
                                                                 "with --format tsv")])
def test_a_header_read_with_the_other_delimiter_names_the_format_that_reads_it(tmp_path, name, fmt, hint):
    delimiter = "," if name.endswith(".tsv") else "\t"
    path = tmp_path / name
    path.write_text(delimiter.join(["label", "user"]) + "\n" + delimiter.join(["1", "a"]) + "\n")
    error = error_of(lambda: Estimator(model={"name": "lr"}, data={"format": fmt}).fit(path, progress=False))
    assert str(error).endswith(hint), str(error)


def test_criteo_rows_with_a_trailing_tab_are_named_as_such_not_read_as_a_header(tmp_path):
    """Auto-detection saw 41 tab-separated fields, read the first row as a TSV header and said 'duplicate column
    names' (or, without a repeated value, trained on a header of data)."""
    fields = ["1"] + [str(i) for i in range(13)] + [f"{i:08x}" for i in range(26)]
    path = tmp_path / "day_0.txt"
    path.write_text(("\t".join(fields) + "\t\n") * 20)
    error = error_of(lambda: Estimator(model={"name": "lr"}).fit(path, progress=False))
    assert (error.line, error.column) == (1, 41) and "Criteo's 40 fields (a 0/1 label first) with a tab after" in str(error)


def test_a_header_whose_quoted_name_runs_over_a_line_break_is_located(tmp_path):
    """It read as a header of fewer columns, and the error was about the third line's fields."""
    path = tmp_path / "header.csv"
    path.write_text('label,"us\ner",item\n1,a,b\n0,c,d\n')
    error = error_of(lambda: Estimator(model={"name": "lr"}).fit(path, progress=False))
    assert (error.line, error.column) == (1, 2) and "the header leaves a quote open" in str(error), str(error)
