"""Streaming on 1 process × 2 threads against 2 processes × 1 thread, each under a memory budget.

    python benchmarks/stream_ranks.py --train benchmarks/.data/big-9400000.csv --test benchmarks/.data/test.csv \\
        [--config benchmarks/stream_ranks.toml] [--limit-mb-per-process 1024] [--extra-seeds 7] [--page-cache warm]
        [--gloo-exchange-too] [--out benchmarks/results/stream_ranks.json]

Both runs train ``--config`` (one streamed epoch) with the same global batch (the config's batch
size in one process, half of it on each of 2 ranks), under ``budget.py``: the one process gets
``--limit-mb-per-process``, and so does each of the two ranks, in a cgroup of its own (the launcher
and both ranks together get three times that). Then each model is evaluated on ``--test``.
``--extra-seeds`` trains the single process again with other seeds: the spread of their test AUC
is the noise the 2-process difference is read against. ``--gloo-exchange-too`` runs the 2 processes
again with ``DEEPFM_SHARED_TABLES=0`` (private tables, the rows exchanged through gloo, as on several
machines), right after the first pair. Prints and writes one JSON summary: exit
codes, each process's peak against its limit, samples/s (and their ratio), test AUC (and the
difference); the resident set every second; the CPU time of each run and of everything else on the
machine meanwhile (``budget.py``'s ``cpu``: a run that shared the cores is slower by more than its share),
and the machine's CPU seconds by state (``machine_cpu_s``; ``steal_s`` in the summary: time the
hypervisor gave these vCPUs to other machines, which no process here shows).

``--page-cache`` puts the training file in the same state before every run: ``warm`` (the default)
reads it through first, so that no run reads it from disk; ``cold`` drops its pages
(``posix_fadvise(DONTNEED)``, this file only); ``as-is`` leaves it. Each run records how much of the
file was in the page cache when it started.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent


def resident_mb(path: str) -> float | None:
    """MB of ``path`` in the page cache (util-linux ``fincore``), or None without it."""
    try:
        done = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES", path],
                              capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return round(int(done.stdout.split()[0]) / 2**20, 1)


def set_page_cache(path: str, state: str) -> dict:
    """Read ``path`` through (``warm``) or drop its cached pages (``cold``), or leave it (``as-is``);
    what of it was cached before and after."""
    before = resident_mb(path)
    if state == "warm":
        with open(path, "rb") as handle:
            while handle.read(8 << 20):
                pass
    elif state == "cold":
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)
    return {"state": state, "resident_mb_before": before, "resident_mb_at_start": resident_mb(path),
            "file_mb": round(os.path.getsize(path) / 2**20, 1)}


def machine_cpu_s() -> dict[str, float]:
    """The machine's CPU seconds since boot by state (``/proc/stat``), of which ``steal`` is the time
    the hypervisor gave this machine's vCPUs to others: a slowdown no process here shows."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    ticks = os.sysconf("SC_CLK_TCK")
    return {name: int(value) / ticks for name, value in
            zip(("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"), fields)}


def run(label: str, limits: list[str], train_args: list[str], scratch: Path, test: str, page_cache: str = "as-is",
        env: dict[str, str] | None = None) -> dict:
    out, record = scratch / label, scratch / f"{label}-budget.json"
    cache = set_page_cache(train_args[train_args.index("--train") + 1], page_cache)
    command = [sys.executable, str(HERE / "budget.py"), *limits, "--out", str(record), "--",
               sys.executable, "-m", "deepfm", "train", *train_args, "--out", str(out), "--overwrite", "--json", "--quiet"]
    print("$ " + " ".join(command), file=sys.stderr, flush=True)
    before = machine_cpu_s()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    machine = {state: round(seconds - before[state], 1) for state, seconds in machine_cpu_s().items()}
    sys.stderr.write(done.stderr[-2000:])
    budget = json.loads(record.read_text())
    samples = budget.pop("samples")  # (seconds, MB of the process tree), one a second
    result = {"command": command, "page_cache": cache, "budget": budget, "exit_code": done.returncode,
              "machine_cpu_s": machine,  # every process's, by state; "steal": taken by the hypervisor
              "rss_samples": samples}
    if done.returncode == 0:
        result["train"] = json.loads(done.stdout.strip().splitlines()[-1])
        evaluated = subprocess.run([sys.executable, "-m", "deepfm", "evaluate", str(out), test, "--json"],
                                   capture_output=True, text=True, check=True)
        result["test"] = json.loads(evaluated.stdout.strip().splitlines()[-1])
    return result


def per_process(one: dict, two: dict, limit_mb: int) -> dict:
    """Each process under test against its own limit: the anonymous peak (what it held), the cgroup
    peak (page cache of the file included, reclaimed under the limit), OOM kills."""
    def of(record: dict) -> dict:
        return {"limit_mb": limit_mb, **{k: record.get(k) for k in ("anon_peak_mb", "cgroup_peak_mb_incl_page_cache")},
                "oom_killed": bool(record.get("oom_killed") or record.get("oom_kills"))}
    return {"1 process": of(one["budget"]), **{f"rank {rank}": of(worker)
                                                for rank, worker in two["budget"].get("workers", {}).items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--config", default=str(HERE / "stream_ranks.toml"))
    parser.add_argument("--limit-mb-per-process", type=int, default=1024)
    parser.add_argument("--extra-seeds", type=int, nargs="*", default=[],
                        help="also run the single process with these seeds: the spread of their test AUC is "
                             "the noise the 2-process difference is measured against")
    parser.add_argument("--page-cache", choices=["warm", "cold", "as-is"], default="warm",
                        help="the training file's state before every run: read through, dropped or left")
    parser.add_argument("--gloo-exchange-too", action="store_true",
                        help="also run the 2 processes with private tables and the rows sent through gloo")
    parser.add_argument("--out", help="write the summary here (JSON)")
    args = parser.parse_args()
    batch = tomllib.loads(Path(args.config).read_text())["training"]["batch_size"]
    common = ["--config", args.config, "--train", args.train, "--valid-fraction", "0"]
    limit = args.limit_mb_per_process
    with tempfile.TemporaryDirectory(prefix="stream-ranks-") as scratch:
        runs = {
            "1 process x 2 threads": run("one", ["--limit-mb", str(limit)], [*common, "--threads", "2"], Path(scratch),
                                         args.test, args.page_cache),
            "2 processes x 1 thread": run("two", ["--limit-mb", str(3 * limit), "--worker-limit-mb", str(limit)],
                                          [*common, "--nproc", "2", "--threads", "1", "--batch-size", str(batch // 2)],
                                          Path(scratch), args.test, args.page_cache),
        }
        if args.gloo_exchange_too:
            runs["2 processes x 1 thread, gloo exchange"] = run(
                "two-gloo", ["--limit-mb", str(3 * limit), "--worker-limit-mb", str(limit)],
                [*common, "--nproc", "2", "--threads", "1", "--batch-size", str(batch // 2)], Path(scratch), args.test,
                args.page_cache, env={"DEEPFM_SHARED_TABLES": "0"})
        for seed in args.extra_seeds:
            runs[f"1 process x 2 threads, seed {seed}"] = run(f"one-seed{seed}", ["--limit-mb", str(limit)], [
                *common, "--threads", "2", "--seed", str(seed)], Path(scratch), args.test, args.page_cache)
    one, two = list(runs.values())[:2]
    summary = {"train": args.train, "bytes": os.path.getsize(args.train), "runs": runs,
               "per_process_mb": per_process(one, two, limit)}
    if one.get("test") and two.get("test"):
        summary["samples_per_s_ratio_2proc_over_1proc"] = round(
            two["train"]["train_samples_per_s"] / one["train"]["train_samples_per_s"], 3)
        summary["test_auc_2proc_minus_1proc"] = round(two["test"]["auc"] - one["test"]["auc"], 5)
    gloo = runs.get("2 processes x 1 thread, gloo exchange", {})
    if one.get("test") and gloo.get("test"):
        summary["samples_per_s_ratio_2proc_gloo_exchange_over_1proc"] = round(
            gloo["train"]["train_samples_per_s"] / one["train"]["train_samples_per_s"], 3)
        summary["test_auc_2proc_gloo_exchange_minus_1proc"] = round(gloo["test"]["auc"] - one["test"]["auc"], 5)
    summary["others_share_of_cores"] = {label: r["budget"].get("cpu", {}).get("others_share_of_cores")
                                        for label, r in runs.items()}  # near 0: a quiet run
    summary["steal_s"] = {label: r["machine_cpu_s"]["steal"] for label, r in runs.items()}  # near 0: a quiet host
    single = [r["test"]["auc"] for label, r in runs.items() if label.startswith("1 process") and r.get("test")]
    if len(single) > 1:
        summary["test_auc_spread_1proc_seeds"] = round(max(single) - min(single), 5)
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
