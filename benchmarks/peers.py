"""Peer libraries' documented pipelines, one per process (run in benchmarks/.peers-venv).

    python benchmarks/peers.py deepctr DATA_DIR [defaults|matched[:K:DROPOUT]] [NUMERIC yes|no]
    python benchmarks/peers.py deepctr_phases DATA_DIR [defaults|matched[:K:DROPOUT]] [NUMERIC yes|no] [STEPS]  # its step by phase
    python benchmarks/peers.py torchfm DATA_DIR [NUMERIC yes|no]
    python benchmarks/peers.py xlearn FRAPPE_DIR

Same data, model size and batch as deepfm's benchmark: DeepFM with embeddings of 10,
MLP 400-400-400, Adam (lr 1e-3), batch 4096, one epoch. DeepCTR-Torch at its own defaults
(no dropout, no batch norm, embedding L2 1e-5) or ``matched`` to deepfm's defaults on the data: batch norm,
dropout 0.2 and embeddings of 10, or ``matched:K:DROPOUT`` (``run.py`` passes what deepfm's data rule chose on the
shape: ``matched:64:0.5`` on one-hot data, where ids recur); pytorch-fm's MLP always has batch norm, and its example's dropout 0.2. ``NUMERIC=no``
reads the I columns as categorical (the long-tail shape). Prints one JSON line with the process's
own peak RSS. Nothing here imports deepfm. DeepCTR-Torch trains on ``BENCH_DEVICE`` (``cpu`` unless set).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from common import bench_device, run_task  # noqa: E402

BATCH = 4096


def columns_of(data_dir: str, numeric: str) -> tuple[list[str], list[str]]:
    """(dense, sparse) feature columns of DATA_DIR/train.csv: I* dense when ``numeric`` is yes."""
    header = [name.strip('"') for name in (Path(data_dir) / "train.csv").open().readline().strip().split(",")]
    features = [name for name in header if name != "label"]
    dense = [name for name in features if numeric == "yes" and name.startswith("I")]
    return dense, [name for name in features if name not in dense]


def setup_torch():
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    return torch


PAPER_MLP = (400, 400, 400)  # the MLP both libraries train at their defaults' regularisers (the DeepFM paper's)


def matched_model(setting: str) -> tuple[int, tuple[int, ...], dict]:
    """(embedding width, MLP widths, DeepFM's regularising keywords) of a ``setting``: ``defaults``, ``matched`` or
    ``matched:K:DROPOUT[:MLP]`` (MLP as 200-200; default the paper's 400-400-400)."""
    name, _, rest = setting.partition(":")
    if name == "defaults":
        return 10, PAPER_MLP, {}
    if name != "matched":
        raise ValueError(f"setting {setting!r}: expected defaults, matched or matched:K:DROPOUT[:MLP]")
    width, dropout, *mlp = (rest.split(":") + [""])[:3] if rest else ("10", "0.2")
    mlp = [text for text in mlp if text]
    if not (width.isdigit() and dropout and all(part.isdigit() for text in mlp for part in text.split("-"))):
        raise ValueError(f"setting {setting!r}: expected matched or matched:K:DROPOUT[:MLP], e.g. matched:64:0.5:200-200")
    hidden = tuple(map(int, mlp[0].split("-"))) if mlp else PAPER_MLP
    return int(width), hidden, {"dnn_dropout": float(dropout), "dnn_use_bn": True}


def _deepctr_model(data_dir: str, setting: str, numeric: str):
    """DeepCTR-Torch's documented Criteo example (examples/run_classification_criteo.py) up to ``compile``:
    (model, train frame, test frame, feature names, seconds since the start)."""
    DENSE, SPARSE = columns_of(data_dir, numeric)
    setup_torch()
    import pandas as pd
    from deepctr_torch.inputs import DenseFeat, SparseFeat, get_feature_names
    from deepctr_torch.models import DeepFM
    from sklearn.preprocessing import LabelEncoder, MinMaxScaler

    began = time.perf_counter()
    data = pd.read_csv(Path(data_dir) / "train.csv")
    test = pd.read_csv(Path(data_dir) / "test.csv")
    train_rows = len(data)
    data = pd.concat([data, test], ignore_index=True)  # the example encodes everything it will score
    data[SPARSE] = data[SPARSE].fillna("-1")
    for feat in SPARSE:
        data[feat] = LabelEncoder().fit_transform(data[feat].astype(str))
    if DENSE:
        data[DENSE] = data[DENSE].fillna(0)
        data[DENSE] = MinMaxScaler(feature_range=(0, 1)).fit_transform(data[DENSE])
    width, hidden, regularisers = matched_model(setting)
    columns = [SparseFeat(feat, data[feat].max() + 1, embedding_dim=width) for feat in SPARSE] + [
        DenseFeat(feat, 1) for feat in DENSE]
    names = get_feature_names(columns + columns)
    model = DeepFM(linear_feature_columns=columns, dnn_feature_columns=columns, dnn_hidden_units=hidden,
                   task="binary", device=bench_device(), **regularisers)
    model.compile("adam", "binary_crossentropy", metrics=["binary_crossentropy"])
    return model, data.iloc[:train_rows], data.iloc[train_rows:], names, time.perf_counter() - began


def deepctr(data_dir: str, setting: str = "defaults", numeric: str = "yes") -> dict:
    """DeepCTR-Torch's documented Criteo example (examples/run_classification_criteo.py)."""
    model, train, test, names, setup_s = _deepctr_model(data_dir, setting, numeric)
    from sklearn.metrics import roc_auc_score

    began = time.perf_counter() - setup_s
    train_input = {name: train[name] for name in names}
    test_input = {name: test[name] for name in names}
    fit_began = time.perf_counter()
    model.fit(train_input, train["label"].values, batch_size=BATCH, epochs=1, verbose=0)
    fit_s = time.perf_counter() - fit_began
    wall = time.perf_counter() - began
    timings = []
    for _ in range(3):
        t = time.perf_counter()
        predictions = model.predict(test_input, batch_size=BATCH)
        timings.append(time.perf_counter() - t)
    dense, sparse = columns_of(data_dir, numeric)
    width, hidden, regularisers = matched_model(setting)
    matched = {"setting": f"k {width}, MLP {'-'.join(map(str, hidden))}, dropout {regularisers['dnn_dropout']}, batch norm",
               "mlp_input_width": len(sparse) * width + len(dense), "mlp": "-".join(map(str, hidden))
               } if regularisers else {}  # the ceiling run.py divides a matched row by
    return {**matched, "file_to_model_s": wall, "beside_training_s": wall - fit_s, "train_samples_per_s": len(train) / fit_s,
            "predict_samples_per_s": len(test) / float(np.median(timings)),
            "test_auc": roc_auc_score(test["label"].values, predictions)}


def deepctr_phases(data_dir: str, setting: str = "defaults", numeric: str = "yes", steps: str = "20") -> dict:
    """Where DeepCTR-Torch's training step spends its time: ``BaseModel.fit``'s loop (verbose 0) with a
    clock between its phases (the DataLoader's per-row fetch and collate, forward, loss + its
    regularisation loss over every table, backward, Adam), median ms of ``steps`` steps after 3."""
    import statistics

    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    model, train, _, names, _ = _deepctr_model(data_dir, setting, numeric)
    x = np.concatenate([np.expand_dims(train[name].to_numpy(), 1) for name in model.feature_index], axis=-1)
    loader = iter(DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(train["label"].to_numpy())),
                             shuffle=True, batch_size=BATCH))
    model.train()
    phases: dict[str, list[float]] = {}
    for number in range(int(steps) + 3):
        marks, clock = [], time.perf_counter()
        x_batch, y_batch = next(loader)
        xb, yb = x_batch.float(), y_batch.float()
        marks.append(("DataLoader batch (per-row fetch + collate)", time.perf_counter()))
        y_pred = model(xb).squeeze(-1)
        marks.append(("forward (embeddings, FM, MLP)", time.perf_counter()))
        model.optim.zero_grad()
        loss = F.binary_cross_entropy(y_pred, yb, reduction="sum") + model.get_regularization_loss() + model.aux_loss
        marks.append(("loss + L2 over the embedding tables", time.perf_counter()))
        loss.item()
        loss.backward()
        marks.append(("backward", time.perf_counter()))
        model.optim.step()
        marks.append(("Adam (dense, every table and the MLP)", time.perf_counter()))
        for name, at in marks if number >= 3 else ():
            phases.setdefault(name, []).append((at - clock) * 1e3)
            clock = at
    median = {name: statistics.median(times) for name, times in phases.items()}
    return {"phases_ms": median, "step_ms": sum(median.values()), "threads": torch.get_num_threads(),
            "load": os.getloadavg()[0]}


def torchfm(data_dir: str, numeric: str = "yes") -> dict:
    """pytorch-fm's documented pipeline (examples/main.py): a per-row Dataset, a DataLoader and
    DeepFactorizationMachineModel; numeric columns become categorical ids as in its CriteoDataset."""
    DENSE, SPARSE = columns_of(data_dir, numeric)
    if not hasattr(np, "long"):
        np.long = np.int64  # torchfm 0.7.0 still spells np.long, gone from NumPy 2
    torch = setup_torch()
    import pandas as pd
    from sklearn.metrics import roc_auc_score
    from torch.utils.data import DataLoader, Dataset
    from torchfm.model.dfm import DeepFactorizationMachineModel

    began = time.perf_counter()
    frames = [pd.read_csv(Path(data_dir) / name) for name in ("train.csv", "test.csv")]
    train_rows = len(frames[0])
    data = pd.concat(frames, ignore_index=True)
    columns, field_dims = [], []
    for name in DENSE + SPARSE:
        values = data[name]
        if name in DENSE:  # CriteoDataset: int(log(v)^2) for v > 2
            v = values.fillna(-1).to_numpy()
            values = pd.Series(np.where(v > 2, np.floor(np.log(np.maximum(v, 1)) ** 2), v)).astype(str)
        codes, uniques = pd.factorize(values.astype(str), use_na_sentinel=False)  # a missing value is an id of its own
        columns.append(codes)  # (pandas' string dtype keeps NaN missing after astype(str): its code was -1, an IndexError)
        field_dims.append(len(uniques))
    x = np.stack(columns, axis=1).astype(np.int64)
    y = data["label"].to_numpy().astype(np.float32)

    class Rows(Dataset):  # the shape of torchfm.dataset.criteo.CriteoDataset.__getitem__
        def __init__(self, x, y):
            self.x, self.y = x, y

        def __len__(self):
            return len(self.y)

        def __getitem__(self, index):
            return self.x[index], self.y[index]

    train = DataLoader(Rows(x[:train_rows], y[:train_rows]), batch_size=BATCH, shuffle=True, num_workers=0)
    model = DeepFactorizationMachineModel(field_dims, embed_dim=10, mlp_dims=(400, 400, 400), dropout=0.2)
    criterion = torch.nn.BCELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
    fit_began = time.perf_counter()
    model.train()
    for fields, target in train:
        loss = criterion(model(fields), target.float())
        model.zero_grad()
        loss.backward()
        optimizer.step()
    fit_s = time.perf_counter() - fit_began
    wall = time.perf_counter() - began
    model.eval()
    test = DataLoader(Rows(x[train_rows:], y[train_rows:]), batch_size=BATCH, num_workers=0)
    timings = []
    for _ in range(3):
        t = time.perf_counter()
        with torch.no_grad():
            predictions = np.concatenate([model(fields).numpy() for fields, _ in test])
        timings.append(time.perf_counter() - t)
    return {"file_to_model_s": wall, "train_samples_per_s": train_rows / fit_s,
            "predict_samples_per_s": (len(y) - train_rows) / float(np.median(timings)),
            "test_auc": roc_auc_score(y[train_rows:], predictions)}


def xlearn_frappe(frappe_dir: str) -> dict:
    """xLearn's FM (k=10) on Frappe's libFM files, lr 0.2 and lambda 2e-5 (its defaults), up to 30 epochs with its
    early stopping on validation AUC (window 3). Its log (C++ stdout, sent to a file) gives the epochs run and the
    best one; the model it saves is the best epoch's, which scores the test file."""
    os.environ.setdefault("USER", "benchmark")  # xLearn's log set-up builds a std::string from $USER: unset, it aborts
    import xlearn as xl
    from sklearn.metrics import roc_auc_score

    data = Path(frappe_dir)
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"xlearn-{os.getpid()}"
    out.mkdir(parents=True, exist_ok=True)
    model = xl.create_fm()
    model.setTrain(str(data / "train.libfm"))
    model.setValidate(str(data / "valid.libfm"))
    params = {"task": "binary", "k": 10, "lr": 0.2, "lambda": 0.00002, "metric": "auc", "epoch": 30,
              "nthread": len(os.sched_getaffinity(0)), "stop_window": 3}
    began = time.perf_counter()
    with _stdout_to(out / "fit.log"):
        model.fit(params, str(out / "model.out"))
    fit_s = time.perf_counter() - began
    log = re.sub(r"\x1b\[[0-9;]*m", "", (out / "fit.log").read_text(errors="replace"))  # less its colours
    epochs = len(re.findall(r"^\[[ \d]+%\s*\]\s+\d+\s", log, re.MULTILINE))
    stopped = re.search(r"Early-stopping at epoch (\d+)", log)
    model.setTest(str(data / "test.libfm"))
    model.setSigmoid()
    with _stdout_to(out / "predict.log"):
        model.predict(str(out / "model.out"), str(out / "predictions.txt"))
    predictions = np.loadtxt(out / "predictions.txt")
    labels = np.array([float(line.split(maxsplit=1)[0]) for line in open(data / "test.libfm")])
    rows = sum(1 for _ in open(data / "train.libfm"))
    return {"file_to_model_s": fit_s, "train_samples_per_s": rows * epochs / fit_s, "epochs": epochs,
            "best_epoch": int(stopped.group(1)) if stopped else epochs,
            "test_auc": roc_auc_score(labels, predictions),
            "note": "samples/s: rows × epochs run / fit's wall time, which includes its per-epoch validation"}


@contextlib.contextmanager
def _stdout_to(path: Path):
    """File descriptor 1 (where a C++ library prints) into ``path`` for the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(path, "wb") as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


TASKS = {"deepctr": deepctr, "deepctr_phases": deepctr_phases, "torchfm": torchfm, "xlearn": xlearn_frappe}


def main() -> None:
    run_task(TASKS)


if __name__ == "__main__":
    main()
