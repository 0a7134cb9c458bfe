"""Models: PyTorch modules that map a ``Batch`` to logits and only compute."""

from deepfm.models.registry import MODELS, build_model

__all__ = ["MODELS", "build_model"]
