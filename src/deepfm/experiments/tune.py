"""Tune per-model defaults on a VALIDATION split (the test file is never read).

A small staged grid, cheap enough for a laptop: first the learning rate, then, at the best
learning rate, embedding L2 and (models with an MLP) dropout. Each setting trains once with
early stopping; its score is the best validation metric over epochs.

    python -m deepfm.experiments.tune --train T --valid V --out DIR [--models all] [--epochs 20]

writes DIR/tuning.json and DIR/tuning.md; winners go into ``deepfm/defaults.py``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

from deepfm.config import build_config, merge
from deepfm.experiments.compare import EncodedSplits, parse_models, train_one
from deepfm.training.metrics import SELECTION
from deepfm.runtime import configure as configure_runtime

LEARNING_RATES = (1e-3, 3e-3, 1e-2)
LINEAR_LEARNING_RATES = (3e-3, 1e-2, 3e-2, 1e-1)  # lr and fm have no MLP and tolerate larger steps
EMBED_L2 = (0.0, 1e-6, 1e-5)
DROPOUTS = (0.2, 0.5)
WITHOUT_MLP = ("lr", "fm")


def score(model: str, overrides: dict[str, Any], base: dict[str, Any], data: EncodedSplits) -> dict[str, Any]:
    """Best validation metric of one setting (``overrides`` like {"training": {"lr": 3e-3}})."""
    config = build_config(merge(merge(base, overrides), {"model": {"name": model}}), source="tune")
    _, run = train_one(config, data, lambda message: None, score_test=False)
    name, _ = SELECTION[data.encoder.task]
    best = [h["valid"] for h in run.history if h["epoch"] == run.best_epoch][0]
    return {"model": model, "overrides": overrides, "valid": best, "best_epoch": run.best_epoch,
            "seconds": round(run.train_seconds, 1), "metric": name}


def tune_model(model: str, base: dict[str, Any], data: EncodedSplits, log, lr_only: bool = False) -> list[dict[str, Any]]:
    name, larger = SELECTION[data.encoder.task]

    def best_of(trials: list[dict[str, Any]]) -> dict[str, Any]:
        return (max if larger else min)(trials, key=lambda t: t["valid"][name])

    trials = []
    for lr in LINEAR_LEARNING_RATES if model in WITHOUT_MLP else LEARNING_RATES:
        trials.append(score(model, {"training": {"lr": lr}}, base, data))
        log(json.dumps(trials[-1]))
    if lr_only:
        return trials
    lr = best_of(trials)["overrides"]["training"]["lr"]
    dropouts = (None,) if model in WITHOUT_MLP else DROPOUTS
    for l2, dropout in itertools.product(EMBED_L2, dropouts):
        overrides: dict[str, Any] = {"training": {"lr": lr, "embed_l2": l2}}
        if dropout is not None:
            overrides["model"] = {"dropout": dropout}
        defaults = build_config(base)
        if l2 == defaults.training.embed_l2 and dropout in (None, defaults.model.dropout):
            continue  # already scored in the learning-rate stage
        trials.append(score(model, overrides, base, data))
        log(json.dumps(trials[-1]))
    return trials


def main(argv: list[str] | None = None) -> int:
    from deepfm.experiments.compare import encode_splits

    parser = argparse.ArgumentParser(prog="python -m deepfm.experiments.tune", description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--valid", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", default="all")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--lr-only", action="store_true", help="only the learning-rate stage")
    args = parser.parse_args(argv)
    base = {"training": {"epochs": args.epochs, "patience": args.patience, "threads": args.threads}}
    configure_runtime(args.threads)
    config = build_config(base)
    # the validation file doubles as the (unused) test slot: tuning never reads a test file
    data = encode_splits(config, args.train, args.valid, args.valid)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    results = {model: tune_model(model, base, data, log, args.lr_only) for model in parse_models(args.models)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tuning.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (out / "tuning.md").write_text(tuning_markdown(results), encoding="utf-8")
    print(tuning_markdown(results))
    return 0


def tuning_markdown(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| model | lr | embed L2 | dropout | validation (best epoch) | best epoch | seconds |",
             "|---|---|---|---|---|---|---|"]
    for model, trials in results.items():
        for t in trials:
            training, m = t["overrides"].get("training", {}), t["overrides"].get("model", {})
            lines.append(f"| {model} | {training.get('lr', '')} | {training.get('embed_l2', 'default')} "
                         f"| {m.get('dropout', 'default')} | {', '.join(f'{k} {v:.5f}' for k, v in t['valid'].items())} "
                         f"| {t['best_epoch']} | {t['seconds']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
