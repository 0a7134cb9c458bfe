"""A fit's own random numbers: fits that run at once in threads of one process (joblib's threading backend, a
``ThreadPoolExecutor``) each give the model their seed gives when they run alone.

torch's default generator is one for the whole process. A fit draws from it at two places: the starting weights
(the modules' own initialisers read it, after ``torch.manual_seed(training.seed)``) and, while training, the
dropout masks (``models.dropout.draw_seed``, and ``nn.Dropout``'s mask where the MLP does not fuse it). Two fits
at once used to interleave those draws, and one's ``manual_seed`` reset the other's stream.

Now ``Estimator.fit`` runs inside ``own_generator()``: the fit holds a ``torch.Generator`` of its own (in a
context variable, so each thread sees its own fit's). The starting weights are still drawn from the default
generator, seeded, but under a lock (``initialised``), and the default generator's state after them passes to the
fit's generator, from which every draw of training then comes (``generator()``; a checkpoint holds its state). So a
fit alone draws the very numbers it drew from the default generator before, and a fit among others draws them too.
Outside a fit (a ``Trainer`` or a model called directly) draws come from torch's default generator, as always:
``torch.manual_seed`` fixes them. On a GPU, ``nn.Dropout``'s masks still come from the device's default generator
(torch's fused GPU dropout takes no generator): GPU fits running at once in threads share that stream.
NumPy's draws (the shuffles, the held-out rows, the samplers) come from generators seeded per use already.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator, TypeVar

import torch

T = TypeVar("T")

_INIT_LOCK = threading.RLock()  # held while a module's initialisers draw from torch's default generator
_FIT_GENERATOR: ContextVar[torch.Generator | None] = ContextVar("deepfm_fit_generator", default=None)


_CALLERS: dict[str, object] = {"fits": 0}  # fits running, and torch's default generators' states before the first


@contextmanager
def own_generator() -> Iterator[torch.Generator]:
    """The block's draws (``generator()``) from a new generator of its own: one fit's (also a decorator). When the
    last fit running ends, torch's default generators (CPU, and CUDA's where already in use) are put back where they
    stood before the first began: the fits seed them (``initialised``), and a library call leaves its caller's
    stream as it found it."""
    with _INIT_LOCK:
        if _CALLERS["fits"] == 0:
            _CALLERS["cpu"] = torch.get_rng_state()
            _CALLERS["cuda"] = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        _CALLERS["fits"] += 1
    token = _FIT_GENERATOR.set(torch.Generator())
    try:
        yield _FIT_GENERATOR.get()
    finally:
        _FIT_GENERATOR.reset(token)
        with _INIT_LOCK:
            _CALLERS["fits"] -= 1
            if _CALLERS["fits"] == 0:
                torch.set_rng_state(_CALLERS["cpu"])
                if _CALLERS["cuda"] is not None:
                    torch.cuda.set_rng_state_all(_CALLERS["cuda"])


def generator() -> torch.Generator | None:
    """The generator of the fit running in this thread, or None (torch's default generator) outside a fit."""
    return _FIT_GENERATOR.get()


def initialised(build: Callable[[], T], seed: int | None = None) -> T:
    """``build()``, whose modules draw their starting weights from torch's default generator, with those draws
    this fit's: under a lock, the default generator is seeded with ``seed`` (None: set to where the fit's
    generator stands), ``build`` runs, and the fit's generator takes the state that the draws left. Outside a fit,
    ``build()`` after ``torch.manual_seed(seed)`` (if a seed is given), as before."""
    fit = generator()
    with _INIT_LOCK:
        if seed is not None:
            torch.manual_seed(seed)
        elif fit is not None:
            torch.set_rng_state(fit.get_state())
        built = build()
        if fit is not None:
            fit.set_state(torch.get_rng_state())
    return built


def without_draws(build: Callable[[], T]) -> T:
    """``build()`` of a model whose starting weights are replaced at once (one loaded from files): its initialisers'
    draws are taken under ``initialised``'s lock, so that they do not fall between a fit's seed and its own draws,
    and torch's default generator is put back where it stood, so that loading a model leaves the caller's stream
    as it was."""
    with _INIT_LOCK:
        state = torch.get_rng_state()
        try:
            return build()
        finally:
            torch.set_rng_state(state)


def get_state() -> torch.Tensor:
    """The state of the generator that draws now (``generator()``, or torch's default one): a checkpoint's."""
    fit = generator()
    return fit.get_state() if fit is not None else torch.get_rng_state()


def set_state(state: torch.Tensor) -> None:
    """Put the generator that draws now back to ``state`` (``get_state``'s, from a checkpoint)."""
    fit = generator()
    if fit is not None:
        fit.set_state(state)
    else:
        torch.set_rng_state(state)
