"""Run a command under a hard memory budget and record its resident set over time.

    python benchmarks/budget.py --limit-mb 1024 [--out rss.json] -- deepfm train --stream ...
    python benchmarks/budget.py --limit-mb 3072 --worker-limit-mb 1024 -- deepfm train --stream --nproc 2 ...

The budget is enforced by the kernel: the command runs in a new memory cgroup (v2
``memory.max`` or v1 ``memory.limit_in_bytes``, swap included where the kernel allows) and is
killed if it needs more. Page cache of the file being read is charged to the cgroup too and is
reclaimed under the limit, so only memory the process really holds can end the run. Every
second the resident set of the command's process tree is sampled; the summary (peak, min /
median / max after the start-up, cgroup peak, each process's peak, whether it was OOM-killed) goes to
stderr and ``--out``.

With ``--worker-limit-mb``, the command starts in a leaf cgroup ``launcher`` and each torchrun
worker of it (a process whose environment has ``LOCAL_RANK``) gets a cgroup of its own with that
limit, beside it inside the command's. A worker is moved there within ~50 ms of starting; what it
charged before (a few MB of a fresh interpreter) stays with ``launcher`` unless the kernel still
moves charges (v1 ``move_charge_at_immigrate``, gone from recent kernels). A restarted worker
joins its rank's group again. Each rank's cgroup peak (with page cache), peak of anonymous memory
(what the process really holds; sampled every 50 ms) and OOM kills are recorded.

The resident set counts pages of shared libraries (torch's are ~140 MB) that were loaded into
the page cache before and are charged to another cgroup, so a process may show more RSS than the
limit it runs under; what the limit bounds is the memory charged to this cgroup.
The machine's CPU time during the run is recorded beside the command's (its process tree's user
and system time): ``others_cpu_s`` is what everything else on the machine used meanwhile, so a
"quiet" run can be told from one that shared the cores (on 2 cores, one busy neighbour slows a
2-thread PyTorch process far more than by half: its threads wait for each other).

Needs permission to create cgroups (root in this container); without it the run is refused
rather than reported as enforced.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

V2 = Path("/sys/fs/cgroup")
V1 = Path("/sys/fs/cgroup/memory")
WORKER_POLL_S = 0.05  # how soon a new worker is moved into its own cgroup


def own_cgroup_v1() -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return V1 / path.lstrip("/")
    return V1


def cgroup_version() -> str:
    return "v2" if (V2 / "cgroup.controllers").exists() else "v1"


@dataclass
class Cgroup:
    """A memory cgroup with a hard limit, and what it measured."""

    path: Path
    version: str
    anon_peak: int = 0  # bytes, from samples of memory.stat
    members: set[int] = field(default_factory=set)

    @classmethod
    def create(cls, name: str, limit: int, parent: "Cgroup | None" = None) -> "Cgroup":
        """A new cgroup of ``limit`` bytes (under ``parent``, which must hold no process itself in v2,
        or beside this process's own)."""
        version = parent.version if parent else cgroup_version()
        if version == "v2":
            base = parent.path if parent else V2
            if parent:  # children need the memory controller enabled in the parent's subtree
                (parent.path / "cgroup.subtree_control").write_text("+memory")
            group = base / name
            group.mkdir()
            (group / "memory.max").write_text(str(limit))
            (group / "memory.swap.max").write_text("0")
            return cls(group, version)
        group = (parent.path if parent else own_cgroup_v1()) / name
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit))
        try:
            (group / "memory.memsw.limit_in_bytes").write_text(str(limit))
        except OSError:
            pass  # no swap accounting: there is no swap here either
        if parent:
            try:
                (group / "memory.move_charge_at_immigrate").write_text("1")  # a moved worker brings its pages
            except OSError:
                pass  # removed from recent kernels (EINVAL): what the worker charged before the move stays put
        return cls(group, version)

    def join(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))
        self.members.add(pid)

    def sample(self) -> None:
        """Note the anonymous memory charged now (the peak of the samples is recorded)."""
        stat = dict(line.split() for line in (self.path / "memory.stat").read_text().splitlines())
        anon = int(stat.get("anon", 0)) if self.version == "v2" else int(stat.get("total_rss", stat.get("rss", 0)))
        self.anon_peak = max(self.anon_peak, anon)

    def peak(self) -> float | None:
        """The kernel's peak charge, MB (page cache included)."""
        name = "memory.peak" if self.version == "v2" else "memory.max_usage_in_bytes"
        return int((self.path / name).read_text()) / 2**20 if (self.path / name).exists() else None

    def oom_kills(self) -> int:
        if self.version == "v1":
            control = dict(line.split() for line in (self.path / "memory.oom_control").read_text().splitlines())
            return int(control.get("oom_kill", 0))
        events = dict(line.split() for line in (self.path / "memory.events").read_text().splitlines())
        return int(events.get("oom_kill", 0))

    def summary(self) -> dict:
        return {"cgroup_peak_mb_incl_page_cache": round(self.peak() or 0.0, 1),
                "anon_peak_mb": round(self.anon_peak / 2**20, 1), "oom_kills": self.oom_kills(),
                "pids": sorted(self.members)}

    def remove(self) -> None:
        self.path.rmdir()


def machine_cpu_s() -> tuple[float, float]:
    """(busy, I/O wait) CPU seconds of the whole machine since boot, all cores (``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / tick, iowait / tick


def children_usage() -> tuple[float, int]:
    """(user and system CPU seconds, major page faults) of this process's waited-for children (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_majflt


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_summary(wall: float, machine: tuple[float, float], command: tuple[float, int], monitor_s: float) -> dict:
    """What the command and everything else on the machine used of its cores during ``wall`` seconds
    (``machine``: the busy and I/O-wait seconds over the run; ``command``: the command's CPU seconds and
    major page faults, i.e. pages read from disk, the file's or its libraries' code; ``monitor_s``: this
    script's own CPU seconds)."""
    command_s, major_faults = command
    cores = os.cpu_count() or 1
    others = max(0.0, machine[0] - command_s - monitor_s)
    return {"cores": cores, "command_cpu_s": round(command_s, 1), "others_cpu_s": round(others, 1),
            "others_share_of_cores": round(others / (wall * cores), 3) if wall else None,
            "iowait_s": round(machine[1], 1), "command_major_faults": major_faults}


def descendants(pid: int) -> list[int]:
    """``pid``'s processes below it (children, their children, ...)."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                children = [int(c) for c in (task / "children").read_text().split()]
                found.extend(children)
                stack.extend(children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def worker_rank(pid: int) -> int | None:
    """The ``RANK`` of a torchrun worker (its environment has ``LOCAL_RANK``), else None."""
    try:
        environ = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().decode(
            errors="replace").split("\0") if "=" in item)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return int(environ.get("RANK", environ["LOCAL_RANK"])) if "LOCAL_RANK" in environ else None


def tree_rss_mb(pid: int, by_process: dict[int, float] | None = None) -> float:
    """Resident set of ``pid`` and its descendants, MB; ``by_process`` keeps each one's largest."""
    total = 0
    for current in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    if by_process is not None:
                        by_process[current] = max(by_process.get(current, 0.0), int(line.split()[1]) / 1024)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1024


def place_workers(root: int, parent: Cgroup, ranks: dict[int, Cgroup], worker_limit: int) -> None:
    """Move every new torchrun worker below ``root`` into its rank's cgroup (made on first sight)."""
    placed = {pid for group in ranks.values() for pid in group.members}
    for pid in descendants(root):
        if pid in placed:
            continue
        rank = worker_rank(pid)
        if rank is None:
            continue
        if rank not in ranks:
            ranks[rank] = Cgroup.create(f"rank{rank}", worker_limit, parent)
        try:
            ranks[rank].join(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass  # it ended already


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-mb", type=int, required=True, help="the whole command (launcher and workers)")
    parser.add_argument("--worker-limit-mb", type=int, help="each torchrun worker's own limit (inside --limit-mb)")
    parser.add_argument("--out", help="write the summary and the samples here (JSON)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")
    group = Cgroup.create(f"deepfm-budget-{os.getpid()}", args.limit_mb << 20)
    # With per-worker groups the command starts in a leaf of its own: cgroup v2 lets only leaves hold processes.
    launcher = Cgroup.create("launcher", args.limit_mb << 20, group) if args.worker_limit_mb else group

    def enter() -> None:  # in the child, before exec: join the cgroup
        (launcher.path / "cgroup.procs").write_text(str(os.getpid()))

    began = time.monotonic()
    machine_before, children_before, self_before = machine_cpu_s(), children_usage(), self_cpu_s()
    child = subprocess.Popen(command, preexec_fn=enter)
    samples: list[tuple[float, float]] = []
    by_process: dict[int, float] = {}  # each process's peak (a launcher and its ranks apart)
    ranks: dict[int, Cgroup] = {}
    try:
        next_sample = 0.0
        while child.poll() is None:
            if args.worker_limit_mb:
                place_workers(child.pid, group, ranks, args.worker_limit_mb << 20)
            for cgroup in [group, *ranks.values()]:  # cheap: every poll
                cgroup.sample()
            now = time.monotonic() - began
            if now >= next_sample:
                samples.append((now, tree_rss_mb(child.pid, by_process)))
                next_sample = now + 1.0
            time.sleep(WORKER_POLL_S if args.worker_limit_mb else 1.0)
        wall = time.monotonic() - began
        machine_after = machine_cpu_s()
        cpu = cpu_summary(wall, (machine_after[0] - machine_before[0], machine_after[1] - machine_before[1]),
                          tuple(after - before for after, before in zip(children_usage(), children_before)),
                          self_cpu_s() - self_before)
        cgroup_peak, oom_killed = group.peak(), group.oom_kills() > 0 or any(r.oom_kills() for r in ranks.values())
        workers = {str(rank): {"limit_mb": args.worker_limit_mb, **ranks[rank].summary(), "peak_rss_mb": round(
                   max((by_process.get(p, 0.0) for p in ranks[rank].members), default=0.0), 1)} for rank in sorted(ranks)}
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for cgroup in [*ranks.values(), *([launcher] if launcher is not group else []), group]:
            cgroup.remove()
    settled = min(60.0, wall / 5)  # after the start-up: the first minute, or the first fifth of a short run
    after_start = [rss for t, rss in samples if t >= settled and rss > 1.0] or [rss for _, rss in samples]
    summary = {
        "command": command, "limit_mb": args.limit_mb, "cgroup": group.version, "exit_code": child.returncode,
        "oom_killed": oom_killed, "wall_s": round(wall, 1), "peak_rss_mb": round(max(r for _, r in samples), 1) if samples else None,
        "rss_after_start_mb": {"from_s": round(settled, 1), "min": round(min(after_start), 1),
                               "median": round(statistics.median(after_start), 1), "max": round(max(after_start), 1)}
        if after_start else None,
        "cgroup_peak_mb_incl_page_cache": round(cgroup_peak, 1) if cgroup_peak is not None else None,
        "anon_peak_mb": round(group.anon_peak / 2**20, 1),
        "cpu": cpu, "loadavg_end": os.getloadavg()[0],
        "peak_rss_mb_by_process": sorted((round(mb, 1) for mb in by_process.values()), reverse=True),
        **({"workers": workers} if args.worker_limit_mb else {}),
    }
    verdict = "killed at the limit (out of memory)" if oom_killed else f"exit {child.returncode}"
    print(f"budget: {verdict}; limit {args.limit_mb} MB, peak RSS {summary['peak_rss_mb']} MB, "
          f"cgroup peak {summary['cgroup_peak_mb_incl_page_cache']} MB, {wall:.0f} s; CPU: command {cpu['command_cpu_s']} s, "
          f"others on the machine {cpu['others_cpu_s']} s ({cpu['others_share_of_cores']:.0%} of its cores)", file=sys.stderr)
    for rank, worker in workers.items():
        print(f"budget: rank {rank}: limit {worker['limit_mb']} MB, anonymous peak {worker['anon_peak_mb']} MB, "
              f"cgroup peak {worker['cgroup_peak_mb_incl_page_cache']} MB, peak RSS {worker['peak_rss_mb']} MB, "
              f"OOM kills {worker['oom_kills']}", file=sys.stderr)
    print(json.dumps(summary), file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps({**summary, "samples": samples}))
    sys.exit(child.returncode if child.returncode >= 0 else 128 - child.returncode)  # killed: 128 + signal


if __name__ == "__main__":
    main()
