"""The floor under a training process's peak RSS: what the imports alone hold, before any data.

    .venv/bin/python benchmarks/footprint.py [--peer-mb 582] [--repeat 3] [--widths 390 640]
        [--floor 640-200-200 390-400-400-400]

The first lines are fresh processes, each one stage further than the line before: the interpreter;
``import torch``; + NumPy and PyArrow, which deepfm reads files with; + numba, with one function made
by deepfm's ``compiled`` and called (compiled afresh: code run with ``-c`` has no on-disk cache, so
this counts LLVM's compile where deepfm's first step usually loads cached code: 364 against 359 MB
when measured once each way, 2026-12-03). Their peak is VmHWM
from ``/proc/self/status`` (Linux), which counts the process alone. The last lines, one per width,
run ``tasks.py mlp``, run.py's bare-MLP ceiling (torch and NumPy; no numba, no data, no embeddings),
whose peak is ``ru_maxrss`` as run.py's rows report it. Its ``torch.optim.Adam`` imports ``torch._dynamo`` (and
SymPy) on its first call, which deepfm's optimisers do not (``deepfm.training.eager``): the ``--floor`` lines train
an MLP of the given sizes with that eager Adam instead, and nothing else: torch's own floor for training it, which
no torch trainer of that MLP goes under (it still has to read a file and hold its tables). Prints each median over ``--repeat``
processes and, with ``--peer-mb``, its share of a peer's peak (e.g. DeepCTR-Torch's in run.py's log):
issue 13's "peak RSS ≤ 0.5×" cannot be met by a process that holds more than that before it reads a row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# VmHWM: the peak RSS of the process since its exec (``ru_maxrss`` would keep the parent's at the fork, a floor of
# the caller's size); Linux reports kB
REPORT = ("import re; print(int(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read()).group(1)) / 1024)")
NUMBA_CALL = ("import numpy as np; from deepfm.compiled import compiled\n"
              "def total(x):\n    s = 0.0\n    for v in x:\n        s += v\n    return s\n"
              "compiled(total)(np.ones(3))")
STAGES = {
    "Python interpreter": "",
    "import torch": "import torch",
    "+ numpy, pyarrow": "import torch, numpy, pyarrow",
    "+ numba, one compiled call (deepfm.compiled)": f"import torch, numpy, pyarrow\n{NUMBA_CALL}",
}
# an MLP of the sizes WIDTH-HIDDEN (e.g. 640-200-200) trained 30 steps at batch 4096 on random rows: BCE, deepfm's
# eager Adam (torch.optim.Adam's update without the wrappers that import torch._dynamo), the environment and threads
# of run.py's processes
EAGER_MLP = """from deepfm.runtime import set_process_environment
set_process_environment()  # as run.py's processes (tasks.py) and the deepfm command
import torch
from deepfm.training.eager import Adam
torch.set_num_threads(len(__import__('os').sched_getaffinity(0)))
sizes = [int(n) for n in '{sizes}'.split('-')]
layers = []
for inputs, units in zip(sizes, sizes[1:]):
    layers += [torch.nn.Linear(inputs, units), torch.nn.ReLU()]
model = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], 1))
optimizer = Adam(model.parameters(), lr=1e-3)
x, y = torch.randn(4096, sizes[0]), (torch.rand(4096) < 0.3).float()
for _ in range(30):
    optimizer.zero_grad()
    torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(-1), y).backward()
    optimizer.step()
assert 'torch._dynamo' not in __import__('sys').modules"""


def _run(command: list[str]) -> str:
    """``command``'s standard output; its standard error in the exception where it fails."""
    try:
        return subprocess.run(command, check=True, capture_output=True, text=True, cwd=HERE).stdout
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"{' '.join(command[:3])} failed:\n{error.stderr}") from None


def peak_mb(code: str) -> float:
    """Peak RSS in MB of a fresh process that runs ``code``."""
    return float(_run([sys.executable, "-c", f"{code}\n{REPORT}"]).strip().splitlines()[-1])


def bare_mlp_mb(width: int) -> float:
    """Peak RSS of run.py's bare-MLP ceiling at ``width`` (``tasks.py mlp``, as run.py's rows run it)."""
    out = _run([sys.executable, str(HERE / "tasks.py"), "mlp", "fp32", "no", str(width)])
    return float(json.loads(out.strip().splitlines()[-1])["peak_rss_mb"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-mb", type=float, default=None, help="a peer's peak RSS (MB) to divide by")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--widths", type=int, nargs="*", default=[390, 640], help="bare-MLP input widths")
    parser.add_argument("--floor", nargs="*", default=["640-200-200", "390-400-400-400"], metavar="SIZES",
                        help="MLPs (input-hidden...) whose training alone, with deepfm's eager Adam, sets torch's floor")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    measured = {name: [peak_mb(code) for _ in range(args.repeat)] for name, code in STAGES.items()}
    for width in args.widths:
        measured[f"bare MLP {width}→400³→1 + Adam, batch 4096 (run.py's ceiling)"] = [
            bare_mlp_mb(width) for _ in range(args.repeat)]
    for sizes in args.floor:
        measured[f"torch's floor: MLP {sizes}→1 + eager Adam, batch 4096 (no torch._dynamo, no data)"] = [
            peak_mb(EAGER_MLP.format(sizes=sizes)) for _ in range(args.repeat)]
    print(f"| process | peak RSS (MB), median of {args.repeat} |" + (" ÷ peer |" if args.peer_mb else ""))
    print("| --- | ---: |" + (" ---: |" if args.peer_mb else ""))
    for name, values in measured.items():
        mb = statistics.median(values)
        print(f"| {name} | {mb:,.0f} |" + (f" {mb / args.peer_mb:.2f}× |" if args.peer_mb else ""))


if __name__ == "__main__":
    main()
