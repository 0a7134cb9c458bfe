"""Where the MLP's first Linear on the batch's distinct rows pays (``deepfm.models.first_layer.pays``).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/first_layer_rule.py [--steps 8]

DeepFM (MLP 400³, dropout 0.5, batch norm) forward + backward on 4096-row batches of Zipf-distributed ids,
for several widths k, field counts and vocabularies: the dense product against the distinct form, steps
alternating on one model (medians). The rule's thresholds (``MIN_WIDTH``, ``MIN_SLOTS_PER_ROW``) come from it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from deepfm.data.tensors import Batch  # noqa: E402
from deepfm.models import first_layer  # noqa: E402
from deepfm.models.deepfm import DeepFM  # noqa: E402

BATCH = 4096
CASES = (  # k, fields, values a field, Zipf exponent
    (64, 10, 600, 1.3), (32, 10, 600, 1.3), (24, 10, 600, 1.3), (10, 10, 600, 1.3),
    (64, 39, 3000, 1.3), (16, 39, 3000, 1.3), (64, 26, 20000, 1.2), (10, 39, 25000, 1.1),
)


def batches(fields: int, values: int, exponent: float, count: int = 4) -> list[Batch]:
    rng = np.random.default_rng(0)
    made = []
    for _ in range(count):
        ids = np.stack([(rng.zipf(exponent, BATCH) - 1) % values + f * values for f in range(fields)], axis=1)
        made.append(Batch(torch.from_numpy(ids), None, [], torch.ones(BATCH)).prepare())
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    rule = first_layer.MIN_WIDTH
    print(f"{'k':>3} {'F':>3} {'distinct rows':>13} {'slots/row':>9} {'dense':>9} {'distinct':>9}  rule says")
    for k, fields, values, exponent in CASES:
        made = batches(fields, values, exponent)
        model = DeepFM(fields * values, fields, embed_dim=k, mlp=(400, 400, 400), dropout=0.5, batch_norm=True).train()
        times: dict[str, list[float]] = {"dense": [], "distinct": []}
        try:
            for step in range(args.steps + 2):
                for name, width in (("dense", 10**9), ("distinct", 0)):
                    first_layer.MIN_WIDTH = width
                    began = time.perf_counter()
                    model(made[step % len(made)]).sum().backward()
                    model.zero_grad(set_to_none=True)
                    if step >= 2:
                        times[name].append(time.perf_counter() - began)
        finally:
            first_layer.MIN_WIDTH = rule
        distinct = statistics.median(len(b.distinct().unique) for b in made)
        says = "distinct" if first_layer.pays(BATCH, fields, int(distinct), k) else "dense"
        print(f"{k:>3} {fields:>3} {distinct:>13,.0f} {BATCH * fields / distinct:>9.1f} "
              f"{statistics.median(times['dense']) * 1e3:>6.1f} ms {statistics.median(times['distinct']) * 1e3:>6.1f} ms  {says}")


if __name__ == "__main__":
    main()
