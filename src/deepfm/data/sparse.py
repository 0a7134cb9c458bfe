"""libFM / libFFM text (``label idx:value ...`` and ``label field:idx:value ...``) -> a ``RawFrame``.

The reading layer also decides how the sparse features become columns (``layout_sparse``): from
the data when fitting, or from the fitted model's ``layout`` when encoding for it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from deepfm.data.delimited import BLOCK_SIZE
from deepfm.data.formats import LINE_READER_DELIMITER, open_text
from deepfm.data.frame import DECIMAL_PATTERN, WITHIN_REACH, RawFrame, within_reach
from deepfm.errors import DataError, NotPositionalError, warn_data

Layout = dict[str, str]  # column name -> kind, as a fitted encoder's ``layout`` gives it
LEFT_OUT = "left out"  # a layout's kind of a field the model does not read (--ignore): not laid out, still counted


def read_lines(source) -> pa.Array:
    """Every line of a file or chunk (a path or an Arrow stream), as one string each."""
    table = pacsv.read_csv(
        source,
        read_options=pacsv.ReadOptions(column_names=["line"], block_size=BLOCK_SIZE),
        parse_options=pacsv.ParseOptions(delimiter=LINE_READER_DELIMITER.decode(), quote_char=False, escape_char=False, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(column_types={"line": pa.string()}, strings_can_be_null=False),
    )
    return table.column("line").combine_chunks()


def _char_column(path: Path, line: int, token: int) -> int:
    """1-based character position of whitespace-separated token ``token`` (0-based) on ``line``."""
    with open_text(path) as handle:
        for number, text in enumerate(handle, start=1):
            if number == line:
                position, seen = 0, -1
                for i, ch in enumerate(text):
                    if not ch.isspace() and (i == 0 or text[i - 1].isspace()):
                        seen += 1
                        if seen == token:
                            return i + 1
                    position = i
                return position + 1
    return 1


def index_error(frame: RawFrame, row: int, index: int, message: str) -> DataError:
    """A ``DataError`` at the token of feature index ``index`` in row ``row`` of a libFM/libFFM frame (its line and
    character column)."""
    sparse = frame.sparse
    tokens = sparse.indices[sparse.starts[row]:sparse.starts[row + 1]]
    return _token_error(frame, row, int(np.flatnonzero(tokens == index)[0]), message)


def _token_error(frame: RawFrame, row: int, token: int, message: str) -> DataError:
    """A ``DataError`` at feature token ``token`` (0-based, after the label) of row ``row``: its line and column."""
    line = frame.line_of(row)
    return DataError(frame.path, message, line=line, column=_char_column(Path(frame.path), line, 1 + token))


COMPILED_FROM = 32 << 20  # a file this large is read by the compiled pass even where numba is not loaded yet: loading
# numba and the pass's cached code costs ~0.7 s and ~120 MB of a process that would not load it otherwise (predict,
# evaluate); on a 17 MB file that was a wash in time, on 51 MB evaluate took 4.5-5.3 s against 6.4-6.6 s


def numba_loaded() -> bool:
    """Whether this process has loaded numba (training on the CPU does): then the compiled pass costs nothing more."""
    return "numba" in sys.modules


def sparse_frame(lines: pa.Array, path: Path, fmt: str, first_line: int = 1,
                 layout: Layout | None = None, compiled: bool | None = None, first_rows: bool = False) -> RawFrame:
    """A ``RawFrame`` over libFM/libFFM text lines, the first on line ``first_line`` of ``path``,
    laid out as columns by ``layout`` (see ``layout_sparse``; ``first_rows``: it is the file's first chunk's,
    not a model's). ``compiled``: try the compiled pass
    (``sparse_scan``) first, the same rows several times as fast; None: where numba is loaded already
    or the lines hold at least ``COMPILED_FROM`` bytes. Lines that pass does not read (an error, text
    outside printable ASCII) are read by Arrow's kernels, which locate what is wrong with them."""
    if len(lines) == 0:
        raise DataError(path, "file is empty", line=1)
    if compiled is None:
        compiled = numba_loaded() or lines.nbytes >= COMPILED_FROM
    scanned = None
    if compiled:
        from deepfm.data.sparse_scan import scan  # (loads numba)

        scanned = scan(lines, fmt)
    if scanned is not None:
        labels, sparse = scanned[0], SparseRows(len(lines), *scanned[1:])
    else:
        labels, sparse = _arrow_rows(lines, path, fmt, first_line)
    frame = RawFrame(path=str(path), format=fmt, columns={}, kinds={}, column_numbers={}, labels=labels, first_line=first_line)
    frame.sparse = sparse
    layout_sparse(frame, layout, first_rows)
    return frame


def _arrow_rows(lines: pa.Array, path: Path, fmt: str, first_line: int) -> tuple[pa.Array, SparseRows]:
    """The lines' labels and features, read with Arrow's string kernels; a located DataError at the first problem."""
    trimmed = pc.utf8_trim_whitespace(lines)
    empty = pc.equal(trimmed, "").to_numpy(zero_copy_only=False)
    if empty.any():
        raise DataError(path, "empty line", line=int(np.flatnonzero(empty)[0]) + first_line, column=1)
    tokens = pc.ascii_split_whitespace(trimmed)  # 3× faster than splitting at the regex \s+ (which \v is not)
    labels = pc.list_element(tokens, 0)
    unlabelled = pc.match_substring(labels, ":").to_numpy(zero_copy_only=False)
    if unlabelled.any():  # read as a label, the line's first feature would be lost without a word (predict reads none)
        row = int(np.flatnonzero(unlabelled)[0])
        name, token = ("libFM", "idx:value") if fmt == "libfm" else ("libFFM", "field:idx:value")
        raise DataError(path, f"the line starts with a feature ({labels[row].as_py()!r}), not a label: each {name} line "
                              f"is 'label {token} ...', in a file to predict too (write any number, such as 0, where "
                              "the label is unknown)", line=row + first_line, column=1)
    features = pc.list_slice(tokens, 1)
    counts = pc.list_value_length(features).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    flat = pc.list_flatten(features)
    parts = pc.split_pattern(flat, ":")
    expected = 2 if fmt == "libfm" else 3
    part_counts = pc.list_value_length(parts).to_numpy(zero_copy_only=False)

    def fail(token: int, message: str) -> DataError:
        row = int(np.searchsorted(starts[1:], token, side="right"))
        within = token - int(starts[row]) + 1
        return DataError(path, message, line=row + first_line, column=_char_column(path, row + first_line, within))

    bad = np.flatnonzero(part_counts != expected)
    if len(bad):
        shape = "idx:value" if fmt == "libfm" else "field:idx:value"
        raise fail(int(bad[0]), f"expected {shape}, got {flat[int(bad[0])].as_py()!r}")

    def column(position: int, dtype: pa.DataType, what: str) -> np.ndarray:
        text = pc.list_element(parts, position)
        integer = pa.types.is_integer(dtype)
        pattern = r"^\d{1,18}$" if integer else DECIMAL_PATTERN
        ok = pc.match_substring_regex(text, pattern).to_numpy(zero_copy_only=False)
        if not ok.all():
            token = int(np.flatnonzero(~ok)[0])
            kind = "non-negative integer of at most 18 digits" if integer else "number"
            raise fail(token, f"{what} must be a {kind}, got {text[token].as_py()!r}")
        parsed = pc.cast(text, dtype).to_numpy(zero_copy_only=False)
        beyond = np.flatnonzero(~within_reach(parsed)) if not integer else ()  # e.g. 1e999 (float32's range), 1e30
        if len(beyond):
            token = int(beyond[0])
            raise fail(token, f"{what} must be {WITHIN_REACH}, got {text[token].as_py()!r}")
        return parsed

    values = column(expected - 1, pa.float32(), "feature value")
    indices = column(expected - 2, pa.int64(), "feature index")
    fields = column(0, pa.int64(), "field") if fmt == "libffm" else None
    return labels, SparseRows(len(lines), starts, indices, values, fields)


@dataclass
class SparseRows:
    """libFM/libFFM features of N rows as flat arrays; row r owns ``[starts[r], starts[r+1])``."""

    num_rows: int
    starts: np.ndarray  # (N + 1,) int64
    indices: np.ndarray  # (nnz,) int64
    values: np.ndarray  # (nnz,) float32
    fields: np.ndarray | None  # (nnz,) int64, libFFM only

    @property
    def rows(self) -> np.ndarray:
        return np.repeat(np.arange(self.num_rows), np.diff(self.starts))


def layout_sparse(frame: RawFrame, layout: Layout | None = None, first_rows: bool = False) -> None:
    """Lay a libFM/libFFM frame out as columns: ``layout`` (name -> kind, from a fitted model, or with ``first_rows``
    from the first chunk of the file being fitted) fixes the columns; without one the data decides (the first chunk).

    libFM: fixed-width rows whose positions, each row's tokens taken in index order (a row is a sparse vector,
    its tokens in any order), hold disjoint index ranges become positional fields ``f1..fn`` (as in Frappe and
    iPinYou); anything else is one multi-valued ``features``.
    libFFM: one column ``field<k>`` per field; scalar where every row has exactly one feature of
    it, else multi-valued. A field a row lacks is missing; fields the model does not know are left out.
    """
    sparse = frame.sparse
    frame.columns, frame.weights, frame.kinds, frame.column_numbers = {}, {}, {}, {}
    if sparse.fields is None:
        _libfm_columns(frame, sparse, layout, first_rows)
    else:
        _libffm_columns(frame, sparse, layout, first_rows)
    for name in frame.columns:
        frame.column_numbers[name] = None  # character columns are located per token


def _ids_text(ids: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """Ids as the text a model's vocabularies hold, dictionary-encoded: each distinct id cast once (a field of N rows
    holds a few thousand), and counted and looked up once (``counting.ChunkCodes``, ``FeatureEncoder._lookup``)."""
    encoded = pc.dictionary_encode(pa.array(ids, mask=mask))
    return pa.DictionaryArray.from_arrays(encoded.indices, pc.cast(encoded.dictionary, pa.string()))


def _ids_text_values(ids: np.ndarray) -> pa.Array:
    """Ids as text, one string each: the values of a multi-valued column's lists."""
    return pc.cast(pa.array(ids), pa.string())


IN_ONE_PIECE = "in one piece (a --chunk-rows above its rows, one file rather than a glob)"


def _is_libfm_column(name: str) -> bool:
    return name == "features" or name[:1] == "f" and name[1:].isdigit()


def _is_libffm_column(name: str) -> bool:
    return name.startswith("field") and name[len("field"):].isdigit()


def _refuse_columns_of_another_kind(frame: RawFrame, layout: Layout, fmt: str) -> None:
    """A located error where a model's ``layout`` names columns a ``fmt`` row does not have: those of the other sparse
    format, or a table's."""
    mine, other = (_is_libfm_column, _is_libffm_column) if fmt == "libfm" else (_is_libffm_column, _is_libfm_column)
    named = [name for name in layout if not mine(name)]
    if not named:
        return
    kind, row = ("libFFM", "libFM") if fmt == "libfm" else ("libFM", "libFFM")
    origin = (f"a {kind} file): score a {kind} file" if all(other(name) for name in named)
              else "a table with a header): score a file in that form")
    raise frame.error(0, None, f"the model reads the columns {', '.join(named[:4])}{', ...' if len(named) > 4 else ''}, "
                               f"which a {row} row does not have (it was trained on {origin}")


def _libfm_columns(frame: RawFrame, sparse: SparseRows, layout: Layout | None, first_rows: bool = False) -> None:
    counts = np.diff(sparse.starts)
    positional = None
    if layout is not None:
        if set(layout) != {"features"}:  # f1..fW
            _refuse_columns_of_another_kind(frame, layout, "libfm")
            # exactly W wide, the fields left out (--ignore) counted; a model of an older version kept none of them:
            # rows as wide as the first, up to the last field read at least
            wanted = max(int(name[1:]) for name in layout)
            gaps = len(layout) < wanted
            positional = int(counts[0]) if gaps and len(counts) else wanted
            bad = np.flatnonzero(counts != positional) if positional >= wanted else np.zeros(1, np.int64)
            if len(bad) and first_rows:
                raise NotPositionalError.of(frame.error(
                    int(bad[0]), None, f"the first rows read hold {wanted} features each, read as positional fields "
                    f"f1..f{wanted}, but this row has {int(counts[bad[0]])}: rows of varying width are one multi-valued "
                    f"field 'features' when the file is read {IN_ONE_PIECE}"))
            if len(bad):
                left = gaps or LEFT_OUT in layout.values()
                raise frame.error(int(bad[0]), None, f"the model reads {wanted} positional features per row"
                                  f"{' (some left out)' if left else ''}, this row has {int(counts[bad[0]])}")
    elif len(counts) and counts[0] > 0 and (counts == counts[0]).all():
        positional = int(counts[0])  # if its positions, in index order, hold disjoint ranges (below)
    if positional:
        grid, grid_values = sparse.indices.reshape(-1, positional), sparse.values.reshape(-1, positional)
        if not (grid[:, 1:] >= grid[:, :-1]).all():  # (written in index order, as most files are, they stay as they are)
            order = np.argsort(grid, axis=1, kind="stable")  # a row is a sparse vector: field j is its j-th smallest index
            grid, grid_values = np.take_along_axis(grid, order, 1), np.take_along_axis(grid_values, order, 1)
        if layout is None and not (grid.max(0)[:-1] < grid.min(0)[1:]).all():
            positional = None
    if positional:
        unit = (grid_values == 1).all(axis=0)  # each field's: values only where one differs from 1, as libFFM's
        by_field, values_by_field = grid.T.copy(), (grid_values.T.copy() if not unit.all() else None)  # a column a run
        for j in range(positional):
            name = f"f{j + 1}"
            if layout is not None and layout.get(name, LEFT_OUT) == LEFT_OUT:
                continue  # a field left out of the model
            frame.columns[name] = _ids_text(by_field[j])
            frame.kinds[name] = "categorical"
            if not unit[j]:
                frame.weights[name] = pa.array(values_by_field[j])
        return
    offsets = pa.array(sparse.starts.astype(np.int32))
    frame.columns["features"] = pa.ListArray.from_arrays(offsets, _ids_text_values(sparse.indices))
    frame.weights["features"] = pa.ListArray.from_arrays(offsets, pa.array(sparse.values))
    frame.kinds["features"] = "multi"


def _libffm_columns(frame: RawFrame, sparse: SparseRows, layout: Layout | None, first_rows: bool = False) -> None:
    _refuse_columns_of_another_kind(frame, layout or {}, "libffm")
    n, rows = sparse.num_rows, sparse.rows
    order = np.lexsort((rows, sparse.fields))
    fields, rows = sparse.fields[order], rows[order]
    indices, values = sparse.indices[order], sparse.values[order]
    names = layout or {f"field{int(f)}": None for f in np.unique(fields)}
    unknown = sorted({int(f) for f in np.unique(fields)} - {int(name[len("field"):]) for name in names})
    if unknown:  # (a model's layout: its fields only)
        warn_data(f"{frame.path}: libFFM field(s) {', '.join(map(str, unknown[:10]))}"
                  f"{' …' if len(unknown) > 10 else ''} of this file are not among the model's "
                  f"({', '.join(name[len('field'):] for name, kind in names.items() if kind != LEFT_OUT)}): their "
                  "features are not read")
    for name, kind in names.items():
        if kind == LEFT_OUT:
            continue
        field = int(name[len("field"):])
        lo, hi = np.searchsorted(fields, [field, field + 1])
        per_row = np.bincount(rows[lo:hi], minlength=n)
        kind = kind or ("categorical" if (per_row == 1).all() else "multi")
        frame.kinds[name] = kind
        if kind != "multi":
            if (per_row > 1).any():
                row = int(np.flatnonzero(per_row > 1)[0])
                second = np.flatnonzero(sparse.fields[sparse.starts[row]:sparse.starts[row + 1]] == field)[1]
                where = "held one value a row in the first rows read" if first_rows else "has one value per row in the model"
                raise _token_error(frame, row, int(second), f"field {field} {where}, this row has {int(per_row[row])}"
                                   + (f": read {IN_ONE_PIECE}, the field is multi-valued" if first_rows else ""))
            grid_ids, grid_values = np.zeros(n, np.int64), np.ones(n, np.float32)
            grid_ids[rows[lo:hi]], grid_values[rows[lo:hi]] = indices[lo:hi], values[lo:hi]
            frame.columns[name] = _ids_text(grid_ids, mask=per_row == 0)
            if not (values[lo:hi] == 1).all():
                frame.weights[name] = pa.array(grid_values)
        else:
            offsets = pa.array(np.concatenate([[0], np.cumsum(per_row)]).astype(np.int32))
            frame.columns[name] = pa.ListArray.from_arrays(offsets, _ids_text_values(indices[lo:hi]))
            frame.weights[name] = pa.ListArray.from_arrays(offsets, pa.array(values[lo:hi]))
