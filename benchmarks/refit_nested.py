"""What ``training.refit`` gains, estimated without reading a test split (a nested split).

    python benchmarks/refit_nested.py ml100k-ids ml100k-side ml1m [--model fm] [--set training.x=y ...]

For each accuracy-suite data set: carve every 10th row of the suite's train as an inner validation
split, let early stopping choose the epochs on it, then score on the suite's validation split (a)
that model and (b) the model refitted on the whole suite train (inner train + inner valid) for those
epochs. (b) − (a) estimates what refitting on train + valid gains on test. Prints one line per run
and writes results/refit_nested.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import accuracy  # noqa: E402


def nested(name: str, model: str, settings: dict, root: Path) -> dict:
    from deepfm.api import Estimator
    from deepfm.config import merge

    suite = accuracy.DATASETS[name](root)
    inner_train, inner_valid = accuracy._every_tenth(suite.train)
    record = {"dataset": name, "model": model, "settings": settings}
    for refit in ("off", "on"):
        sections = merge({"data": suite.data, "model": {"name": model}, "training": {"refit": refit}}, settings)
        estimator = Estimator(**sections).fit(inner_train, valid=inner_valid, progress=False)
        record[f"refit {refit}"] = {"inner_valid": estimator.metrics["best_valid"], "best_epoch": estimator.metrics["best_epoch"],
                                    "epochs": estimator.metrics["epochs"], "refit": estimator.metrics.get("refit"),
                                    "suite_valid": estimator.evaluate(suite.valid)}
    metric = suite.metric
    lower_is_better = 1 if metric == "rmse" else -1
    record["gain"] = round(lower_is_better * (record["refit off"]["suite_valid"][metric] - record["refit on"]["suite_valid"][metric]), 4)
    print(f"{name:12s} {model}: suite valid {metric} {record['refit off']['suite_valid'][metric]:.4f} → "
          f"{record['refit on']['suite_valid'][metric]:.4f} refitted (best epoch {record['refit on']['best_epoch']})", flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", choices=[n for n, s in accuracy.DATASETS.items()])
    parser.add_argument("--model", default="fm")
    parser.add_argument("--set", nargs="*", default=[], dest="settings")
    parser.add_argument("--root", default="/work/shared/datasets")
    parser.add_argument("--out", default=str(HERE / "results" / "refit_nested.json"))
    args = parser.parse_args()
    settings = accuracy.parse_settings(args.settings)
    records = [nested(name, args.model, settings, Path(args.root)) for name in args.datasets]
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "results": records}, indent=1))


if __name__ == "__main__":
    main()
