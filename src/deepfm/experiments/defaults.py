"""Per-model default overrides: the one place where a model departs from the global defaults.

Each entry is a partial ``RunConfig`` mapping merged under the user's own options (an explicit
flag or config value always wins). They were tuned on Frappe's validation split only; the
figures are in docs/results/README.md.
"""

from __future__ import annotations

from typing import Any

MODEL_DEFAULTS: dict[str, dict[str, Any]] = {}


def model_defaults(name: str) -> dict[str, Any]:
    """The tuned overrides for model ``name`` (an empty mapping when it has none)."""
    return MODEL_DEFAULTS.get(name, {})
