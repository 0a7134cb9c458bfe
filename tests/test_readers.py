"""Reading CSV, TSV, Parquet, Criteo, libFM and libFFM files (plain or gzipped) into a RawFrame."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepfm.data.formats import CRITEO_COLUMNS, detect_format
from deepfm.data.readers import read_frame
from deepfm.data.sparse import LEFT_OUT
from deepfm.errors import DataError, DataWarning


def strings(array: pa.Array) -> list:
    return array.to_pylist()


# -- CSV / TSV --------------------------------------------------------------------------------


def test_csv_columns_are_read_as_text_with_the_label_split_off(write_table):
    path = write_table("data.csv", {"label": [1, 0, 1], "city": ["paris", "rome", "oslo"], "price": ["1.5", "2", "3.25"]})
    frame = read_frame(path)
    assert frame.format == "csv"
    assert list(frame.columns) == ["city", "price"]
    assert strings(frame.labels) == ["1", "0", "1"]
    assert strings(frame.columns["city"]) == ["paris", "rome", "oslo"]
    assert strings(frame.columns["price"]) == ["1.5", "2", "3.25"]
    assert frame.num_rows == 3


def test_csv_empty_fields_are_missing_values(write_table):
    path = write_table("data.csv", {"label": [1, 0], "city": [None, "rome"], "price": ["1.5", None]})
    frame = read_frame(path)
    assert strings(frame.columns["city"]) == [None, "rome"]
    assert strings(frame.columns["price"]) == ["1.5", None]


def test_csv_first_data_row_is_line_two_and_columns_are_numbered_from_one(write_table):
    path = write_table("data.csv", {"city": ["a"], "label": [1], "price": ["2.0"]})
    frame = read_frame(path)
    assert frame.first_line == 2
    assert frame.column_numbers == {"city": 1, "label": 2, "price": 3}
    assert frame.label_column_number == 2


def test_csv_quoted_field_may_contain_the_delimiter(write_text):
    path = write_text("data.csv", 'label,city\n1,"paris, fr"\n0,rome\n')
    assert strings(read_frame(path).columns["city"]) == ["paris, fr", "rome"]


@pytest.mark.parametrize("name", ["train.csv", "train.tsv"])
def test_a_byte_order_mark_before_the_header_is_not_part_of_the_first_name(tmp_path, name):
    sep = "," if name.endswith("csv") else "\t"
    path = tmp_path / name
    path.write_bytes(("\ufefflabel" + sep + "city\n1" + sep + "a\n0" + sep + "b\n").encode("utf-8"))
    frame = read_frame(path)
    assert list(frame.columns) == ["city"] and frame.labels.to_pylist() == ["1", "0"]


def test_csv_label_column_can_be_renamed(write_table):
    path = write_table("data.csv", {"clicked": [1, 0], "city": ["a", "b"]})
    frame = read_frame(path, label="clicked")
    assert strings(frame.labels) == ["1", "0"]
    assert list(frame.columns) == ["city"]


def test_csv_without_label_is_readable_for_prediction(write_table):
    path = write_table("data.csv", {"city": ["a", "b"]})
    frame = read_frame(path, require_label=False)
    assert frame.labels is None
    assert frame.num_rows == 2


@pytest.mark.parametrize("name", ["rows.csv", "rows.tsv", "rows.csv.gz"])
@pytest.mark.parametrize("columns", [["city", "shop"], ["label", "city", "shop"]])
def test_an_empty_line_among_rows_to_score_is_located_not_scored(tmp_path, name, columns):
    import gzip

    delimiter = "\t" if name.endswith(".tsv") else ","
    rows = [columns, ["1", "a", "x"][-len(columns):], [], *[["0", "b", "y"][-len(columns):]] * 3]
    text = "".join(delimiter.join(row) + "\n" for row in rows)
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    with pytest.raises(DataError) as caught:
        read_frame(path, require_label=False)
    assert (caught.value.line, caught.value.column) == (3, 1)
    assert "empty line" in str(caught.value)


def test_a_row_of_missing_values_to_score_is_kept_as_a_row(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("city,shop\na,x\n,\nb,y\n")
    assert read_frame(path, require_label=False).num_rows == 3


def test_csv_without_label_is_an_error_when_the_label_is_required(write_table):
    path = write_table("data.csv", {"city": ["a", "b"]})
    with pytest.raises(DataError) as caught:
        read_frame(path)
    assert str(caught.value) == f"{path}:1: no label column 'label' (columns: city); training names it with --label (data.label in a config file or in Estimator(data=...)), and evaluate reads the model's label column unless its --label names this file's"


def test_tsv_file_is_read_by_its_name(write_table):
    path = write_table("data.tsv", {"label": [1, 0], "city": ["paris, fr", "rome"]}, delimiter="\t")
    frame = read_frame(path)
    assert frame.format == "tsv"
    assert strings(frame.columns["city"]) == ["paris, fr", "rome"]


def test_tab_separated_file_with_another_name_is_read_as_tsv(write_table):
    path = write_table("data.txt", {"label": [1, 0], "city": ["a", "b"]}, delimiter="\t")
    frame = read_frame(path)
    assert frame.format == "tsv"
    assert list(frame.columns) == ["city"]


def test_explicit_format_overrides_detection(write_table):
    path = write_table("data.tsv", {"label": [1, 0], "city": ["a", "b"]}, delimiter=",")
    assert read_frame(path, fmt="csv").format == "csv"
    assert strings(read_frame(path, fmt="csv").columns["city"]) == ["a", "b"]


def test_synthetic_ctr_table_written_as_csv_reads_back_whole(ctr_csv):
    frame = read_frame(ctr_csv(rows=120, seed=3))
    assert frame.num_rows == 120
    assert set(frame.columns) == {"I1", "I2", "I3"} | {f"C{i}" for i in range(1, 9)}
    assert set(strings(frame.labels)) <= {"0", "1"}


# -- Parquet ----------------------------------------------------------------------------------


def test_parquet_keeps_column_types_and_nulls(tmp_path):
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({
        "label": pa.array([1, 0, 1]),
        "city": pa.array(["a", None, "c"]),
        "price": pa.array([1.5, None, 3.0]),
        "count": pa.array([3, 4, 5]),
    }), path)
    frame = read_frame(path)
    assert frame.format == "parquet"
    assert list(frame.columns) == ["city", "price", "count"]
    assert frame.labels.to_pylist() == [1, 0, 1]
    assert frame.columns["city"].to_pylist() == ["a", None, "c"]
    assert pa.types.is_floating(frame.columns["price"].type)
    assert frame.columns["price"].to_pylist() == [1.5, None, 3.0]
    assert pa.types.is_integer(frame.columns["count"].type)


def test_pq_suffix_is_parquet(tmp_path):
    path = tmp_path / "data.pq"
    pq.write_table(pa.table({"label": [0, 1], "x": ["a", "b"]}), path)
    assert read_frame(path).format == "parquet"


# -- Criteo -----------------------------------------------------------------------------------


def test_criteo_raw_tsv_has_forty_named_fields(criteo_row, write_criteo):
    path = write_criteo("day_0.txt", [criteo_row(1, seed=0), criteo_row(0, seed=1)])
    frame = read_frame(path)
    assert frame.format == "criteo"
    assert list(frame.columns) == CRITEO_COLUMNS[1:]
    assert strings(frame.labels) == ["1", "0"]
    assert strings(frame.columns["I1"]) == ["1", "2"]
    assert strings(frame.columns["C26"]) == ["c26_0", "c26_1"]
    assert frame.first_line == 1


def test_criteo_rows_without_the_label_are_read_for_prediction_only(criteo_row, write_criteo, tmp_path):
    labelled = write_criteo("day_0.txt", [criteo_row(1, seed=0), criteo_row(0, seed=1)])
    unlabelled = tmp_path / "test.txt"  # as Kaggle's test.txt: 39 fields, the label left out
    unlabelled.write_text("".join(line.split("\t", 1)[1] for line in labelled.read_text().splitlines(keepends=True)))
    frame = read_frame(unlabelled, fmt="criteo", require_label=False)
    assert frame.labels is None and list(frame.columns) == CRITEO_COLUMNS[1:]
    assert strings(frame.columns["C26"]) == strings(read_frame(labelled).columns["C26"])
    with pytest.raises(DataError, match="expected 40 fields, found 39: Criteo's features without the label, which "
                                        "training and evaluating read first on each row \\(deepfm predict scores"):
        read_frame(unlabelled, fmt="criteo")  # training and evaluation need the label
    truncated = tmp_path / "truncated.txt"  # a later row of 39 fields is a row that lost one: said as such
    truncated.write_text(labelled.read_text() + labelled.read_text().splitlines()[0].rsplit("\t", 1)[0] + "\n")
    with pytest.raises(DataError, match="expected 40 fields, found 39: every row needs a field"):
        read_frame(truncated, fmt="criteo")
    broken = tmp_path / "broken.txt"  # labelled rows, but the first one lost a field: the message says how it was read
    lines = labelled.read_text().splitlines(keepends=True)
    broken.write_text(lines[0].split("\t", 1)[1] + "".join(lines[1:]))
    with pytest.raises(DataError, match="expected 39 fields, found 40 \\(the first line has 39 fields, so the file is "
                                        "read as Criteo rows without the label\\)"):
        read_frame(broken, fmt="criteo", require_label=False)


def test_criteo_fixes_integer_fields_numeric_and_hashed_fields_categorical(criteo_row, write_criteo):
    frame = read_frame(write_criteo("day_0.txt", [criteo_row(1), criteo_row(0, seed=1)]))
    assert all(frame.kinds[f"I{i}"] == "numeric" for i in range(1, 14))
    assert all(frame.kinds[f"C{i}"] == "categorical" for i in range(1, 27))


def test_criteo_empty_fields_are_missing(criteo_row, write_criteo):
    path = write_criteo("day_0.txt", [criteo_row(1, missing=("I3", "C7")), criteo_row(0, seed=1)])
    frame = read_frame(path)
    assert strings(frame.columns["I3"]) == [None, "4"]
    assert strings(frame.columns["C7"]) == [None, "c7_1"]


def test_criteo_columns_are_numbered_by_field_position(criteo_row, write_criteo):
    frame = read_frame(write_criteo("day_0.txt", [criteo_row(1), criteo_row(0)]))
    assert frame.column_numbers["label"] == 1
    assert frame.column_numbers["I1"] == 2
    assert frame.column_numbers["C1"] == 15
    assert frame.column_numbers["C26"] == 40


# -- libFM ------------------------------------------------------------------------------------


def test_libfm_fixed_width_rows_with_disjoint_ranges_become_positional_fields(write_text):
    path = write_text("data.libfm", "1 0:1 10:1 20:1\n0 1:1 11:1 22:1\n1 2:1 10:1 21:1\n")
    frame = read_frame(path)
    assert list(frame.columns) == ["f1", "f2", "f3"]
    assert strings(frame.columns["f1"]) == ["0", "1", "2"]
    assert strings(frame.columns["f2"]) == ["10", "11", "10"]
    assert strings(frame.columns["f3"]) == ["20", "22", "21"]
    assert all(kind == "categorical" for kind in frame.kinds.values())
    assert strings(frame.labels) == ["1", "0", "1"]


def test_libfm_positional_fields_take_each_rows_tokens_in_index_order(write_text):
    """A row is a sparse vector: one line's tokens swapped (with weights) is the same row, not an overlap that turned
    every field into one multi-valued column (in memory), nor values in the wrong fields (streamed, by the layout)."""
    path = write_text("data.libfm", "1 0:1 10:0.5 20:1\n0 11:2 1:1 22:1\n1 2:1 10:1 21:1\n")
    for frame in (read_frame(path), read_frame(path, layout=read_frame(path).kinds)):
        assert [strings(frame.columns[f]) for f in ("f1", "f2", "f3")] == [["0", "1", "2"], ["10", "11", "10"],
                                                                          ["20", "22", "21"]]
        assert frame.weights["f2"].to_pylist() == [0.5, 2.0, 1.0] and "f1" not in frame.weights  # f1's are all 1


def test_a_libfm_positional_field_left_out_is_read_past_and_rows_of_another_width_are_refused(write_text):
    """A new user's --ignore f1 passed the name check, then every row was 'wider than the model's 9 features'."""
    from deepfm.errors import DataError

    path = write_text("data.libfm", "1 0:1 10:1 20:1\n0 1:1 11:1 22:1\n1 2:1 10:1 21:1\n")
    frame = read_frame(path, layout={"f2": "categorical", "f3": "categorical"})
    assert list(frame.columns) == ["f2", "f3"] and strings(frame.columns["f3"]) == ["20", "22", "21"]
    narrow = write_text("narrow.libfm", "1 0:1 10:1\n")
    with pytest.raises(DataError, match=r"reads 3 positional features per row \(some left out\), this row has 2"):
        read_frame(narrow, layout={"f2": "categorical", "f3": "categorical"})
    with pytest.raises(DataError, match="the model reads the columns user, item, which a libFM row does not have"):
        read_frame(path, layout={"user": "categorical", "item": "categorical"})  # a model trained on a CSV file
    with pytest.raises(DataError, match=r"\(it was trained on a libFFM file\): score a libFFM file"):
        read_frame(path, layout={"field0": "categorical", "field1": "categorical"})  # one trained on libFFM rows
    wide = write_text("wide.libfm", "1 0:1 10:1 20:1 30:1\n")  # a reviewer's: a 4th feature dropped without a word
    with pytest.raises(DataError, match=r"reads 3 positional features per row, this row has 4"):
        read_frame(wide, layout={"f1": "categorical", "f2": "categorical", "f3": "categorical"})


@pytest.mark.parametrize("fmt, left_out", [("libfm", "f3"), ("libfm", "f1"), ("libffm", "field2")])
def test_a_model_that_left_out_a_field_reads_rows_at_the_training_width(write_text, tmp_path, fmt, left_out):
    """--ignore of a libFM file's last field trained (one reading pass), then every row of it was 'wider than the
    model's 2 positional features' when scored: the model keeps the fields it left out, and reads past them."""
    from deepfm import Estimator
    from deepfm.data.encoders import FeatureEncoder
    from deepfm.errors import DataError

    rng = np.random.default_rng(0)
    rows = [(rng.integers(0, 2), rng.integers(0, 5), 10 + rng.integers(0, 5), 20 + rng.integers(0, 5)) for _ in range(300)]
    line = "{} {}:1 {}:1 {}:1" if fmt == "libfm" else "{} 0:{}:1 1:{}:1 2:{}:1"
    path = write_text(f"train.{fmt}", "".join(line.format(*row) + "\n" for row in rows))
    model = Estimator(model={"name": "fm"}, data={"ignore": [left_out]}, training={"epochs": 1}).fit(path, progress=False)
    assert model.encoder.left_out == (left_out,) and left_out not in [spec.name for spec in model.encoder.fields]
    saved = FeatureEncoder.from_dict(model.encoder.to_dict())
    assert saved.left_out == (left_out,) and saved.layout == model.encoder.layout
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a libFFM field left out is not 'a field of this file the model does not know'
        assert len(model.predict(path)) == len(rows)
    if fmt == "libfm":
        narrow = write_text("narrow.libfm", "1 0:1 10:1\n")
        with pytest.raises(DataError, match=r"reads 3 positional features per row \(some left out\), this row has 2"):
            model.predict(narrow)


def test_libfm_positional_fields_with_all_unit_values_carry_no_weights(write_text):
    frame = read_frame(write_text("data.libfm", "1 0:1 10:1\n0 1:1 11:1\n"))
    assert frame.weights == {}


def test_libfm_positional_fields_keep_non_unit_values_as_weights(write_text):
    """Per field, as a libFFM file's: a field whose values are all 1 carries none (one value elsewhere made every
    positional field weighted, and the whole file's values were kept)."""
    frame = read_frame(write_text("data.libfm", "1 0:0.5 10:1\n0 1:2 11:1\n"))
    assert frame.weights["f1"].to_pylist() == [0.5, 2.0]
    assert "f2" not in frame.weights


def test_libfm_overlapping_index_ranges_become_one_multi_valued_column(write_text):
    path = write_text("data.libfm", "1 0:1 5:1\n0 6:1 7:1\n")  # position 1 reaches 6, position 2 starts at 5
    frame = read_frame(path)
    assert list(frame.columns) == ["features"]
    assert frame.kinds["features"] == "multi"
    assert frame.columns["features"].to_pylist() == [["0", "5"], ["6", "7"]]


def test_libfm_rows_of_different_lengths_become_one_multi_valued_column_with_values_as_weights(write_text):
    frame = read_frame(write_text("data.libfm", "1 0:1 5:0.25\n0 1:1 6:1 8:3\n"))
    assert list(frame.columns) == ["features"]
    assert frame.columns["features"].to_pylist() == [["0", "5"], ["1", "6", "8"]]
    assert frame.weights["features"].to_pylist() == [[1.0, 0.25], [1.0, 1.0, 3.0]]


def test_libfm_accepts_tabs_and_repeated_spaces_between_tokens(write_text):
    frame = read_frame(write_text("data.libfm", "1\t0:1  5:1\n0 1:1\t\t6:1\n"))
    assert strings(frame.columns["f1"]) == ["0", "1"]
    assert strings(frame.columns["f2"]) == ["5", "6"]


# -- libFFM -----------------------------------------------------------------------------------


def test_libffm_gives_one_column_per_field(write_text):
    path = write_text("data.libffm", "1 0:3:1 1:7:1\n0 0:4:1 1:8:1\n")
    frame = read_frame(path)
    assert frame.format == "libffm"
    assert list(frame.columns) == ["field0", "field1"]
    assert strings(frame.columns["field0"]) == ["3", "4"]
    assert strings(frame.columns["field1"]) == ["7", "8"]
    assert frame.kinds == {"field0": "categorical", "field1": "categorical"}


def test_libffm_field_with_several_features_in_a_row_is_multi_valued(write_text):
    frame = read_frame(write_text("data.ffm", "1 0:3:1 1:7:0.5\n0 0:4:1 1:8:1 1:9:2\n"))
    assert frame.kinds["field1"] == "multi"
    assert frame.columns["field1"].to_pylist() == [["7"], ["8", "9"]]
    assert frame.weights["field1"].to_pylist() == [[0.5], [1.0, 2.0]]


def test_a_second_value_of_a_libffm_field_the_model_reads_once_a_row_is_located_at_its_token(write_text):
    """It was said at column 1 (the label), wherever the second value stood."""
    frame = read_frame(write_text("train.libffm", "1 0:3:1 1:7:1\n0 0:4:1 1:8:1\n"))
    with pytest.raises(DataError, match="field 1 has one value per row in the model, this row has 2") as error:
        read_frame(write_text("more.libffm", "1 0:3:1 1:7:1\n0 0:4:1  1:8:1 1:9:1\n"), layout=frame.kinds)
    assert (error.value.line, error.value.column) == (2, 16)


def test_a_libfm_model_given_libffm_rows_says_which_file_it_reads(write_text):
    """It was a ValueError from int('') (a new user's); the other way round was already a located error."""
    path = write_text("test.libffm", "1 0:3:1 1:7:1\n")
    for layout, origin in [({"f1": "categorical", "f2": "categorical"}, r"a libFM file\): score a libFM file"),
                           ({"features": "multi"}, r"a libFM file\): score a libFM file"),
                           ({"user": "categorical"}, r"a table with a header\): score a file in that form")]:
        with pytest.raises(DataError, match=rf"reads the columns .*, which a libFFM row does not have \(it was trained on "
                                            rf"{origin}") as error:
            read_frame(path, layout=layout)
        assert (error.value.line, error.value.column) == (1, 1)


def test_a_libffm_field_the_model_left_out_is_not_named_among_the_fields_it_reads(write_text):
    path = write_text("test.libffm", "1 0:3:1 1:7:1 2:9:1\n")
    with pytest.warns(DataWarning, match=r"field\(s\) 2 of this file are not among the model's \(0\): their"):
        read_frame(path, layout={"field0": "categorical", "field1": LEFT_OUT})


@pytest.mark.parametrize("fmt, rows, bad, said", [
    ("libfm", "1 0:1 10:1\n", "1 0:1 10:1 20:1\n", r"the first rows read hold 2 features each, read as positional "
     r"fields f1..f2, but this row has 3: rows of varying width are one multi-valued field 'features' when the file is "
     r"read in one piece \(a --chunk-rows above its rows, one file rather than a glob\)"),
    ("libffm", "1 0:1:1 1:10:1\n", "1 0:1:1 1:10:1 1:11:1\n", r"field 1 held one value a row in the first rows "
     r"read, this row has 2: read in one piece \(a --chunk-rows above its rows, one file rather than a glob\), the field "
     r"is multi-valued"),
])
def test_a_later_chunk_unlike_the_first_rows_is_refused_as_such_not_as_unlike_a_model(write_text, fmt, rows, bad, said):
    """While a file is fitted, later chunks follow the columns its first chunk decided: the error says that, and how to
    read it instead (it said 'the model reads ...' of a model that did not exist yet)."""
    from deepfm.data.readers import ChunkedFile

    path = write_text(f"train.{fmt}", rows * 3000 + bad)
    with pytest.raises(DataError, match=said) as error:
        list(ChunkedFile(path, chunk_bytes=4 << 10).frames())
    assert error.value.line == 3001
    assert read_frame(path).kinds == ({"features": "multi"} if fmt == "libfm" else {"field0": "categorical",
                                                                                     "field1": "multi"})


def test_a_later_file_of_a_glob_unlike_the_first_rows_read_is_refused_as_such(write_text):
    """A glob's later files follow the columns the first file's first chunk decided, and say so when they differ."""
    from deepfm.data.filelist import ChunkedFiles
    from deepfm.data.readers import ChunkedFile

    first, second = write_text("a.libfm", "1 0:1 10:1\n" * 10), write_text("b.libfm", "1 0:1 10:1\n1 0:1 10:1 20:1\n")
    files = ChunkedFiles(first.parent / "*.libfm", [ChunkedFile(first), ChunkedFile(second)])
    with pytest.raises(DataError, match="the first rows read hold 2 features each") as error:
        list(files.frames())
    assert error.value.line == 2 and str(second) in str(error.value)


def test_libffm_scalar_field_keeps_non_unit_values_as_weights(write_text):
    frame = read_frame(write_text("data.ffm", "1 0:3:0.5\n0 0:4:1\n"))
    assert frame.weights["field0"].to_pylist() == [0.5, 1.0]


# -- gzip -------------------------------------------------------------------------------------


def test_gzipped_csv_reads_like_the_plain_file(write_table, tmp_path):
    columns = {"label": [1, 0, 1], "city": ["a", None, "c"]}
    plain = read_frame(write_table("data.csv", columns))
    packed = read_frame(write_table("data.csv.gz", columns))
    assert packed.format == "csv"
    assert strings(packed.columns["city"]) == strings(plain.columns["city"])
    assert strings(packed.labels) == strings(plain.labels)


def test_gzipped_libfm_is_detected_through_the_gz_suffix(write_text):
    frame = read_frame(write_text("data.libfm.gz", "1 0:1 10:1\n0 1:1 11:1\n"))
    assert frame.format == "libfm"
    assert strings(frame.columns["f2"]) == ["10", "11"]


def test_gzipped_libffm_content_is_detected_from_its_first_line(write_text):
    frame = read_frame(write_text("data.txt.gz", "1 0:3:1 1:7:1\n0 0:4:1 1:8:1\n"))
    assert frame.format == "libffm"


def test_gzipped_criteo_is_detected_from_its_first_line(criteo_row, write_criteo):
    frame = read_frame(write_criteo("day_0.gz", [criteo_row(1), criteo_row(0, seed=1)]))
    assert frame.format == "criteo"
    assert frame.num_rows == 2


# -- detect_format ----------------------------------------------------------------------------

CRITEO_LINE = "\t".join(["1"] + ["5"] * 13 + ["ab"] * 26)


@pytest.mark.parametrize(
    ("name", "first_line", "expected"),
    [
        ("a.parquet", None, "parquet"),
        ("a.PQ", None, "parquet"),
        ("a.libfm", "label,x", "libfm"),  # the name wins over the content
        ("a.libsvm", None, "libfm"),
        ("a.svm", None, "libfm"),
        ("a.libffm", None, "libffm"),
        ("a.ffm", None, "libffm"),
        ("a.libfm.gz", None, "libfm"),
        ("a.txt", "1 3:1 7:0.5", "libfm"),
        ("a.txt", "-1 3:1", "libfm"),
        ("a.txt", "1 0:3:1 1:7:0.5", "libffm"),
        ("a.txt", CRITEO_LINE, "criteo"),
        ("a.txt", "2" + CRITEO_LINE[1:], "tsv"),  # 40 fields but not a 0/1 label
        ("a.txt", "label\tx", "tsv"),
        ("a.tsv", "label", "tsv"),
        ("a.txt", "label,x", "csv"),
        ("a.csv", "label,x", "csv"),
        ("a", "label,x", "csv"),
        ("a.csv", "1,3:1,7:1", "csv"),  # colons but commas: still CSV
        ("a.csv.gz", "label,x", "csv"),
        ("a.tsv.gz", "label", "tsv"),
    ],
)
def test_detect_format_follows_the_auto_rule(tmp_path, write_text, name, first_line, expected):
    if first_line is None:
        path = tmp_path / name
        path.write_bytes(b"\x00not text")
    else:
        path = write_text(name, first_line + "\n")
    assert detect_format(path) == expected


def test_detect_format_of_a_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError) as caught:
        detect_format(tmp_path / "nope.csv")
    assert str(caught.value) == f"{tmp_path / 'nope.csv'}: file not found"


def test_read_frame_of_a_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_frame(tmp_path / "nope.csv")


# -- multi-valued columns ---------------------------------------------------------------------


def test_multi_column_splits_on_bar(write_table):
    frame = read_frame(write_table("data.csv", {"label": [1, 0], "tags": ["a|b|c", "d"]}), multi=["tags"])
    assert frame.kinds["tags"] == "multi"
    assert frame.columns["tags"].to_pylist() == [["a", "b", "c"], ["d"]]
    assert frame.weights["tags"].to_pylist() == [[1.0, 1.0, 1.0], [1.0]]


def test_multi_column_reads_optional_id_weight_pairs(write_table):
    frame = read_frame(write_table("data.csv", {"label": [1, 0], "tags": ["a|b:0.5|c:2", "d:-1.5"]}), multi=["tags"])
    assert frame.columns["tags"].to_pylist() == [["a", "b", "c"], ["d"]]
    assert frame.weights["tags"].to_pylist() == [[1.0, 0.5, 2.0], [-1.5]]


def test_multi_column_empty_or_missing_value_is_an_empty_set(write_table):
    frame = read_frame(write_table("data.csv", {"label": [1, 0, 1], "tags": ["a", None, "b|c"]}), multi=["tags"])
    assert frame.columns["tags"].to_pylist() == [["a"], [], ["b", "c"]]
    assert frame.weights["tags"].to_pylist() == [[1.0], [], [1.0, 1.0]]


def test_multi_column_separator_is_configurable(write_table):
    frame = read_frame(write_table("data.csv", {"label": [1], "tags": ["a;b"]}), multi=["tags"], separator=";")
    assert frame.columns["tags"].to_pylist() == [["a", "b"]]


def test_multi_column_leaves_other_columns_single_valued(write_table):
    frame = read_frame(write_table("data.csv", {"label": [1], "tags": ["a|b"], "city": ["x|y"]}), multi=["tags"])
    assert frame.columns["city"].to_pylist() == ["x|y"]
    assert frame.kinds["city"] == "auto"


def test_multi_column_works_for_parquet_strings(tmp_path):
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"label": [1, 0], "tags": ["a|b:2", None]}), path)
    frame = read_frame(path, multi=["tags"])
    assert frame.columns["tags"].to_pylist() == [["a", "b"], []]
    assert np.allclose(frame.weights["tags"].to_pylist()[0], [1.0, 2.0])


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_a_line_longer_than_a_parse_block_is_read(tmp_path, monkeypatch, suffix):
    import gzip

    import deepfm.data.delimited as delimited
    from deepfm.data.readers import ChunkedFile

    monkeypatch.setattr(delimited, "PARSE_BLOCK_SIZE", 1 << 10)  # Arrow parses 1 KB blocks where it can read again
    text = "label,c\n" + "".join(f"{i % 2},v{i}\n" for i in range(300)) + "1," + "x" * 5000 + "\n0,end\n"
    path = tmp_path / f"long{suffix}"
    path.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    frame = read_frame(path)
    assert frame.num_rows == 302 and frame.columns["c"][300].as_py() == "x" * 5000
    chunks = list(ChunkedFile(path, chunk_bytes=2 << 10).frames())
    assert len(chunks) > 1 and sum(f.num_rows for f in chunks) == 302


@pytest.mark.parametrize("size", [1, 3, 8, 64])
def test_a_plain_files_chunks_are_cut_where_reading_it_as_a_stream_cuts_them(size):
    """The index of a seekable file, searched in place, matches the cuts of the stream (.gz) reader:
    a chunk ends at a line end, a line longer than a chunk grows it, and a last line without a line
    end (not only blanks) is a chunk of its own."""
    import io
    import random

    from deepfm.data.readers import Chunk, _chunks_read_in_place, _line_blocks

    def streamed(data: bytes, offset: int) -> list[Chunk]:
        handle, chunks, line = io.BytesIO(data), [], 1
        handle.seek(offset)
        for block in _line_blocks(handle, size, b","):
            chunks.append(Chunk(offset, len(block), line))
            offset, line = offset + len(block), line + block.count(b"\n")
        return chunks

    rng = random.Random(size)
    texts = [b"", b"\n", b"a", b"ab\ncd", b"ab\ncd\n", b"abc\n  ", b"x" * 50 + b"\ny\n", b"\n\n\n"]
    texts += [bytes(rng.choice(b"ab \n") for _ in range(rng.randrange(200))) for _ in range(300)]
    texts += [bytes(rng.choice(b'ab \n"') for _ in range(rng.randrange(200))) for _ in range(300)]  # quoted line ends
    for text in texts:
        for offset in {0, min(2, len(text))}:
            assert list(_chunks_read_in_place(io.BytesIO(text), offset, 1, size, b",")) == streamed(text, offset), (text, offset)


@pytest.mark.parametrize("chunk_rows", [150, 200, 333])
def test_a_chunk_never_ends_inside_a_quoted_value_that_holds_line_breaks(tmp_path, chunk_rows):
    """Chunks are cut at a row's end, not at any line end: a valid CSV whose quoted values hold line breaks reads
    the same in chunks as whole (a cut inside one read as two broken rows: 'expected 3 fields, found 1')."""
    from deepfm.data.readers import ChunkedFile

    path = tmp_path / "notes.csv"
    rows = [f'{i % 2},u{i},"two\nlines {i}"' if i % 50 == 0 else f"{i % 2},u{i},plain {i}" for i in range(4000)]
    path.write_text("label,user,note\n" + "\n".join(rows) + "\n")
    whole = read_frame(path)
    assert whole.num_rows == 4000
    chunked = list(ChunkedFile(path, chunk_bytes=chunk_rows * 20).frames())
    assert len(chunked) > 5 and sum(frame.num_rows for frame in chunked) == 4000
    assert [v for frame in chunked for v in frame.columns["note"].to_pylist()] == whole.columns["note"].to_pylist()


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
@pytest.mark.parametrize("chunk_bytes", [1 << 10, 1500, 3000])
def test_a_quote_inside_an_unquoted_value_is_text_and_chunks_still_end_at_rows(tmp_path, suffix, chunk_bytes):
    """A quote opens a value only at a field's start (Arrow and Python's csv read 5'11" as text): with such a value
    before quoted values that hold line breaks, doubled quotes and CRLF line ends, the chunks hold the rows csv reads
    (the quote count took every later line end for one inside quotes, cut a quoted value in two and refused the file)."""
    import csv
    import gzip
    import io
    import random

    from deepfm.data.readers import ChunkedFile

    rng = random.Random(chunk_bytes)
    values = ["plain", "5'11\"", 'say "hi"', '"a, b"', '"two\nlines"', '"he said ""no"""', '"x\r\ny"', '""', "1\"2\"3"]
    rows = [f"{i % 2},{rng.choice(values)},v{i}" for i in range(600)]
    text = "label,note,key\r\n" + "\r\n".join(rows) + "\r\n"
    expected = list(csv.reader(io.StringIO(text, newline="")))[1:]
    path = tmp_path / f"notes{suffix}"
    path.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    frames = list(ChunkedFile(path, chunk_bytes=chunk_bytes).frames())
    assert len(frames) > 3
    assert [v for frame in frames for v in frame.columns["note"].to_pylist()] == [row[1] or None for row in expected]
    assert [v for frame in frames for v in frame.columns["key"].to_pylist()] == [f"v{i}" for i in range(600)]


def test_a_file_smaller_than_a_chunk_with_such_a_quote_is_one_chunk(tmp_path):
    from deepfm.data.readers import ChunkedFile

    path = tmp_path / "tiny.csv"
    path.write_text("label,height,note\n1,5'11\",a\n0,6ft,\"two\nlines\"\n1,5ft,b\n0,6ft,c\n")
    assert len(ChunkedFile(path).chunks()) == 1
    assert read_frame(path).columns["note"].to_pylist() == ["a", "two\nlines", "b", "c"]


def test_such_a_quote_before_a_quoted_value_longer_than_csvs_field_limit_still_cuts_at_rows(tmp_path):
    """Python's csv stops at 128 KB a value: the cut read quotes itself (the csv fallback grew the window to its end
    and cut inside a quoted value, then failed on its own limit with a traceback)."""
    from deepfm.data.readers import ChunkedFile

    for before in (2000, 2001, 2003):  # where the cuts fall decides which window meets the long value
        rows = [f"{i % 2},5'11\",v{i}" for i in range(before)] + ['1,"' + "y" * 200_000 + '",big']
        rows += [f'{i % 2},"line1\nline2",w{i}' if i % 2 else f"{i % 2},5'11\",s{i}" for i in range(20_000)]
        path = tmp_path / "big.csv"
        path.write_text("label,a,b\n" + "\n".join(rows) + "\n")
        keys = [v for frame in ChunkedFile(path, chunk_bytes=64 << 10).frames() for v in frame.columns["b"].to_pylist()]
        assert keys == [f"v{i}" for i in range(before)] + ["big"] + [f"{'w' if i % 2 else 's'}{i}" for i in range(20_000)]


# -- chunks of quoted text -------------------------------------------------------------------


def test_a_chunk_of_as_many_rows_as_lines_is_not_searched_for_line_ends_in_its_values(tmp_path, monkeypatch):
    """Counting each value's line ends takes a pass over every text column: a chunk that parses into as many rows as
    it has lines holds no value over two lines, so only the chunk that holds one is searched, and rows after it keep
    their lines."""
    from deepfm.data import readers
    from deepfm.data.stream import ChunkedFile

    lines = ["label,user,city"] + [f'{i % 2},"u{i % 97}",c{i % 13}' for i in range(12_000)]
    lines[6_500] = '1,"u1\nsecond line",c1'  # lines 6501-6502
    path = tmp_path / "quoted.csv"
    path.write_text("\n".join(lines) + "\n")
    searched, search = [], readers.lines_before_rows
    monkeypatch.setattr(readers, "lines_before_rows", lambda table, *rest: searched.append(table) or search(table, *rest))
    frames = list(ChunkedFile(path, chunk_bytes=20_000).frames())
    assert len(frames) > 3 and sum(frame.num_rows for frame in frames) == 12_000
    [holding] = [frame for frame in frames if frame.first_line <= 6_501 < frame.first_line + frame.num_rows]
    assert [table.num_rows for table in searched] == [holding.num_rows]
    after = frames[frames.index(holding) + 1]
    assert after.first_line == holding.first_line + holding.num_rows + 1  # one line more than rows before it


def test_lay_rows_writes_each_column_into_its_place_in_every_row_tile_by_tile():
    from deepfm.data.encoders import lay_rows

    columns = np.arange(3 * 10, dtype=np.int32).reshape(3, 10)
    rows = np.zeros((10, 3), np.int32)
    lay_rows(columns, rows, tile=4)
    assert (rows == columns.T).all()


@pytest.mark.parametrize("gzipped", [False, True])  # the chunk index read in place, and read block after block
def test_a_valid_quoted_value_longer_than_eight_small_chunks_is_read_whole(tmp_path, gzipped):
    """Blocks of ~1 KB (``--chunk-rows 10``) gave up on a value's quotes after 8 of them, so a valid 12 KB value over
    90 lines was cut and refused as a quote left open; the window now doubles up to ``GIVE_UP_BYTES``."""
    import gzip

    from deepfm.data.stream import ChunkedFile

    value = ("word, " * 22 + "\n") * 90
    lines = ["label,user,text"] + [f"{i % 2},u{i % 7},t{i % 5}" for i in range(3_000)]
    lines[1_500] = f'1,u1,"{value}"'
    text = ("\n".join(lines) + "\n").encode()
    path = tmp_path / ("long.csv.gz" if gzipped else "long.csv")
    path.write_bytes(gzip.compress(text) if gzipped else text)
    frames = list(ChunkedFile(path, chunk_bytes=1_024).frames())
    assert len(frames) > 10 and sum(frame.num_rows for frame in frames) == 3_000
    assert value in [v for frame in frames for v in frame.columns["text"].to_pylist()]


def test_rows_are_placed_at_their_lines_as_arrow_splits_them_at_lf_crlf_or_a_lone_cr_outside_quotes():
    """``row_ends.lines_before_rows_of`` on random rows of quoted values that hold LF, CRLF, a lone CR and doubled
    quotes, each row ended by LF, CRLF or a lone CR (the last one at times by nothing): as many rows as Arrow parses,
    each on the line that counts LFs alone."""
    import random

    import pyarrow.csv as pacsv

    from deepfm.data.row_ends import lines_before_rows_of

    rng = random.Random(1)
    values, ends = ["a", "b1", '"q"', '"x\ny"', '"p\r\nq"', '"d""e"', '"r\rs"', ""], ["\n", "\r\n", "\r"]
    for _ in range(500):
        rows = [",".join(rng.choice(values) for _ in range(3)) for _ in range(rng.randint(1, 6))]
        row_ends = [rng.choice(ends) for _ in rows]
        text = "".join(row + end for row, end in zip(rows, row_ends))
        text = text[: -len(row_ends[-1])] if rng.random() < 0.3 and len(rows) > 1 else text
        parsed = pacsv.read_csv(pa.BufferReader(text.encode()), read_options=pacsv.ReadOptions(column_names=list("xyz")),
                                parse_options=pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False))
        assert parsed.num_rows == len(rows)
        line_ends = np.cumsum([0] + [(row + end).count("\n") for row, end in zip(rows, row_ends)][:-1])
        assert lines_before_rows_of(text.encode(), b",", len(rows)).tolist() == (line_ends - np.arange(len(rows))).tolist()


def test_text_that_does_not_give_the_rows_parsed_from_it_places_none():
    from deepfm.data.row_ends import lines_before_rows_of

    assert lines_before_rows_of(b"a,b\rc,d", b",", 1) is None  # two rows, not one
    assert lines_before_rows_of(b"a,b\rc,d", b",", 3) is None
    assert lines_before_rows_of(b"a,b\r", b",", 0) is None
    assert lines_before_rows_of(b"a,b\rc,d", b",", 2).tolist() == [0, -1]


# -- the chunk index, found while the chunks are read --------------------------------------------


def _quoted_rows_file(tmp_path, rows: int = 6_000):
    lines = ["label,user,note"] + [f'{i % 2},"u{i}",n{i}' if i % 40 else f'{i % 2},"u{i}","two\nlines"' for i in range(rows)]
    path = tmp_path / "quoted.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_first_chunks_are_read_while_the_index_still_looks_for_the_later_ones(tmp_path, monkeypatch):
    """The index's pass runs on one thread beside the parsing: the first chunk is a frame before the index goes on
    past its third (the whole index came first, one core idle for its ~0.7 s on 1M Criteo-shaped rows)."""
    import threading

    from deepfm.data.readers import ChunkedFile

    path = _quoted_rows_file(tmp_path)
    first_frame, index_waited = threading.Event(), []
    text_chunks = ChunkedFile._text_chunks

    def held_after_three(self):
        for number, chunk in enumerate(text_chunks(self)):
            if number == 3:
                index_waited.append(first_frame.wait(timeout=10))
            yield chunk

    monkeypatch.setattr(ChunkedFile, "_text_chunks", held_after_three)
    file = ChunkedFile(path, chunk_bytes=8_000)
    frames = file.frames()
    first = next(frames)
    first_frame.set()
    rest = list(frames)
    assert index_waited == [True]  # the frame came while the index waited for it
    assert first.first_line == 2 and sum(frame.num_rows for frame in [first, *rest]) == 6_000
    assert [v for frame in [first, *rest] for v in frame.columns["user"].to_pylist()] == [f"u{i}" for i in range(6_000)]


def test_the_index_found_while_reading_is_the_index_and_is_kept(tmp_path, monkeypatch):
    from deepfm.data.readers import ChunkedFile

    path = _quoted_rows_file(tmp_path)
    expected = ChunkedFile(path, chunk_bytes=8_000).chunks()
    file = ChunkedFile(path, chunk_bytes=8_000)
    frames = list(file.frames())
    assert len(expected) > 5 and [frame.first_line for frame in frames] == [chunk.first_line for chunk in expected]
    monkeypatch.setattr(ChunkedFile, "_text_chunks", lambda self: pytest.fail("the index was searched again"))
    assert file.chunks() == expected
    assert sum(frame.num_rows for frame in file.frames()) == 6_000


def test_an_error_of_the_index_is_raised_by_the_reading_and_a_reading_left_unfinished_stops_the_index(tmp_path, monkeypatch):
    import threading
    import time

    from deepfm.data.readers import ChunkedFile

    path = _quoted_rows_file(tmp_path)
    text_chunks = ChunkedFile._text_chunks

    def failing_after_two(self):
        for number, chunk in enumerate(text_chunks(self)):
            if number == 2:
                raise OSError("disk gone")
            yield chunk

    monkeypatch.setattr(ChunkedFile, "_text_chunks", failing_after_two)
    with pytest.raises(OSError, match="disk gone"):
        list(ChunkedFile(path, chunk_bytes=8_000).frames())
    monkeypatch.setattr(ChunkedFile, "_text_chunks", text_chunks)
    file = ChunkedFile(path, chunk_bytes=2_000)
    frames = file.frames()
    next(frames)
    frames.close()
    deadline = time.monotonic() + 10
    while any(t.name == "deepfm-chunk-index" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "deepfm-chunk-index" for t in threading.enumerate())
    assert file._chunks is None  # not every chunk was found: nothing kept


def test_the_quote_count_taken_piece_by_piece_is_the_count_of_the_whole_text(monkeypatch):
    """``_quotes_if_they_pair_up`` goes over a window a quarter MB at a time (here 5 bytes): an opening quote is told
    by its number in the whole text, and the byte before a piece's first quote lies in the piece before."""
    import random

    from deepfm.data import readers

    def by_hand(text: bytes) -> int | None:
        quotes = [i for i, byte in enumerate(text) if byte == ord('"')]
        opening = [i for i in quotes[::2] if i > 0]
        return len(quotes) if all(text[i - 1] in b',\n"' for i in opening) else None

    monkeypatch.setattr(readers, "PIECE_BYTES", 5)
    rng = random.Random(7)
    texts = [b"", b'"', b'""', b'a"', b',"x"\n', b'"a",b\n"c"']
    texts += [bytes(rng.choice(b'a,\n"') for _ in range(rng.randrange(40))) for _ in range(2_000)]
    for text in texts:
        assert readers._quotes_if_they_pair_up(bytearray(text + b"zz"), len(text), b",") == by_hand(text), text
        assert readers._line_ends_in(bytearray(text), len(text)) == text.count(b"\n")
