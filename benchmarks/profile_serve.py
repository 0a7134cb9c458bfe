"""Where one ``/predict`` request's time goes inside the server process, without a network or a client.

Two views of the same model and bodies (the synthetic Criteo-shaped DeepFM of ``serve_load.py``, or
``--model DIR --data CSV``):

- stages, each timed alone: the general path (orjson parse, values per field, columnar encode), the scan
  of plain bodies and the encoding of its spans, the decode a request runs, tensors, forward pass
  (each backend of ``deepfm.serving.backends`` at each thread count), response encode;
- the whole app, called as ASGI in process (body bytes in, response bytes out; routing, body read,
  decode, batcher hand-off or inline forward, response) with batching on and off and each of
  ``--backends``, with ``--cprofile N`` printing the top N functions of each request size.

Each figure is the median of ``--runs`` runs of the process's CPU time (all its threads), not wall
time, so that other jobs on a shared machine move it little; ``--clock wall`` for wall time.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/profile_serve.py --model /tmp/m/model --data /tmp/m/test.csv
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import orjson
import torch

from deepfm.api import Estimator
from deepfm.runtime import configure
from deepfm.serving.app import create_app
from deepfm.serving.backends import OnnxPredictor, TorchPredictor
from deepfm.serving.decode import RequestDecoder
from deepfm.serving.inference import for_inference
from deepfm.serving.limits import Limits

from serve_load import _bodies, _make_model, _rows  # noqa: E402 - benchmarks/ is on sys.path when run as a script


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def _median_ms(work: Callable[[], object], runs: int) -> float:
    work()
    times = []
    for _ in range(runs):
        began = clock()
        work()
        times.append(clock() - began)
    return 1e3 * statistics.median(times)


def _interleaved_ms(works: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """``_median_ms`` of each of ``works``, their runs taking turns (load from other jobs falls on each alike)."""
    times: dict[str, list[float]] = {name: [] for name in works}
    for work in works.values():
        work()
    for _ in range(runs):
        for name, work in works.items():
            began = clock()
            work()
            times[name].append(clock() - began)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def stages(model_dir: Path, body: bytes, runs: int, threads: list[int]) -> dict[str, float]:
    estimator = Estimator.load(model_dir)
    model = for_inference(estimator.model)
    decoder = RequestDecoder(estimator.encoder, estimator.config.data.multi_separator, Limits())
    task, fields = estimator.encoder.task, len(estimator.encoder.single_fields)
    columns = decoder.read(body)
    data = decoder.decode(body)
    predictions = TorchPredictor(model, task)(data)
    timed = {
        "general path: orjson parse": _median_ms(lambda: orjson.loads(body), runs),
        "general path: values per field (parse included)": _median_ms(lambda: decoder.read(body), runs),
        "general path: columnar encode": _median_ms(lambda: decoder.columnar.encode(columns, body), runs),
    }
    if decoder.scanner is not None:  # plain bodies of models without multi-valued or weighted fields
        spans = decoder.scanner.scan(body)
        timed["scan (one compiled pass)"] = _median_ms(lambda: decoder.scanner.scan(body), runs)
        timed["encode the spans"] = _median_ms(lambda: decoder.columnar.encode_spans(spans, body), runs)
    timed["decode (what a request runs)"] = _median_ms(lambda: decoder.decode(body), runs)
    timed["tensors"] = _median_ms(data.to_batch, runs)
    for n in threads:  # the torch and ONNX Runtime passes of each thread count interleaved, run by run
        torch.set_num_threads(n)
        plural = "s" if n > 1 else ""
        predictors = {f"forward torch, {n} thread{plural}": TorchPredictor(model, task)}
        if not estimator.encoder.multi_fields:
            predictors[f"forward onnxruntime, {n} thread{plural}"] = OnnxPredictor(model, task, fields, n)
        timed.update(_interleaved_ms({name: (lambda p=p: p(data)) for name, p in predictors.items()}, runs))
    timed["response encode"] = _median_ms(
        lambda: orjson.dumps({"predictions": predictions, "kind": "probability"}, option=orjson.OPT_SERIALIZE_NUMPY), runs)
    return timed


class InProcess:
    """Calls an ASGI app with one request at a time on its own event loop (uvloop where installed)."""

    def __init__(self, app):
        self.app = app
        try:
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        self.lifespan = self.loop.create_task(self._lifespan())

    async def _lifespan(self):
        messages = asyncio.Queue()
        await messages.put({"type": "lifespan.startup"})

        async def receive():
            return await messages.get()

        async def send(message):
            pass

        self._stop = messages
        await self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)

    async def _request(self, body: bytes) -> bytes:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000), "state": {}}
        sent = []
        received = False

        async def receive():
            nonlocal received
            if received:
                await asyncio.sleep(3600)
            received = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            if message["type"] == "http.response.body":
                sent.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return b"".join(sent)

    def request(self, body: bytes) -> bytes:
        return self.loop.run_until_complete(self._request(body))

    def close(self):
        self._stop.put_nowait({"type": "lifespan.shutdown"})
        self.loop.run_until_complete(asyncio.wait_for(self.lifespan, 10))
        self.loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: train serve_load.py's DeepFM)")
    parser.add_argument("--data", help="CSV of rows (with --model)")
    parser.add_argument("--sizes", default="1,256", help="rows per request")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--columnar", action="store_true", help='{"columns": ...} bodies instead of {"rows": ...}')
    parser.add_argument("--threads", default="1,2", help="thread counts for the forward pass")
    parser.add_argument("--backends", default="auto,torch", help="deepfm serve --backend values for the whole app")
    parser.add_argument("--cprofile", type=int, default=0, metavar="N", help="print the top N functions (cumulative)")
    parser.add_argument("--clock", choices=CLOCKS, default="cpu", help="CPU time of the process (default) or wall time")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    configure()
    with tempfile.TemporaryDirectory() as tmp:
        model, data = (Path(args.model), Path(args.data)) if args.model else _make_model(Path(tmp))
        rows = _rows(data)
        results = {}
        for size in map(int, args.sizes.split(",")):
            body = _bodies(rows, size, columnar=args.columnar)[0]
            timed = stages(model, body, args.runs, [int(t) for t in args.threads.split(",")])
            configure()
            clients = {f"whole app, {backend}, batching {'on' if batching else 'off'}":
                       InProcess(create_app(model, Limits(), batching=batching, backend=backend))
                       for backend in args.backends.split(",") for batching in (True, False)}
            timed.update(_interleaved_ms({name: (lambda c=c: c.request(body)) for name, c in clients.items()}, args.runs))
            if args.cprofile:
                name, client = next(iter(clients.items()))
                profile = cProfile.Profile()
                profile.enable()
                for _ in range(args.runs):
                    client.request(body)
                profile.disable()
                print(f"--- {name}: {size} rows, {args.runs} requests")
                pstats.Stats(profile).sort_stats("cumulative").print_stats(args.cprofile)
            for client in clients.values():
                client.close()
            results[size] = {k: round(v, 3) for k, v in timed.items()}
            print(json.dumps({"rows": size, **results[size]}), flush=True)
        print("\n| stage (ms, median) | " + " | ".join(f"{s} row{'s' if s > 1 else ''}" for s in results) + " |")
        print("| --- |" + " ---: |" * len(results))
        for stage in next(iter(results.values())):
            print(f"| {stage} | " + " | ".join(f"{results[s][stage]:.3f}" for s in results) + " |")


if __name__ == "__main__":
    main()
