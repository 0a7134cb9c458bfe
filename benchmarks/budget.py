"""Run a command under a hard memory budget and record its resident set over time.

    python benchmarks/budget.py --limit-mb 1024 [--out rss.json] -- deepfm train --stream ...

The budget is enforced by the kernel: the command runs in a new memory cgroup (v2
``memory.max`` or v1 ``memory.limit_in_bytes``, swap included where the kernel allows) and is
killed if it needs more. Page cache of the file being read is charged to the cgroup too and is
reclaimed under the limit, so only memory the process really holds can end the run. Every
second the resident set of the command's process tree is sampled; the summary (peak, min /
median / max after the start-up, cgroup peak, each process's peak, whether it was OOM-killed) goes to
stderr and ``--out``.

The resident set counts pages of shared libraries (torch's are ~140 MB) that were loaded into
the page cache before and are charged to another cgroup, so a process may show more RSS than the
limit it runs under; what the limit bounds is the memory charged to this cgroup.
Needs permission to create cgroups (root in this container); without it the run is refused
rather than reported as enforced.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

V2 = Path("/sys/fs/cgroup")
V1 = Path("/sys/fs/cgroup/memory")


def own_cgroup_v1() -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return V1 / path.lstrip("/")
    return V1


def make_cgroup(name: str, limit: int) -> tuple[Path, str]:
    """A new cgroup with ``limit`` bytes; (its directory, "v1" or "v2")."""
    if (V2 / "cgroup.controllers").exists():
        group = V2 / name
        group.mkdir()
        (group / "memory.max").write_text(str(limit))
        (group / "memory.swap.max").write_text("0")
        return group, "v2"
    group = own_cgroup_v1() / name
    group.mkdir()
    (group / "memory.limit_in_bytes").write_text(str(limit))
    try:
        (group / "memory.memsw.limit_in_bytes").write_text(str(limit))
    except OSError:
        pass  # no swap accounting: there is no swap here either
    return group, "v1"


def tree_rss_mb(pid: int, by_process: dict[int, float] | None = None) -> float:
    """Resident set of ``pid`` and its descendants, MB; ``by_process`` keeps each one's largest."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    if by_process is not None:
                        by_process[current] = max(by_process.get(current, 0.0), int(line.split()[1]) / 1024)
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                stack.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-mb", type=int, required=True)
    parser.add_argument("--out", help="write the summary and the samples here (JSON)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")
    group, version = make_cgroup(f"deepfm-budget-{os.getpid()}", args.limit_mb << 20)
    procs = group / "cgroup.procs"

    def enter() -> None:  # in the child, before exec: join the cgroup
        procs.write_text(str(os.getpid()))

    began = time.monotonic()
    child = subprocess.Popen(command, preexec_fn=enter)
    samples: list[tuple[float, float]] = []
    by_process: dict[int, float] = {}  # each process's peak (a launcher and its ranks apart)
    while child.poll() is None:
        samples.append((time.monotonic() - began, tree_rss_mb(child.pid, by_process)))
        time.sleep(1.0)
    wall = time.monotonic() - began
    if version == "v1":
        cgroup_peak = int((group / "memory.max_usage_in_bytes").read_text()) / 2**20
        oom_killed = "oom_kill 1" in (group / "memory.oom_control").read_text()
    else:
        cgroup_peak = int((group / "memory.peak").read_text()) / 2**20 if (group / "memory.peak").exists() else None
        events = dict(line.split() for line in (group / "memory.events").read_text().splitlines())
        oom_killed = int(events.get("oom_kill", 0)) > 0
    group.rmdir()
    settled = min(60.0, wall / 5)  # after the start-up: the first minute, or the first fifth of a short run
    after_start = [rss for t, rss in samples if t >= settled and rss > 1.0] or [rss for _, rss in samples]
    summary = {
        "command": command, "limit_mb": args.limit_mb, "cgroup": version, "exit_code": child.returncode,
        "oom_killed": oom_killed, "wall_s": round(wall, 1), "peak_rss_mb": round(max(r for _, r in samples), 1) if samples else None,
        "rss_after_start_mb": {"from_s": round(settled, 1), "min": round(min(after_start), 1),
                               "median": round(statistics.median(after_start), 1), "max": round(max(after_start), 1)}
        if after_start else None,
        "cgroup_peak_mb_incl_page_cache": round(cgroup_peak, 1) if cgroup_peak is not None else None,
        "peak_rss_mb_by_process": sorted((round(mb, 1) for mb in by_process.values()), reverse=True),
    }
    verdict = "killed at the limit (out of memory)" if oom_killed else f"exit {child.returncode}"
    print(f"budget: {verdict}; limit {args.limit_mb} MB, peak RSS {summary['peak_rss_mb']} MB, "
          f"cgroup peak {summary['cgroup_peak_mb_incl_page_cache']} MB, {wall:.0f} s", file=sys.stderr)
    print(json.dumps(summary), file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps({**summary, "samples": samples}))
    sys.exit(child.returncode if child.returncode >= 0 else 128 - child.returncode)  # killed: 128 + signal


if __name__ == "__main__":
    main()
