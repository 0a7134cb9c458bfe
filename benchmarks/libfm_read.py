"""How fast libFM/libFFM text is read: the compiled pass (``deepfm.data.sparse_scan``) against Arrow's string kernels.

    .venv/bin/python benchmarks/libfm_read.py FILE [--format libfm|libffm] [--rounds 3]
    .venv/bin/python benchmarks/libfm_read.py --frappe DATASETS/frappe --copies 27   # ~99 MB of Frappe's lines

Reads the file's lines once (``read_lines``), then times ``sparse_frame`` on them both ways, the rounds alternated
in this one process (a busy machine slows both alike), and prints each way's median seconds and MB/s with their
ratio. Both ways must give the same rows and values bit for bit, or it stops. ``--frappe`` writes ``--copies``
copies of Frappe's train.libfm end to end into a temporary file first.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from deepfm.data.sparse import read_lines, sparse_frame


def timed(lines, path: Path, fmt: str, compiled: bool):
    began = time.perf_counter()
    frame = sparse_frame(lines, path, fmt, compiled=compiled)
    return time.perf_counter() - began, frame


def same(a, b) -> bool:
    x, y = a.sparse, b.sparse
    return (a.labels.equals(b.labels) and np.array_equal(x.starts, y.starts) and np.array_equal(x.indices, y.indices)
            and np.array_equal(x.values.view(np.uint32), y.values.view(np.uint32))
            and (x.fields is None) == (y.fields is None) and (x.fields is None or np.array_equal(x.fields, y.fields))
            and list(a.columns) == list(b.columns) and all(a.columns[n].equals(b.columns[n]) for n in a.columns)
            and list(a.weights) == list(b.weights) and all(a.weights[n].equals(b.weights[n]) for n in a.weights))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", nargs="?", type=Path)
    parser.add_argument("--format", default="libfm", choices=["libfm", "libffm"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frappe", type=Path, help="a folder with Frappe's train.libfm, copied --copies times")
    parser.add_argument("--copies", type=int, default=27)
    args = parser.parse_args()
    if (args.file is None) == (args.frappe is None):
        parser.error("give a FILE or --frappe")
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    with tempfile.TemporaryDirectory() as scratch:
        path = args.file
        if args.frappe is not None:
            path = Path(scratch) / "frappe_copies.libfm"
            text = (args.frappe / "train.libfm").read_bytes()
            path.write_bytes(text * args.copies)
        megabytes = path.stat().st_size / 1e6
        lines = read_lines(path)
        timed(lines, path, args.format, compiled=True)  # numba loaded and its pass compiled (or read from its cache)
        seconds: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.rounds):
            frames = {}
            for compiled in (False, True):
                took, frames[compiled] = timed(lines, path, args.format, compiled)
                seconds[compiled].append(took)
            if not same(frames[True], frames[False]):
                raise SystemExit("the two ways read different rows")
        arrow, fast = statistics.median(seconds[False]), statistics.median(seconds[True])
        print(f"{path.name}: {megabytes:.1f} MB, {len(lines):,} lines, {len(frames[True].sparse.indices):,} features; "
              f"sparse_frame (parse + columns), median of {args.rounds}:")
        print(f"  Arrow's kernels  {arrow:6.2f} s  {megabytes / arrow:6.1f} MB/s")
        print(f"  compiled pass    {fast:6.2f} s  {megabytes / fast:6.1f} MB/s   ({arrow / fast:.1f}× as fast)")


if __name__ == "__main__":
    main()
