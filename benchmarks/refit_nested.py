"""What ``training.refit`` gains, estimated without reading a test split (a nested split).

    python benchmarks/refit_nested.py ml100k-ids ml100k-side ml1m [--model fm] [--set training.x=y ...]
    python benchmarks/refit_nested.py ml100k-ids ml100k-side ml1m --caps 20 40 80   # the epoch cap, refit on

For each accuracy-suite data set (and each ``--seeds`` seed): carve every 10th row of the suite's train
as an inner validation split, let early stopping choose the epochs on it, then score on the suite's
validation split (a) that model and (b) the model refitted on the whole suite train (inner train + inner
valid) for those epochs. (b) − (a) estimates what refitting on train + valid gains on test. The runs take
``deepfm tune``'s path (one thread; ``refit_best``, what tune saves). Prints one line per run and
writes results/refit_nested.json (``--out``).

    python benchmarks/refit_nested.py frappe --model fm --seeds 2026 7 --out results/refit_nested_tune_fm.json \\
        --set training.optimizer='"adagrad"' training.lr=0.11 training.embed_reg='"occurrences"' ...

``--caps C1 C2 ...`` compares epoch caps (``training.epochs``) instead, each scored as (b) only. A run's
epochs do not depend on its cap (the cap only ends the loop), so a smaller cap's run is a prefix of a
larger one's: its best epoch is the last improved epoch of that prefix, and where that equals the
larger cap's best epoch the refitted model is the same one (the refit replays the verdicts up to the
best epoch). Caps run from the largest down, and such a cap reuses the larger cap's result.
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


def inner_split(train, scratch: Path):
    """The suite's train as (inner train, inner valid): every 10th row held out (a table, or a text
    file such as Frappe's libfm split into two files under ``scratch``)."""
    if not isinstance(train, (str, Path)):
        return accuracy._every_tenth(train)
    lines = Path(train).read_text().splitlines(keepends=True)
    inner_train, inner_valid = scratch / f"inner_train{Path(train).suffix}", scratch / f"inner_valid{Path(train).suffix}"
    inner_train.write_text("".join(line for i, line in enumerate(lines) if i % 10 != 9))
    inner_valid.write_text("".join(line for i, line in enumerate(lines) if i % 10 == 9))
    return inner_train, inner_valid


def nested(name: str, model: str, settings: dict, root: Path) -> dict:
    """deepfm tune's path (one thread, ``train_one``, ``refit_best``): the model early stopping kept on
    the inner split and the same model refitted on the inner train + valid, each scored on the suite's valid."""
    import tempfile

    from deepfm.api import Estimator
    from deepfm.config import build_config, merge
    from deepfm.defaults import with_task_defaults
    from deepfm.experiments.compare import EncodedSplits, train_one
    from deepfm.experiments.tune import refit_best
    from deepfm.runtime import configure

    suite = accuracy.DATASETS[name](root)
    sections = merge({"data": suite.data, "model": {"name": model}, "training": {"threads": 1, "refit": "on"}}, settings)
    configure(1)
    with tempfile.TemporaryDirectory() as scratch:
        reader = Estimator(**sections)
        train, valid, _ = reader.training_rows(*inner_split(suite.train, Path(scratch)))
    config = with_task_defaults(reader.config, reader.encoder.task.name, reader.encoder.id_counts)
    data = EncodedSplits(reader.encoder, train, valid)
    scorer = Estimator(config)
    scorer.encoder = data.encoder
    scorer.model, run = train_one(config, data, lambda message: None, score_test=False)
    record = {"dataset": name, "model": model, "settings": settings, "config": config.to_json_dict()["training"],
              "best_epoch": run.best_epoch, "epochs": len(run.history),
              "refit off": {"suite_valid": scorer.evaluate(suite.valid)}}
    scorer.model, done = refit_best(config, data, run, held_out=False, log=lambda message: None)
    record["refit on"] = {"suite_valid": scorer.evaluate(suite.valid), "refit": done}
    metric = suite.metric
    lower_is_better = 1 if metric == "rmse" else -1
    record["gain"] = round(lower_is_better * (record["refit off"]["suite_valid"][metric] - record["refit on"]["suite_valid"][metric]), 5)
    print(f"{name:12s} {model} seed {config.training.seed}: suite valid {metric} {record['refit off']['suite_valid'][metric]:.5f} → "
          f"{record['refit on']['suite_valid'][metric]:.5f} refitted (best epoch {run.best_epoch} of {len(run.history)}; "
          f"gain {record['gain']:+.5f})", flush=True)
    return record


def _best_epoch(history: list[dict], cap: int) -> int | None:
    """The last epoch of ``history``'s first ``cap`` that improved on validation (a run capped there keeps it)."""
    improved = [record["epoch"] for record in history[:cap] if record.get("improved")]
    return improved[-1] if improved else None


def capped(name: str, model: str, settings: dict, caps: list[int], root: Path) -> dict:
    """FM refitted on the suite's train for the epochs an inner validation split chose under each cap."""
    from deepfm.api import Estimator
    from deepfm.config import merge

    suite = accuracy.DATASETS[name](root)
    inner_train, inner_valid = accuracy._every_tenth(suite.train)
    record: dict = {"dataset": name, "model": model, "settings": settings, "caps": {}}
    done: dict[int, dict] = {}  # best epoch -> the result of the run that refitted for it
    history: list[dict] = []
    for cap in sorted(caps, reverse=True):
        best = _best_epoch(history, cap)
        if best is not None and best in done:
            record["caps"][str(cap)] = done[best] | {"cap": cap, "same_as_cap": done[best]["cap"]}
        else:
            sections = merge({"data": suite.data, "model": {"name": model}, "training": {"refit": "on", "epochs": cap}},
                             settings)
            estimator = Estimator(**sections).fit(inner_train, valid=inner_valid, progress=False)
            history = history or estimator.metrics["history"]
            result = {"cap": cap, "inner_valid": estimator.metrics["best_valid"], "best_epoch": estimator.metrics["best_epoch"],
                      "epochs": estimator.metrics["epochs"], "refit": estimator.metrics.get("refit"),
                      "suite_valid": estimator.evaluate(suite.valid)}
            done[result["best_epoch"]] = result
            record["caps"][str(cap)] = result
        result = record["caps"][str(cap)]
        print(f"{name:12s} {model} cap {cap:3d}: inner valid {suite.metric} {result['inner_valid'][suite.metric]:.4f} "
              f"(best epoch {result['best_epoch']} of {result['epochs']}), refitted: suite valid "
              f"{result['suite_valid'][suite.metric]:.4f}" + (f" (= cap {result['same_as_cap']})" if "same_as_cap" in result else ""),
              flush=True)
    record["history"] = history
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", choices=[n for n, s in accuracy.DATASETS.items()])
    parser.add_argument("--model", default="fm")
    parser.add_argument("--set", nargs="*", default=[], dest="settings")
    parser.add_argument("--seeds", nargs="*", type=int, default=[None], help="training.seed of each run (default: the config's)")
    parser.add_argument("--caps", nargs="*", type=int, default=None, help="compare these epoch caps (refit on)")
    parser.add_argument("--root", default="/work/shared/datasets")
    parser.add_argument("--out", default=str(HERE / "results" / "refit_nested.json"))
    args = parser.parse_args()
    settings = accuracy.parse_settings(args.settings)
    records = []
    for name in args.datasets:  # written after each run: a stopped run keeps what it finished
        for seed in args.seeds:
            seeded = accuracy.merge_settings(settings, {"training": {"seed": seed}}) if seed is not None else settings
            records.append(capped(name, args.model, seeded, args.caps, Path(args.root)) if args.caps else
                           nested(name, args.model, seeded, Path(args.root)))
            Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "results": records}, indent=1))


if __name__ == "__main__":
    main()
