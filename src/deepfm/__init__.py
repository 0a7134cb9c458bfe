"""deepfm: Factorization Machines and DeepFM for CTR and rating prediction."""

import os

__version__ = "0.1.0"

# Before pyarrow loads: Arrow's C++ default pool (its compute engine, the CSV reader) becomes the
# system allocator, which hands memory back after parsing; mimalloc's arenas kept ~150 MB of a
# 1M-row fit resident. Set the variable yourself to choose otherwise (see deepfm.runtime).
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

from deepfm.api import Estimator  # noqa: E402
from deepfm.config import DataConfig, ModelConfig, RunConfig, TrainingConfig  # noqa: E402

__all__ = ["Estimator", "RunConfig", "DataConfig", "ModelConfig", "TrainingConfig", "__version__"]
