"""Where a served one-row request's CPU goes: ``deepfm serve``'s app with parts taken out, against the HTTP floor.

Each variant is a real server (uvicorn, the app ``deepfm serve`` builds) on a free loopback port, hit by
``serve_load.py``'s raw client with one connection; the figure is the server process's CPU time per
request (``/proc``), the median of ``--rounds`` rounds in which the variants take turns. Variants
(comma-separated parts to take out, "" for the whole app; ``floor`` is ``serve_load.py``'s empty endpoint):

- ``noforward``: the forward pass answers 0.5 for every row;
- ``nodecode``: each distinct body is decoded once, then its encoded rows are reused;
- ``twice``: the forward pass runs twice (the second pass's cost, with the weights just read);
- a ``base=SRC:`` prefix runs the variant with the package from ``SRC`` (e.g. an older checkout's ``src``).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/serve_ablation.py --variants "floor;;noforward;noforward,nodecode"
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from serve_load import _bodies, _cpu_seconds, _free_port, _make_model, _rows, _scenario  # noqa: E402 - benchmarks/ on sys.path

PARTS = ("noforward", "nodecode", "twice")


def launch(port: int, model: str, parts: set[str]) -> None:
    """``--launch PORT MODEL PARTS``: serve ``model`` as ``deepfm serve`` does, with ``parts`` taken out."""
    import numpy as np
    import uvicorn

    from deepfm.runtime import available_cores, configure
    from deepfm.serving.app import create_app

    threads = available_cores()
    configure(threads)
    app = create_app(model, threads=threads)
    batcher = app.state.batcher
    decoder = getattr(app.state, "decoder", None) or next(  # an older app: its endpoint's closure holds it
        cell.cell_contents for cell in app.answer.__closure__ if type(cell.cell_contents).__name__ == "RequestDecoder")
    forward = batcher.predictor
    if "noforward" in parts:
        batcher.predictor = lambda data: np.full(len(data), 0.5)
    if "twice" in parts:
        def twice(data):
            forward(data)
            return forward(data)

        batcher.predictor = twice
    if "nodecode" in parts:
        decoded: dict[bytes, object] = {}
        decode = decoder.decode
        decoder.decode = lambda body: decoded[body] if body in decoded else decoded.setdefault(body, decode(body))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="floor;;noforward;noforward,nodecode", help="';'-separated, see above")
    parser.add_argument("--model", help="model directory (default: train serve_load.py's DeepFM)")
    parser.add_argument("--data", help="CSV of rows (with --model)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=3000, help="requests per variant and round")
    parser.add_argument("--launch", nargs=3, metavar=("PORT", "MODEL", "PARTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.launch:
        port, model, parts = args.launch
        return launch(int(port), model, set(parts.split(",")) - {""})
    with tempfile.TemporaryDirectory() as tmp:
        model, data = (Path(args.model), Path(args.data)) if args.model else _make_model(Path(tmp))
        bodies = _bodies(_rows(data), 1, columnar=False)
        servers = {}
        for variant in args.variants.split(";"):
            source, _, parts = variant.rpartition(":")
            port, env = _free_port(), {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
            if source:
                env["PYTHONPATH"] = source.removeprefix("base=")
            command = ([sys.executable, str(Path(__file__).with_name("serve_load.py")), "--serve-floor", str(port)]
                       if parts == "floor" else [sys.executable, __file__, "--launch", str(port), str(model), parts])
            servers[variant] = (subprocess.Popen(command, env=env), f"http://127.0.0.1:{port}")
        try:
            for process, url in servers.values():
                deadline = time.monotonic() + 180
                while True:
                    try:
                        if httpx.get(f"{url}/health").status_code == 200:
                            break
                    except httpx.TransportError:
                        if process.poll() is not None or time.monotonic() > deadline:
                            raise RuntimeError(f"{process.args} did not start") from None
                        time.sleep(0.2)
                _scenario("raw", url, bodies, 1, 300, 5)  # warm
            cpu: dict[str, list[float]] = {variant: [] for variant in servers}
            rate: dict[str, list[float]] = {variant: [] for variant in servers}
            for _ in range(args.rounds):
                for variant, (process, url) in servers.items():
                    before = _cpu_seconds(process.pid)
                    run = _scenario("raw", url, bodies, 1, args.requests, 10)
                    cpu[variant].append(1e3 * (_cpu_seconds(process.pid) - before) / (run["requests"] + 1))
                    rate[variant].append(run["requests_per_s"])
        finally:
            for process, _ in servers.values():
                process.terminate()
    print(f"load average {os.getloadavg()}\n\n| variant | server CPU ms/request (median) | each round | requests/s |")
    print("| --- | ---: | --- | ---: |")
    for variant in servers:
        print(f"| {variant or 'whole app'} | {statistics.median(cpu[variant]):.3f} | "
              f"{', '.join(f'{c:.3f}' for c in cpu[variant])} | {statistics.median(rate[variant]):.0f} |")


if __name__ == "__main__":
    main()
