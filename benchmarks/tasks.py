"""One benchmark measurement per process (deepfm's environment); prints one JSON line.

    python benchmarks/tasks.py mlp [fp32|bf16] [INPUT_GRAD yes|no] [WIDTH]
    python benchmarks/tasks.py deepfm DATA_DIR [fp32|bf16] [defaults|stripped] [NUMERIC yes|no]
    python benchmarks/tasks.py fm_frappe FRAPPE_DIR [defaults|k10]
    python benchmarks/tasks.py stream DATA_DIR   # streamed vs in-memory on the same file

Each process reports its own peak RSS (``ru_maxrss``), so figures never mix. The bare MLP and deepfm train on
``BENCH_DEVICE`` (``cpu`` unless set; ``benchmarks/gpu_check.sh`` sets ``cuda``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from deepfm.runtime import set_process_environment  # noqa: E402 - loads neither torch nor pyarrow

set_process_environment()  # as the deepfm command does (import deepfm does not): OpenMP, Arrow's pool, malloc

import numpy as np  # noqa: E402
from common import bench_device, run_task, wait_for  # noqa: E402
import torch  # noqa: E402

BATCH = 4096
NUMERIC = [f"I{i}" for i in range(1, 14)]


def setup() -> None:
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.set_flush_denormal(True)


def bare_mlp(precision: str = "fp32", input_grad: str = "no", width: str = "390", hidden: str = "400-400-400",
             steps: int = 40, warmup: int = 5) -> dict:
    """The ceiling for DeepFM's dense part: MLP WIDTH→400→400→400→1 (WIDTH = fields × 10; ``hidden``: other widths, as
    a model whose defaults take another MLP), BCE, Adam, batch 4096.

    ``input_grad=yes`` also computes the gradient w.r.t. the MLP's input, which DeepFM needs
    (it flows into the embeddings) and the bare ceiling skips; ``precision=bf16`` runs the
    products under bfloat16 autocast, as ``deepfm train --precision bf16`` does."""
    torch.manual_seed(0)
    layers, width = [], int(width)
    inputs = width
    for units in map(int, hidden.split("-")):
        layers += [torch.nn.Linear(width, units), torch.nn.ReLU()]
        width = units
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))
    device = torch.device(bench_device())
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(BATCH, inputs, device=device, requires_grad=input_grad == "yes")
    y = (torch.rand(BATCH, device=device) < 0.3).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        x.grad = None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(x).squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    wait_for(device)
    began = time.perf_counter()
    for _ in range(steps):
        step()
    wait_for(device)
    seconds = time.perf_counter() - began
    return {"train_samples_per_s": steps * BATCH / seconds, "step_ms": seconds / steps * 1e3}


def deepfm_criteo(data_dir: str, precision: str = "fp32", setting: str = "stripped", numeric: str = "yes",
                  epochs: int = 1) -> dict:
    """File → trained DeepFM (read + encode + ``epochs``), then prediction speed and test AUC.
    ``setting``: ``defaults`` (the library's own model and training defaults, read from its config, at
    batch 4096), ``every-id`` (the defaults with data.min_count 1: every value its own id, no rare-value
    rule) or ``stripped`` (no dropout, no batch norm, embedding L2 1e-6); ``numeric=no`` reads
    the I columns as categorical."""
    from deepfm.training.metrics import evaluate_predictions
    from deepfm.training.trainer import predict

    data = Path(data_dir)
    estimator = _deepfm("off", epochs, chunk_rows=65_536, window=8, precision=precision, setting=setting,
                        numeric=NUMERIC if numeric == "yes" else [])
    began = time.perf_counter()
    estimator.fit(data / "train.csv", progress=False)
    wall = time.perf_counter() - began
    test = estimator.encode(data / "test.csv")
    timings = []
    for _ in range(3):
        began = time.perf_counter()
        predictions = predict(estimator.model, estimator.encoder.task, test)
        timings.append(time.perf_counter() - began)
    metrics = evaluate_predictions("binary", test.labels, predictions)
    model, training = estimator.config.model, estimator.config.training
    return {
        "setting": f"k {model.embed_dim}, dropout {model.dropout}, batch norm {model.batch_norm}, embed L2 "
                   f"{training.embed_l2} per {training.embed_reg}, optimizer {training.optimizer}, lr {training.lr}, "
                   f"MLP lr {training.dense_lr if training.dense_lr is not None else training.lr}, data min_count "
                   f"{estimator.encoder.id_counts.min_count} ({estimator.encoder.id_counts.kept:,} of "
                   f"{estimator.encoder.id_counts.distinct:,} values keep their own id)",
        "mlp_input_width": estimator.encoder.num_fields * model.embed_dim,  # run.py's ceiling for this row
        "mlp": "-".join(map(str, model.mlp)),  # with mlp_input_width, the bare MLP of this row's own sizes
        "embed_dim": model.embed_dim, "dropout": model.dropout,  # run.py matches DeepCTR-Torch's model to these
        "file_to_model_s": wall,
        "beside_training_s": wall - estimator.result.train_seconds,  # reading, encoding, set-up (not the loop)
        "train_samples_per_s": estimator.metrics["train_samples_per_s"],
        "predict_samples_per_s": len(test) / float(np.median(timings)),
        "test_auc": metrics["auc"],
        "test_logloss": metrics["logloss"],
    }


def fm_frappe(frappe_dir: str, setting: str = "defaults") -> dict:
    """FM on Frappe's libFM files as ``deepfm train --model fm`` trains it (``defaults``: the click defaults of
    deepfm.defaults and their portfolio, each recipe with early stopping on valid.libfm) or with only k set to 10
    (``k10``, xLearn's row: the portfolio as at the defaults); samples/s over every epoch of the kept recipe, file →
    model over the whole fit (every recipe), test AUC of the kept model."""
    from deepfm.api import Estimator

    data = Path(frappe_dir)
    estimator = Estimator(model={"name": "fm", **({"embed_dim": 10} if setting == "k10" else {})})
    began = time.perf_counter()
    estimator.fit(data / "train.libfm", valid=data / "valid.libfm", progress=False)
    wall = time.perf_counter() - began
    result = estimator.evaluate(data / "test.libfm")
    training = estimator.config.training
    return {"file_to_model_s": wall, "train_samples_per_s": estimator.metrics["train_samples_per_s"],
            "epochs": estimator.metrics["epochs"], "best_epoch": estimator.metrics["best_epoch"],
            "setting": f"k {estimator.config.model.embed_dim}, {training.optimizer} lr {training.lr:g}, batch "
                       f"{training.batch_size}, recipe {estimator.metrics.get('portfolio_choice', 'defaults')}",
            "test_auc": result["auc"], "test_logloss": result["logloss"]}


# The stripped setting of the first benchmarks: the paper's architecture without regularisers.
STRIPPED = {"model": {"embed_dim": 10, "mlp": [400, 400, 400], "dropout": 0.0, "batch_norm": False},
            "training": {"lr": 1e-3, "embed_l2": 1e-6}}


def _deepfm(stream: str, epochs: int, chunk_rows: int, window: int, precision: str = "fp32",
            setting: str = "stripped", numeric: list[str] = NUMERIC):
    """DeepFM at the library's defaults (only the batch, the epochs and the data options set) or stripped."""
    from deepfm.api import Estimator

    extra = STRIPPED if setting == "stripped" else {"model": {}, "training": {}}
    every_id = {"min_count": 1} if setting == "every-id" else {}  # the defaults without the rare-value rule
    return Estimator(
        data={"numeric": numeric, "stream": stream, "chunk_rows": chunk_rows, "shuffle_window": window,
              "valid_fraction": 0, **every_id},  # every row trains, as in the peers' runs
        model={"name": "deepfm", **extra["model"]},
        training={"epochs": epochs, "batch_size": BATCH, "patience": 0, "precision": precision,
                  "device": bench_device(), **extra["training"]},
    )


def stream_compare(data_dir: str, stream: str) -> dict:
    """The same 1M rows in memory or streamed (chunks of 50k rows, windows of 4 chunks), one epoch
    (a second epoch overfits this data: 978k ids, no regularisation)."""
    data = Path(data_dir)
    estimator = _deepfm(stream, epochs=1, chunk_rows=50_000, window=4)
    began = time.perf_counter()
    estimator.fit(data / "train.csv", progress=False)
    wall = time.perf_counter() - began
    result = estimator.evaluate(data / "test.csv")
    return {"file_to_model_s": wall, "train_samples_per_s": estimator.metrics["train_samples_per_s"],
            "rows": estimator.metrics["rows"], "test_auc": result["auc"], "test_logloss": result["logloss"]}


def stream_big(path: str, data_dir: str) -> dict:
    """One streamed epoch over a file many times larger than what the process holds."""
    estimator = _deepfm("on", epochs=1, chunk_rows=65_536, window=8)
    began = time.perf_counter()
    estimator.fit(path, progress=False)
    wall = time.perf_counter() - began
    result = estimator.evaluate(Path(data_dir) / "test.csv")
    return {"file_to_model_s": wall, "train_samples_per_s": estimator.metrics["train_samples_per_s"],
            "rows": estimator.metrics["rows"], "file_mb": Path(path).stat().st_size / 1e6,
            "test_auc": result["auc"], "test_logloss": result["logloss"]}


TASKS = {"mlp": bare_mlp, "deepfm": deepfm_criteo, "fm_frappe": fm_frappe, "stream_compare": stream_compare,
         "stream_big": stream_big}


def main() -> None:
    setup()
    run_task(TASKS)


if __name__ == "__main__":
    main()
