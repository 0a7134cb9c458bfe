"""deepfm: Factorization Machines and DeepFM for CTR and rating prediction."""

__version__ = "0.1.0"

from deepfm.api import Estimator  # noqa: E402
from deepfm.config import DataConfig, ModelConfig, RunConfig, TrainingConfig  # noqa: E402

__all__ = ["Estimator", "RunConfig", "DataConfig", "ModelConfig", "TrainingConfig", "__version__"]
