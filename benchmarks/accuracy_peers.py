"""DeepCTR-Torch on the accuracy suite's rows: the Criteo-shaped one and Frappe.

    benchmarks/.peers-venv/bin/python benchmarks/accuracy_peers.py deepctr DATA_DIR [EPOCHS]
    benchmarks/.peers-venv/bin/python benchmarks/accuracy_peers.py frappe FRAPPE_DIR [EMBED L2_EMBED MLP DROPOUT BN BATCH OPTIMIZER LR]

``deepctr``: ``peers.deepctr`` trains one epoch (the speed race); the accuracy suite compares at 3
epochs, so this runs the same function with DeepCTR-Torch's ``fit`` told to run EPOCHS (default 3),
and prints its JSON line (test AUC after the last epoch: the example has no validation or early stopping).

``frappe``: DeepCTR-Torch's DeepFM on the suite's Frappe split (train.libfm / valid.libfm / test.libfm;
the i-th id of a line is field i's value), Adam lr 1e-3 (its ``compile("adam")``; OPTIMIZER
``adagrad`` with LR gives torch's Adagrad on every weight instead, issue 12's recipe), at its own
defaults unless given: embeddings 4, ``l2_reg_embedding`` 1e-5 (its L2 on the whole tables, added
to the loss), MLP 256-128, no dropout, no batch norm, batch 256. One epoch at a time, validation AUC
after each, early stopping with patience 2 (as deepfm's default); the best epoch's weights score
the test split once. Prints one JSON line.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import peers
from common import run_task


def deepctr_epochs(data_dir: str, epochs: str = "3") -> dict:
    from deepctr_torch.models import DeepFM

    original = DeepFM.fit

    @functools.wraps(original)
    def fit(self, *args, **kwargs):
        return original(self, *args, **{**kwargs, "epochs": int(epochs)})

    DeepFM.fit = fit
    try:
        result = peers.deepctr(data_dir)
    finally:
        DeepFM.fit = original
    result["epochs"] = int(epochs)
    result["train_samples_per_s"] *= int(epochs)  # peers.deepctr divides the rows of one epoch by the fit's time
    return result


def read_frappe(path: Path) -> tuple[list[list[int]], list[int]]:
    """(the ids of each line, by field position; the labels) of a libFM file with one id per field."""
    rows, labels = [], []
    for line in path.read_text().splitlines():
        label, *ids = line.split()
        labels.append(int(float(label) > 0))
        rows.append([int(item.split(":")[0]) for item in ids])
    return rows, labels


def deepctr_frappe(frappe_dir: str, embed: str = "4", l2_embed: str = "1e-5", mlp: str = "256,128",
                   dropout: str = "0", bn: str = "no", batch: str = "256", optimizer: str = "adam", lr: str = "1e-3",
                   patience: int = 2, max_epochs: int = 50) -> dict:
    import numpy as np
    import pandas as pd
    import torch
    from deepctr_torch.inputs import SparseFeat, get_feature_names
    from deepctr_torch.models import DeepFM
    from sklearn.metrics import log_loss, roc_auc_score

    torch.manual_seed(0)
    splits = {name: read_frappe(Path(frappe_dir) / f"{name}.libfm") for name in ("train", "valid", "test")}
    fields = [f"f{i}" for i in range(len(splits["train"][0][0]))]
    frames = {name: pd.DataFrame(rows, columns=fields) for name, (rows, _) in splits.items()}
    labels = {name: np.asarray(y, dtype=np.float32) for name, (_, y) in splits.items()}
    columns = [SparseFeat(f, int(max(frame[f].max() for frame in frames.values())) + 1, embedding_dim=int(embed))
               for f in fields]
    names = get_feature_names(columns)
    inputs = {name: {f: frame[f] for f in names} for name, frame in frames.items()}
    model = DeepFM(columns, columns, dnn_hidden_units=tuple(int(w) for w in mlp.split(",")),
                   l2_reg_embedding=float(l2_embed), dnn_dropout=float(dropout), dnn_use_bn=bn == "yes",
                   task="binary", device="cpu")
    optimizers = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad}
    model.compile(optimizers[optimizer](model.parameters(), lr=float(lr)), "binary_crossentropy")
    best, best_state, best_epoch, history = -1.0, None, 0, []
    for epoch in range(1, max_epochs + 1):
        model.fit(inputs["train"], labels["train"], batch_size=int(batch), epochs=1, verbose=0)
        auc = float(roc_auc_score(labels["valid"], model.predict(inputs["valid"], batch_size=4096)))
        history.append(round(auc, 4))
        if auc > best:
            best, best_state, best_epoch = auc, copy.deepcopy(model.state_dict()), epoch
        elif epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    valid = model.predict(inputs["valid"], batch_size=4096)
    test = model.predict(inputs["test"], batch_size=4096)
    return {"settings": {"embed": int(embed), "l2_reg_embedding": float(l2_embed), "mlp": mlp, "dropout": float(dropout),
                         "bn": bn, "batch": int(batch), "optimizer": f"{optimizer} lr {lr}", "patience": patience},
            "valid_auc_by_epoch": history, "best_epoch": best_epoch,
            "valid_auc": float(roc_auc_score(labels["valid"], valid)), "valid_logloss": float(log_loss(labels["valid"], valid)),
            "test_auc": float(roc_auc_score(labels["test"], test)), "test_logloss": float(log_loss(labels["test"], test))}


if __name__ == "__main__":
    run_task({"deepctr": deepctr_epochs, "frappe": deepctr_frappe})
