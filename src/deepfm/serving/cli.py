"""``deepfm serve`` and ``deepfm export``: parsers and commands (imports stay inside the commands,
so ``deepfm --help`` needs neither FastAPI nor ONNX)."""

from __future__ import annotations

import argparse
import sys

from deepfm.errors import ConfigError, require_directory


def port_number(text: str) -> int:
    """A TCP port, 0-65535 (0: any free one; a larger number was taken modulo 65536 by the socket layer: a server on
    another port than the one it logged)."""
    port = int(text)
    if not 0 <= port < 65536:
        raise argparse.ArgumentTypeError(f"{text} is not a port (0-65535)")
    return port


def add_production_parsers(sub: argparse._SubParsersAction) -> None:
    from deepfm.serving.limits import Limits

    p = sub.add_parser("serve", help="serve a model directory over HTTP (POST /predict, GET /health, GET /metadata)",
                       description="Serve a model directory over HTTP with FastAPI/uvicorn. See docs/production.md.")
    p.add_argument("dir", help="model directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_number, default=8000)
    p.add_argument("--max-rows", type=int, default=Limits.max_rows, help="rows per request before 413")
    p.add_argument("--max-bytes", type=int, default=Limits.max_bytes, help="request body bytes before 413")
    p.add_argument("--no-batching", dest="batching", action="store_false",
                   help="one forward pass per request instead of batching concurrent requests")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes sharing the port, each with its own copy of the model (default 1; "
                        "see docs/production.md for choosing N)")
    p.add_argument("--threads", type=int, default=0, help="forward-pass threads per worker (0: cores / workers)")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "torch"), default="auto",
                   help="what runs the forward pass: auto (default) takes ONNX Runtime where it is installed and "
                        "the model exports (no multi-valued fields), else PyTorch; onnxruntime refuses to start "
                        "without it")
    p.add_argument("--access-log", action="store_true",
                   help="one line per request on stderr (uvicorn's access log: client, method, path, status); off by "
                        "default, as it costs throughput at many small requests")
    p = sub.add_parser("export", help="export the model (after encoding) as ONNX",
                       description="Write the model as ONNX: inputs ids int64 (batch, F) and values float32 "
                                   "(batch, F), output prediction (batch,), or (batch, C) class probabilities for "
                                   "multiclass and ordinal models. Encoding stays in features.json.")
    p.add_argument("dir", help="model directory")
    p.add_argument("--onnx", required=True, help="ONNX file to write")


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from deepfm.serving.app import serve
    except ImportError as error:
        raise ConfigError(f"serve needs the serve extra (pip install 'deepfm[serve]'): {error}") from None
    from deepfm.serving.limits import Limits

    if args.max_rows < 1 or args.max_bytes < 1 or args.workers < 1 or args.threads < 0:
        raise ConfigError("serve: --max-rows, --max-bytes and --workers must be positive, --threads 0 or more")
    check_port_free(args.host, args.port)  # before the model loads (seconds), not after it, as uvicorn's exit 3
    require_directory(args.dir)  # before the server starts and says it is loading it
    serve(args.dir, args.host, args.port, Limits(args.max_rows, args.max_bytes), args.batching, args.threads,
          workers=args.workers, backend=args.backend, access_log=args.access_log)
    return 0


def check_port_free(host: str, port: int) -> None:
    """A ``ConfigError`` where ``host:port`` cannot be listened on now (another server holds it, say)."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closed port's TIME_WAIT is free
            probe.bind(address)
    except OSError as error:
        raise ConfigError(f"serve: cannot listen on {host}:{port} ({error.strerror or error}); is another server "
                          "using it? --port chooses another") from None


def cmd_export(args: argparse.Namespace) -> int:
    try:
        import onnx  # noqa: F401 - torch's exporter needs it
    except ImportError as error:
        raise ConfigError(f"export needs the export extra (pip install 'deepfm[export]'): {error}") from None
    from deepfm.export import export_onnx
    from deepfm.outputs import check_writable_file

    check_writable_file(args.onnx, "--onnx")
    path = export_onnx(args.dir, args.onnx)
    print(f"wrote {path}", file=sys.stderr)
    return 0
