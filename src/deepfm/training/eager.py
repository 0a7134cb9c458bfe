"""torch's optimisers without the wrappers that import ``torch._dynamo``.

``torch.optim.Optimizer`` guards ``add_param_group`` (which its constructor calls), ``zero_grad``,
``state_dict`` and ``load_state_dict``, and Adam's, AdaGrad's and SGD's ``step``, with wrappers that import
``torch._dynamo`` on their first call (over a second of one core) to keep ``torch.compile`` out of them.
Training runs its optimisers eagerly and never compiles them, so ``EagerOptimizer`` calls the methods the
wrappers wrap (``inspect.unwrap``: ``functools.wraps`` keeps them as ``__wrapped__``): the same code, with
``step`` under the grad mode the wrapper sets (off, unless ``differentiable``). Not for use under
``torch.compile``. Where a torch version wraps none of them, the methods are called as they are.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch


def _unwrapped(method: Any) -> Callable[..., Any]:
    """The function under a bound method's wrappers (to be called with ``self``)."""
    return inspect.unwrap(method.__func__)


class EagerOptimizer:
    """Put before a ``torch.optim.Optimizer`` among the bases; see the module."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _unwrapped(super().add_param_group)(self, param_group)  # type: ignore[misc]

    def zero_grad(self, set_to_none: bool = True) -> None:
        _unwrapped(super().zero_grad)(self, set_to_none)  # type: ignore[misc]

    def state_dict(self) -> dict[str, Any]:
        return _unwrapped(super().state_dict)(self)  # type: ignore[misc]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        _unwrapped(super().load_state_dict)(self, state_dict)  # type: ignore[misc]

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        with torch.set_grad_enabled(self.defaults.get("differentiable", False)):  # type: ignore[attr-defined]
            return _unwrapped(super().step)(self, closure)  # type: ignore[misc]


class Adam(EagerOptimizer, torch.optim.Adam):
    """``torch.optim.Adam``, eager (see the module)."""


class Adagrad(EagerOptimizer, torch.optim.Adagrad):
    """``torch.optim.Adagrad``, eager (see the module)."""


class SGD(EagerOptimizer, torch.optim.SGD):
    """``torch.optim.SGD``, eager (see the module)."""
