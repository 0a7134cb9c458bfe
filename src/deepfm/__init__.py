"""deepfm: Factorization Machines and DeepFM for CTR and rating prediction.

Importing the package loads nothing heavy and changes no process state: ``Estimator`` and the
config classes load on first use, and the ``deepfm`` command sets its own process settings
(``deepfm.runtime``).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Estimator": "deepfm.api",
    "RunConfig": "deepfm.config",
    "DataConfig": "deepfm.config",
    "ModelConfig": "deepfm.config",
    "TrainingConfig": "deepfm.config",
}

__all__ = ["Estimator", "RunConfig", "DataConfig", "ModelConfig", "TrainingConfig", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from deepfm.api import Estimator
    from deepfm.config import DataConfig, ModelConfig, RunConfig, TrainingConfig


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deepfm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
