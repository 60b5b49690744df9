"""`daemon --detached` / `daemon --stop`: a daemon in the background, found again by its pid file.

`--detached` starts `notebook-agent daemon` (the same arguments, less `--detached`) in a new session with its
output in a log file, writes `<state_dir>/daemons/<pid>.json` and returns. `--stop` sends each recorded daemon
SIGTERM: the daemon aborts its running tasks, which are reported `stopped` with a reason (never `completed`,
unlike clearml-agent#188), unregisters and exits; after `timeout` it is reported as still running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

STOP_TIMEOUT_SEC = 30.0  # abort grace (10 s by default) plus unregistering; clearml-agent waits 10 s (120 s dgpu)
STOP_REASON = "agent stopped (notebook-agent daemon --stop)"


def daemons_dir(state_dir: Path) -> Path:
    return state_dir / "daemons"


def start_detached(daemon_args: Sequence[str], state_dir: Path, env: Mapping[str, str] | None = None) -> int:
    """Start `notebook-agent daemon <daemon_args>` in the background; its pid (also in the pid file)."""
    folder = daemons_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"daemon-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    argv = [sys.executable, "-m", "notebook_agent", "daemon", *daemon_args]
    with log_path.open("ab") as log:
        # A new session: the terminal's Ctrl-C and hangup do not reach the daemon; its output goes to the log.
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ if env is None else env),
        )
    record = {"pid": child.pid, "argv": argv, "log": str(log_path), "started": time.time()}
    (folder / f"{child.pid}.json").write_text(json.dumps(record))
    return child.pid


def stop_daemons(state_dir: Path, timeout: float = STOP_TIMEOUT_SEC) -> tuple[list[int], list[int]]:
    """SIGTERM every detached daemon recorded under `state_dir`; (stopped pids, pids still running)."""
    stopped: list[int] = []
    running: list[int] = []
    pid_files = sorted(daemons_dir(state_dir).glob("*.json"))
    alive = {}
    for pid_file in pid_files:
        pid = _recorded_pid(pid_file)
        if pid is None or not _is_our_daemon(pid):
            pid_file.unlink(missing_ok=True)  # stale: it ended (or the pid now belongs to something else)
            continue
        os.kill(pid, signal.SIGTERM)
        alive[pid] = pid_file
    deadline = time.monotonic() + timeout
    for pid, pid_file in alive.items():
        while _is_our_daemon(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _is_our_daemon(pid):
            running.append(pid)
        else:
            pid_file.unlink(missing_ok=True)
            stopped.append(pid)
    return stopped, running


def _recorded_pid(pid_file: Path) -> int | None:
    try:
        return int(json.loads(pid_file.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_our_daemon(pid: int) -> bool:
    """The pid runs `notebook_agent daemon` (a reused pid must never be signalled), and is not a zombie."""
    if not Path("/proc").is_dir():  # no procfs (macOS): all we can tell is whether the pid exists
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    if "\nState:\tZ" in status:
        return False
    return b"notebook_agent" in cmdline and b"daemon" in cmdline
