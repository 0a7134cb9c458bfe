"""The HTTP app: ``POST /predict``, ``GET /health``, ``GET /metadata``.

    deepfm serve runs/frappe --port 8000
    curl -s localhost:8000/predict -d '{"rows": [{"user": "12", "item": "7", "hour": 13}]}'
    {"predictions": [0.73], "kind": "probability"}      (multiclass, ordinal: each row's class probabilities,
                                                       and "classes": their order; ordinal: "expected", each
                                                       row's mean rating, as predict writes it)
    curl -s localhost:8000/predict -d '{"columns": {"user": ["12"], "item": ["7"], "hour": [13]}}'

Input errors are 4xx with ``{"error": "rows[3].C1: ..."}``: 400 malformed JSON, 413 more than
``Limits`` allows, 422 a wrong shape, a missing field or a wrong type. Anything else is a 500 for
that request only; the server keeps serving.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from deepfm import __version__
from deepfm.api import Estimator
from deepfm.data.identity import sha256_of
from deepfm.data.unseen import UnseenCounts
from deepfm.errors import ModelDirError
from deepfm.serving.backends import predictor_for
from deepfm.serving.batcher import MicroBatcher
from deepfm.serving.decode import RequestDecoder
from deepfm.serving.endpoint import PredictEndpoint
from deepfm.serving.health import Health
from deepfm.serving.limits import Limits
from deepfm.serving.rows import RequestError
from deepfm.training.trainer import NOT_FINITE, first_not_finite

INLINE_BYTES = 1 << 20  # bodies up to this size (~2,000 Criteo rows) are decoded on the event loop: a hop to
# a thread pool costs more than it saves, since parsing holds the GIL; larger ones leave the loop free for others
WORKER_SETTINGS = "DEEPFM_SERVE_WORKER"  # the environment variable that hands settings to worker processes
# What one prediction is: multiclass and ordinal models answer each row with its class probabilities.
PREDICTION_KINDS = {"binary": "probability", "regression": "rating", "multiclass": "class probabilities",
                    "ordinal": "class probabilities"}
METRIC_KEYS = ("task", "rows", "valid_rows", "epochs", "best_epoch", "best_valid")
log = logging.getLogger("deepfm.serve")  # what is served and how, on stderr beside uvicorn's lines (``log_to_stderr``)


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def create_app(model_dir: str | Path, limits: Limits = Limits(), batching: bool = True, backend: str = "auto",
               threads: int = 0, health: Health | None = None) -> PredictEndpoint:
    """An ASGI app serving the model directory ``model_dir`` (loaded and verified once, here) with the forward
    pass of ``backend`` (``deepfm.serving.backends``) on ``threads`` threads (0: torch's current count):
    ``POST /predict`` by ``deepfm.serving.endpoint``, the rest by FastAPI. ``health``: this worker's record among
    its siblings' (``serve --workers``); by default it speaks for itself alone."""
    import torch

    health = health or Health()
    log.info("loading %s (process %d)", model_dir, os.getpid())
    estimator = Estimator.load(model_dir)
    encoder = estimator.encoder
    task = encoder.task  # the one place the task is read
    predictor = predictor_for(estimator.model, encoder, backend, threads or torch.get_num_threads())
    decoder = RequestDecoder(encoder, estimator.config.data.multi_separator, limits)
    batcher = MicroBatcher(predictor, max_rows=limits.max_rows if batching else 0, outcome=health.scored)
    unseen = UnseenCounts(encoder)
    manifest = json.loads((Path(model_dir) / "manifest.json").read_text())
    kind = PREDICTION_KINDS.get(task.name, "rating")
    labelled = {"classes": list(task.classes)} if task.name in ("multiclass", "ordinal") else {}  # each row's order
    metadata = {
        "model": estimator.config.model.name,
        "task": task.name,
        "prediction": kind,
        **labelled,
        "label": encoder.label,
        "fields": [_describe(spec) for spec in encoder.fields],
        "version": {"model_format": manifest["format_version"], "trained_with": manifest["deepfm_version"],
                    "server": __version__},
        "metrics": {k: estimator.metrics[k] for k in METRIC_KEYS if k in estimator.metrics},
        "limits": {"max_rows": limits.max_rows, "max_bytes": limits.max_bytes},
        "batching": batching,
        "backend": predictor.name,
    }
    log.info("serving a %s model (%s) with %s on %d thread(s), process %d", metadata["model"], task.name, predictor.name,
             threads or torch.get_num_threads(), os.getpid())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        health.serving()
        yield
        health.stopped()
        batcher.close()

    app = FastAPI(title="deepfm", version=__version__, lifespan=lifespan, default_response_class=JSON)
    app.state.batcher, app.state.decoder, app.state.health = batcher, decoder, health

    @app.exception_handler(Exception)
    async def failed(request: Request, error: Exception) -> Response:
        return JSON({"error": f"internal error: {type(error).__name__}: {error}"}, status_code=500)

    async def try_scoring() -> None:
        """One row of missing values through the model: a server drained because its forward passes kept failing
        gets no request that would tell it scores again."""
        with suppress(Exception):
            await batcher.predict(decoder.decode(orjson.dumps({"rows": [dict.fromkeys(decoder.names)]})))

    @app.get("/health")
    async def get_health() -> Response:
        if health.scoring:
            await try_scoring()
        failing = health.failing()
        if failing:
            return JSON({"status": "failing", "failing": failing}, status_code=503)
        return JSON({"status": "ok"})

    @app.get("/metadata")
    async def get_metadata() -> Response:
        return JSON({**metadata, "served": {"rows": batcher.rows, "forward_passes": batcher.batches,
                                            "values": unseen.report(), "missing": unseen.missing_report()}})

    async def predict(body: bytes) -> dict[str, Any]:  # POST /predict, by deepfm.serving.endpoint
        data = decoder.decode(body) if len(body) <= INLINE_BYTES else await run_in_threadpool(decoder.decode, body)
        unseen.add(data)
        predictions = await batcher.predict(data)
        row = first_not_finite(predictions)
        if row is not None:  # JSON would carry it as null
            raise RequestError(422, f"rows[{row}]: {NOT_FINITE}")
        expected = {"expected": predictions @ task.values} if task.name == "ordinal" else {}  # as predict writes it
        return {"predictions": predictions, "kind": kind, **labelled, **expected}

    return PredictEndpoint(app, predict, limits.max_bytes)


def _describe(spec) -> dict[str, Any]:
    described: dict[str, Any] = {"name": spec.name, "kind": spec.kind}
    if spec.kind == "numeric":
        described["encoding"] = "bucket" if spec.edges is not None else "scale"
    elif spec.hash_buckets:
        described["hash_buckets"] = spec.hash_buckets
    else:
        described["vocabulary_size"] = len(spec.vocabulary or [])
    return described


def serve(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, limits: Limits = Limits(),
          batching: bool = True, threads: int = 0, log_level: str = "info", workers: int = 1,
          backend: str = "auto", access_log: bool = False) -> None:
    """Serve ``model_dir`` over HTTP until interrupted; the model runs on CPU, by ``backend``. ``workers`` > 1:
    that many processes share the port, each with its own copy of the model and ``threads`` (0: cores / workers)
    threads for its forward passes. ``access_log``: uvicorn's line per request."""
    import uvicorn

    from deepfm.runtime import available_cores, configure as configure_runtime

    threads = threads or max(1, available_cores() // workers)
    log_to_stderr(log_level)
    if workers == 1:
        configure_runtime(threads)
        app = create_app(model_dir, limits, batching, backend, threads)
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log,
                    log_config=_uvicorn_logs_on_stderr())
        return
    estimator = Estimator.load(model_dir)  # a broken directory stops here, not in every worker
    if backend != "auto":  # and so does a backend that cannot serve it
        predictor_for(estimator.model, estimator.encoder, backend, threads)
    del estimator
    health = tempfile.mkdtemp(prefix="deepfm-serve-health-")  # the workers' records (deepfm.serving.health)
    os.environ[WORKER_SETTINGS] = json.dumps({"model_dir": str(model_dir), "max_rows": limits.max_rows,
                                              "max_bytes": limits.max_bytes, "batching": batching, "threads": threads,
                                              "backend": backend, "manifest": manifest_digest(model_dir),
                                              "health": health, "log_level": log_level})
    try:
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=workers, host=host, port=port,
                    log_level=log_level, access_log=access_log, log_config=_uvicorn_logs_on_stderr())
    finally:
        shutil.rmtree(health, ignore_errors=True)


def _uvicorn_logs_on_stderr() -> dict[str, Any]:
    """uvicorn's logging configuration with its access log on stderr too (its own default writes that to stdout)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    return config


def log_to_stderr(level: str) -> None:
    """``log``'s lines on stderr as uvicorn writes its own (``INFO:     ...``), at uvicorn's ``--log-level``."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(getattr(logging, level.upper(), logging.INFO))  # uvicorn's "trace": INFO


def manifest_digest(model_dir: str | Path) -> str | None:
    """The SHA-256 of the directory's ``manifest.json`` (which holds every file's): which model it holds now."""
    path = Path(model_dir) / "manifest.json"
    return sha256_of(path) if path.is_file() else None


def worker_app() -> PredictEndpoint:
    """The app of one ``serve(workers=N)`` worker process, from the settings its parent left in the environment."""
    from deepfm.runtime import configure as configure_runtime, keep_freed_memory

    keep_freed_memory()  # a worker is a fresh interpreter: the command's malloc setting is not inherited
    settings = json.loads(os.environ[WORKER_SETTINGS])
    log_to_stderr(settings.get("log_level", "info"))
    health = Health(settings.get("health"))
    try:
        if manifest_digest(settings["model_dir"]) != settings["manifest"]:  # restarted after the folder changed
            raise ModelDirError(f"{settings['model_dir']}: the model directory changed after 'deepfm serve' started "
                                "(its manifest.json differs), so this worker would serve another model than the others; "
                                "restart the server to serve the new one (serve a new directory rather than changing "
                                "this one)")
        configure_runtime(settings["threads"])
        return create_app(settings["model_dir"], Limits(settings["max_rows"], settings["max_bytes"]),
                          settings["batching"], settings["backend"], settings["threads"], health)
    except Exception as error:  # uvicorn starts it again: /health says so meanwhile
        health.failed_to_start(error)
        raise
