"""Per-model default overrides: the one place where a model departs from the global defaults.

Each entry is a partial ``RunConfig`` mapping merged under the user's own options (an explicit
flag, config-file or API value always wins). Tuned on Frappe's validation split only (the test
split is never read for tuning); the figures are in docs/results/README.md.
"""

from __future__ import annotations

from typing import Any

# The global defaults (config.py) suit DeepFM: strong lazy L2 on embeddings (0.1) regularises the
# shared table, and the DNN compensates. FM and LR have no DNN and their output is the embedding
# products themselves: on Frappe valid, FM AUC was 0.673 with L2 0.1, 0.919 with 0.01 and 0.9355
# with 1e-4 at lr 1e-2 (0.9295 at lr 3e-3).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "fm": {"training": {"embed_l2": 1e-4, "lr": 1e-2}},
    "lr": {"training": {"embed_l2": 1e-4, "lr": 1e-2}},
}


def model_defaults(name: str) -> dict[str, Any]:
    """The tuned overrides for model ``name`` (an empty mapping when it has none)."""
    return MODEL_DEFAULTS.get(name, {})
