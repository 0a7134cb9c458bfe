"""deepfm: Factorization Machines and DeepFM for CTR and rating prediction."""

import os

__version__ = "0.1.0"

# Before pyarrow loads: Arrow's C++ default pool (its compute engine, the CSV reader) becomes the
# system allocator, which hands memory back after parsing; mimalloc's arenas kept ~150 MB of a
# 1M-row fit resident. Set the variable yourself to choose otherwise (see deepfm.runtime).
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
# Before torch loads: OpenMP threads sleep instead of spinning while they wait. Spinning gains ~2%
# on an idle machine (DeepFM 55.2-56.0k vs 54.2-54.7k samples/s) but next to one busy process it
# halved training speed on Frappe (12.5k vs 25.6k samples/s, 2 cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from deepfm.api import Estimator  # noqa: E402
from deepfm.config import DataConfig, ModelConfig, RunConfig, TrainingConfig  # noqa: E402

__all__ = ["Estimator", "RunConfig", "DataConfig", "ModelConfig", "TrainingConfig", "__version__"]
