"""The forward pass of a served model: encoded rows -> predictions (float64), by ONNX Runtime or PyTorch.

Both run the model made lean by ``for_inference`` (batch norm folded, dropout removed). ONNX Runtime
runs it as the graph ``deepfm export`` writes (exported in memory at start-up): for the paper's
DeepFM it takes 0.15 ms for one row where PyTorch's eager forward takes 0.57 ms (the operators'
dispatch, not the arithmetic, is most of a small pass), and about the same for 256 rows and more,
where the matrix products dominate (docs/production.md has the figures).

``--backend auto`` (the default) takes ONNX Runtime where it is installed (the ``serve`` extra) and
the model exports (single-valued fields only: a multi-valued field's bags do not fit the graph's
fixed input), and checks at start-up that the two agree on random rows; otherwise it serves with
PyTorch and logs why. ``--backend onnxruntime`` refuses to start instead of falling back.
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from typing import Protocol

import numpy as np
import torch
from torch import nn

from deepfm.data.batch import EncodedData
from deepfm.data.encoders import FeatureEncoder
from deepfm.errors import ConfigError
from deepfm.serving.inference import for_inference
from deepfm.training.trainer import to_prediction

BACKENDS = ("auto", "onnxruntime", "torch")
PROBE_ROWS = 64  # random rows on which the two backends must agree before ONNX Runtime serves
TOLERANCE = dict(rtol=1e-4, atol=1e-5)  # float32 rounding of two orders of the same sums
SMALL_ROWS = 8  # requests up to this many rows run on one thread (OnnxPredictor)

log = logging.getLogger(__name__)


class Predictor(Protocol):
    name: str

    def __call__(self, data: EncodedData) -> np.ndarray:
        """Predictions (float64) of the rows of ``data``, in order: (N,), or (N, C) for C classes."""


class TorchPredictor:
    """PyTorch's eager forward pass, in inference mode."""

    name = "torch"

    def __init__(self, model: nn.Module, task: str):
        self.model, self.task = model.eval(), task

    def __call__(self, data: EncodedData) -> np.ndarray:
        with torch.inference_mode():
            return to_prediction(self.task, self.model(data.to_batch())).double().numpy()


class OnnxPredictor:
    """ONNX Runtime sessions of ``model``'s graph whose intra-op threads sleep when idle: one with ``threads``
    threads, and where ``threads`` > 1 a one-thread session for requests of up to ``SMALL_ROWS`` rows.

    Waking a second thread costs a small request more than it saves (one row: 0.16 against 0.10 ms of CPU
    in process; in a served request 0.55-0.61 against 0.47 ms), while 16 rows and more finish sooner on two.
    The two sessions share one copy of the weights (ONNX Runtime's ``add_initializer``).

    A small request's ids are copied into an input prepared at start-up (its values, where all are 1, are one
    prepared too) and the session is run by ONNX Runtime's binding, without the Python wrapper's checks of the
    input names on every call: 0.10 against 0.08 ms for one row (in process, same run)."""

    name = "onnxruntime"

    def __init__(self, model: nn.Module, task: str, fields: int, threads: int):
        import onnxruntime
        from onnx import load_from_string, numpy_helper

        from deepfm.export import write_onnx

        graph = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, once per start
            write_onnx(model, task, fields, graph)
        graph = graph.getvalue()
        self._weights = {weight.name: onnxruntime.OrtValue.ortvalue_from_numpy(numpy_helper.to_array(weight))
                         for weight in load_from_string(graph).graph.initializer}  # alive as long as the sessions
        self.session = self._session(onnxruntime, graph, threads)
        self.small_session = self._session(onnxruntime, graph, 1) if threads > 1 else self.session
        self._outputs = [self.session.get_outputs()[0].name]
        self._run_options = onnxruntime.RunOptions()
        self._small_ids = np.empty((SMALL_ROWS, fields), np.int64)  # used by one call at a time
        self._small_ids_free = threading.Lock()
        self._ones = np.ones((SMALL_ROWS, fields), np.float32)  # never written

    def _session(self, onnxruntime, graph: bytes, threads: int):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as OMP_WAIT_POLICY=PASSIVE
        options.log_severity_level = 3  # errors only
        for name, weight in self._weights.items():
            options.add_initializer(name, weight)
        return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def __call__(self, data: EncodedData) -> np.ndarray:
        n, values = len(data), data.dense_values()
        if n <= SMALL_ROWS and self._small_ids_free.acquire(blocking=False):
            try:
                ids = self._small_ids[:n]
                np.copyto(ids, data.ids)
                values = self._ones[:n] if values is None else np.ascontiguousarray(values, np.float32)
                return self._run(self.small_session, {"ids": ids, "values": values})
            finally:
                self._small_ids_free.release()
        if values is None:
            values = np.ones(data.ids.shape, np.float32)
        inputs = {"ids": np.ascontiguousarray(data.ids, np.int64), "values": np.ascontiguousarray(values, np.float32)}
        return self._run(self.small_session if n <= SMALL_ROWS else self.session, inputs)

    def _run(self, session, inputs: dict[str, np.ndarray]) -> np.ndarray:
        binding = getattr(session, "_sess", None)  # ONNX Runtime's C++ session; its Python wrapper where it has none
        if binding is None:
            return session.run(self._outputs, inputs)[0].astype(np.float64)
        return binding.run(self._outputs, inputs, self._run_options)[0].astype(np.float64)


def predictor_for(model: nn.Module, encoder: FeatureEncoder, backend: str = "auto", threads: int = 1) -> Predictor:
    """The forward pass that serves ``model`` (made lean here, in place): ``backend`` is one of ``BACKENDS``."""
    if backend not in BACKENDS:
        raise ConfigError(f"serve: --backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    torch_predictor = TorchPredictor(for_inference(model.to("cpu")), encoder.task)
    if backend == "torch":
        return torch_predictor
    try:
        return _checked_onnx(torch_predictor, encoder, threads)
    except Exception as error:  # noqa: BLE001 - auto falls back to PyTorch, and says why
        if backend == "onnxruntime":
            raise ConfigError(f"serve --backend onnxruntime: {error}") from None
        log.warning("serving with PyTorch, not ONNX Runtime: %s", error)
        return torch_predictor


def _checked_onnx(reference: TorchPredictor, encoder: FeatureEncoder, threads: int) -> OnnxPredictor:
    """ONNX Runtime for this model, once it predicts what PyTorch predicts on random rows."""
    if encoder.multi_fields:
        raise ValueError("the model has multi-valued fields (" + ", ".join(f.name for f in encoder.multi_fields)
                         + "), which the ONNX graph does not take")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ValueError("onnxruntime is not installed (pip install 'deepfm[serve]')") from None
    predictor = OnnxPredictor(reference.model, encoder.task, len(encoder.single_fields), threads)
    probe = probe_rows(encoder)
    expected, got = reference(probe), predictor(probe)
    if got.shape != expected.shape or not np.allclose(got, expected, **TOLERANCE):
        gap = np.abs(got - expected).max() if got.shape == expected.shape else f"shape {got.shape} != {expected.shape}"
        raise ValueError(f"ONNX Runtime's predictions differ from PyTorch's on random rows (largest difference {gap})")
    return predictor


def probe_rows(encoder: FeatureEncoder, rows: int = PROBE_ROWS, seed: int = 0) -> EncodedData:
    """Random encoded rows: each field a random id of its own range, numeric fields a random value."""
    rng = np.random.default_rng(seed)
    fields = encoder.single_fields
    ids = np.stack([spec.offset + rng.integers(0, max(spec.size, 1), rows) for spec in fields], axis=1)
    values = np.ones((rows, len(fields)), np.float32)
    for j, spec in enumerate(fields):
        if spec.kind == "numeric" and spec.edges is None:
            values[:, j] = rng.normal(size=rows)
    return EncodedData(ids=ids.astype(np.int64), values=values, bags=[])
