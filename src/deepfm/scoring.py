"""``deepfm predict``'s rows: each chunk's ``--keep`` columns beside its predictions, written to the output file."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from deepfm.data.frame import RawFrame, as_numbers_where_written_so, typed_alone_as
from deepfm.errors import ConfigError, DataError
from deepfm.outputs import ColumnTypeChanged, TableFile, is_text

if TYPE_CHECKING:
    from deepfm.api import Estimator


def write_predictions(out: TableFile, frame: RawFrame, predictions: np.ndarray, estimator: "Estimator", keep: list[str],
                      parquet: bool) -> None:
    """One chunk's rows of ``predict --out``: its ``--keep`` columns and the predictions' columns."""
    task = estimator.encoder.task
    kept = {name: kept_column(frame, name, estimator.config.data.label, task.prediction_names()) for name in keep}
    if frame.format in ("csv", "tsv", "criteo") and parquet:  # typed, as pandas reads it, by the first chunk's rows:
        kept = {name: column if out.text_column(name) else as_numbers_where_written_so(column)  # text stays as written
                for name, column in kept.items()}
    columns = task.prediction_columns(predictions)
    if columns["prediction"].dtype == object and parquet:  # classes: ratings 1-5 as numbers, names as text
        classes = as_numbers_where_written_so(pa.array(task.classes, pa.string()))  # by all the model's classes
        if len(set(classes.to_pylist())) == len(task.classes):  # '1' and '1.0' are two classes: then text, as written
            columns["prediction"] = classes.take(pa.array(predictions.argmax(axis=1)))
    try:
        out.write(pa.table({**kept, **columns}))
    except ColumnTypeChanged as error:  # located at the first value that is not of the column's type
        raw = kept_column(frame, error.name, estimator.config.data.label, task.prediction_names())
        rows = np.flatnonzero(~typed_alone_as(raw, error.before)) if is_text(raw.type) else [0]
        raise DataError(frame.path, f"--keep {error.name}: this value reads as another type than the values before "
                        f"({error}), and a Parquet column holds one type: write a .csv file, or give a --chunk-rows "
                        "that reads this row in the first chunk", line=frame.line_of(rows[0] if len(rows) else 0)) from None


def kept_column(frame: RawFrame, name: str, label: str, outputs: list[str]) -> pa.Array:
    """Input column ``name`` of ``frame`` (the label too), as read, for ``predict --keep``; not one of the prediction
    columns, ``outputs``."""
    if name in outputs:
        raise ConfigError(f"--keep {name}: the predictions write a column of that name ({', '.join(outputs)})")
    if name == label and frame.labels is not None:
        return frame.labels
    if name not in frame.columns:
        from deepfm.data.tables import closest_name

        names = ([label] if frame.labels is not None else []) + list(frame.columns)
        close = closest_name(name, names)
        raise DataError(frame.path, f"--keep {name}: no such column (columns: {', '.join(names)})"
                        + (f"; did you mean '{close}'?" if close else ""), line=1)
    if frame.kinds.get(name) == "multi":
        raise ConfigError(f"--keep {name}: a multi-valued column cannot be copied; keep a key column such as an id")
    return frame.columns[name]
