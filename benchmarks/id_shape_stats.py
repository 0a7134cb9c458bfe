"""Statistics of the training ids that a data rule could read, on seeded samples of the accuracy suite's sets.

    python benchmarks/id_shape_stats.py --only frappe ipinyou ml1m-clicks criteo-synth --rows 15000 30000

For each (data set, rows): distinct ids per row (the rule's statistic, ``deepfm.defaults.id_shape``), ids seen
once per row and their share of the occurrences, the share of occurrences in values seen under 10 times, and
the share of the second half's occurrences whose value the first half lacks (in the sample's order, which is
random for these sets). Single-valued categorical fields only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import accuracy  # noqa: E402


def training_table(suite: accuracy.Suite) -> pa.Table:
    train = suite.train
    if isinstance(train, pa.Table):
        return train
    path = Path(train)
    if path.suffix == ".libfm":
        path = path.with_suffix(".csv")  # Frappe: the same rows as CSV
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types={name: pa.string() for name in suite.data.get("categorical", [])}))


def statistics(table: pa.Table, fields: list[str]) -> dict[str, float]:
    rows, half = table.num_rows, table.num_rows // 2
    distinct = occurrences = once = rare = new = 0
    for name in fields:
        values = pc.fill_null(pc.cast(table[name], pa.string()), "").to_numpy(zero_copy_only=False)
        _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        per_row = counts[inverse]
        distinct, occurrences = distinct + len(counts), occurrences + rows
        once, rare = once + int((per_row == 1).sum()), rare + int((per_row < 10).sum())
        first = np.zeros(len(counts), bool)
        first[inverse[:half]] = True
        new += int((~first[inverse[half:]]).sum())
    return {"ids per row": distinct / rows, "seen once per row": once / rows, "share seen once": once / occurrences,
            "share seen < 10 times": rare / occurrences, "new in second half": new / (occurrences - half * len(fields))}


COLUMNS = ("ids per row", "seen once per row", "share seen once", "share seen < 10 times", "new in second half")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="/work/shared/datasets")
    parser.add_argument("--only", nargs="*", default=["frappe", "ipinyou", "ml100k-clicks", "ml1m-clicks", "criteo-synth"])
    parser.add_argument("--rows", nargs="*", type=int, default=[15_000, 30_000])
    args = parser.parse_args()
    print("| data | rows | " + " | ".join(COLUMNS) + " |\n| --- | ---: |" + " ---: |" * len(COLUMNS))
    for name in args.only:
        suite = accuracy.DATASETS[name](Path(args.datasets))
        table = training_table(suite)
        fields = [n for n in table.column_names if n != "label" and n not in suite.data.get("numeric", [])
                  and not pa.types.is_list(table[n].type)]
        for rows in [r for r in args.rows if r < table.num_rows] + [table.num_rows]:
            kept = np.sort(np.random.default_rng(accuracy.SEED).permutation(table.num_rows)[:rows])  # as --train-rows
            values = statistics(table.take(kept), fields)
            print(f"| {name} | {rows:,} | " + " | ".join(f"{values[c]:.3f}" for c in COLUMNS) + " |", flush=True)


if __name__ == "__main__":
    main()
