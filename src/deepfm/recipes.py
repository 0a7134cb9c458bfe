"""Recipes that Frappe's validation split found (``deepfm tune``): tune's first trials on clicks and
candidates of the default portfolios (``deepfm.defaults.PORTFOLIOS``). Flat mappings of config keys
(model or training), as ``deepfm.defaults``' task defaults."""

from __future__ import annotations

from typing import Any

# FM's click defaults are tune's CLICK_RECIPE, so FM's trial 1 on clicks is instead the region two independent 600-s searches
# on Frappe's validation split agreed on: deepfm tune's best (AdaGrad lr 0.080, L2 2.0e-3, k 128, batch 256:
# valid 0.9541) and benchmarks/reference_frappe.py's, a plain PyTorch FM (lr 0.109, L2 6.4e-4, k 128,
# batch 256: 0.9554; its top five all k 128, batch 256, lr 0.11-0.17, L2 6e-4-1.4e-3; the defaults 0.9510).
FM_SEARCHED_RECIPE: dict[str, Any] = {"optimizer": "adagrad", "lr": 0.11, "embed_reg": "occurrences", "embed_l2": 6e-4,
                                      "embed_dim": 128, "batch_size": 256}
# DeepFM's trial 2 on clicks: the best of a 600-s deepfm tune of DeepFM on Frappe's validation split (sixth
# session, benchmarks/README.md "A fairer pruner"): all-AdaGrad, the MLP at about a tenth of the tables'
# step, L2 2e-3 per occurrence, batch 256, a small MLP with dropout 0.39 and no batch norm: valid 0.9565
# against the defaults' 0.9503 and CLICK_RECIPE's 0.9523; the search's other complete trials in that region
# (lr 0.11-0.22, MLP step 0.011-0.013, L2 2-4e-3, 400-400-400, dropout 0.36-0.48) gave 0.9541-0.9556
DEEPFM_SEARCHED_RECIPE: dict[str, Any] = {
    "optimizer": "adagrad", "lr": 0.1855, "dense_optimizer": "adagrad", "dense_lr": 0.0218, "embed_reg": "occurrences",
    "embed_l2": 1.93e-3, "embed_dim": 64, "batch_size": 256, "mlp": (200, 200), "dropout": 0.3886, "batch_norm": False,
    "weight_decay": 0.0}
