"""What ``GET /health`` says: ``{"status": "ok"}``, or 503 naming each failing worker and why, so that a load
balancer takes the instance out.

A worker is failing when its forward passes keep failing (``FAILING_PASSES`` in a row, until one succeeds), and,
under ``serve --workers N``, when it stopped while starting or serving (killed, out of memory) or failed to start
(uvicorn starts it again, and a worker that finds the model directory changed refuses each time). The workers are
separate processes, and any of them may answer ``/health``: each keeps a record of itself, ``PID.json`` in a folder
that ``serve`` makes for the run (``Health.folder``), written when its state changes, and ``/health`` reads them
all. A worker that stopped or failed to start counts until the server holds N started workers again (its
replacement has started); then its record goes. Without a folder (one worker) a worker speaks for itself alone.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

FAILING_PASSES = 3  # forward passes failed in a row, none since succeeding, before the worker counts as failing


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
    (``failing``) for a server of ``workers`` workers."""

    def __init__(self, folder: str | Path | None = None, workers: int = 1):
        self.folder, self.workers, self.pid = (Path(folder) if folder else None), workers, os.getpid()
        self.state, self.scoring, self.reason, self.times = "starting", None, None, 1
        self.failed_passes = 0
        self._lock = threading.Lock()
        self._write()

    def serving(self) -> None:
        self.state = "serving"
        self._write()

    def stopped(self) -> None:
        """A worker stopping on request (shutdown) leaves nothing to report."""
        if self.folder is not None:
            (self.folder / f"{self.pid}.json").unlink(missing_ok=True)

    def failed_to_start(self, error: BaseException) -> None:
        """This worker stops before serving, for ``error``; the records of earlier workers that failed for the same
        reason become this one's count (a worker started again and again leaves one record)."""
        self.state, self.reason = "failed", f"{type(error).__name__}: {error}"
        for record in self._records():
            if record["state"] == "failed" and record.get("reason") == self.reason:
                self.times += record.get("times", 1)
                (self.folder / f"{record['pid']}.json").unlink(missing_ok=True)
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
        alive = {record["pid"]: record["state"] != "failed" and running(record["pid"]) for record in records}
        started = [record for record in records if alive[record["pid"]] and record["state"] == "serving"]
        gone = [record for record in records if not alive[record["pid"]]]
        if len(started) >= self.workers:  # every place has a started worker: those that stopped were replaced
            for record in gone:  # (without a folder, this worker alone, which runs)
                (self.folder / f"{record['pid']}.json").unlink(missing_ok=True)
            gone = []
        said = []
        for record in gone:
            if record["state"] == "failed":
                times = f" ({record['times']} times in a row)" if record.get("times", 1) > 1 else ""
                said.append(f"worker {record['pid']} failed to start{times}: {record['reason']}")
            else:
                said.append(f"worker {record['pid']} stopped while {record['state']}, without saying why (killed, "
                            "or out of memory?)")
        return said + [f"worker {record['pid']} is failing to score: {record['scoring']}"
                       for record in records if alive[record["pid"]] and record.get("scoring")]

    def _record(self) -> dict:
        return {"pid": self.pid, "state": self.state, "scoring": self.scoring, "reason": self.reason,
                "times": self.times}

    def _write(self) -> None:
        if self.folder is None:
            return
        temporary = self.folder / f".{self.pid}.json"
        temporary.write_text(json.dumps(self._record()))
        os.replace(temporary, self.folder / f"{self.pid}.json")  # readers see the old record or the new one

    def _records(self) -> list[dict]:
        """The records in the folder (none without one)."""
        records = []
        for path in self.folder.glob("[0-9]*.json") if self.folder is not None else ():
            try:
                records.append(json.loads(path.read_text()))
            except (OSError, ValueError):  # gone since the listing (a worker stopped, a record merged)
                continue
        return records
