"""Feature encoding with a fit/transform contract, fitted on training data only.

Every field owns a contiguous range ``[offset, offset + size)`` of the fused embedding
table. Inside it, categorical and multi-valued fields reserve id 0 for a missing value
and id 1 for values unseen in training or rarer than ``min_count`` (when unset, the data rule of
``deepfm.defaults.rare_value_threshold``: 1, or more on a long tail); vocabulary entry
``i`` is id ``2 + i`` (or ``2 + fnv1a64(value) % buckets`` when hashed: a Bloom filter of the
frequent values then tells rare and unseen values, see ``deepfm.data.frequent``). Repeated ids of
a multi-valued field in one row (``a|a``, two unseen values, a hash collision) are one feature
whose weight is the sum, so a model never sees the pair (i, i). Numeric fields
reserve id 0 for missing; with ``scale`` a present value is id 1 with x = (s(v) − mean)/std,
s(v) = sign(v)·log(1+|v|); with ``bucket`` it is id 1 + its quantile bucket, x = 1.
The encoder is plain JSON (``to_dict``/``from_dict``): no pickle.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfm.config import DataConfig
from deepfm.data.columns import each_column
from deepfm.data.counting import ChunkCodes, HashedCounts, RowCodes, plain_text
from deepfm.data.encoded import Bag, EncodedData, id_dtype
from deepfm.data.even_sample import EvenSample
from deepfm.data.frame import (FLOAT_MARK, MISSING_WORDS, NUMBER_PATTERN, RawFrame, looks_float, to_float,
                                without_missing_words)
from deepfm.data.frequent import FrequentSet
from deepfm.data.hashing import fnv1a64_unique
from deepfm.data.sparse import LEFT_OUT, index_error
from deepfm.data.tables import closest_name, is_id_list, is_list
from deepfm.data.vocabulary import Vocabulary
from deepfm.defaults import FREQUENT_IDS_PER_ROW, LONG_TAIL_IDS_PER_ROW, RARE_VALUE_RULE_ROWS, rare_value_threshold
from deepfm.errors import ConfigError, DataError, NotPositionalError
from deepfm.runtime import release_free_memory
from deepfm.tasks import Task, TaskFitter, task_from_dict

if TYPE_CHECKING:
    from deepfm.data.unseen import UnseenCounts

HeldOutRule = Callable[[int, int], np.ndarray]  # (first_row, rows) -> (rows,) bool: those validation holds out

MISSING, UNSEEN = 0, 1
UNSEEN_ROWS = 100_000  # the rows of a file to score whose unseen values ``scoring_notes`` counts
RESERVED = 2
SCHEMA_VERSION = 1

LocalIds = tuple[RowCodes, np.ndarray]  # a chunk's column as codes, and the field-local id of each distinct value
EncodeInto = Callable[[np.ndarray], Iterator[EncodedData]]  # encodes kept frames, once, into consecutive rows of an ids array


@dataclass
class FieldSpec:
    """One field: its kind, its id range in the fused table, and what maps values to ids."""

    name: str
    kind: Literal["categorical", "numeric", "multi"]
    offset: int = 0
    size: int = 0
    vocabulary: Vocabulary | None = None  # a list of str is turned into one
    hash_buckets: int = 0
    mean: float = 0.0
    std: float = 1.0
    edges: list[float] | None = None
    weighted: bool = False
    frequent: FrequentSet | None = None  # hashed fields: the values frequent in training (a dict is turned into one)
    # categorical, multi: the share of values that rows like the training rows bring to id 1, new ones and those rare
    # in training, estimated by Good-Turing (``unseen_share``); None: unknown (an older model)
    unseen_share: float | None = None
    # single-valued fields: the share of training rows without a value (``missing_share``); None: unknown (an older
    # model, or a multi-valued field)
    missing_share: float | None = None

    def __post_init__(self) -> None:
        if self.vocabulary is not None and not isinstance(self.vocabulary, Vocabulary):
            self.vocabulary = Vocabulary(self.vocabulary)
        if isinstance(self.frequent, dict):
            self.frequent = FrequentSet.from_dict(self.frequent)

    @property
    def single_valued(self) -> bool:
        return self.kind != "multi"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``features.json``): the vocabulary as a list of strings."""
        item = {f.name: getattr(self, f.name) for f in dataclass_fields(self)}
        item["vocabulary"] = self.vocabulary.to_list() if self.vocabulary is not None else None
        item["edges"] = list(self.edges) if self.edges is not None else None
        item["frequent"] = self.frequent.to_dict() if self.frequent is not None else None
        return item


@dataclass(frozen=True)
class IdCounts:
    """How much training data there is per id: ``rows``, ``occurrences`` of categorical (and
    multi-valued) values and ``distinct`` values, counted over every value seen (min_count 1), and
    ``kept``: the values seen at least ``min_count`` times, which got their own id (the rest share their
    field's rare id). ``ids_per_row`` near 1 is a long tail (a 1M-row Criteo log: ~1M ids, most seen once
    or twice); one-hot data whose ids recur is far below (Frappe 0.02, MovieLens-100K 0.03, Adult 0.003).
    ``deepfm.defaults`` picks settings from it, and the rare-value threshold when the user set none."""

    rows: int
    occurrences: int
    distinct: int
    min_count: int = 1
    kept: int | None = None  # None: every distinct value (min_count 1)

    def __post_init__(self) -> None:
        if self.kept is None:
            object.__setattr__(self, "kept", self.distinct)

    @classmethod
    def of(cls, rows: int, counts: Iterable[pa.Array]) -> "IdCounts":
        """From the training rows and each field's per-value counts (``pc.value_counts``) of every value seen."""
        counts = list(counts)
        occurrences = sum(pc.sum(column).as_py() or 0 for column in counts)
        return cls(int(rows), int(occurrences), sum(len(column) for column in counts))

    def keeping(self, min_count: int, counts: Iterable[pa.Array]) -> "IdCounts":
        """The same counts with the values seen at least ``min_count`` times kept."""
        kept = sum(pc.sum(pc.greater_equal(column, min_count)).as_py() or 0 for column in counts)
        return dataclasses.replace(self, min_count=min_count, kept=int(kept))

    @property
    def ids_per_row(self) -> float:
        """Distinct values per training row (min_count 1): about how many embedding rows the data holds per example."""
        return self.distinct / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "occurrences": self.occurrences, "distinct": self.distinct,
                "ids_per_row": round(self.ids_per_row, 4), "min_count": self.min_count, "kept": self.kept}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IdCounts":
        """From ``to_dict``; a schema of an older version (no ``min_count``) counted the kept values only."""
        return cls(int(data["rows"]), int(data["occurrences"]), int(data["distinct"]), int(data.get("min_count", 1)),
                   int(data["kept"]) if "kept" in data else None)

    def describe(self) -> str:
        each = self.occurrences / self.distinct if self.distinct else 0.0
        per_row, digits = f"{self.ids_per_row:.3g}", 3
        while digits < 12 and any(float(per_row) >= cut > self.ids_per_row for cut in (LONG_TAIL_IDS_PER_ROW,
                                                                                       FREQUENT_IDS_PER_ROW)):
            digits += 1  # not rounded up onto a band's edge it is below (0.2999, not 0.3)
            per_row = f"{self.ids_per_row:.{digits}g}"
        text = (f"{self.distinct:,} distinct ids in {self.rows:,} training rows ({per_row} per row; "
                f"each seen {each:.1f} times on average)")
        if self.min_count > 1:
            text += f"; {self.kept:,} seen at least {self.min_count} times keep their own id"
        return text


def unseen_share(counts: pa.Array, min_count: int) -> float | None:
    """The share of a field's values that rows like the training rows bring to its unseen/rare id, by Good-Turing
    (values seen r times in ``counts`` recur at (r+1)·n_{r+1}/N): new values n_1/N, plus those seen 1..min_count−1
    times, (r+1)·n_{r+1}/N each, i.e. the values seen 2..min_count times in training. None for no values."""
    counts = counts.to_numpy(zero_copy_only=False).astype(np.int64)
    total = int(counts.sum())
    if not total:
        return None
    once = int(np.count_nonzero(counts == 1))
    recurring_rare = int(counts[(counts >= 2) & (counts <= min_count)].sum())
    return round(min(1.0, (once + recurring_rare) / total), 4)


def signed_log(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.log1p(np.abs(values))


@dataclass
class FeatureEncoder:
    """Turns ``RawFrame``s into ``EncodedData`` for one fixed schema."""

    task: Task  # the head: label encoding, loss, link, metrics (``deepfm.tasks``)
    label: str
    fields: list[FieldSpec]
    weight: str | None = None  # the column of sample weights (``--weight``), not a feature
    fit_notes: list[str] = field(default_factory=list, compare=False)  # inferences worth telling (not saved)
    # those of ``fit_notes`` that change what the model trains on (a timestamp read as ids, a row id): a fit that
    # logs nothing (the Python API's default) warns them as ``DataWarning``s
    fit_warnings: list[str] = field(default_factory=list, compare=False)
    id_counts: "IdCounts | None" = field(default=None, compare=False)  # how often training ids recur (saved)
    sparse_format: str | None = None  # "libfm"/"libffm": trained on those rows, whose values come as "index:value" (saved)
    left_out: tuple[str, ...] = ()  # libFM/libFFM fields of the training rows that --ignore left out (saved)

    def __post_init__(self) -> None:
        if isinstance(self.task, str):  # a task named, as in schemas written by hand
            self.task = task_from_dict({"task": self.task})

    # -- the schema -----------------------------------------------------------------------------

    @property
    def num_features(self) -> int:
        """Rows of the fused embedding table."""
        return sum(f.size for f in self.fields)

    def scoring_notes(self, data: EncodedData | None = None, rows: int = UNSEEN_ROWS,
                      counts: "UnseenCounts | None" = None) -> list[str]:
        """What rows to score (``data``'s first ``rows`` rows; or as ``UnseenCounts`` counted them, ``counts``) look
        unlike the training rows in, over 50 values or rows or more: each categorical or multi-valued field whose values
        are unseen far more often than rows like the training rows would be (``unseen_share`` u; a share s ≥ u + 0.5),
        likely a value written in another form ('True' for 'true', '302.0' for '302') or another file's column of that
        name; and each single-valued field missing from far more of the rows than in training (``missing_share``; a
        share ≥ it + 0.5), likely a column emptied upstream (a failed join)."""
        if counts is None:
            from deepfm.data.unseen import UnseenCounts  # (it reads this module's ids)

            counts = UnseenCounts(self)
            counts.add(data.slice(0, min(rows, len(data))))
        specs = {spec.name: spec for spec in self.fields}
        notes = []
        for name, present, unseen in zip(counts.names, counts.present, counts.unseen):
            training = specs[name].unseen_share
            share = unseen / present if present >= 50 else 0.0
            if training is not None and share >= training + 0.5:  # a long tail's moves by less (0.90 to 0.95 at 15k rows)
                notes.append(f"column '{name}': {share:.0%} of these rows' values were not seen in training (rows like "
                             f"the training rows: about {training:.0%}), so it tells the model little here; "
                             "a value written in another form than in training ('True' for 'true', '302.0' for '302') "
                             "reads as unseen")
        for name, missing in zip(counts.single_field_names, counts.missing):
            training = specs[name].missing_share
            share = missing / counts.rows if counts.rows >= 50 else 0.0
            if training is not None and share >= training + 0.5:
                read_as_missing = ("values that read as missing ('NA', 'null', '')" if specs[name].kind == "numeric"
                                   else "empty values")
                notes.append(f"column '{name}': {share:.0%} of these rows have no value (in training: {training:.0%}), "
                             "so the model reads it as missing for them; a column emptied before it came here (a "
                             f"failed join, say), or {read_as_missing}")
        return notes

    @property
    def single_fields(self) -> list[FieldSpec]:
        return [f for f in self.fields if f.single_valued]

    @property
    def multi_fields(self) -> list[FieldSpec]:
        return [f for f in self.fields if not f.single_valued]

    @property
    def value_fields(self) -> tuple[int, ...]:
        """Single-valued fields whose values can differ from 1: scaled numbers and weighted ids."""
        return tuple(j for j, f in enumerate(self.single_fields)
                     if f.weighted or (f.kind == "numeric" and f.edges is None))

    def new_ids(self, rows: int) -> np.ndarray:
        """An uninitialised (rows, single-valued fields) array of this table's id type."""
        return np.empty((rows, len(self.single_fields)), dtype=id_dtype(self.num_features))

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def layout(self) -> dict[str, str]:
        """Each field's name and kind: what a reader needs to lay libFM/libFFM features out as this
        model's columns (``read_frame(..., layout=encoder.layout)``); the fields it left out as ``LEFT_OUT``, so that
        rows are read at the training rows' width."""
        return {spec.name: spec.kind for spec in self.fields} | dict.fromkeys(self.left_out, LEFT_OUT)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            **self.task.to_dict(),
            "label": self.label,
            "weight": self.weight,
            "num_features": self.num_features,
            "fields": [f.to_dict() for f in self.fields],
            **({"id_counts": self.id_counts.to_dict()} if self.id_counts is not None else {}),
            **({"sparse_format": self.sparse_format} if self.sparse_format else {}),
            **({"left_out": list(self.left_out)} if self.left_out else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureEncoder":
        """Rebuild from ``to_dict`` output, checking every field so a hand-made or damaged schema is a
        ``ValueError`` naming the field, never a silently different encoding."""
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"feature schema version {data.get('schema_version')!r}, expected {SCHEMA_VERSION}")
        task = task_from_dict(data)
        fields, offset = [], 0
        for number, item in enumerate(data.get("fields") or []):
            try:
                spec = FieldSpec(**item)
            except TypeError as error:
                raise ValueError(f"fields[{number}]: {error}") from None
            where = f"fields[{number}] ({spec.name})"
            if any(field.name == spec.name for field in fields):
                raise ValueError(f"{where}: a second field of that name (a column is one field)")
            fields.append(spec)
            if spec.kind not in ("categorical", "numeric", "multi"):
                raise ValueError(f"{where}: kind must be categorical, numeric or multi, got {spec.kind!r}")
            if spec.offset != offset:
                raise ValueError(f"{where}: offset {spec.offset}, expected {offset} (fields are contiguous)")
            if spec.kind == "numeric":
                expected = 2 + len(spec.edges) if spec.edges is not None else 2
            elif spec.hash_buckets:
                expected = RESERVED + spec.hash_buckets
            elif spec.vocabulary is None:
                raise ValueError(f"{where}: a categorical field needs a vocabulary or hash_buckets")
            else:
                expected = RESERVED + len(spec.vocabulary)
            if spec.size != expected:
                raise ValueError(f"{where}: size {spec.size} does not match its vocabulary/buckets ({expected})")
            offset += spec.size
        if not fields:
            raise ValueError("no fields")
        counts = data.get("id_counts")  # absent in schemas of older versions
        encoder = cls(task=task, label=data["label"], fields=fields, weight=data.get("weight"),
                      id_counts=IdCounts.from_dict(counts) if counts is not None else None,
                      sparse_format=data.get("sparse_format"),  # absent: not libFM/libFFM, or an older version
                      left_out=tuple(data.get("left_out") or ()))
        if encoder.num_features != data.get("num_features"):
            raise ValueError("feature schema is inconsistent: field sizes do not add up to num_features")
        return encoder

    @property
    def label_mean(self) -> float | None:
        """The mean training label (after the task's label map)."""
        return self.task.label_mean

    @property
    def output_prior(self) -> float:
        """A model's starting output: the mean training rating, or the log-odds of the click rate."""
        return self.task.prior

    # -- fit ------------------------------------------------------------------------------------

    @classmethod
    def fit(cls, frames: Iterable[RawFrame], config: DataConfig, held_out: HeldOutRule | None = None) -> "FeatureEncoder":
        """Learn field kinds, vocabularies and numeric statistics from training frames (one pass). ``held_out``:
        which rows of the frames (by position in their sequence) validation holds out, which count for
        nothing but the task's classes (``deepfm.data.holdout``)."""
        return _Fitter.over(frames, config, held_out=held_out).finish()

    @classmethod
    def fit_and_transform(cls, frames: Iterable[RawFrame], config: DataConfig,
                          held_out: HeldOutRule | None = None) -> tuple["FeatureEncoder", EncodeInto | None]:
        """``fit``, keeping what ``transform`` needs of each frame (its categorical columns as codes of
        the chunk's distinct values, the other columns as they are), so the frames need not be read
        again. Returns the encoder and a function to call once that, given an ids array of every frame's
        rows (``new_ids``), encodes the frames one at a time, in order, into its consecutive rows; or
        None where that cannot be done (libFM/libFFM chunks laid out unlike the first or with a multi-valued column;
        a field with two values of one hash), for the caller to read the frames again."""
        fitter = _Fitter.over(frames, config, retain=True, held_out=held_out)
        encoder = fitter.finish()
        return encoder, fitter.transformed(encoder)

    # -- transform ------------------------------------------------------------------------------

    def transform(self, frame: RawFrame, with_labels: bool = True, local: dict[str, LocalIds] | None = None,
                  side_by_side: bool = True, ids: np.ndarray | None = None) -> EncodedData:
        """Encode a frame; a column the model needs but the file lacks is a ``DataError``. A libFM/libFFM
        frame must be read with this encoder's ``layout``. ``local``: each categorical column's codes and
        the field-local id of each of its distinct values, found already (``fit_and_transform``), in
        place of the column. ``side_by_side``: the columns on torch's threads (``columns.each_column``);
        not where training runs meanwhile. ``ids``: the array to write the ids into (``new_ids``), e.g.
        rows of a whole file's (``stream.encode_file``); a new one otherwise."""
        local = local or {}
        for spec in self.fields:
            if spec.name not in frame.columns and spec.name not in local:
                if frame.sparse is not None:
                    read = [field.name for field in self.fields]
                    raise DataError(frame.path, f"the {frame.format} features were laid out as {list(frame.columns)}, "
                                    f"the model reads {read}: give the model a file like the one it was trained on "
                                    "(in Python, read a libFM/libFFM file with layout=encoder.layout)", line=1)
                needed = {field.name for field in self.fields}
                close = closest_name(spec.name, [name for name in frame.columns if name not in needed])
                named = ", ".join(field.name for field in self.fields[:2]) + (", ..." if len(needed) > 2 else "")
                trained_on = (f" (the model was trained on {self.sparse_format} rows, whose fields it names {named}: give "
                              f"it {self.sparse_format} rows)" if self.sparse_format and not close else "")
                raise DataError(frame.path, f"column '{spec.name}' is required by the model but not in the {frame.holder}"
                                + (f" (it has '{close}': rename it '{spec.name}')" if close else trained_on), line=1)
        for spec in self.fields:
            if spec.name in frame.columns:
                refuse_unreadable_column(frame, spec.name, spec.kind)
        n = frame.num_rows
        single = self.single_fields
        if ids is None:
            ids = self.new_ids(n)
        elif ids.shape != (n, len(single)) or ids.dtype != id_dtype(self.num_features):
            raise ValueError(f"ids of {ids.dtype} {ids.shape} for {n} rows of {len(single)} fields of {id_dtype(self.num_features).__name__} ids")
        varied: dict[int, np.ndarray] = {}  # the columns whose values are not all 1
        columns = np.empty((len(single), n), ids.dtype)  # each field's ids, then laid into ``ids``' rows

        def encode(column: tuple[int, FieldSpec]) -> None:  # each column's temporaries go as it is written
            j, spec = column
            value = self._encode_single(frame, spec, columns[j], local.get(spec.name))
            if value is not None and not (value == 1).all():
                varied[j] = value

        each_column(encode, list(enumerate(single)), n, side_by_side)
        lay_rows(columns, ids)
        if frame.sparse is not None and frame.sparse.fields is None:
            self._check_positions(frame, ids)
        bags = each_column(lambda spec: self._encode_multi(frame, spec), self.multi_fields, n, side_by_side)
        labels = self.task.encode_labels(frame) if with_labels and frame.labels is not None else None
        weights = read_sample_weights(frame, self.weight) if labels is not None and self.weight in frame.columns else None
        values, value_fields = self._stored_values(varied, n)
        return EncodedData(ids=ids, values=values, bags=bags, labels=labels, value_fields=value_fields, weights=weights)

    def _check_positions(self, frame: RawFrame, ids: np.ndarray) -> None:
        """libFM rows read as positional fields (each row's j-th index in order is field j): a value unseen in its
        field that another field's vocabulary holds is that field's index at the wrong position, as in a row with
        two indices of one field and none of another. A ``DataError`` at the first such row."""
        single = self.single_fields
        if len(single) < 2 or any(spec.kind != "categorical" or spec.vocabulary is None for spec in single):
            return
        every_value, field_of_value = self._values_of_every_field()
        first = None  # (row, position, field the index belongs to, index)
        for j, spec in enumerate(single):
            unseen = np.flatnonzero(ids[:, j] == spec.offset + UNSEEN)
            if not len(unseen):
                continue
            values = plain_text(frame.columns[spec.name].take(pa.array(unseen)))
            found = np.flatnonzero(every_value.positions(values) >= 0)  # (unseen in j: another field's)
            if len(found) and (first is None or unseen[found[0]] < first[0]):
                at = int(found[0])
                first = (int(unseen[at]), j, int(field_of_value[every_value.positions(values[at:at + 1])[0]]),
                         values[at].as_py())
        if first is not None:
            row, j, k, index = first
            raise index_error(frame, row, int(index), f"index {index} is a value of the model's field {single[k].name}, but "
                              f"this row's {_ordinal(j + 1)} index in order, which the model reads as field {single[j].name}: "
                              f"each row holds one index of each of the model's {len(single)} fields, in index order")

    def _values_of_every_field(self) -> tuple[Vocabulary, np.ndarray]:
        """The single-valued fields' vocabularies as one, and the field of each of its values (built once)."""
        if "_every_field" not in self.__dict__:
            single = self.single_fields
            values = pa.concat_arrays([spec.vocabulary.values for spec in single])
            fields = np.repeat(np.arange(len(single)), [len(spec.vocabulary) for spec in single])
            self.__dict__["_every_field"] = (Vocabulary(values), fields)
        return self.__dict__["_every_field"]

    def _stored_values(self, varied: dict[int, np.ndarray], rows: int) -> tuple[np.ndarray | None, tuple[int, ...] | None]:
        """The values kept of a frame's single-valued fields, from the columns whose values are not all 1:
        none; or the ``value_fields`` columns, when every other column is all 1; or every column (e.g. a
        libFM chunk with weights where the first chunk had none)."""
        if not varied:
            return None, None
        value_fields = self.value_fields
        if len(value_fields) == len(self.single_fields) or not varied.keys() <= set(value_fields):
            value_fields = None
        columns = range(len(self.single_fields)) if value_fields is None else value_fields
        values = np.ones((rows, len(columns)), dtype=np.float32)
        for position, j in enumerate(columns):
            if j in varied:
                values[:, position] = varied[j]
        return values, value_fields

    def _encode_single(self, frame: RawFrame, spec: FieldSpec, out: np.ndarray,
                       local: LocalIds | None = None) -> np.ndarray | None:
        """Write the field's ids into ``out`` (rows,); return its values, or None where they are all 1."""
        column = frame.columns.get(spec.name)
        if spec.kind == "numeric":
            x = to_float(frame, column, spec.name, fitted=True)
            missing = ~np.isfinite(x)
            if spec.edges is not None:
                out[:] = spec.offset + np.where(missing, MISSING, 1 + np.searchsorted(np.asarray(spec.edges), x, side="right"))
                return None
            out[:] = spec.offset + np.where(missing, MISSING, 1)
            return np.where(missing, 1.0, (signed_log(np.nan_to_num(x)) - spec.mean) / spec.std).astype(np.float32)
        if local is None:
            out[:] = spec.offset + self._lookup(column, spec)
        else:
            codes, ids_of_distinct = local
            codes.take(spec.offset + ids_of_distinct, spec.offset + MISSING, out)
        weights = frame.weights.get(spec.name)
        return None if weights is None else weights.to_numpy(zero_copy_only=False).astype(np.float32)

    def _encode_multi(self, frame: RawFrame, spec: FieldSpec) -> Bag:
        column = frame.columns[spec.name]
        if not pa.types.is_list(column.type):
            raise DataError(frame.path, f"column '{spec.name}' must be multi-valued (--multi)", line=1)
        offsets = column.offsets.to_numpy().astype(np.int64) - int(column.offsets[0].as_py())
        flat = pc.list_flatten(column)
        local = self._lookup(flat, spec)
        weights = frame.weights.get(spec.name)
        w = np.ones(len(local), np.float32) if weights is None else pc.list_flatten(weights).to_numpy(zero_copy_only=False).astype(np.float32)
        lengths = np.diff(offsets)
        if (lengths == 0).any():  # an empty set is "missing": one reserved id with weight 1
            empty = np.flatnonzero(lengths == 0)
            positions = offsets[empty]
            local = np.insert(local, positions, MISSING)
            w = np.insert(w, positions, 1.0).astype(np.float32)
            lengths = np.maximum(lengths, 1)
            offsets = np.concatenate([[0], np.cumsum(lengths)])
        offsets, local, w = merge_repeated_ids(offsets.astype(np.int64), local.astype(np.int64), w, spec.size)
        return Bag(offsets, spec.offset + local, w)

    @staticmethod
    def _lookup(column: pa.Array, spec: FieldSpec) -> np.ndarray:
        """Field-local ids of a value column: 0 missing, 1 unseen, 2+ vocabulary/hash bucket."""
        if pa.types.is_timestamp(column.type) and spec.vocabulary is not None:
            column = as_training_times(column, spec.vocabulary)
        if pa.types.is_dictionary(column.type) and pa.types.is_string(column.type.value_type):  # each value looked up once
            local = np.append(FeatureEncoder._lookup(column.dictionary, spec), MISSING)
            return local[pc.fill_null(column.indices, -1).to_numpy(zero_copy_only=False)]
        text = plain_text(column)
        missing = pc.is_null(text).to_numpy(zero_copy_only=False)
        if spec.hash_buckets:
            local = _hashed_ids(text, spec)
        else:
            position = spec.vocabulary.positions(text) if spec.vocabulary is not None else np.full(len(text), -1)
            local = np.where(position < 0, UNSEEN, position + RESERVED)
        local[missing] = MISSING
        return local


TIME_TEXT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.(\d+))?(Z|[+-]\d{4})?$")  # as Arrow writes times
TIME_UNITS = {0: "s", 3: "ms", 6: "us", 9: "ns"}  # its fraction's digits -> the resolution it was written at


def as_training_times(column: pa.Array, vocabulary: Vocabulary) -> pa.Array:
    """Timestamps in the resolution the training column had, as its vocabulary writes them, and naive or in UTC where
    it was (a named zone is kept: its text holds only the offset): the same instants at another resolution (pandas:
    ns from ``to_datetime``, us from Parquet) would read as other text, every value unseen. Unchanged where the
    vocabulary holds no such text (a hashed field keeps none: its times must come at the training resolution)."""
    first = vocabulary.values[0].as_py() if len(vocabulary) else None
    written = TIME_TEXT.match(first) if isinstance(first, str) else None
    if written is None:
        return column
    unit = TIME_UNITS.get(len(written.group(1) or ""), column.type.unit)
    zone = None if not written.group(2) else "UTC" if written.group(2) == "Z" else column.type.tz  # (an offset: the
    return pc.cast(column, pa.timestamp(unit, tz=zone), safe=False)  # zone's name is not in the text: keep the column's)


def _ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, 21st, ..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _bucket_ids(hashes: np.ndarray, spec: FieldSpec) -> np.ndarray:
    """2 + the bucket of each FNV-1a 64 hash, or 1 (unseen) where the value was not frequent in training."""
    local = RESERVED + (hashes % np.uint64(spec.hash_buckets)).astype(np.int64)
    if spec.frequent is not None:
        local = np.where(spec.frequent.contains(hashes), local, UNSEEN)
    return local


def _hashed_ids(text: pa.Array, spec: FieldSpec) -> np.ndarray:
    """Field-local ids of a hashed field (nulls get 0; the caller masks them): 2 + the value's
    bucket, or 1 (unseen) for a value that was not frequent in training."""
    encoded = pc.dictionary_encode(text)
    if len(encoded.dictionary) == 0:
        return np.zeros(len(text), dtype=np.int64)
    local = _bucket_ids(fnv1a64_unique(encoded.dictionary), spec)
    return local[pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False)]


def merge_repeated_ids(offsets: np.ndarray, ids: np.ndarray, weights: np.ndarray,
                       size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Jagged rows (``offsets``, field-local ``ids`` < ``size``, ``weights``) with each id at most once
    per row, its weights summed: x_i is the sum of the weights of value i's occurrences, as in the
    FM's dense x. The arrays come back unchanged when no row repeats an id; otherwise every row's
    ids come back sorted (vectorised: one sort of (row, id) keys)."""
    rows = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    keys = rows * np.int64(size) + ids
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    first = np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]])
    if first.all():
        return offsets, ids, weights
    starts = np.flatnonzero(first)
    merged_keys = sorted_keys[starts]
    merged_rows = merged_keys // np.int64(size)
    counts = np.bincount(merged_rows, minlength=len(offsets) - 1)
    merged_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    merged_weights = np.add.reduceat(weights[order].astype(np.float32), starts).astype(np.float32)
    return merged_offsets, merged_keys - merged_rows * np.int64(size), merged_weights


def merged_moments(moments: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(count, mean, sum of squared deviations) of the values so far, ``moments``, and of ``values`` (float64, at least
    one), merged pairwise (Chan, Golub & LeVeque), each chunk's own in two passes: no E[x²] − mean² cancellation, which
    lost the spread of values far from zero (Unix timestamps: 40× too large) and of tiny ones."""
    count, mean, squared_deviations = moments
    own_mean = float(values.mean())
    own = float(np.square(values - own_mean).sum())
    added = len(values)
    total = count + added
    delta = own_mean - mean
    return np.array([total, mean + delta * added / total, squared_deviations + own + delta**2 * count * added / total])


def read_sample_weights(frame: RawFrame, name: str) -> np.ndarray:
    """The ``--weight`` column as float32; a missing, negative or non-finite weight is a located ``DataError``."""
    w = to_float(frame, frame.columns[name], name)
    bad = np.flatnonzero(~(np.isfinite(w) & (w >= 0)))
    if len(bad):
        row = int(bad[0])
        written = frame.columns[name][row].as_py()  # as the file has it (1e400 reads as inf)
        shown = "missing" if np.isnan(w[row]) else repr(written) if isinstance(written, str) else f"{w[row]:g}"
        raise frame.error(row, name, f"sample weights must be finite numbers ≥ 0, got {shown}")
    return w.astype(np.float32)


def refuse_zero_weight_sum(weights: np.ndarray | None, source: str, rows: str) -> None:
    """A ``DataError`` where ``weights`` (``--weight``, of the ``rows`` read from ``source``) are all 0: a weighted
    loss or metric of them is 0/0. None or any positive weight passes."""
    if weights is not None and len(weights) and not float(weights.sum(dtype=np.float64)) > 0:
        raise DataError(source, f"every sample weight of the {rows} is 0 (--weight, data.weight): weighted by them, "
                                "nothing counts; give the rows that count a weight above 0", line=None)


def refuse_one_weighted_class(labels: np.ndarray, weights: np.ndarray | None, task: str, source: str) -> None:
    """A ``DataError`` where a binary task's sample weights put no weight on one class: weighted, the training rows
    hold one class (the labels' own check, which counts rows, passes them)."""
    if task != "binary" or weights is None or not len(weights):
        return
    for value in (1, 0):
        if (labels == value).any() and not float(weights[labels == value].sum(dtype=np.float64)) > 0:
            raise DataError(source, f"every training row of class {value} has sample weight 0 (--weight, data.weight): "
                                    "weighted by them, the rows hold one class, and a binary task needs both", line=None)


# Per-chunk value counts wait until they reach this many rows (or a quarter of the merged table)
# before one merge adds them in (``HashedCounts``): re-aggregating the growing table after every
# chunk made the merges quadratic in the number of chunks (1M Criteo-shaped rows in 16 chunks: fit
# 3.55 s merging every chunk, 2.95 s with this rule). Pending counts hold at most ~1/4 more memory.
MERGE_COUNTS_ROWS = 131_072
QUANTILE_SAMPLE = 1_000_000  # numeric_encoding bucket: at most this many of a column's values, spread over the file


class _Fitter:
    """Accumulates counts and statistics chunk by chunk, so vocabularies can be built in a stream.
    With ``retain``, also what ``transform`` needs of each frame (``FeatureEncoder.fit_and_transform``)."""

    def __init__(self, first: RawFrame, config: DataConfig, retain: bool = False, held_out: HeldOutRule | None = None):
        self.config, self.held_out = config, held_out
        self.kinds = resolve_kinds(first, config)
        self.notes = inference_notes(first, self.kinds, config)
        self.warnings: list[str] = []  # the notes of ``FeatureEncoder.fit_warnings``, also among ``notes``
        self.kind_rows = first.num_rows  # the rows that decided the kinds (a later decimal in an id column: an error)
        inferred_ids = [name for name, kind in self.kinds.items() if kind == "categorical" and _inferred(name, first, config)
                        and _is_text(first.columns[name])]
        self.integer_ids = [name for name in inferred_ids if signed_integers(first.columns[name])]
        # columns without a value in those rows: read as ids until a later chunk's first values say otherwise
        self.valueless = [name for name in inferred_ids if not has_values(first.columns[name])]
        self.promoted: set[str] = set()  # of those, the columns whose first values were whole numbers: integer ids
        self.counts = {n: HashedCounts(MERGE_COUNTS_ROWS, track=retain and k == "categorical")
                       for n, k in self.kinds.items() if k != "numeric"}
        self.retained: list[tuple[RawFrame, dict[str, RowCodes]]] | None = [] if retain else None
        self.vocabulary_rows: dict[str, np.ndarray] = {}  # the row of the counts table of each vocabulary value
        self.moments = {n: np.zeros(3) for n, k in self.kinds.items() if k == "numeric"}  # (count, mean, M2)
        self.samples = {n: EvenSample(QUANTILE_SAMPLE) for n, k in self.kinds.items() if k == "numeric"}
        self.weighted = {n: False for n in self.kinds}  # a field with a value other than 1 in any chunk (``update``)
        self.rows = 0  # counted: not held out
        self.first_row = 0  # the next frame's position in the file
        self.sparse_format = first.format if first.format in ("libfm", "libffm") else None
        self.sparse_layout = dict(first.kinds) if first.sparse is not None else None  # how the data laid chunk 1 out
        self.position_ranges: tuple[np.ndarray, np.ndarray] | None = None  # libFM f1..fn: each position's indices
        self.labels = TaskFitter(config.task, config.positive, self.sparse_format is not None, first.path,
                                 one_vs_rest=config.one_vs_rest)

    @classmethod
    def over(cls, frames: Iterable[RawFrame], config: DataConfig, retain: bool = False,
             held_out: HeldOutRule | None = None) -> "_Fitter":
        """A fitter updated with every frame of ``frames`` (the first one decides the field kinds)."""
        fitter: _Fitter | None = None
        for frame in frames:
            if fitter is None:
                fitter = cls(frame, config, retain, held_out)
            fitter.update(frame)
        assert fitter is not None, "no training data"
        return fitter

    def update(self, frame: RawFrame) -> None:
        codes: dict[str, RowCodes] = {}
        held = self.held_out(self.first_row, frame.num_rows) if self.held_out is not None else None
        counted = ~held if held is not None and held.any() else None  # the rows whose values count (None: all)
        self.first_row += frame.num_rows
        for name in frame.weights:  # a libFM/libFFM chunk carries values only where one differs from 1
            if name in self.weighted:
                self.weighted[name] = True

        def count(name: str) -> None:  # one column's counts and statistics (each column's own: side by side)
            kind, column = self.kinds[name], frame.columns[name]
            if kind == "numeric":
                x = to_float(frame, column, name)  # every row's value checked, held out or not
                x = x if counted is None else x[counted]
                x = x[np.isfinite(x)]  # inf and NaN count as missing
                if len(x):
                    self.moments[name] = merged_moments(self.moments[name], signed_log(x))
                if self.config.numeric_encoding == "bucket":
                    self.samples[name].add(x)  # quantile edges from values spread over the whole file
                return
            if kind == "multi":  # not encoded from codes: the counted rows' values alone
                flat = pc.list_flatten(column if counted is None else column.filter(pa.array(counted)))
                chunk = ChunkCodes.of(flat)
            else:
                chunk = ChunkCodes.of(column, counted)
                if name in integer_ids and not signed_integers(chunk.distinct):  # its distinct values: the rows' own
                    not_integers.add(name)
            placement = self.counts[name].add(chunk)
            if kind == "categorical" and self.retained is not None:
                codes[name] = chunk.rows(placement, hashes=self.config.hash_buckets > 0)

        for name in [name for name in self.valueless if has_values(frame.columns[name])]:
            self._check_first_values(frame, name)
        integer_ids, not_integers = set(self.integer_ids), set()  # checked as they are counted, side by side
        if self.sparse_format == "libfm" and frame.sparse is not None and "features" not in frame.kinds:
            self._check_positions(frame)
        try:
            each_column(count, list(self.kinds), frame.num_rows)
        except DataError as error:  # a decimal in any integer-id column is said first, as when they were checked first
            raise self._decimal_error(frame, integer_ids) or error from None  # (some may not have been counted)
        decimal = self._decimal_error(frame, not_integers) if not_integers else None
        if decimal is not None:
            raise decimal
        codes = {name: codes[name] for name in self.kinds if name in codes}  # in column order
        self.labels.update(frame, counted)
        self.rows += frame.num_rows if counted is None else int(counted.sum())
        if self.retained is not None and frame.sparse is None:
            rest = {name: column for name, column in frame.columns.items() if name not in codes}
            self.retained.append((frame.with_columns(rest), codes))
        elif self.retained is not None and self._laid_out_as_the_encoder_will(frame):
            rest = {name: column for name, column in frame.columns.items() if name not in codes and name in self.kinds}
            self.retained.append((dataclasses.replace(frame.with_columns(rest), sparse=None), codes))
        else:
            self.retained = None  # read again, each chunk laid out by the encoder

    def _laid_out_as_the_encoder_will(self, frame: RawFrame) -> bool:
        """Whether a libFM/libFFM chunk's columns, which the data laid out (``sparse.layout_sparse``), are those the
        encoder's layout gives on a second reading: the first chunk's, with no multi-valued column (kept as its text
        ids until encoded, a multi-valued column would hold more memory than reading it again).
        The rows' own checks ran as they were counted (``_check_positions``), and the sparse arrays are let go."""
        return frame.kinds == self.sparse_layout and "multi" not in frame.kinds.values()

    def _check_positions(self, frame: RawFrame) -> None:
        """libFM rows read as positional fields f1..fn (the first chunk's positions, each row's indices in order, held
        ranges of their own) must keep them so: a later row whose index falls in another position's range would be
        taken as a value of the wrong field without a word. A located error at the first such row."""
        grid = np.sort(frame.sparse.indices.reshape(frame.num_rows, -1), axis=1)
        low, high = grid.min(0), grid.max(0)
        if self.position_ranges is not None:
            seen_low, seen_high = self.position_ranges
            low, high = np.minimum(low, seen_low), np.maximum(high, seen_high)
            if not (high[:-1] < low[1:]).all():  # the first row whose indices, joined to those before, overlap them
                lows = np.minimum.accumulate(np.vstack([seen_low, grid]), axis=0)[1:]
                highs = np.maximum.accumulate(np.vstack([seen_high, grid]), axis=0)[1:]
                row = int(np.argmin((highs[:, :-1] < lows[:, 1:]).all(1)))
                raise NotPositionalError.of(frame.error(
                    row, None, f"the rows before held each position's indices in ranges of their own, so the file was "
                    f"read as {grid.shape[1]} positional fields (f1..f{grid.shape[1]}), but this row's indices "
                    f"{grid[row].tolist()} fall in other positions' ranges: the rows are not positional; read in one "
                    "piece (a --chunk-rows above the rows, one file rather than a glob), they make one multi-valued "
                    "field 'features'"))
        self.position_ranges = (low, high)

    def _check_first_values(self, frame: RawFrame, name: str) -> None:
        """A column without a value in the rows that decided the kinds was read as ids; where its first values are
        decimal numbers, which would have made it numeric had they come first, a located error naming both flags.
        Whole numbers make it a column of integer ids (a later decimal: ``_decimal_error``)."""
        self.valueless.remove(name)
        column, quoted = frame.columns[name], shlex.quote(name)
        if looks_float(column):
            row = first_decimal_row(column)
            raise frame.error(row, name, f"column '{name}' held no value in the first {self.kind_rows:,} rows, so it "
                                         f"was read as ids (categorical), but its values from here on are numbers such "
                                         f"as {column[row].as_py()!r}: say which it is, --numeric {quoted} (numbers) or "
                                         f"--categorical {quoted} (ids, each value as written)")
        if signed_integers(column):
            self.integer_ids.append(name)
            self.promoted.add(name)

    def _decimal_error(self, frame: RawFrame, not_integers: set[str]) -> DataError | None:
        """A column that held whole numbers in the rows that decided the kinds is ids; a decimal number in a later
        chunk would have made it numeric (``looks_float``) had it come first: a located error naming both flags, for
        the first of the integer-id columns (in the order they became ids) among ``not_integers`` (those of the chunk
        whose values are not all integers, or any that may be) that holds one."""
        for name in [name for name in self.integer_ids if name in not_integers]:
            column, quoted = frame.columns[name], shlex.quote(name)
            row = first_decimal_row(column)
            if row is not None:
                held = (f"held no value in the first {self.kind_rows:,} rows, then whole numbers" if name in self.promoted
                        else f"held whole numbers in the first {self.kind_rows:,} rows")
                return frame.error(row, name, f"column '{name}' {held}, "
                                              f"so it was read as ids (categorical), but this row has the decimal number "
                                              f"{column[row].as_py()!r}: say which it is, --numeric {quoted} (numbers) or "
                                              f"--categorical {quoted} (ids, each value as written)")
        return None

    def transformed(self, encoder: FeatureEncoder) -> EncodeInto | None:
        """What encodes the retained frames (letting each go once encoded), or None (see ``fit_and_transform``)."""
        if self.retained is None or any(counts.collided for counts in self.counts.values()):
            return None
        retained, self.retained = self.retained, None
        specs = {spec.name: spec for spec in encoder.fields}
        position_of_row = {}  # each counts row's vocabulary position, -1 if it was left out (min_count)
        for name, rows in self.vocabulary_rows.items():
            position_of_row[name] = np.full(len(self.counts[name].counts), -1, np.int64)
            position_of_row[name][rows] = np.arange(len(rows))

        def local_ids(name: str, codes: RowCodes) -> LocalIds:
            spec = specs[name]
            if spec.hash_buckets:
                return codes, _bucket_ids(codes.hashes, spec)
            position = position_of_row[name][self.counts[name].row_of(codes.placement)]
            return codes, np.where(position < 0, UNSEEN, position + RESERVED)

        def encoded(ids: np.ndarray) -> Iterator[EncodedData]:
            nonlocal retained
            if retained is None:
                raise RuntimeError("the kept frames were encoded already: they are let go as they are")
            frames, retained = retained[::-1], None  # popped from the end: first frame first, each let go once encoded
            start = 0
            while frames:
                frame, codes = frames.pop()
                local = dict(zip(codes, each_column(lambda item: local_ids(*item), list(codes.items()), frame.num_rows)))
                yield encoder.transform(frame, local=local, ids=ids[start : start + frame.num_rows])
                start += frame.num_rows

        return encoded

    def _warn(self, notes: list[str]) -> None:
        self.notes.extend(notes)
        self.warnings.extend(notes)

    def finish(self) -> FeatureEncoder:
        release_free_memory()  # what reading the chunks freed, before the count tables' last merges (the fit's peak)
        config, specs, offset = self.config, [], 0
        ordered = [n for n, k in self.kinds.items() if k != "multi"] + [n for n, k in self.kinds.items() if k == "multi"]
        counted = [name for name in ordered if self.kinds[name] != "numeric"]
        # each field's last merge of its counts, side by side (as while counting): the long tail's 39 took ~0.46 s in turn
        tables = dict(zip(counted, each_column(lambda name: self.counts[name].table(), counted, self.rows)))
        tables = {name: table.append_column("row", pa.array(np.arange(len(table), dtype=np.int64)))
                  for name, table in tables.items()}
        if self.held_out is not None:  # values that only held-out rows hold (count 0) are not seen in training
            tables = {name: table.filter(pc.greater(table["count"], 0)) for name, table in tables.items()}
        seen = IdCounts.of(self.rows, [table["count"] for table in tables.values()])
        min_count = rare_value_threshold(config.min_count, seen)  # the user's, or the data rule's (deepfm.defaults)
        if config.min_count is None:
            self._warn(one_column_long_tail_note({name: table["count"] for name, table in tables.items()}, seen,
                                                 min_count))
        id_counts = seen.keeping(min_count, [table["count"] for table in tables.values()])
        for name in ordered:
            kind = self.kinds[name]
            spec = FieldSpec(name=name, kind=kind, offset=offset, weighted=self.weighted[name])
            if kind == "numeric":
                count, mean, squared_deviations = self.moments[name]
                spec.missing_share = round(1 - float(count) / self.rows, 4) if self.rows else None
                std = float(np.sqrt(squared_deviations / count)) if count else 0.0
                spec.mean, spec.std = float(mean), (std if std > 1e-12 * abs(mean) and std > 0 else 1.0)  # 1: constant
                if config.numeric_encoding == "bucket":
                    sample = self.samples[name].values()
                    qs = np.linspace(0, 1, config.numeric_buckets + 1)[1:-1]
                    spec.edges = np.unique(np.quantile(sample, qs)).tolist() if len(sample) else []
                    spec.size = 2 + len(spec.edges)
                else:
                    spec.size = 2
            else:
                table = tables[name]
                spec.unseen_share = unseen_share(table["count"], min_count)
                if kind == "categorical" and self.rows:
                    spec.missing_share = round(1 - (pc.sum(table["count"]).as_py() or 0) / self.rows, 4)
                if kind == "categorical" and self.rows >= ROW_ID_NOTE_ROWS:
                    self._warn(row_id_note(name, table["count"], self.rows))
                keep = table.filter(pc.greater_equal(table["count"], min_count))
                keep = keep.sort_by([("count", "descending"), ("value", "ascending")])
                self.vocabulary_rows[name] = keep["row"].to_numpy()
                vocabulary = Vocabulary(keep["value"])
                if config.hash_buckets and len(vocabulary) > config.hash_buckets:
                    spec.hash_buckets = config.hash_buckets
                    spec.size = RESERVED + config.hash_buckets
                    spec.frequent = FrequentSet.of(vocabulary.values)
                else:
                    spec.vocabulary = vocabulary
                    spec.size = RESERVED + len(vocabulary)
            specs.append(spec)
            offset += spec.size
        if config.hash_buckets:
            self.notes.append(hash_buckets_note(specs, config.hash_buckets))
        task = self.labels.finish()
        untrained = self.labels.untrained_classes()
        if untrained:  # (a --valid file's class the training rows lack is an error; held-out rows' is this note)
            self._warn([f"class(es) {', '.join(map(repr, untrained[:10]))} of the label appear only in the rows held "
                        "out for validation: the model has an output for each but no training row of it, so it "
                        "predicts them hardly ever; --valid-fraction 0, or more rows of them, trains them"])
        if task == "regression" and config.task == "auto" and self.labels.examples:
            values = sorted(self.labels.examples)
            shown = ", ".join(f"{v:g}" for v in values[:3]) + (", ..." if len(values) > 3 else "")
            written = {float(text): text for text in self.labels.raw_seen}  # as the file writes them: --positive's match
            two = (f"; for a binary task of these two values, --positive {written[values[1]]} reads "
                   f"{written[values[1]]} as the positive class and {written[values[0]]} as the negative one"
                   ) if len(values) == 2 and len(written) == 2 else ""
            counted = values[0] == 0 and 2 < len(values) <= 20 and all(float(v).is_integer() for v in values)
            classes = "; classes 0, 1, 2, ...: --task multiclass (--task ordinal for ordered grades)" if counted else ""
            self.notes.append(f"task: regression, since the labels are not all 0/1 ({shown}); --task binary (data.task) refuses such "
                              f"labels{two}{classes}")
        left_out = tuple(name for name in self.sparse_layout or {} if name not in self.kinds)  # (--ignore)
        return FeatureEncoder(task=task, label=config.label, fields=specs, weight=config.weight, fit_notes=self.notes,
                              fit_warnings=self.warnings, id_counts=id_counts, sparse_format=self.sparse_format,
                              left_out=left_out)


NOTES_LOOK_AT_ROWS = 65_536
ROW_ID_NOTE_ROWS = 1_000  # fewer rows: a column of distinct values may still be a feature's sample


def row_id_note(name: str, counts: pa.Array, rows: int) -> list[str]:
    """A note for a column whose values are each seen once on (almost) every training row (Avazu's ``id``): a row's
    id, which tells the model nothing of other rows, and which each row to predict brings new."""
    once = pc.sum(pc.equal(counts, 1)).as_py() or 0
    if once < 0.99 * rows:
        return []
    return [f"column '{name}' holds a value no other training row holds on {once / rows:.0%} of the rows: a row id? It "
            f"tells the model nothing of other rows, and rows to predict bring new ones; --ignore {shlex.quote(name)} "
            "(data.ignore) leaves it out"]


def hash_buckets_note(specs: list[FieldSpec], buckets: int) -> str:
    """What ``--hash-buckets`` did: which fields (those of more kept values than buckets) share buckets, or none."""
    hashed = [spec.name for spec in specs if spec.hash_buckets]
    if not hashed:
        return f"hash buckets: no field keeps more than {buckets:,} values, so every field keeps its vocabulary"
    shown = ", ".join(hashed[:8]) + (f" and {len(hashed) - 8} more" if len(hashed) > 8 else "")
    return (f"hash buckets: {len(hashed)} field{'s' if len(hashed) > 1 else ''} of more than {buckets:,} kept values "
            f"hashed into {buckets:,} buckets each (a value seen too rarely to keep shares the unseen id): {shown}")


def one_column_long_tail_note(counts: dict[str, pa.Array], seen: IdCounts, min_count: int) -> list[str]:
    """A note for a column without which the training ids would not be a long tail (an integer timestamp read as
    ids, say): its values alone turn on the long tail's settings and, at ``min_count`` > 1, the rare-value rule for
    every field. Only from ``RARE_VALUE_RULE_ROWS`` rows (a small sample's ids are a tail by nature) and with other
    columns to compare."""
    if seen.ids_per_row < LONG_TAIL_IDS_PER_ROW or seen.rows < RARE_VALUE_RULE_ROWS or len(counts) < 2:
        return []
    for name in sorted(counts, key=lambda n: -len(counts[n])):
        distinct = len(counts[name])
        rest = IdCounts(seen.rows, seen.occurrences - (pc.sum(counts[name]).as_py() or 0), seen.distinct - distinct)
        if rest.ids_per_row < LONG_TAIL_IDS_PER_ROW:
            shared = (f"; every field's values seen fewer than {min_count} times then share their field's rare id "
                      f"(data.min_count {min_count}), and --min-count 1 (data.min_count) keeps them" if min_count > 1 else "")
            return [f"column '{name}' holds {distinct:,} distinct values in {seen.rows:,} training rows "
                    f"({distinct / seen.rows:.2f} a row): with it the ids hold {seen.ids_per_row:.2f} distinct values a "
                    f"row, {rest.ids_per_row:.2f} without it, so it tips them over the long tail's line "
                    f"({LONG_TAIL_IDS_PER_ROW} a row), which sets the long tail's training defaults{shared}. If it is "
                    f"not a feature (a timestamp, a row id), --ignore {shlex.quote(name)} (data.ignore)"]
    return []


def first_decimal_row(column: pa.Array) -> int | None:
    """The first row of text ``column`` that holds a decimal number (one with a '.' or an exponent), or None."""
    numbers = pc.fill_null(pc.match_substring_regex(column, NUMBER_PATTERN), False)
    decimal = pc.and_(numbers, pc.match_substring_regex(column, FLOAT_MARK)).to_numpy(zero_copy_only=False)
    return int(np.flatnonzero(decimal)[0]) if decimal.any() else None


def has_values(column: pa.Array) -> bool:
    """Whether text ``column`` holds a value that is not missing (null, or one of ``MISSING_WORDS``)."""
    return len(pc.drop_null(without_missing_words(column))) > 0


def lay_rows(columns: np.ndarray, rows: np.ndarray, tile: int = 2048) -> None:
    """``rows[:] = columns.T`` a tile of rows at a time, each tile's reads and writes within the cache. Each column
    written straight into its strided column of ``rows``, columns on two threads sharing cache lines, took 5% of the
    reading's CPU samples (1M Criteo-shaped rows × 39 fields, ``perf``)."""
    for start in range(0, rows.shape[0], tile):
        rows[start : start + tile] = columns[:, start : start + tile].T


def _inferred(name: str, frame: RawFrame, config: DataConfig) -> bool:
    """Whether the column's kind came from its values (``looks_float``), not a flag or the format."""
    return name not in config.categorical and name not in config.numeric and frame.kinds.get(name, "auto") == "auto"


def _is_text(column: pa.Array) -> bool:
    return pa.types.is_string(column.type) or pa.types.is_large_string(column.type)


def signed_integers(column: pa.Array) -> bool:
    """Every value that is not missing (null, or one of ``MISSING_WORDS``, as ``looks_float`` skips them) is an
    integer with an optional sign (-1, +3, 12): ASCII digits after the leading signs, told by two character kernels
    (a regex took ~3x as long on a chunk of hashed ids)."""
    return bool(pc.all(pc.ascii_is_decimal(pc.utf8_ltrim(without_missing_words(column), characters="-+"))).as_py())


def _mostly_sets(column: pa.Array, separator: str) -> bool:
    """At least half of the column's values hold ``separator`` (a multi-valued column not named by --multi)."""
    present = column.drop_null()
    return bool(len(present)) and pc.sum(pc.match_substring(present, separator)).as_py() * 2 >= len(present)


WHOLE_FLOATS_NOTE = "columns of decimal numbers, all whole"  # how that note begins (deepfm.sklearn warns it)
KIND_NOTE_FORMATS = ("csv", "tsv", "parquet", "table")  # whose integer and whole-number columns the fit's notes name


def _kind_option(frame: RawFrame, kind: str, name: str | list[str] | None = None) -> str:
    """How a user names columns of ``kind`` (numeric, categorical) for data read as ``frame`` was: the command's flag
    for a file (``--numeric price``, ``--numeric a,b``), the data setting of the Python API for an in-memory table or
    DataFrame (``data={"numeric": ["price"]}``, as ``Estimator`` and a config file take it; ``numeric=`` in
    ``deepfm.sklearn``)."""
    names = [name] if isinstance(name, str) else name
    if frame.format != "table":
        return f"--{kind}" if names is None else f"--{kind} {','.join(names)}"
    return f'data={{"{kind}": [{"..." if names is None else ", ".join(map(json.dumps, names))}]}}'


def inference_notes(frame: RawFrame, kinds: dict[str, str], config: DataConfig) -> list[str]:
    """What the kind inference decided that a user may not expect, read from the first chunk: columns
    of integers read as ids, a column of decimal numbers made categorical by a few values that are not
    numbers, and libFM rows of unequal width that make the features one multi-valued field."""
    notes, integers, whole = [], [], []
    for name, kind in kinds.items():
        column = frame.columns[name].slice(0, NOTES_LOOK_AT_ROWS)  # a whole in-memory table is one chunk
        text = _is_text(column)
        words = pc.is_in(column, value_set=pa.array(MISSING_WORDS, column.type)) if kind == "numeric" and text else None
        if words is not None and pc.any(words).as_py():
            first = int(np.flatnonzero(words.to_numpy(zero_copy_only=False))[0])
            notes.append(f"column '{name}' is numeric, and {pc.sum(words).as_py():,} of its first {len(column):,} values "
                         f"are words for a missing number (first {column[first].as_py()!r}), read as missing as an empty "
                         f"cell is; {_kind_option(frame, 'categorical', name)} reads every value as an id")
        if kind == "numeric" and _inferred(name, frame, config):
            x = to_float(frame, column, name)
            x = x[np.isfinite(x)]
            if len(x) and np.array_equal(x, np.floor(x)):
                whole.append(name)
        if kind == "categorical" and (pa.types.is_timestamp(column.type) or pa.types.is_date(column.type)
                                      or pa.types.is_time(column.type)):
            shown = pc.cast(column.drop_null()[:1], pa.string()).to_pylist()
            notes.append(f"column '{name}' holds times ({column.type}), read as ids: a time is rarely seen twice, so it "
                         "counts toward a long tail in the data rule (deepfm.defaults) and its values mostly share the rare "
                         "id; derive numbers or coarser ids from it (hour, weekday, days since ...), or leave it out "
                         f"(--ignore, data.ignore). Rows to predict must write times in this form: "
                         f"{shown[0] if shown else '...'!r}")
        elif kind == "categorical" and pa.types.is_boolean(column.type):
            notes.append(f"column '{name}' holds booleans, read as the ids 'true' and 'false': a file or a request to "
                         "predict must write them so (pandas writes True/False to CSV), or a table give them as booleans")
        if kind == "categorical" and text and _mostly_sets(column, config.multi_separator):
            notes.append(f"column '{name}' is one id per whole value, and most of its values hold "
                         f"'{config.multi_separator}' (first {column.drop_null()[0].as_py()[:40]!r}): --multi {shlex.quote(name)} "
                         "reads each as a set of ids (a multi-valued field)")
        if kind != "categorical" or name in config.categorical:
            continue
        if pa.types.is_integer(column.type) or (text and signed_integers(column)):
            integers.append(name)
            continue
        if not text:
            continue
        number = pc.fill_null(pc.match_substring_regex(column, NUMBER_PATTERN), True).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(~number)
        if not 0 < len(bad) <= max(1, len(column) // 100):
            continue
        numbers = pc.filter(column, pa.array(number))  # decimals as ``looks_float`` sees them, bad values aside
        if pc.any(pc.match_substring_regex(numbers, FLOAT_MARK)).as_py():
            where = str(frame.error(int(bad[0]), name, "")).rstrip(": ")
            notes.append(f"column '{name}' is categorical: {len(bad)} of its first {len(column):,} values "
                         f"{'is' if len(bad) == 1 else 'are'} not a number (first {column[int(bad[0])].as_py()!r} at "
                         f"{where}); {_kind_option(frame, 'numeric', name)} treats it as numbers and reports each bad value")
    numeric, categorical = _kind_option(frame, "numeric"), _kind_option(frame, "categorical")
    if integers and frame.format in KIND_NOTE_FORMATS:
        shown = ", ".join(integers[:8]) + (f" and {len(integers) - 8} more" if len(integers) > 8 else "")
        criteo = [f"I{i}" for i in range(1, 14)]  # Criteo's 13 integer features, under their names in another format
        as_ids = [name for name in criteo if name in integers]  # (pandas makes those with a missing value floats)
        as_criteo = (f"; {'I1-I13' if len(as_ids) == 13 else ', '.join(as_ids)} {'are' if len(as_ids) > 1 else 'is'} "
                     f"among Criteo's counts I1-I13, which Criteo's raw files (--format criteo) give as numbers: "
                     f"{_kind_option(frame, 'numeric', as_ids)} reads them so here"
                     if as_ids and set(criteo) <= set(frame.columns) else "")
        notes.append(f"integer columns read as categorical, each value its own id: {shown} ({numeric} reads counts "
                     f"and amounts as numbers; {categorical} names ids and silences this note){as_criteo}")
    if whole and frame.format in KIND_NOTE_FORMATS:
        shown = ", ".join(whole[:8]) + (f" and {len(whole) - 8} more" if len(whole) > 8 else "")
        looked_at = min(frame.num_rows, NOTES_LOOK_AT_ROWS)
        notes.append(f"{WHOLE_FLOATS_NOTE} in the first {looked_at:,} rows, read as numbers: {shown} (a "
                     f"pandas integer column with a missing value turns into floats; {categorical} names ids, {numeric} "
                     "silences this note)")
    if frame.sparse is not None and frame.sparse.fields is None and set(kinds) == {"features"}:
        widths = np.diff(frame.sparse.starts)
        if len(widths) and widths.min() != widths.max():
            common = int(np.bincount(widths).argmax())
            odd = int(np.flatnonzero(widths != common)[0])
            notes.append(f"libFM rows differ in width (most have {common} features; line {frame.first_line + odd} has "
                         f"{int(widths[odd])}), so the features are one multi-valued field, not {common} positional fields")
        elif len(widths) and widths[0] > 1:
            notes.append(f"libFM rows of {int(widths[0])} features each whose index ranges overlap (taking each row's "
                         f"features in index order, the k-th of one row is not always below the (k+1)-th of every "
                         f"other; or a row repeats an index), so the features are one multi-valued field, not "
                         f"{int(widths[0])} positional fields")
    return notes


def is_nested(kind: pa.DataType) -> bool:
    """A struct, map or list type (plain or dictionary-encoded): no one value per row to read as an id or a number."""
    return pa.types.is_nested(kind) or pa.types.is_dictionary(kind) and pa.types.is_nested(kind.value_type)


def refuse_unreadable_column(frame: RawFrame, name: str, kind: str) -> None:
    """A ``DataError`` at column ``name`` where its type cannot be read as a field of ``kind`` (``auto``: any, as
    training infers it): lists that are not of ids (floats, lists), or lists in a single-valued field; structs, maps."""
    column, where = frame.columns[name], {"line": 1, "column": frame.column_numbers.get(name)}
    if is_id_list(column.type):
        if kind not in ("auto", "multi"):
            raise DataError(frame.path, f"column '{name}' holds lists ({column.type}), but the model reads it as a "
                            f"{kind} field, one value a row: give it as it was in the training data", **where)
    elif is_list(column.type):
        raise DataError(frame.path, f"column '{name}' holds lists of {column.type.value_type}: deepfm reads lists of ids "
                        "(text, integers) as multi-valued fields; leave the column out (--ignore, data.ignore), or give "
                        "its numbers as numeric columns of their own", **where)
    elif is_nested(column.type):
        raise DataError(frame.path, f"column '{name}' holds {column.type} values: deepfm reads text, numbers, booleans, "
                        "times and lists of ids; give its parts as columns of their own, or leave it out (--ignore, "
                        "data.ignore)", **where)


def resolve_kinds(frame: RawFrame, config: DataConfig) -> dict[str, str]:
    """Each column's kind: the flags first, then what the format fixes, then ``looks_float`` (floats
    are numeric; integers and strings are categorical)."""
    categorical, numeric = set(config.categorical), set(config.numeric)
    for name, keys in config.columns_named_twice().items():
        raise ConfigError(f"data: column {name!r} is named by {' and '.join('--' + key for key in keys)}; name it once, "
                          "with the role it has")
    weight = {config.weight} if config.weight else set()
    for option, names in (("--categorical (data.categorical)", categorical), ("--numeric (data.numeric)", numeric),
                          ("--ignore (data.ignore)", set(config.ignore)), ("--weight (data.weight)", weight)):
        for name in sorted(names):
            if name == config.label and name not in frame.columns:
                if option.startswith("--ignore"):  # it would be trained on all the same: say so, not nothing
                    raise DataError(frame.path, f"{option} names column '{name}', the label (--label): the label is "
                                                "never a feature, and this one is the column the model learns; to "
                                                "learn another column, name it with --label", line=1)
                raise DataError(frame.path, f"{option} names column '{name}', the label (--label): it cannot be a "
                                            "feature or a weight too", line=1)
            if name not in frame.columns:
                known, close = ", ".join(frame.columns), closest_name(name, list(frame.columns))
                raise DataError(frame.path, f"{option} names column '{name}', which is not in the {frame.holder} (columns: "
                                f"{known})" + (f"; did you mean '{close}'?" if close else ""), line=1)
    kinds: dict[str, str] = {}
    for name, column in frame.columns.items():
        if name in config.ignore or name == config.weight:
            continue
        fixed = frame.kinds.get(name, "auto")
        if fixed == "multi":
            kinds[name] = "multi"
        elif is_list(column.type) or is_nested(column.type):  # lists that are not of ids (``is_id_list``), structs
            refuse_unreadable_column(frame, name, "auto")
        elif name in categorical:
            kinds[name] = "categorical"
        elif name in numeric:
            if pa.types.is_list(column.type):
                raise ConfigError(f"data: column '{name}' is multi-valued and cannot be --numeric")
            kinds[name] = "numeric"
        elif fixed != "auto":
            kinds[name] = fixed
        else:
            kinds[name] = "numeric" if looks_float(column) else "categorical"
    if not kinds:
        raise DataError(frame.path, "no feature columns besides the label", line=1)
    return kinds
