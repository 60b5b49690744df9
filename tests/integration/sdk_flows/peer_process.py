"""The clearml-agent column of the matrix in a second pytest process, run beside ours.

The two columns share nothing but the code: each process has its own embedded server, daemons and tasks, so running
them side by side halves the matrix's wall time (most of it is waiting on the SDK, the agents and their processes).
The main process starts the peer process on the clearml-agent items once they are collected; each of those items
then reports what the peer process saw for it (pass, its failure text, xfail), so the results, the table and a
failure's message read as if the item ran here. `NOTEBOOK_AGENT_MATRIX_SERIAL=1` runs both columns in one process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Set in the peer process: where it writes each item's result.
RESULTS_ENV = "NOTEBOOK_AGENT_MATRIX_PEER_RESULTS"
SERIAL_ENV = "NOTEBOOK_AGENT_MATRIX_SERIAL"


class PeerFailed(AssertionError):
    """A peer item failed (or xfailed) in the peer process; the message is its report there."""


def in_peer() -> bool:
    return bool(os.environ.get(RESULTS_ENV))


def record(path: Path, nodeid: str, outcome: str, text: str, wasxfail: str | None) -> None:
    """In the peer process: add one item's result to the results file (replaced whole, so a reader never sees half)."""
    results = _read(path)
    results[nodeid] = {"outcome": outcome, "text": text, "wasxfail": wasxfail}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results))
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class PeerRun:
    """The peer pytest process on `nodeids`, its output in `folder/peer.log`."""

    def __init__(self, nodeids: list[str], rootdir: Path, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.results = folder / "peer-results.json"
        self.results.unlink(missing_ok=True)
        self.log_path = folder / "peer.log"
        self._log = self.log_path.open("w")
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(rootdir), *nodeids]
        self.proc = subprocess.Popen(
            argv,
            cwd=rootdir,
            env={**os.environ, RESULTS_ENV: str(self.results)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def result(self, nodeid: str, timeout: float) -> dict[str, Any]:
        """The peer's result for `nodeid`, once it has one (it runs the items in the same order as here)."""
        deadline = time.monotonic() + timeout
        while True:
            found = _read(self.results).get(nodeid)
            if found is not None:
                return found
            code = self.proc.poll()
            if code is not None:
                found = _read(self.results).get(nodeid)
                if found is not None:
                    return found
                raise AssertionError(f"the clearml-agent process ended ({code}) before {nodeid}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no result for {nodeid} from the clearml-agent process in {timeout} s")
            time.sleep(0.2)

    def tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        end_group(self.proc, signal.SIGTERM)
        self._log.close()


def end_group(proc: subprocess.Popen, first: signal.Signals) -> None:
    """End a process that leads its own group: `first` to the group, up to 30 s to exit, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, first)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
