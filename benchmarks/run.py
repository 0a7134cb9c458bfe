"""One command for every figure: deepfm against the bare-MLP ceiling and its peers, same data, same run.

    .venv/bin/python benchmarks/run.py [--repeat 3] [--datasets /path/to/datasets] [--setup-peers]
                                       [--stream] [--stream-rows 10000000] [--write-readme]

Generates the data of each shape (benchmarks/make_data.py: Criteo-like, long tail, one-hot; ``--shapes``),
measures deepfm at its defaults (read from its config: whatever they are) and stripped (no
dropout, no batch norm, embedding L2 1e-6), each peer at its defaults and matched to deepfm's
model on the shape (DeepCTR-Torch: its embedding width, dropout and batch norm), and the bare-MLP ceilings of each shape; runs each measurement in its
own process, one after another, with OMP_WAIT_POLICY=PASSIVE, and reports medians over
``--repeat`` rounds. "deepfm DeepFM defaults, step × bare MLP interleaved" (``profile_step.py --ceiling``) times the
defaults' training step and the bare MLP's alternately in one process: the × ceiling of one process, which the swings
of the host's speed between separate processes leave alone. "Beside training" is file → model less the training loop's own time (reading, encoding,
set-up; DeepCTR-Torch: all but ``fit``): it leaves out the training loop, the part whose speed swings most. Not quite
like for like: deepfm's loop loads numba at its first step, DeepCTR-Torch's example encodes the test file with the
training file (beside ``fit``), and its ``fit`` turns the frame into one tensor first.
Peers run from benchmarks/.peers-venv (``--setup-peers`` creates it:
torch 2.13.0, deepctr-torch, torchfm, xlearn). FM on Frappe needs the datasets folder
(``--datasets`` or $DEEPFM_DATASETS). ``--stream`` adds the 1M rows trained streamed and in
memory (same accuracy?); ``--stream-rows`` also a larger file streamed (for a hard memory limit,
run ``benchmarks/budget.py`` around ``deepfm train``, as benchmarks/README.md shows).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = HERE / ".peers-venv"
# Interpreters: deepfm's venv and the peers' venv, unless DEEPFM_PYTHON / PEERS_PYTHON name others.
DEEPFM_PY = Path(shutil.which(os.environ.get("DEEPFM_PYTHON", str(ROOT / ".venv" / "bin" / "python"))) or "missing")
PEERS_PY = Path(shutil.which(os.environ.get("PEERS_PYTHON", str(PEERS / "bin" / "python"))) or "missing")
README = HERE / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def setup_peers() -> None:
    """A separate venv with the same torch, so peers never touch deepfm's environment."""
    python = PEERS / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["torch==2.13.0"], check=True)
    subprocess.run(pip + ["--no-deps", "deepctr-torch", "torchfm"], check=True)
    subprocess.run(pip + ["pandas", "scikit-learn", "tqdm", "requests"], check=True)
    if subprocess.run(pip + ["xlearn"]).returncode != 0:
        print("xlearn did not install; its row will say so", file=sys.stderr)


def run_process(python: Path, script: str, *args: str, timeout: float = 3600) -> dict:
    """Run one task in a fresh process; its JSON line, plus the RSS it was seen to hold over time."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([str(python), str(HERE / script), *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    samples: list[float] = []

    def watch() -> None:
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        samples.append(int(line.split()[1]) / 1024)
            except OSError:
                return
            time.sleep(1.0)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = process.communicate(timeout=timeout)
    watcher.join()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        return {"error": (err.strip().splitlines() or ["no output"])[-1][:200]}
    result = json.loads(lines[-1])
    result["rss_samples_mb"] = samples
    return result


def run_logged(title: str, python: Path, script: str, *args: str) -> dict:
    """``run_process``, saying on stderr what runs and what it gave."""
    print(f"{title} ...", file=sys.stderr, flush=True)
    result = run_process(python, script, *args)
    print(f"    {json.dumps({k: v for k, v in result.items() if k != 'rss_samples_mb'})}", file=sys.stderr)
    return result


def median_of(results: list[dict]) -> dict:
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[0]
    merged = dict(ok[0])
    for key, value in ok[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            merged[key] = statistics.median(r[key] for r in ok)
    merged["runs"] = len(ok)
    return merged


PAPER_MLP = "400-400-400"  # the bare MLP's hidden widths (the issue's ceiling), as tasks.py and peers.py write them
# shape: (sub-folder of the data folder, I columns numeric?, MLP input width = fields × 10)
SHAPES = {"criteo": ("", "yes", 390), "longtail": ("longtail", "no", 390), "onehot": ("onehot", "no", 100)}


def shape_jobs(shape: str, data: Path) -> dict[str, tuple[Path, str, tuple[str, ...]]]:
    """deepfm at its defaults (the headline) and stripped, the bare-MLP ceilings and the peers, on one shape."""
    folder, numeric, width = SHAPES[shape]
    path, tag = str(data / folder), f" · {shape}"
    jobs = {
        f"bare MLP (ceiling){tag}": (DEEPFM_PY, "tasks.py", ("mlp", "fp32", "no", str(width))),
        f"bare MLP bf16 (ceiling){tag}": (DEEPFM_PY, "tasks.py", ("mlp", "bf16", "no", str(width))),
        f"deepfm DeepFM defaults{tag}": (DEEPFM_PY, "tasks.py", ("deepfm", path, "fp32", "defaults", numeric)),
        f"deepfm DeepFM defaults bf16{tag}": (DEEPFM_PY, "tasks.py", ("deepfm", path, "bf16", "defaults", numeric)),
        f"deepfm DeepFM defaults, step × bare MLP interleaved{tag}": (
            DEEPFM_PY, "profile_step.py", (path, *(["--categorical"] if numeric == "no" else []), "--setting", "defaults",
                                           "--ceiling", "--steps", "20", "--json")),
        f"deepfm DeepFM defaults, every id{tag}": (DEEPFM_PY, "tasks.py", ("deepfm", path, "fp32", "every-id", numeric)),
        f"deepfm DeepFM stripped{tag}": (DEEPFM_PY, "tasks.py", ("deepfm", path, "fp32", "stripped", numeric)),
        f"deepfm DeepFM stripped bf16{tag}": (DEEPFM_PY, "tasks.py", ("deepfm", path, "bf16", "stripped", numeric)),
    }
    if shape == "criteo":
        jobs[f"bare MLP + input gradient{tag}"] = (DEEPFM_PY, "tasks.py", ("mlp", "fp32", "yes", str(width)))
    if PEERS_PY.exists():
        jobs[f"DeepCTR-Torch DeepFM defaults{tag}"] = (PEERS_PY, "peers.py", ("deepctr", path, "defaults", numeric))
        jobs[f"DeepCTR-Torch DeepFM matched{tag}"] = (PEERS_PY, "peers.py", ("deepctr", path, "matched", numeric))
        jobs[f"pytorch-fm DeepFM{tag}"] = (PEERS_PY, "peers.py", ("torchfm", path, numeric))
    return jobs


def measure(rounds: int, data: Path, datasets: Path | None, stream_file: Path | None,
            only: list[str] | None = None, stream_compare: bool = False,
            shapes: tuple[str, ...] = tuple(SHAPES)) -> dict[str, dict]:
    jobs: dict[str, tuple[Path, str, tuple[str, ...]]] = {}
    for shape in shapes:
        jobs.update(shape_jobs(shape, data))
    if datasets is not None:
        frappe = datasets / "frappe"
        jobs["deepfm FM defaults, Frappe"] = (DEEPFM_PY, "tasks.py", ("fm_frappe", str(frappe)))
        jobs["deepfm FM k 10, Frappe"] = (DEEPFM_PY, "tasks.py", ("fm_frappe", str(frappe), "k10"))
        if PEERS_PY.exists():
            jobs["xLearn FM, Frappe"] = (PEERS_PY, "peers.py", ("xlearn", str(frappe)))
    if stream_compare:
        jobs["deepfm DeepFM, 1M in memory (50k-row chunks)"] = (DEEPFM_PY, "tasks.py", ("stream_compare", str(data), "off"))
        jobs["deepfm DeepFM, 1M streamed (50k-row chunks, window 4)"] = (DEEPFM_PY, "tasks.py", ("stream_compare", str(data), "on"))
    if stream_file is not None:
        jobs[f"deepfm DeepFM, {stream_file.name} streamed"] = (DEEPFM_PY, "tasks.py", ("stream_big", str(stream_file), str(data)))
    if only:
        jobs = selected(jobs, only)
    results: dict[str, list[dict]] = {name: [] for name in jobs}
    for round_ in range(rounds):
        for name, (python, script, args) in jobs.items():
            if round_ and "stream" in name:
                continue  # long, and about memory and accuracy: once is enough
            if "matched" in name:  # deepfm's model on this shape, as its defaults row of this round chose it
                args = matched_to(results[f"deepfm DeepFM defaults · {shape_of(name)}"][-1], args)
                if args is None:
                    results[name].append({"error": "deepfm's defaults row failed: no model to match"})
                    continue
            results[name].append(run_logged(f"[{round_ + 1}/{rounds}] {name}", python, script, *args))
            width, mlp = results[name][-1].get("mlp_input_width"), results[name][-1].get("mlp", PAPER_MLP)
            if (width and shape_of(name) in SHAPES and (width, mlp) != (SHAPES[shape_of(name)][2], PAPER_MLP)
                    and "step_vs_ceiling_wall" not in results[name][-1]):  # (an interleaved row times its own)
                precision = "bf16" if "bf16" in name else "fp32"  # k 64 or a 200-200 MLP: its own ceiling
                ceiling = own_ceiling(width, precision, shape_of(name), mlp)
                if len(results.setdefault(ceiling, [])) <= round_:
                    results[ceiling].append(run_logged(f"[{round_ + 1}/{rounds}] {ceiling}", DEEPFM_PY, "tasks.py",
                                                       "mlp", precision, "no", str(width), mlp))
    return {name: median_of(rs) for name, rs in results.items()}


def selected(jobs: dict[str, tuple], only: list[str]) -> dict[str, tuple]:
    """The jobs whose names contain a word of ``only``, in their order, and the deepfm defaults row of each
    shape whose matched DeepCTR-Torch row is among them (that row's model is what the peer is matched to)."""
    wanted = list(only) + [f"deepfm DeepFM defaults · {shape_of(name)}" for name in jobs
                           if "matched" in name and any(word in name for word in only)]
    return {name: job for name, job in jobs.items() if any(word in name for word in wanted)}


def matched_to(deepfm: dict, args: tuple[str, ...]) -> tuple[str, ...] | None:
    """A DeepCTR-Torch job's arguments with its setting ``matched:K:DROPOUT[:MLP]``: the embedding width, dropout
    and MLP (where not the paper's) of deepfm's defaults row (``deepfm``, its result) on the same data (batch norm: peers.py's matched model has it,
    as deepfm's defaults do); None where that row failed (nothing to match)."""
    if "embed_dim" not in deepfm:
        return None
    task, path, _, *rest = args
    mlp = f":{deepfm['mlp']}" if deepfm.get("mlp", PAPER_MLP) != PAPER_MLP else ""
    return (task, path, f"matched:{deepfm['embed_dim']}:{deepfm['dropout']}{mlp}", *rest)


def fmt(value, spec: str = ",.0f") -> str:
    return "—" if value is None else format(value, spec)


def own_ceiling(width: float | None, precision: str, shape: str, mlp: str = PAPER_MLP) -> str:
    """The row name of the bare MLP over a ``width``-wide input through ``mlp`` (a deepfm row whose k is not 10, or
    whose MLP is not the paper's); ``width`` may be a median of rounds (640.0)."""
    sizes = f", {mlp}" if mlp != PAPER_MLP else ""
    return f"bare MLP {int(width or 0)} wide{sizes}{' bf16' if precision == 'bf16' else ''} (ceiling) · {shape}"


def shape_of(name: str) -> str:
    return name.rpartition(" · ")[2] if " · " in name else ""


def table(results: dict[str, dict]) -> str:
    def ceiling(name: str) -> float | None:
        """The bare MLP over the row's own MLP input (fields × k), or over fields × 10."""
        bf16 = " bf16" if "bf16" in name else ""
        own = own_ceiling(results[name].get("mlp_input_width"), "bf16" if bf16 else "fp32", shape_of(name),
                          results[name].get("mlp", PAPER_MLP))
        if own in results and name != own:
            return results[own].get("train_samples_per_s")
        return results.get(f"bare MLP{bf16} (ceiling) · {shape_of(name)}", {}).get("train_samples_per_s")

    lines = ["| run | train samples/s | × ceiling | predict samples/s | file → model (s) | beside training (s) | "
             "peak RSS (MB) | test AUC |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | | | | |")
            continue
        speed, top = r.get("train_samples_per_s"), ceiling(name)
        ratio = fmt(speed / top, ".2f") if speed and top and "Frappe" not in name else "—"
        if "step_vs_ceiling_wall" in r:  # profile_step.py --ceiling: the two steps interleaved in one process
            ratio = f"{r['step_vs_ceiling_wall']:.2f} ({r['step_vs_ceiling_cpu']:.2f} CPU)"
            if "step_vs_own_ceiling_wall" in r:  # a model of other sizes than the paper's: against its own bare MLP too
                ratio += f"; its own sizes {r['step_vs_own_ceiling_wall']:.2f} ({r['step_vs_own_ceiling_cpu']:.2f} CPU)"
        lines.append(f"| {name} | {fmt(speed)} | {ratio} | {fmt(r.get('predict_samples_per_s'))} | "
                     f"{fmt(r.get('file_to_model_s'), '.1f')} | {fmt(r.get('beside_training_s'), '.2f')} | "
                     f"{fmt(r.get('peak_rss_mb'))} | {fmt(r.get('test_auc'), '.4f')} |")
    lines.append("")
    ok = {n: r for n, r in results.items() if "error" not in r}
    ours = {n: r for n, r in ok.items() if n.startswith("deepfm DeepFM") and "predict_samples_per_s" in r}
    peers = {n: r for n, r in ok.items() if n.startswith(("DeepCTR", "pytorch-fm"))}
    for mine, our in ours.items():
        if our.get("setting"):
            lines.append(f"- {mine}: {our['setting']}")
    for mine, our in ours.items():
        for name, peer in peers.items():
            if shape_of(name) != shape_of(mine) or ("defaults" in mine) != ("stripped" not in mine and "defaults" in name
                                                                              or "matched" in name or "pytorch" in name):
                continue
            lines.append(
                f"- {mine} vs {name}: training {our['train_samples_per_s'] / peer['train_samples_per_s']:.2f}×, "
                f"prediction {our['predict_samples_per_s'] / peer['predict_samples_per_s']:.2f}×, "
                f"file → model {peer['file_to_model_s'] / our['file_to_model_s']:.2f}× faster, "
                f"peak RSS {our['peak_rss_mb'] / peer['peak_rss_mb']:.2f}× theirs")
    floor = ok.get("bare MLP + input gradient · criteo", {}).get("train_samples_per_s")
    fp32 = ours.get("deepfm DeepFM stripped · criteo")
    if floor and fp32:
        lines.append(f"- deepfm DeepFM stripped (fp32) reaches {fp32['train_samples_per_s'] / floor:.2f} of the bare MLP that "
                     "also computes its input gradient (which DeepFM needs for the embeddings and the bare ceiling skips)")
    xl = results.get("xLearn FM, Frappe")
    for row in ("deepfm FM defaults, Frappe", "deepfm FM k 10, Frappe"):
        fm = results.get(row)
        if fm and xl and "error" not in fm and "error" not in xl:
            lines.append(f"- {row} vs xLearn FM (k 10): training {fm['train_samples_per_s'] / xl['train_samples_per_s']:.2f}×, "
                         f"file → model {xl['file_to_model_s'] / fm['file_to_model_s']:.2f}× faster, test AUC "
                         f"{fm['test_auc']:.4f} against {xl['test_auc']:.4f}")
    if xl and "error" in xl:
        lines.append(f"- xLearn: {xl['error']}")
    for name, r in results.items():
        if "streamed" in name and "error" not in r and r.get("rss_samples_mb"):
            s = r["rss_samples_mb"]
            tail = s[len(s) // 5:] or s
            size = f", file {r['file_mb']:,.0f} MB" if r.get("file_mb") else ""
            lines.append(f"- {name}: {r.get('rows', 0):,} rows{size}; RSS over the run "
                         f"(sampled each second after the first fifth) min {min(tail):,.0f} / median "
                         f"{statistics.median(tail):,.0f} / max {max(tail):,.0f} MB")
    return "\n".join(lines)


def write_readme(text: str, command: str) -> None:
    readme = README.read_text() if README.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    block = (f"{BEGIN}\nMeasured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
             f"{len(os.sched_getaffinity(0))} CPU cores with\n\n    {command}\n\n{text}\n{END}")
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    README.write_text(head + block + tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--data", default=str(HERE / ".data"))
    parser.add_argument("--datasets", default=os.environ.get("DEEPFM_DATASETS"))
    parser.add_argument("--setup-peers", action="store_true")
    parser.add_argument("--stream", action="store_true", help="also train the 1M rows streamed and in memory (accuracy check)")
    parser.add_argument("--stream-rows", type=int, default=0, help="also stream a file of this many rows (0: skip)")
    parser.add_argument("--only", nargs="*", help="run only the rows whose names contain one of these words")
    parser.add_argument("--shapes", nargs="*", choices=sorted(SHAPES), default=list(SHAPES),
                        help="data shapes (make_data.py --shape): Criteo-like, long tail, one-hot")
    parser.add_argument("--write-readme", action="store_true", help="put the table into benchmarks/README.md")
    args = parser.parse_args()
    if args.setup_peers:
        setup_peers()
    data = Path(args.data)
    frappe_only = bool(args.only) and all("Frappe" in word or word in ("deepfm FM", "xLearn") for word in args.only)
    if not frappe_only:  # the generated files (Frappe rows read the shared data)
        for shape in args.shapes:
            subprocess.run([str(DEEPFM_PY), str(HERE / "make_data.py"), str(data), "--shape", shape], check=True)
    stream_file = None
    if args.stream_rows:
        subprocess.run([str(DEEPFM_PY), str(HERE / "make_data.py"), str(data), "--big", str(args.stream_rows)], check=True)
        stream_file = data / f"big-{args.stream_rows}.csv"
    results = measure(args.repeat, data, Path(args.datasets) if args.datasets else None, stream_file, args.only,
                      stream_compare=args.stream or bool(args.stream_rows), shapes=tuple(args.shapes))
    (HERE / ".results").mkdir(exist_ok=True)
    (HERE / ".results" / "latest.json").write_text(json.dumps(results, indent=1))
    text = table(results)
    print(text)
    if args.write_readme:
        write_readme(text, "OMP_WAIT_POLICY=PASSIVE .venv/bin/python " + " ".join(["benchmarks/run.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
