"""Test AUC along one streamed epoch: where in the epoch a run's accuracy is made (or lost).

    python benchmarks/stream_curve.py --train benchmarks/.data/big-9400000.csv --test benchmarks/.data/test.csv \\
        [--config benchmarks/stream_ranks.toml] [--seed 7] [--every-rows 1000000] [--set training.lr=0.003] \\
        [--encoder-cache /tmp/big-9400000.encoder.json] [--max-rows 5000000] [--threads 2] [--out curve.json]

Trains ``--config`` as ``deepfm train --stream`` does in one process (the same encoder, the task's
and the data's defaults, the starting weights of the seed, the batches of epoch 1), and every
``--every-rows`` training rows scores the model on ``--test`` (test AUC and logloss). The batches are
epoch 1's of the file, cut into segments that the trainer runs as its "epochs" with the test rows
as validation data, so the weights, the optimiser's state and the order of the rows are exactly a
one-epoch run's; the last point is that run's model. Each point also records the training loss of
its segment (rows the model had not seen: a progressive validation loss) and the spread (standard
deviation over the test rows) of the model's three terms: first-order, FM pairwise and MLP.

``--encoder-cache`` keeps the fitted encoder and each chunk's row count in a JSON file, so that
runs after the first skip the streamed fit (it depends only on the file and the data settings).
``--max-rows`` stops after the point at or past that many rows (the start of a longer run's curve).
``--set SECTION.KEY=VALUE`` overrides the config (VALUE as JSON, else a string), one change per flag.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from deepfm import Estimator
from deepfm.config import build_config, load_config_file, merge
from deepfm.data.encoded import EncodedData
from deepfm.data.encoders import FeatureEncoder
from deepfm.data.filelist import open_chunked
from deepfm.data.stream import StreamSource, chunk_bytes_for, fit_streaming
from deepfm.defaults import with_task_defaults
from deepfm.models.layers import fm_pairwise
from deepfm.runtime import configure as configure_runtime
from deepfm.training.trainer import Trainer

SPREAD_ROWS = 20_000  # test rows the terms' spread is measured on


class Segments:
    """Epoch 1 of ``source``'s batches, cut into segments of ``steps`` batches: the trainer's
    "epoch" e is segment e, read on from where the one before stopped (one pass over the file)."""

    def __init__(self, source: StreamSource, steps: int, batch_size: int):
        self.source, self.steps = source, steps
        self.num_rows = steps * batch_size  # what the trainer reads for its progress bar and checkpoints
        self.window = source.window
        self.rows_per_chunk = source.rows_per_chunk
        self._batches: Iterator[EncodedData] | None = None

    def count(self, batch_size: int, max_rows: int | None = None) -> int:
        """Segments in the epoch (those up to ``max_rows`` rows)."""
        whole = -(-self.source.steps_per_epoch(batch_size) // self.steps)
        return whole if max_rows is None else min(whole, -(-max_rows // (self.steps * batch_size)))

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.steps

    def batches(self, batch_size: int, seed: int, epoch: int, skip: int = 0) -> Iterator[EncodedData]:
        if self._batches is None:
            self._batches = self.source.batches(batch_size, seed, 0)
        return itertools.islice(self._batches, self.steps)


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["training.lr=0.003", ...]`` as a nested config mapping."""
    values: dict[str, Any] = {}
    for item in items:
        key, _, text = item.partition("=")
        section, _, name = key.partition(".")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        values.setdefault(section, {})[name] = value
    return values


def fitted_encoder(est: Estimator, train: str, cache: str | None) -> tuple[FeatureEncoder, list[int]]:
    """The streamed fit of ``train`` (and each chunk's rows), from ``cache`` when it holds this file's."""
    cfg = est.config.data
    key = hashlib.sha256(json.dumps([str(Path(train).resolve()), Path(train).stat().st_size,
                                     cfg.model_dump(mode="json")], sort_keys=True).encode()).hexdigest()
    if cache and Path(cache).exists():
        saved = json.loads(Path(cache).read_text())
        if saved["key"] == key:
            return FeatureEncoder.from_dict(saved["encoder"]), saved["rows"]
    file = open_chunked(train, cfg, chunk_bytes_for(train, cfg.chunk_rows))
    encoder, rows = fit_streaming(file, cfg)
    if cache:
        Path(cache).write_text(json.dumps({"key": key, "encoder": encoder.to_dict(), "rows": rows}))
    return encoder, rows


@torch.no_grad()
def term_spreads(model: torch.nn.Module, rows: EncodedData) -> dict[str, float]:
    """Standard deviation over ``rows`` of DeepFM's first-order, FM pairwise and MLP terms."""
    was_training = model.training
    model.eval()
    batch = rows.to_batch("cpu")
    embedded = model.embedding(batch)
    terms = {"linear": model.linear(batch), "fm": fm_pairwise(embedded, model.output_dim),
             "mlp": model.dnn(embedded.fields.flatten(1))}
    model.train(was_training)
    return {name: round(float(term.float().std()), 4) for name, term in terms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--config", default=str(Path(__file__).resolve().parent / "stream_ranks.toml"))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--every-rows", type=int, default=1_000_000)
    parser.add_argument("--max-rows", type=int, help="stop at the first point with at least this many rows")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--encoder-cache")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out")
    args = parser.parse_args()
    overrides = parse_sets(args.set)
    if args.seed is not None:
        overrides = merge(overrides, {"training": {"seed": args.seed}})
    configure_runtime(args.threads)
    est = Estimator(build_config(merge(load_config_file(args.config), overrides)))
    began = time.perf_counter()
    est.encoder, rows = fitted_encoder(est, args.train, args.encoder_cache)
    fit_s = time.perf_counter() - began
    cfg = est.config = with_task_defaults(est.config, est.encoder.task.name, est.encoder.id_counts)
    file = open_chunked(args.train, cfg.data, chunk_bytes_for(args.train, cfg.data.chunk_rows))
    source = StreamSource(file, est.encoder, rows, window=cfg.data.shuffle_window)
    batch = cfg.training.batch_size
    segments = Segments(source, max(1, round(args.every_rows / batch)), batch)
    test = est.encode(args.test, with_labels=True)
    spread_rows = test.slice(0, min(SPREAD_ROWS, len(test)))
    est.model = est._new_model()
    points: list[dict[str, Any]] = []
    started = time.perf_counter()

    def record(epoch: dict[str, Any]) -> None:
        seen = min(epoch["epoch"] * segments.steps * batch, source.num_rows)
        point = {"rows": seen, "test_auc": round(epoch["valid"]["auc"], 5), "test_logloss": round(epoch["valid"]["logloss"], 5),
                 "segment_train_loss": round(epoch["train_loss"], 5), "spread": term_spreads(est.model, spread_rows),
                 "seconds": round(time.perf_counter() - started, 1)}
        points.append(point)
        print(json.dumps(point), file=sys.stderr, flush=True)

    training = cfg.training.model_copy(update={"epochs": segments.count(batch, args.max_rows), "patience": 0,
                                                  "lr_schedule": "none"})  # segments are not epochs: never reload
    result = Trainer(est.model, est.encoder.task, training, progress=False, on_epoch=record).fit(segments, valid=test)
    summary = {"train": args.train, "test": args.test, "config": args.config, "overrides": overrides,
               "effective_training": cfg.training.model_dump(mode="json"), "model": cfg.model.model_dump(mode="json"),
               "ids": est.encoder.id_counts.to_dict() if est.encoder.id_counts else None,
               "fit_s": round(fit_s, 1), "train_s": round(result.train_seconds, 1),
               "train_samples_per_s": round(result.samples_per_s, 1), "final": points[-1] if points else None,
               "points": points}
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if points and not math.isfinite(points[-1]["test_auc"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
