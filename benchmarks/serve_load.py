"""Load test of ``deepfm serve`` on 127.0.0.1: throughput and p50/p99 latency, 1-row and 256-row requests.

Bounded in count and time: each scenario stops after ``--requests`` requests or ``--seconds``
seconds, whichever comes first. The server runs as a real ``deepfm serve`` process on a free
loopback port, with micro-batching on and (for comparison) off; the client keeps a fixed number of
connections busy sending raw training-file rows: ``--client httpx`` (the default, and the first
runs' client: an asyncio httpx client) or ``--client raw`` (prebuilt requests on keep-alive asyncio
streams, every connection open before the clock starts). On a machine whose cores the client
shares, httpx's own CPU and its connection pool are most of what is measured: the empty endpoint's
p99 with 16 one-row connections was 820 ms with httpx and 21 ms with the raw client (two runs back to
back, load average 4-4.5; docs/production.md). In the same run:

- the HTTP floor: an empty FastAPI endpoint on the same uvicorn that parses the same JSON (orjson)
  and returns constants, hit by the same client (``--modes floor``);
- offline prediction of the same rows in rows/s, as ``deepfm predict`` runs it (a process set up by
  ``deepfm.runtime``; read the CSV, encode, forward passes), and the forward passes alone, measured
  before and after the servers' rounds (the ratios use the mean of the two);

with every server up at once and the servers taking turns within each scenario (``--repeats``
rounds), so that load from other jobs on the machine falls on all of them alike. Before a
scenario's timed rounds every server answers ``--warmup`` requests of it, so that none pays a
warm-up in its first timed round. ``--client-cpus`` / ``--server-cpus`` pin the client and the
servers (and offline prediction) to different cores, to emulate a client on another machine. The table gives
each scenario's requests/s as a share of the floor's, its rows/s as a share of offline prediction,
and the server's CPU time per request (its process and workers, from ``/proc``): on a busy machine
wall-clock figures measure the other jobs as much as the server, CPU time far less.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/serve_load.py                # trains a DeepFM on synthetic data
    OMP_WAIT_POLICY=PASSIVE python benchmarks/serve_load.py --model runs/x --data test.csv --repeats 3

Unless pinned apart, client and server share this machine's cores, so figures are a floor for the server alone.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/serve_load.py --client-cpus 0 --server-cpus 1   # client "elsewhere"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from fastapi import FastAPI, Request, Response

MODES = ("floor", "batching", "no-batching")  # and "torch": batching on, --backend torch (before ONNX Runtime)
HOST = "127.0.0.1"  # loopback only
SCENARIOS = [  # (rows per request, concurrent connections)
    (1, 1),
    (1, 16),
    (256, 1),
    (256, 4),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _make_model(root: Path) -> tuple[Path, Path]:
    """A paper-sized DeepFM (k=10, 400-400-400) on synthetic Criteo-shaped data (26 categorical, 13 numeric)."""
    import pyarrow.csv as pacsv

    from deepfm.api import Estimator
    from deepfm.data.synthetic import SyntheticSpec, make_ctr_table

    spec = SyntheticSpec(categorical=26, numeric=13, vocabulary=5000)
    train, test = root / "train.csv", root / "test.csv"
    pacsv.write_csv(make_ctr_table(spec, 20_000, 0)[0], train)
    pacsv.write_csv(make_ctr_table(spec, 4_096, 1)[0], test)
    Estimator(training={"epochs": 1}).fit(train, out=root / "model", progress=False)
    return root / "model", test


def _rows(path: Path, label: str = "label") -> list[dict[str, str | None]]:
    with open(path, newline="") as handle:
        return [{k: (v if v != "" else None) for k, v in row.items() if k != label} for row in csv.DictReader(handle)]


def serve_floor(port: int) -> None:
    """The HTTP floor: read the body, parse it, answer constants (``--serve-floor PORT``)."""
    import orjson
    import uvicorn

    app = FastAPI()
    answer = b'{"predictions":[0.5],"kind":"probability"}'

    @app.get("/health")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        orjson.loads(await request.body())
        return Response(answer, media_type="application/json")

    @app.get("/metadata")
    async def metadata() -> Response:
        return Response(b'{"served":{"rows":0,"forward_passes":0}}', media_type="application/json")

    uvicorn.run(app, host=HOST, port=port, log_level="warning", access_log=False)


def _cpus(text: str | None) -> set[int] | None:
    """``"0,2-3"`` -> {0, 2, 3}; None: no pinning."""
    if not text:
        return None
    cpus = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def _pinned(cpus: set[int] | None):
    """A ``preexec_fn`` that runs a child process (and the processes it starts) on ``cpus`` only."""
    return None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))


def _offline_rows_per_s(model: Path, data: Path, repeats: int = 3, cpus: set[int] | None = None) -> dict[str, float]:
    """Rows/s of offline prediction, in a process set up as ``deepfm predict``'s is (``deepfm.runtime``:
    threads, flush-to-zero, Arrow's allocator): ``file``, what ``deepfm predict`` does (read the CSV,
    encode, forward passes of 4096 rows; the model as trained) and ``forward``, the forward passes
    alone over the encoded rows (what ``run.py`` reports as prediction speed). Medians of ``repeats``."""
    command = [sys.executable, __file__, "--offline", str(model), str(data), str(repeats)]
    done = subprocess.run(command, check=True, capture_output=True, text=True, preexec_fn=_pinned(cpus))
    return json.loads(done.stdout)


def measure_offline(model: str, data: str, repeats: int) -> None:
    """``--offline MODEL DATA REPEATS``: print ``_offline_rows_per_s``'s figures as JSON."""
    from deepfm.runtime import configure, set_process_environment

    set_process_environment()
    configure()
    from deepfm.api import Estimator
    from deepfm.training.trainer import predict

    estimator = Estimator.load(model)

    def rows_per_s(work) -> float:
        rows = len(work())  # warm-up
        times = []
        for _ in range(int(repeats)):
            began = time.perf_counter()
            work()
            times.append(time.perf_counter() - began)
        return rows / statistics.median(times)

    encoded = estimator.encode(estimator.read(data, require_label=False), with_labels=False)
    figures = {"file": rows_per_s(lambda: estimator.predict(estimator.read(data, require_label=False))),
               "forward": rows_per_s(lambda: predict(estimator.model, estimator.encoder.task, encoded))}
    print(json.dumps(figures))


def _cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) of process ``pid`` and its children so far (Linux ``/proc``; None elsewhere):
    the server's work, which other jobs on a shared machine change far less than its wall-clock times."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total, found = 0, False
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if entry.parent.name == str(pid) or fields[1] == str(pid):  # fields[1]: the parent's pid
            total, found = total + int(fields[11]) + int(fields[12]), found or entry.parent.name == str(pid)
    return total / tick if found else None


class Server:
    def __init__(self, model: Path, mode: str, workers: int = 1, threads: int = 0, cpus: set[int] | None = None,
                 backend: str = ""):
        self.port = _free_port()
        if mode == "floor":
            command = [sys.executable, __file__, "--serve-floor", str(self.port)]
        else:
            command = [sys.executable, "-m", "deepfm", "serve", str(model), "--host", HOST, "--port", str(self.port)]
            command += ["--workers", str(workers)] if workers > 1 else []
            command += ["--threads", str(threads)] if threads else []
            command += ["--backend", backend] if backend else []
        if mode == "no-batching":
            command.append("--no-batching")
        if mode == "torch":
            command += ["--backend", "torch"]
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                        preexec_fn=_pinned(cpus))
        self.url = f"http://{HOST}:{self.port}"

    def __enter__(self) -> "Server":
        deadline = time.monotonic() + 180  # a busy 2-core machine takes a while to import torch in each worker
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("deepfm serve exited")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("deepfm serve did not start in 180 s")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


async def _httpx_scenario(url: str, bodies: list[bytes], connections: int, requests: int, seconds: float) -> dict:
    """The first client: httpx, whose connections open as the timed requests need them."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        for body in bodies[:connections]:  # warm-up: connections open, first forward passes done
            await client.post("/predict", content=body)

        async def worker() -> None:
            nonlocal sent, errors
            while sent < requests and time.perf_counter() < deadline:
                body = bodies[sent % len(bodies)]
                sent += 1
                began = time.perf_counter()
                response = await client.post("/predict", content=body)
                latencies.append(time.perf_counter() - began)
                errors += response.status_code != 200

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    return _summary(latencies, errors, elapsed)


async def _raw_scenario(url: str, bodies: list[bytes], connections: int, requests: int, seconds: float) -> dict:
    """A light client: ``connections`` keep-alive sockets (asyncio streams, uvloop where installed), each opened and
    used once before the clock starts, sending prebuilt HTTP/1.1 requests and reading each answer by its
    Content-Length: a few microseconds of client CPU per request where httpx takes a millisecond or more."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    prebuilt = [b"POST /predict HTTP/1.1\r\nhost: %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
                % (host.encode(), len(body), body) for body in bodies]
    streams = [await asyncio.open_connection(host, int(port)) for _ in range(connections)]

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        at = head.lower().index(b"content-length:") + 15
        await reader.readexactly(int(head[at : head.index(b"\r\n", at)]))
        return head[9:12] == b"200"

    await asyncio.gather(*(exchange(r, w, prebuilt[i % len(prebuilt)]) for i, (r, w) in enumerate(streams)))
    latencies: list[float] = []
    errors = sent = 0
    deadline = time.perf_counter() + seconds

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent, errors
        while sent < requests and time.perf_counter() < deadline:
            request = prebuilt[sent % len(prebuilt)]
            sent += 1
            began = time.perf_counter()
            ok = await exchange(reader, writer, request)
            latencies.append(time.perf_counter() - began)
            errors += not ok

    began = time.perf_counter()
    await asyncio.gather(*(worker(r, w) for r, w in streams))
    elapsed = time.perf_counter() - began
    for _, writer in streams:
        writer.close()
    return _summary(latencies, errors, elapsed)


CLIENTS = {"httpx": _httpx_scenario, "raw": _raw_scenario}


def _scenario(client: str, url: str, bodies: list[bytes], connections: int, requests: int, seconds: float) -> dict:
    """One scenario's timed requests by ``client`` (of ``CLIENTS``), on a fresh event loop (the raw client's: uvloop)."""
    loop = asyncio.new_event_loop()
    if client == "raw":
        with contextlib.suppress(ImportError):
            import uvloop

            loop.close()
            loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(CLIENTS[client](url, bodies, connections, requests, seconds))
    finally:
        loop.close()


def _summary(latencies: list[float], errors: int, elapsed: float) -> dict:
    ordered = sorted(latencies)
    return {
        "requests": len(latencies), "errors": errors, "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * ordered[len(ordered) // 2], 2),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
    }


def _bodies(rows: list[dict], size: int, columnar: bool) -> list[bytes]:
    chunks = [rows[i : i + size] for i in range(0, len(rows) - size + 1, size)][:512]
    if columnar:
        return [json.dumps({"columns": {k: [r[k] for r in chunk] for k in chunk[0]}}).encode() for chunk in chunks]
    return [json.dumps({"rows": chunk}).encode() for chunk in chunks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: train a DeepFM on synthetic data)")
    parser.add_argument("--data", help="CSV of rows to send (with --model)")
    parser.add_argument("--requests", type=int, default=2000, help="at most this many requests per scenario")
    parser.add_argument("--seconds", type=float, default=15.0, help="at most this long per scenario")
    parser.add_argument("--repeats", type=int, default=1, help="repeat each scenario; medians are reported")
    parser.add_argument("--modes", default=",".join(MODES), help=f"servers to measure, of {', '.join(MODES)}, torch")
    parser.add_argument("--workers", type=int, default=1, help="deepfm serve --workers")
    parser.add_argument("--threads", type=int, default=0, help="deepfm serve --threads (default: its own, cores / workers)")
    parser.add_argument("--backend", default="", help="deepfm serve --backend (default: its own, auto)")
    parser.add_argument("--warmup", type=int, default=100,
                        help="untimed requests each server answers before a scenario's timed rounds")
    parser.add_argument("--client-cpus", help="run the client on these CPUs (e.g. 0 or 0-1); default: any")
    parser.add_argument("--server-cpus", help="run the servers and offline prediction on these CPUs; default: any")
    parser.add_argument("--client", choices=CLIENTS, default="httpx",
                        help="httpx (the first runs' client) or raw: prebuilt requests on asyncio streams, far less client CPU")
    parser.add_argument("--columnar", action="store_true", help='send {"columns": ...} bodies instead of {"rows": ...}')
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--scenarios", default=",".join(f"{r}x{c}" for r, c in SCENARIOS),
                        help="ROWSxCONNECTIONS, comma-separated (default: all)")
    parser.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--offline", nargs=3, metavar=("MODEL", "DATA", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_floor:
        return serve_floor(args.serve_floor)
    if args.offline:
        return measure_offline(*args.offline)
    scenarios = [tuple(int(n) for n in s.split("x")) for s in args.scenarios.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    client_cpus, server_cpus = _cpus(args.client_cpus), _cpus(args.server_cpus)
    if client_cpus is not None:
        os.sched_setaffinity(0, client_cpus)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model, data = Path(args.model), Path(args.data)
        else:
            model, data = _make_model(Path(tmp))
        rows = _rows(data)
        offline_runs = [_offline_rows_per_s(model, data, cpus=server_cpus)]
        print(json.dumps({"offline_predict_rows_per_s": offline_runs[0]}), flush=True)
        results = []
        with contextlib.ExitStack() as stack:  # every server up at once; idle ones cost nothing
            servers = {mode: stack.enter_context(Server(model, mode, args.workers, args.threads, server_cpus, args.backend))
                       for mode in modes}
            for size, connections in scenarios:
                bodies = _bodies(rows, size, args.columnar)
                runs: dict[str, list[dict]] = {mode: [] for mode in modes}
                served = {mode: [0, 0] for mode in modes}  # forward passes, rows during this scenario
                for server in servers.values():  # untimed: every server warm before the first timed round
                    _scenario(args.client, server.url, bodies, connections, args.warmup, args.seconds)
                for _ in range(args.repeats):  # modes interleaved, so that load from other jobs hits them alike
                    for mode, server in servers.items():
                        before = httpx.get(f"{server.url}/metadata").json()["served"]
                        cpu = _cpu_seconds(server.process.pid)
                        run = _scenario(args.client, server.url, bodies, connections, args.requests, args.seconds)
                        if cpu is not None:  # per request, the warm-up requests (one per connection) included
                            run["server_cpu_ms_per_request"] = round(
                                1e3 * (_cpu_seconds(server.process.pid) - cpu) / (run["requests"] + connections), 3)
                        runs[mode].append(run)
                        after = httpx.get(f"{server.url}/metadata").json()["served"]
                        served[mode][0] += after["forward_passes"] - before["forward_passes"]
                        served[mode][1] += after["rows"] - before["rows"]
                for mode in modes:
                    median = {k: statistics.median(r[k] for r in runs[mode]) for k in runs[mode][0]}
                    passes, rows_served = served[mode]
                    median.update(rows_per_request=size, connections=connections, mode=mode,
                                  rows_per_s=round(median["requests_per_s"] * size, 1),
                                  rows_per_forward_pass=round(rows_served / passes, 1) if passes else None)
                    results.append(median)
                    print(json.dumps(median), flush=True)
        offline_runs.append(_offline_rows_per_s(model, data, cpus=server_cpus))  # before and after: load moves it
        print(json.dumps({"offline_predict_rows_per_s": offline_runs[1]}), flush=True)
    offline_figures = {k: statistics.mean(run[k] for run in offline_runs) for k in offline_runs[0]}
    offline = offline_figures["file"]
    floor = {(r["rows_per_request"], r["connections"]): r["requests_per_s"] for r in results if r["mode"] == "floor"}
    for r in results:
        key = (r["rows_per_request"], r["connections"])
        r["of_floor"] = round(r["requests_per_s"] / floor[key], 2) if key in floor else None
        r["of_offline"] = round(r["rows_per_s"] / offline, 2)
    each = " and ".join(f"{run['file']:,.0f}" for run in offline_runs)
    print(f"\noffline predict: {offline:,.0f} rows/s from the file, the mean of {each} before and after the servers' rounds "
          f"({offline_figures['forward']:,.0f} rows/s forward passes alone); load average before {load_before}, after {os.getloadavg()}; workers: {args.workers}; "
          f"body: {'columns' if args.columnar else 'rows'}; client: {args.client}; client CPUs: {args.client_cpus or 'any'}, server CPUs: {args.server_cpus or 'any'}")
    print("\n| server | rows/request | connections | requests/s | of floor | rows/s | of offline | p50 ms | p99 ms "
          "| server CPU ms/request | rows per forward pass | requests | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['mode']} | {r['rows_per_request']} | {r['connections']} | {r['requests_per_s']:.0f} | "
              f"{r['of_floor'] if r['of_floor'] is not None else ''} | {r['rows_per_s']:,.0f} | {r['of_offline']} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {round(r['server_cpu_ms_per_request'], 2) if 'server_cpu_ms_per_request' in r else ''} | "
              f"{r['rows_per_forward_pass'] or ''} | {r['requests']:.0f} | {r['errors']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"offline_predict_rows_per_s": offline,
                                               "offline_forward_rows_per_s": offline_figures["forward"],
                                               "offline_runs": offline_runs,
                                               "load_average": {"before": load_before, "after": os.getloadavg()},
                                               "command": sys.argv[1:], "workers": args.workers, "threads": args.threads,
                                               "columnar": args.columnar, "client": args.client, "client_cpus": args.client_cpus,
                                               "server_cpus": args.server_cpus, "warmup": args.warmup,
                                               "scenarios": results}, indent=1))


if __name__ == "__main__":
    main()
