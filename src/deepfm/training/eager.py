"""torch's optimisers without the wrappers that import ``torch._dynamo``.

``torch.optim.Optimizer`` guards ``add_param_group`` (which its constructor calls), ``zero_grad``,
``state_dict`` and ``load_state_dict``, and Adam's, AdaGrad's and SGD's ``step``, with wrappers that import
``torch._dynamo`` on their first call, to keep ``torch.compile`` out of them. The import takes 1.3-2.2 s of one
core here (torch 2.13), ~3% of a Criteo-shaped file → model, and every ``deepfm train`` paid it before its first
step. Training runs these optimisers eagerly and never compiles them, so ``EagerOptimizer`` calls the methods
the wrappers wrap (``inspect.unwrap``: ``functools.wraps`` keeps them as ``__wrapped__``), the same code, and
``step`` under ``torch.no_grad()`` as the wrapper sets it. Where a torch version wraps none of them, the
methods are called as they are.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch


class EagerOptimizer:
    """Put before a ``torch.optim.Optimizer`` among the bases; see the module."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        inspect.unwrap(torch.optim.Optimizer.add_param_group)(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        inspect.unwrap(torch.optim.Optimizer.zero_grad)(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return inspect.unwrap(torch.optim.Optimizer.state_dict)(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        inspect.unwrap(torch.optim.Optimizer.load_state_dict)(self, state_dict)

    def step(self, closure=None):
        with torch.no_grad():
            return inspect.unwrap(super().step.__func__)(self, closure)  # type: ignore[misc]


class Adam(EagerOptimizer, torch.optim.Adam):
    """``torch.optim.Adam``, eager (see the module)."""


class Adagrad(EagerOptimizer, torch.optim.Adagrad):
    """``torch.optim.Adagrad``, eager (see the module)."""


class SGD(EagerOptimizer, torch.optim.SGD):
    """``torch.optim.SGD``, eager (see the module)."""
