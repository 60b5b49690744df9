"""The task process: started in its own session, its output read in chunks into lines, its tree ended on demand.

stdout and stderr share one pipe, as under clearml-agent: the lines arrive in the order the process wrote them
(two pipes read by two threads interleave at random), so a traceback sits next to the prints before it. Inside
the task `sys.stdout` and `sys.stderr` are still two streams, for the task's own SDK to tell apart.

The process leads a new session and process group, so a SIGINT meant for the notebook kernel never reaches it
and the whole group can be signalled at once. Ending the tree sends SIGTERM to the group, to the session and to
every descendant psutil finds (which catches children that called setsid), waits up to a grace period, then
sends SIGKILL to whatever is left.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import psutil

from notebook_agent.engine import exit_status as exits
from notebook_agent.engine.exit_status import ExitStatus, OomCounter
from notebook_agent.engine.log_lines import LineAssembler

logger = logging.getLogger(__name__)

# A task's pipes get 1 MiB (Linux's default limit for an unprivileged process) instead of 64 KiB, and the reader
# takes up to that much at a time. After a short read it waits COALESCE_SEC: a task printing line by line then
# arrives in a few large chunks instead of thousands of small ones (fewer wakeups, lock rounds and events), and the
# wider pipe keeps the task from blocking meanwhile. Lines are at most that much later.
READ_CHUNK = 1024 * 1024
COALESCE_SEC = 0.002
OUTPUT = "output"  # the stream name of a task's own lines: its stdout and stderr, in the order written
KILL_WAIT = 5.0  # after SIGKILL: how long to wait for the kernel to end the process before giving up


def _signal_group(pgid: int, sig: int) -> None:
    if pgid <= 1 or pgid == os.getpgrp():  # never our own group (nor init's)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_pid(pid: int, sig: int) -> None:
    if pid <= 1 or pid == os.getpid():
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _widen_pipe(pipe: IO[bytes], size: int) -> bool:
    """Ask for a pipe buffer of `size` bytes (Linux only); True if the pipe holds at least that much now."""
    try:
        return fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, size) >= size
    except (AttributeError, OSError):  # not Linux, or over the user's pipe-buffer allowance
        return False


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (a zombie is dead; it only waits for its parent, or init, to reap it)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _session_members(sid: int) -> list[psutil.Process]:
    """Processes still in session `sid`: those whose parent died (reparented to init) are found here too."""
    members = []
    for pid in psutil.pids():
        try:
            if pid != os.getpid() and os.getsid(pid) == sid:
                members.append(psutil.Process(pid))
        except (OSError, psutil.Error):
            continue
    return members


class TaskProcess:
    """One task process and the thread reading its output (stdout and stderr, in order) into
    `on_output(OUTPUT, lines)`."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        on_output: Callable[[str, list[str]], None],
        max_line_chars: int = 64 * 1024,
    ) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.env = dict(env)
        self._on_output = on_output
        self._max_line_chars = max_line_chars
        self._proc: subprocess.Popen[bytes] | None = None
        self._readers: list[threading.Thread] = []
        self._kill_lock = threading.Lock()
        self._terminated_by_us = False
        self._tree_done = False
        self.output_error: BaseException | None = None  # the first exception raised by on_output, if any
        self._oom: OomCounter | None = None
        self._oom_before: int | None = None

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("task process already started")
        # The cgroup's OOM-kill count before the task runs: a SIGKILL while it grew was the OOM killer's.
        self._oom = exits.oom_counter_factory()
        self._oom_before = self._oom.read()
        self._proc = subprocess.Popen(
            self.argv,
            cwd=str(self.cwd),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
        assert self._proc.stdout is not None
        thread = threading.Thread(
            target=self._read, args=(OUTPUT, self._proc.stdout), name=f"task-output-{self._proc.pid}", daemon=True
        )
        self._readers.append(thread)
        thread.start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def terminated_by_us(self) -> bool:
        return self._terminated_by_us

    def poll(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def exit_status(self, code: int | None = None) -> ExitStatus:
        """How the process ended (`code`: its exit code, else the one it has now), and whether the OOM killer acted
        in the agent's cgroup while it ran (looked into only for a failure)."""
        code = self.poll() if code is None else code
        oom = None
        if code and self._oom is not None:
            oom = exits.oom_grew(self._oom_before, self._oom.read())
        return ExitStatus(code, oom)

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code once the process has exited and all its output was delivered; None on timeout."""
        if self._proc is None:
            raise RuntimeError("task process not started")
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for reader in self._readers:
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if reader.is_alive():  # a descendant still holds the pipe open, or on_output is blocked
                return None
        return self._proc.returncode

    def _read(self, stream: str, pipe: IO[bytes]) -> None:
        fd = pipe.fileno()
        assembler = LineAssembler(self._max_line_chars)
        # Coalescing only with the wide pipe: a 64 KiB one would fill during the pause and stall the task.
        coalesce = _widen_pipe(pipe, READ_CHUNK)
        try:
            while True:
                try:
                    data = os.read(fd, READ_CHUNK)
                except InterruptedError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._deliver(stream, assembler.flush())
                    return
                self._deliver(stream, assembler.feed(data))
                if coalesce and len(data) < READ_CHUNK:
                    time.sleep(COALESCE_SEC)
        finally:
            with contextlib.suppress(OSError):
                pipe.close()

    def _deliver(self, stream: str, lines: list[str]) -> None:
        if not lines:
            return
        try:
            self._on_output(stream, lines)
        except Exception as exc:  # keep draining the pipe, or the task would block on its next write
            if self.output_error is None:
                self.output_error = exc
                logger.exception("task output callback failed (%s); further output may be lost", stream)

    def terminate_tree(self, grace: float = 10.0) -> int | None:
        """SIGTERM to the tree, up to `grace` seconds to exit, then SIGKILL to what is left; the exit code."""
        proc = self._proc
        if proc is None:
            return None
        with self._kill_lock:
            if self._tree_done and proc.poll() is not None:
                return proc.returncode
            pgid = proc.pid  # leader of its own session and group
            if proc.poll() is None:
                self._terminated_by_us = True
            found = {p.pid: p for p in _descendants(proc.pid) + _session_members(pgid)}
            _signal_group(pgid, signal.SIGTERM)
            for p in found.values():
                if _alive(p):
                    _signal_pid(p.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while True:
                if proc.poll() is None:  # catch children spawned meanwhile, while the parent still knows them
                    found.update((p.pid, p) for p in _descendants(proc.pid))
                if (
                    proc.poll() is not None
                    and not any(_alive(p) for p in found.values())
                    and not any(_alive(p) for p in _session_members(pgid))
                ):
                    break
                if time.monotonic() >= deadline:
                    found.update((p.pid, p) for p in _descendants(proc.pid) + _session_members(pgid))
                    _signal_group(pgid, signal.SIGKILL)
                    for p in found.values():
                        if _alive(p):
                            _signal_pid(p.pid, signal.SIGKILL)
                    break
                time.sleep(0.05)
            try:
                proc.wait(KILL_WAIT)
            except subprocess.TimeoutExpired:
                logger.warning("task process %s did not exit after SIGKILL", proc.pid)
            self._tree_done = True
            return proc.returncode
