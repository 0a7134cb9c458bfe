"""Models: PyTorch modules that map a ``Batch`` to logits and only compute."""

from deepfm.models.registry import MODELS, build_model, model_for_run

__all__ = ["MODELS", "build_model", "model_for_run"]
