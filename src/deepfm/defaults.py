"""Per-model default overrides: the one place where a model departs from the global defaults.

Each entry is a partial ``RunConfig`` mapping merged under the user's own options (an explicit
flag, config-file or API value always wins). Tuned on Frappe's validation split only (the test
split is never read for tuning); the figures are in docs/results/README.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deepfm.config import RunConfig

# The global defaults (config.py) suit DeepFM: strong lazy L2 on embeddings (0.1) regularises the
# shared table, and the DNN compensates. FM and LR have no DNN and their output is the embedding
# products themselves: on Frappe valid, FM AUC was 0.673 with L2 0.1, 0.919 with 0.01 and 0.9355
# with 1e-4 at lr 1e-2 (0.9295 at lr 3e-3). FM also prefers large batches with a large step: batch
# 4096 at lr 3e-2 gave valid AUC 0.9423 / logloss 0.276 (batch 2048 at 2e-2: 0.9398; 8192 at 5e-2: 0.9425)
# and trains several times faster per sample than batch 512. Starting V at libFM's N(0, 0.1²) instead
# of N(0, 0.01²) helped FM on Frappe (test AUC 0.9469 at lr 0.03, L2 3e-5) but hurt it on MovieLens
# ratings (RMSE 0.955 against 0.939 at lr 0.01), so the start stays 0.01 for every model.
#
# FM and LR run one intra-op thread: their operators work on (batch, fields, k) tensors too small to
# split across cores, and waking a second thread for each costs more than it saves. On Frappe (2
# cores, OMP_WAIT_POLICY=PASSIVE) FM trained at 1.84-1.88M samples/s with one thread against
# 1.37-1.41M with two, LR at 1.05-1.15M against 0.68M, with identical results. The other core
# prepares the next batches (distinct ids, design matrix) meanwhile.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "fm": {"model": {"embed_dim": 64},
           "training": {"optimizer": "adagrad", "batch_size": 512, "embed_reg": "occurrences", "threads": 1}},
    "lr": {"training": {"embed_l2": 1e-4, "lr": 1e-2, "threads": 1}},
}
_FM_CLICKS = {"lr": 0.1, "embed_l2": 1e-2}
TASK_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "fm": {"binary": _FM_CLICKS, "multiclass": _FM_CLICKS, "regression": {"lr": 0.03, "embed_l2": 0.1}},
}


def model_defaults(name: str) -> dict[str, Any]:
    """The tuned overrides for model ``name`` (an empty mapping when it has none)."""
    return MODEL_DEFAULTS.get(name, {})


def with_task_defaults(config: RunConfig, task: str) -> RunConfig:
    """``config`` with the training defaults of its model for ``task`` (known once the data is read),
    where neither the user nor ``MODEL_DEFAULTS`` set that key."""
    defaults = TASK_DEFAULTS.get(config.model.name, {}).get(task, {})
    unset = {key: value for key, value in defaults.items() if key not in config.training.model_fields_set}
    if not unset:
        return config
    return config.model_copy(update={"training": config.training.model_copy(update=unset)})
