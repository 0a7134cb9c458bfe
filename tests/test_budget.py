"""benchmarks/budget.py: a command under a memory cgroup, each torchrun worker under a limit of its own.

Needs permission to create memory cgroups (root in a container with a writable cgroupfs); elsewhere
these tests are skipped, and say why.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BUDGET = Path(__file__).resolve().parents[1] / "benchmarks" / "budget.py"


def _load_budget():
    spec = importlib.util.spec_from_file_location("budget", BUDGET)
    module = importlib.util.module_from_spec(spec)
    sys.modules["budget"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _cgroups_writable() -> bool:
    try:
        group = _load_budget().Cgroup.create(f"deepfm-budget-probe-{os.getpid()}", 64 << 20)
    except OSError:
        return False
    group.remove()
    return True


pytestmark = pytest.mark.skipif(not _cgroups_writable(), reason="memory cgroups are not writable here")

# A launcher that starts one process per size as torchrun would (RANK / LOCAL_RANK in its
# environment); each worker waits to be placed, touches SIZE MB, holds them 1.5 s and exits 0.
LAUNCHER = textwrap.dedent("""
    import os, subprocess, sys
    worker = "import time; time.sleep(0.5); b = bytearray(int(%s) << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
    procs = [subprocess.Popen([sys.executable, "-c", worker % size], env={**os.environ, "RANK": str(r), "LOCAL_RANK": str(r)})
             for r, size in enumerate(sys.argv[1:])]
    sys.exit(max(abs(p.wait()) for p in procs))
""")


def _budget(tmp_path, sizes_mb: list[int], worker_limit_mb: int) -> tuple[int, dict]:
    out = tmp_path / "budget.json"
    done = subprocess.run([sys.executable, str(BUDGET), "--limit-mb", "2048", "--worker-limit-mb", str(worker_limit_mb),
                           "--out", str(out), "--", sys.executable, "-c", LAUNCHER, *map(str, sizes_mb)],
                          capture_output=True, text=True, timeout=120)
    return done.returncode, json.loads(out.read_text())


def test_each_worker_runs_in_its_own_cgroup_and_its_peak_is_recorded(tmp_path):
    code, summary = _budget(tmp_path, [150, 60], worker_limit_mb=400)
    assert code == 0 and not summary["oom_killed"]
    workers = summary["workers"]
    assert sorted(workers) == ["0", "1"]
    assert all(w["limit_mb"] == 400 and w["oom_kills"] == 0 and len(w["pids"]) == 1 for w in workers.values())
    assert 150 <= workers["0"]["anon_peak_mb"] < 400 and 150 <= workers["0"]["cgroup_peak_mb_incl_page_cache"]
    assert 60 <= workers["1"]["anon_peak_mb"] < 150


def test_a_worker_over_its_own_limit_is_killed_though_the_whole_budget_has_room(tmp_path):
    code, summary = _budget(tmp_path, [40, 300], worker_limit_mb=200)
    assert code != 0 and summary["oom_killed"]
    assert summary["workers"]["1"]["oom_kills"] == 1 and summary["workers"]["0"]["oom_kills"] == 0


def test_the_commands_cpu_time_is_recorded_apart_from_the_rest_of_the_machines(tmp_path):
    out = tmp_path / "budget.json"
    burn = "import time; end = time.process_time() + 0.6\nwhile time.process_time() < end: pass"
    done = subprocess.run([sys.executable, str(BUDGET), "--limit-mb", "256", "--out", str(out), "--",
                           sys.executable, "-c", burn], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    cpu = json.loads(out.read_text())["cpu"]
    assert cpu["command_cpu_s"] >= 0.6 and cpu["cores"] == os.cpu_count()
    assert cpu["others_cpu_s"] >= 0 and 0 <= cpu["others_share_of_cores"] <= 1 and cpu["iowait_s"] >= 0
    assert cpu["command_major_faults"] >= 0
