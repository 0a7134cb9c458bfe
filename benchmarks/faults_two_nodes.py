"""A killed worker on one of two "machines": two torchrun agents on this host, one rank each, joined
by a c10d rendezvous on localhost (as ``--nnodes 2`` on two hosts would be), ``--max-restarts 1``.

    python benchmarks/faults_two_nodes.py DIR [--out results.json]

Once rank 0 has written a mid-epoch checkpoint, the worker of the second agent is killed with
SIGKILL. Only that agent counts a restart (torchrun counts per machine); the run must still resume
on both, finish, and end with the model of an uninterrupted run on the same two agents. Too slow
for the unit tests (two runs of two agents); ``tests/test_faults.py`` checks one agent with 2 ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_faults import _checkpoint_step, _rank_pid  # noqa: E402  (the test's helpers: /proc, state.json)

from deepfm.artifact import load_model_dir  # noqa: E402
from deepfm.data.synthetic import SyntheticSpec, make_ctr_table  # noqa: E402

FLAGS = ["--mlp", "16,16", "--embed-dim", "4", "--patience", "0", "--lr", "0.01", "--batch-size", "16", "--epochs", "2",
         "--checkpoint-every", "20", "--device", "cpu"]


def agents(root: Path, out: str, port: int, restarts: int) -> list[subprocess.Popen]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    return [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
                              "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port}",
                              "--rdzv-id", f"faults-{port}", "--max-restarts", str(restarts), "-m", "deepfm", "train",
                              "--train", str(root / "train.csv"), "--valid", str(root / "valid.csv"),
                              "--out", str(root / out), *FLAGS],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for node in range(2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    root = args.dir
    root.mkdir(parents=True, exist_ok=True)
    spec = SyntheticSpec(categorical=4, numeric=2, vocabulary=200, seed=4)
    for part, name, rows in ((0, "train", 4000), (1, "valid", 1000)):
        pacsv.write_csv(make_ctr_table(spec, rows, part)[0], root / f"{name}.csv")

    killed = agents(root, "killed", 29811, restarts=1)
    position, deadline = None, time.monotonic() + 300
    while position is None or position[1] == 0:
        if time.monotonic() > deadline or any(p.poll() is not None for p in killed):
            raise SystemExit("no mid-epoch checkpoint before the run ended")
        position = _checkpoint_step(root / "killed")
        time.sleep(0.02)
    victim = _rank_pid(killed[1].pid, rank=1) or _rank_pid(killed[1].pid, rank=0)
    os.kill(victim, signal.SIGKILL)
    logs = [p.communicate(timeout=600)[1] for p in killed]
    straight = agents(root, "straight", 29812, restarts=0)
    for p in straight:
        p.communicate(timeout=600)
    weights = [load_model_dir(root / run).model.state_dict() for run in ("killed", "straight")]
    result = {
        "killed_at_checkpoint": {"epoch": position[0], "step": position[1]},
        "exit_codes": [p.returncode for p in killed], "uninterrupted_exit_codes": [p.returncode for p in straight],
        "log_lines": [line for log in logs for line in log.splitlines() if line.startswith(("restart", "resumed"))],
        "max_weight_difference": max(float((weights[0][k] - weights[1][k]).abs().max()) for k in weights[0]),
        "valid_auc": [json.loads((root / run / "metrics.json").read_text())["best_valid"]["auc"]
                      for run in ("killed", "straight")],
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
