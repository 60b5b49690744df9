"""Why a task process ended, in words: its exit code, the signal that killed it, and whether the kernel's
out-of-memory killer sent that signal (read from the agent's memory cgroup: v2 `memory.events`, v1
`memory.oom_control`, both counting `oom_kill`).

The OOM killer leaves no trace on the process itself (it is a plain SIGKILL), so the count of OOM kills in the
agent's cgroup is read when the task starts and again when it ends: a SIGKILL while that count grew was the OOM
killer's. The task runs in the agent's cgroup, so its kills are counted there. A file that cannot be read makes
the answer "unknown", never a guess.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
OOM_KEY = "oom_kill"
# The memory cgroup files that count OOM kills: v2 first (the unified hierarchy), then v1's memory controller.
V2_FILE = "memory.events"
V1_FILE = "memory.oom_control"


def signal_name(number: int) -> str:
    """`SIGKILL` for 9; `signal 77` for a number with no name here."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def read_oom_kills(path: Path) -> int | None:
    """The `oom_kill` count in a memory.events / memory.oom_control file; None when unreadable or absent."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == OOM_KEY:
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


def _cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """`/proc/self/cgroup` as {controller or "" for v2: path inside the hierarchy}."""
    paths: dict[str, str] = {}
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            paths.setdefault(controller, parts[2])
    return paths


def _nearest(mount: Path, inner: str, name: str) -> Path | None:
    """`name` in the cgroup at `inner` under `mount`, else in the nearest ancestor that has it: inside a container
    the hierarchy is often mounted at the container's own cgroup, so the full inner path does not exist."""
    parts = [p for p in inner.strip("/").split("/") if p]
    for depth in range(len(parts), -1, -1):
        candidate = mount.joinpath(*parts[:depth], name)
        if candidate.is_file():
            return candidate
    return None


def locate_oom_file(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> Path | None:
    """The file that counts OOM kills in this process's memory cgroup (v2, else v1); None when there is none."""
    paths = _cgroup_paths(proc_cgroup)
    if "" in paths:
        for mount in (root, root / "unified"):
            found = _nearest(mount, paths[""], V2_FILE)
            if found is not None and read_oom_kills(found) is not None:
                return found
    if "memory" in paths:
        found = _nearest(root / "memory", paths["memory"], V1_FILE)
        if found is not None and read_oom_kills(found) is not None:
            return found
    return None


class OomCounter:
    """Reads the OOM-kill count of one cgroup file; a counter without a file always reads None (unknown)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def read(self) -> int | None:
        return None if self.path is None else read_oom_kills(self.path)

    @classmethod
    def for_this_process(cls) -> OomCounter:
        return cls(locate_oom_file())


# The counter a new task process uses; tests point it at a fake memory.events file.
oom_counter_factory: Callable[[], OomCounter] = OomCounter.for_this_process


@dataclass(frozen=True)
class ExitStatus:
    """How a task process ended: `code` as Popen gives it (negative: the signal that killed it), and whether the
    OOM-kill count of the agent's cgroup grew while it ran (None: unknown)."""

    code: int | None
    oom_killed: bool | None = None

    @property
    def signal(self) -> int | None:
        return -self.code if self.code is not None and self.code < 0 else None

    def describe(self) -> str:
        """E.g. `killed by signal SIGSEGV (exit code -11)`, `killed by the out-of-memory killer (SIGKILL), exit
        code -9`, `exit code 3`."""
        sig = self.signal
        if sig is None:
            # A child of the task (a data loader worker) killed for memory often makes the task fail on its own.
            meanwhile = "; the out-of-memory killer ended a process in its cgroup meanwhile" if self.oom_killed else ""
            return f"exit code {self.code}{meanwhile}"
        name = signal_name(sig)
        if sig == signal.SIGKILL and self.oom_killed:
            return f"killed by the out-of-memory killer ({name}), exit code {self.code}"
        return f"killed by signal {name} (exit code {self.code})"


def oom_grew(before: int | None, after: int | None) -> bool | None:
    """True when the OOM-kill count grew between the two reads; None when either read failed."""
    if before is None or after is None:
        return None
    return after > before
