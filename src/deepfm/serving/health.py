"""What ``GET /health`` says: ``{"status": "ok"}``, or 503 naming each failing worker and why, so that a load
balancer takes the instance out.

A worker is failing when its forward passes keep failing (``FAILING_PASSES`` in a row, until one succeeds), and,
under ``serve --workers N``, when it stopped while starting or serving (killed, out of memory) or failed to start
(uvicorn starts it again, and a worker that finds the model directory changed refuses each time). The workers are
separate processes, and any of them may answer ``/health``: each keeps a record of itself, ``PID.json`` in a folder
that ``serve`` makes for the run (``Health.folder``), written when its state changes, and ``/health`` reads them
all. A worker that stopped counts until a worker started after it serves: that one takes its place and removes its
record (one record each, claimed by an atomic rename, so uvicorn may change the number of workers as it runs). A
sibling that was already starting when it stopped does not: a record says when it was last written and a worker
when its process started (on Linux; elsewhere, when this module was imported), on the boot clock. A
worker that serves also removes the records of workers that failed to start: starting works again. Without a
folder (one worker) a worker speaks for itself alone. The records are kept on a best-effort basis: a folder that
cannot be written (removed, full) never fails a request or a worker's start; /health then knows less.
"""

from __future__ import annotations

import json
import os
import threading
import time
from contextlib import suppress
from pathlib import Path

FAILING_PASSES = 3  # forward passes failed in a row, none since succeeding, before the worker counts as failing
START_SLACK = 0.02  # s: a process's start is read in clock ticks (10 ms); a replacement's must never seem too early


def clock() -> float:
    """Seconds on one clock for every process of the machine: since boot where the system says (Linux), else
    ``time.monotonic``."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic()


_IMPORTED = clock()


def process_started() -> float:
    """When this process started, on ``clock``: from /proc on Linux, else when this module was imported."""
    try:
        after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return int(after_name[19]) / os.sysconf("SC_CLK_TCK") if hasattr(time, "CLOCK_BOOTTIME") else _IMPORTED
    except (OSError, ValueError, IndexError):
        return _IMPORTED


def running(pid: int) -> bool:
    """Whether process ``pid`` runs (or is not yet reaped). Windows has no signal 0 (``os.kill`` would end the
    process): there a worker that stopped is not told apart, though one that failed to start or to score is."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process took the number
        return True
    return True


class Health:
    """This worker's state (``starting``, ``serving``, ``failed``; ``scoring``: why its forward passes keep
    failing), kept in ``folder`` beside its siblings' when there is one, and what ``/health`` says of them all
    (``failing``)."""

    def __init__(self, folder: str | Path | None = None, started: float | None = None):
        self.folder, self.pid = (Path(folder) if folder else None), os.getpid()
        self.started = process_started() if started is None else started  # on ``clock``
        self.state, self.scoring, self.reason, self.times = "starting", None, None, 1
        self.failed_passes = 0
        self._lock = threading.Lock()
        self._write()

    def serving(self) -> None:
        """This worker serves: it takes the place of one worker that stopped after this one started (its record
        goes), and the records of workers that failed to start go (starting works)."""
        self.state = "serving"
        self._write()
        others = [record for record in self._records() if record["pid"] != self.pid]
        for record in others:
            replaced = record.get("written", float("-inf")) < self.started + START_SLACK  # alive when this one started
            if record["state"] != "failed" and replaced and not running(record["pid"]) and self._claim(record["pid"]):
                break  # one place taken
        for record in others:
            if record["state"] == "failed":
                self._remove(f"{record['pid']}.json")

    def _claim(self, pid: int) -> bool:
        """Remove worker ``pid``'s record unless another worker took it first: an atomic rename has one claimant,
        however many replacements start at once."""
        try:
            os.replace(self.folder / f"{pid}.json", self.folder / f".claimed-{pid}.json")
        except OSError:
            return False
        self._remove(f".claimed-{pid}.json")
        return True

    def stopped(self) -> None:
        """A worker stopping on request (shutdown) leaves nothing to report, and writes nothing after this."""
        with self._lock:
            self.state = "stopped"
            self._remove(f"{self.pid}.json")

    def failed_to_start(self, error: BaseException) -> None:
        """This worker stops before serving, for ``error``; the records of earlier workers that failed for the same
        reason become this one's count (a worker started again and again leaves one record)."""
        self.state, self.reason = "failed", f"{type(error).__name__}: {error}"
        for record in self._records():
            if record["state"] == "failed" and record.get("reason") == self.reason:
                self.times += record.get("times", 1)
                self._remove(f"{record['pid']}.json")
        self._write()

    def scored(self, error: BaseException | None) -> None:
        """One forward pass's outcome (``MicroBatcher``'s hook): where all is well, one test. The record is written
        when what it says changes, not at every failed pass."""
        if error is None and not self.failed_passes:
            return
        with self._lock:
            said = self.scoring
            self.failed_passes = 0 if error is None else self.failed_passes + 1
            self.scoring = None if self.failed_passes < FAILING_PASSES else (
                f"{FAILING_PASSES} or more forward passes failed in a row, the last with {type(error).__name__}: {error}")
            if self.scoring != said:
                self._write()

    def failing(self) -> list[str]:
        """Each failing worker, named by its process id, and why; empty when the server is healthy (or starting)."""
        records = self._records() if self.folder is not None else [self._record()]
        said = []
        for record in records:
            if record["state"] == "failed":
                times = f" ({record['times']} times in a row)" if record.get("times", 1) > 1 else ""
                said.append(f"worker {record['pid']} failed to start{times}: {record['reason']}")
            elif not running(record["pid"]):
                said.append(f"worker {record['pid']} stopped while {record['state']}, without saying why (killed, "
                            "or out of memory?)")
            elif record.get("scoring"):
                said.append(f"worker {record['pid']} is failing to score: {record['scoring']}")
        return said

    def _record(self) -> dict:
        return {"pid": self.pid, "state": self.state, "scoring": self.scoring, "reason": self.reason,
                "times": self.times, "written": clock()}

    def _write(self) -> None:
        """This worker's record, replaced atomically (readers see the old one or the new); nothing once stopped."""
        if self.folder is None or self.state == "stopped":
            return
        temporary = self.folder / f".{self.pid}.json"
        with suppress(OSError):  # best effort (see the module)
            temporary.write_text(json.dumps(self._record()))
            os.replace(temporary, self.folder / f"{self.pid}.json")

    def _remove(self, name: str) -> None:
        if self.folder is None:
            return
        with suppress(OSError):
            (self.folder / name).unlink(missing_ok=True)

    def _records(self) -> list[dict]:
        """The records in the folder (none without one)."""
        records = []
        for path in self.folder.glob("[0-9]*.json") if self.folder is not None else ():
            try:
                records.append(json.loads(path.read_text()))
            except (OSError, ValueError):  # gone since the listing (a worker stopped, a record merged)
                continue
        return records
