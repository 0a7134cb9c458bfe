"""DeepCTR-Torch on the accuracy suite's Criteo-shaped row: ``peers.py``'s documented pipeline, 3 epochs.

    benchmarks/.peers-venv/bin/python benchmarks/accuracy_peers.py deepctr DATA_DIR [EPOCHS]

``peers.deepctr`` trains one epoch (the speed race); the accuracy suite compares at 3 epochs, so this
runs the same function with DeepCTR-Torch's ``fit`` told to run EPOCHS (default 3), and prints its
JSON line (test AUC after the last epoch: the example has no validation or early stopping).
"""

from __future__ import annotations

import functools

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


if __name__ == "__main__":
    run_task({"deepctr": deepctr_epochs})
