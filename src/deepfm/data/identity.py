"""What a run trained on, cheaply: for ``--resume`` to refuse other data than the interrupted run's.

A file (or each file a glob pattern matches) is known by its resolved path, size and modification
time, read from the file system without opening it. Data given in memory (a pyarrow Table, a pandas
DataFrame, a ``RawFrame``) has no such identity: it is known by its row count, its column names and a
SHA-256 of at most ``SAMPLED_ROWS`` evenly spaced rows, so a different table is told apart in
milliseconds, while a change to rows outside the sample goes unnoticed (hashing every row would cost
a pass over the data at every start).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from deepfm.data.filelist import is_pattern, training_files
from deepfm.data.formats import check_data_file
from deepfm.data.frame import RawFrame

SAMPLED_ROWS = 1000


def data_identity(data: Any, pattern: bool = True) -> Any:
    """A JSON-able identity of ``data`` (a path, or with ``pattern`` a glob pattern as ``--train`` reads one; a Table,
    a DataFrame, a RawFrame or None)."""
    if data is None:
        return None
    if isinstance(data, (str, Path)):
        return [_file_identity(path) for path in _files(data, pattern)]
    if isinstance(data, RawFrame):
        columns = dict(data.columns) | ({"<label>": data.labels} if data.labels is not None else {})
        return _columns_identity(columns, data.num_rows)
    if type(data).__module__.startswith("pandas") and type(data).__name__ == "DataFrame":
        try:
            sample = pa.Table.from_pandas(data.iloc[_sampled(len(data))], preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # reading the data says what is wrong
            return {"rows": len(data)}
        return _columns_identity({name: sample.column(name) for name in sample.column_names}, len(data), sampled=True)
    if isinstance(data, pa.Table):
        return _columns_identity({name: data.column(name) for name in data.column_names}, data.num_rows)
    return None


def data_checksums(data: str | Path) -> list[dict[str, Any]]:
    """Each file ``data`` names (a path or a glob pattern) with its size and SHA-256: what a report's figures came
    from, checked by reading every byte (``data_identity`` does not open the files)."""
    return [{"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": sha256_of(path)}
            for path in _files(data)]


def _files(data: str | Path, pattern: bool = True) -> list[Path]:
    """The files a path names: itself, or (``pattern``) those a glob pattern matches; a missing one is a ``DataError``."""
    return training_files(data) if pattern and is_pattern(data) else [check_data_file(data)]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": stat.st_size, "modified_ns": stat.st_mtime_ns}


def _sampled(rows: int) -> np.ndarray:
    return np.unique(np.linspace(0, rows - 1, min(rows, SAMPLED_ROWS)).astype(np.int64)) if rows else np.zeros(0, np.int64)


def _columns_identity(columns: dict[str, Any], rows: int, sampled: bool = False) -> dict[str, Any]:
    digest = hashlib.sha256()
    picked = None if sampled else pa.array(_sampled(rows))
    for name in sorted(columns):
        values = columns[name] if picked is None else columns[name].take(picked)
        digest.update(repr((name, values.to_pylist())).encode())
    return {"rows": rows, "columns": sorted(columns), "sample_sha256": digest.hexdigest()}


def describe_change(name: str, before: Any, now: Any) -> str:
    """``train /data/a.csv → /data/b.csv``: how ``name``'s identity changed, in a few words."""
    if isinstance(before, list) and isinstance(now, list):
        if len(before) != len(now):
            return f"{name}: {len(before)} files → {len(now)}"
        old, new = next((a, b) for a, b in zip(before, now) if a != b)
        if old.get("path") != new.get("path"):
            return f"{name} {old.get('path')} → {new.get('path')}"
        return (f"{name} {new['path']} changed since (size {old.get('bytes')} → {new['bytes']} bytes, modified "
                f"{_when(old.get('modified_ns'))} → {_when(new['modified_ns'])})")
    return f"{name} {_short(before)} → {_short(now)}"


def _short(identity: Any) -> str:
    if identity is None:
        return "none"
    if isinstance(identity, list):
        return identity[0]["path"] if len(identity) == 1 else f"{len(identity)} files"
    return f"data in memory ({identity.get('rows')} rows, sample {str(identity.get('sample_sha256', '?'))[:8]})"


def _when(nanoseconds: int | None) -> str:
    if nanoseconds is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(nanoseconds / 1e9))
