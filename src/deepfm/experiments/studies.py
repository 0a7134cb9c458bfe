"""The DeepFM paper's section 3.3 studies: vary one setting of DeepFM, keep the rest fixed.

Each study is a list of (label, ModelConfig overrides). The values follow the paper: dropout as
keep-probability 1.0 … 0.5 (here the drop rate 0.0 … 0.5), 100 … 800 neurons per layer, 1 … 7
hidden layers, and four network shapes with the same number of layers and of neurons.
"""

from __future__ import annotations

from typing import Any

Variant = tuple[str, dict[str, Any]]

STUDIES: dict[str, list[Variant]] = {
    "activation": [(f"activation={a}", {"activation": a}) for a in ("relu", "tanh", "sigmoid")],
    "dropout": [(f"dropout={d}", {"dropout": d}) for d in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)],
    "neurons": [(f"neurons={n}", {"mlp": (n, n, n)}) for n in (100, 200, 400, 800)],
    "layers": [(f"layers={n}", {"mlp": (400,) * n}) for n in (1, 3, 5, 7)],
    "shape": [
        ("constant 400-400-400", {"mlp": (400, 400, 400)}),
        ("increasing 200-400-600", {"mlp": (200, 400, 600)}),
        ("decreasing 600-400-200", {"mlp": (600, 400, 200)}),
        ("diamond 300-600-300", {"mlp": (300, 600, 300)}),
    ],
}
