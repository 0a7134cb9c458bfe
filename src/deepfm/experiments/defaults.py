"""Per-model tuned defaults live in ``deepfm.defaults`` (the CLI, the API and compare all apply them)."""

from deepfm.defaults import MODEL_DEFAULTS, model_defaults

__all__ = ["MODEL_DEFAULTS", "model_defaults"]
