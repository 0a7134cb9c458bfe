"""A Criteo-1TB-shaped simulation on one machine: generate, stream-train, project to 4B rows.

    python benchmarks/scale_sim.py generate --rows N --out FILE.csv[.gz] [--seed S] [--zipf 1.1]
    python benchmarks/scale_sim.py train --train FILE --valid FILE [--nproc P] [--hash-buckets B] --out results.json
    python benchmarks/scale_sim.py project --result results.json [--rows 4e9] [--gbit 10 100]

``generate`` writes ``label,I1..I13,C1..C26`` like Criteo: 26 categorical fields whose distinct
values run from 10^5 to 10^8 (geometric steps), each drawn from a truncated Zipf law (a few values
take most rows, as in click logs), as 8-hex-digit tokens; 13 count-like numeric fields; ~4% of
values missing. The label is drawn from a hidden logit: per-value weights of 10 of the fields, taken
from a hash of the value (no table of 10^8 weights in memory), plus two numeric fields. Rows are
made and written in chunks of ``--chunk`` rows, so memory stays flat whatever ``--rows`` is; the
same arguments give the same bytes.

``train`` runs ``deepfm train --stream --hash-buckets B`` with ``benchmarks/stream_big.toml`` (the
DeepFM of the out-of-core run) on ``--nproc`` processes, samples every process's resident set each
second, and records samples/s, peak RSS per process and the distinct (field, bucket) rows a batch
touches (the sparse part of the per-step all-reduce). ``project`` turns that into wall time for
4B rows on W workers under the communication model in ``project``'s docstring.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

HERE = Path(__file__).resolve().parent
CATEGORICAL, NUMERIC = 26, 13
SMALLEST, LARGEST = 10**5, 10**8  # distinct values of the narrowest and widest categorical field
MISSING_RATE = 0.04
SIGNAL_FIELDS = 10  # fields whose values move the hidden logit
HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def cardinalities() -> np.ndarray:
    """Distinct values of C1..C26: geometric from 10^5 to 10^8."""
    return np.geomspace(SMALLEST, LARGEST, CATEGORICAL).astype(np.int64)


def zipf_ranks(rng: np.random.Generator, n: int, values: int, exponent: float) -> np.ndarray:
    """``n`` draws of a rank in [1, values] with P(rank r) ∝ r^-exponent (continuous inverse CDF, then floor)."""
    u = rng.random(n)
    if abs(exponent - 1.0) < 1e-9:
        ranks = np.exp(u * np.log(values + 1.0))
    else:
        a = 1.0 - exponent
        ranks = ((np.power(values + 1.0, a) - 1.0) * u + 1.0) ** (1.0 / a)
    return np.clip(ranks.astype(np.int64), 1, values)


def scramble(ranks: np.ndarray, field: int) -> np.ndarray:
    """A bijection of 32-bit words per field: the token a rank is written as (popular ≠ small)."""
    x = (ranks.astype(np.uint64) * np.uint64(2654435761) + np.uint64(field * 40503 + 1)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(15)
    return (x * np.uint64(2246822519)) & np.uint64(0xFFFFFFFF)


def value_weight(tokens: np.ndarray, field: int) -> np.ndarray:
    """The hidden model's weight of each value: uniform in ±0.8 from a hash of the token."""
    mixed = scramble(tokens.astype(np.int64), field + 97).astype(np.float64)
    return (mixed / 2.0**32 - 0.5) * 1.6


def hex_tokens(tokens: np.ndarray, missing: np.ndarray) -> pa.Array:
    """32-bit words as 8 lower-case hex digits (Criteo's look), null where ``missing``."""
    shifts = np.arange(28, -1, -4, dtype=np.uint64)
    digits = HEX[((tokens[:, None] >> shifts) & np.uint64(0xF)).astype(np.intp)]
    values = pa.array(np.ascontiguousarray(digits).view("S8").ravel(), type=pa.binary(8), mask=missing)
    return values.cast(pa.string())


def make_chunk(rng: np.random.Generator, rows: int, exponent: float) -> pa.Table:
    logit = np.full(rows, -1.6)
    columns: dict[str, pa.Array] = {}
    counts = np.floor(rng.lognormal(1.0, 1.4, (rows, NUMERIC))).astype(np.int64)
    numeric_missing = rng.random((rows, NUMERIC)) < MISSING_RATE
    logit += 0.35 * (np.log1p(counts[:, 0]) - 1.2) - 0.25 * (np.log1p(counts[:, 4]) - 1.2)
    for j in range(NUMERIC):
        columns[f"I{j + 1}"] = pa.array(counts[:, j], mask=numeric_missing[:, j])
    for f, values in enumerate(cardinalities()):
        tokens = scramble(zipf_ranks(rng, rows, int(values), exponent), f)
        missing = rng.random(rows) < MISSING_RATE
        if f < SIGNAL_FIELDS:
            logit += np.where(missing, 0.0, value_weight(tokens, f))
        columns[f"C{f + 1}"] = hex_tokens(tokens, missing)
    labels = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    return pa.table({"label": pa.array(labels), **columns})


def generate(rows: int, out: Path, seed: int, exponent: float, chunk: int) -> dict:
    """Write ``rows`` rows to ``out`` (gzip when it ends in .gz), ``chunk`` rows at a time."""
    rng = np.random.default_rng([seed, 1_000_000_007])
    began, written, positives = time.perf_counter(), 0, 0
    sink = pa.CompressedOutputStream(str(out), "gzip") if out.suffix == ".gz" else pa.OSFile(str(out), "wb")
    with sink, pacsv.CSVWriter(sink, make_chunk(rng, 1, exponent).schema,
                               write_options=pacsv.WriteOptions(quoting_style="none")) as writer:
        while written < rows:
            table = make_chunk(rng, min(chunk, rows - written), exponent)
            writer.write_table(table)
            written += table.num_rows
            positives += int(np.asarray(table["label"]).sum())
    return {"rows": rows, "bytes": out.stat().st_size, "seconds": round(time.perf_counter() - began, 1),
            "click_rate": round(positives / rows, 4), "seed": seed, "zipf": exponent,
            "cardinalities": cardinalities().tolist()}


def process_rss_mb(root: int) -> dict[int, float]:
    """Resident set (MB) of ``root`` and each of its descendants, by pid."""
    found, stack = {}, [root]
    while stack:
        pid = stack.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    found[pid] = int(line.split()[1]) / 1024
            for task in Path(f"/proc/{pid}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def touched_rows_per_batch(train: Path, batch_size: int, hash_buckets: int, sample_rows: int = 65_536) -> float:
    """Distinct (field, value-or-bucket) pairs in a batch of the file's first rows: the embedding rows one
    step's sparse gradient carries (values of fields narrower than ``hash_buckets`` keep their own row)."""
    types = {f"C{f + 1}": pa.string() for f in range(CATEGORICAL)}
    reader = pacsv.open_csv(train, convert_options=pacsv.ConvertOptions(column_types=types))
    chunks, rows = [], 0
    for chunk in reader:  # only the first rows: the file may be larger than memory
        chunks.append(chunk)
        rows += chunk.num_rows
        if rows >= sample_rows:
            break
    table = pa.Table.from_batches(chunks).slice(0, sample_rows)
    batches = max(1, table.num_rows // batch_size)
    total = 0
    for b in range(batches):
        part = table.slice(b * batch_size, batch_size)
        total += sum(len(part[f"C{f + 1}"].unique()) for f in range(CATEGORICAL))
        total += NUMERIC  # numeric fields: one row each (their field vectors)
    return total / batches


def train(args: argparse.Namespace) -> dict:
    out_dir = Path(args.model_out)
    command = [sys.executable, "-m", "deepfm", "train", "--config", str(HERE / "stream_big.toml"),
               "--train", str(args.train), "--valid", str(args.valid), "--stream", "--hash-buckets",
               str(args.hash_buckets), "--out", str(out_dir), "--overwrite", "--json", "--quiet"]
    if args.precision:
        command += ["--precision", args.precision]
    if args.nproc > 1:
        command += ["--nproc", str(args.nproc), "--threads", str(args.threads or 1)]
    elif args.threads:
        command += ["--threads", str(args.threads)]
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peaks: dict[int, float] = {}
    samples: list[dict[int, float]] = []
    while process.poll() is None:
        current = process_rss_mb(process.pid)
        samples.append(current)
        for pid, rss in current.items():
            peaks[pid] = max(peaks.get(pid, 0.0), rss)
        time.sleep(1.0)
    stdout = process.communicate()[0]
    if process.returncode != 0:
        raise SystemExit(f"deepfm train exited {process.returncode}")
    summary = json.loads(stdout.strip().splitlines()[-1])
    workers = [pid for pid in peaks if pid != process.pid] if args.nproc > 1 else [process.pid]
    config = (HERE / "stream_big.toml").read_text()
    batch_size = int(next(line.split("=")[1] for line in config.splitlines() if line.startswith("batch_size")))
    return {
        "command": " ".join(command), "nproc": args.nproc, "precision": args.precision, "threads": args.threads, "hash_buckets": args.hash_buckets,
        "wall_seconds": round(time.perf_counter() - began, 1), "deepfm": summary,
        "peak_rss_mb_per_process": sorted(round(peaks[pid], 1) for pid in workers),
        "launcher_peak_rss_mb": round(peaks.get(process.pid, 0.0), 1) if args.nproc > 1 else None,
        "batch_size": batch_size,
        "touched_rows_per_batch": round(touched_rows_per_batch(Path(args.train), batch_size, args.hash_buckets), 1),
        "dense_parameters": dense_parameters(out_dir),
        "table_rows": table_rows(out_dir),
        "embed_dim": embed_dim(out_dir),
    }


TABLES = ("embedding.weight", "linear.weights.weight")  # the fused tables: latent factors, first-order weights


def dense_parameters(model_dir: Path) -> int:
    """Parameters outside the embedding tables (the MLP and biases): the dense all-reduce's size."""
    return sum(n for name, n in _sizes(model_dir).items() if not name.endswith(TABLES))


def table_rows(model_dir: Path) -> int:
    return int(_shapes(model_dir)["embedding.weight"][0])


def _shapes(model_dir: Path) -> dict[str, list[int]]:
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as weights:
        return {k: list(weights.get_slice(k).get_shape()) for k in weights.keys()}


def _sizes(model_dir: Path) -> dict[str, int]:
    return {k: int(math.prod(shape)) for k, shape in _shapes(model_dir).items()}


def embed_dim(model_dir: Path) -> int:
    return int(json.loads((model_dir / "config.json").read_text())["run"]["model"]["embed_dim"])


def project(result: dict, rows: float, gbits: list[float], workers_counts: list[int],
            rate: float | None = None) -> list[dict]:
    """Wall time for ``rows`` training rows (one epoch) on W workers, each a process training at the
    measured rate of one process here (a machine with more cores runs several: W = machines × workers
    per machine).

    Per step every worker trains its B rows (``batch_size``; the global batch is B × W) in B / r
    seconds (r: the measured samples/s of one process), then averages gradients: a ring all-reduce
    of the dense parameters (each worker sends and receives 2 (W−1)/W × 4 P bytes) and an all-gather
    of the touched embedding rows (each worker receives the (W−1) other workers' U rows × (4 (k + 1)
    + 16) bytes: k factors and a first-order weight in fp32, and an 8-byte row id per table).
    Communication is not overlapped with compute, every worker's link runs at the stated rate, and
    the input is read at least as fast as it is trained.
    """
    rate = rate or result["deepfm"]["train_samples_per_s"] / result["nproc"]
    per_rank_batch = result["batch_size"]
    dense_bytes = 4 * result["dense_parameters"]
    row_bytes = 4 * (result["embed_dim"] + 1) + 16
    touched = result["touched_rows_per_batch"]
    table = []
    for gbit in gbits:
        bandwidth = gbit * 1e9 / 8
        for workers in workers_counts:
            compute = per_rank_batch / rate
            comm = (2 * (workers - 1) / workers * dense_bytes + (workers - 1) * touched * row_bytes) / bandwidth
            step = compute + comm
            samples_per_s = workers * per_rank_batch / step
            table.append({"workers": workers, "gbit_per_s": gbit, "rate_per_worker": round(rate), "step_ms": round(step * 1e3, 2),
                          "comm_share": round(comm / step, 3), "samples_per_s": round(samples_per_s),
                          "hours_for_rows": round(rows / samples_per_s / 3600, 2)})
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--rows", type=int, required=True)
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--zipf", type=float, default=1.1, help="the Zipf exponent of every categorical field")
    g.add_argument("--chunk", type=int, default=100_000)
    t = sub.add_parser("train")
    t.add_argument("--train", type=Path, required=True)
    t.add_argument("--valid", type=Path, required=True)
    t.add_argument("--nproc", type=int, default=1)
    t.add_argument("--threads", type=int, help="threads per process (default: deepfm's)")
    t.add_argument("--hash-buckets", type=int, default=1_000_000)
    t.add_argument("--precision", choices=["fp32", "bf16"],
                   help="default: stream_big.toml's bf16, which is several times slower than fp32 on a CPU without "
                        "AVX512-BF16")
    t.add_argument("--model-out", default="/tmp/scale-sim-model")
    t.add_argument("--out", type=Path, required=True, help="write the measurements here (JSON)")
    p = sub.add_parser("project")
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--rows", type=float, default=4e9)
    p.add_argument("--gbit", type=float, nargs="+", default=[10.0, 100.0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128])
    p.add_argument("--rate", type=float, help="samples/s of one worker (default: the measured one)")
    p.add_argument("--name", default="projection", help="the key to store the table under")
    args = parser.parse_args()
    if args.command == "generate":
        print(json.dumps(generate(args.rows, args.out, args.seed, args.zipf, args.chunk)))
    elif args.command == "train":
        result = train(args)
        args.out.write_text(json.dumps(result, indent=1))
        print(json.dumps(result))
    else:
        result = json.loads(args.result.read_text())
        result[args.name] = {"rows": args.rows, "model": " ".join(project.__doc__.split("\n\n")[1].split()),
                             "table": project(result, args.rows, args.gbit, args.workers, args.rate)}
        args.result.write_text(json.dumps(result, indent=1))
        for row in result[args.name]["table"]:
            print(row)


if __name__ == "__main__":
    main()
