"""Who owns a file under the state dir (a log spool, a pending final status), and whether that owner is gone.

A leftover is handed to the next load only once its owner cannot act on it any more: its process died (checked
with the process's start time, so a reused pid does not count as alive), the machine rebooted, or, within this
process, the object that held it let go (a worker stopped while the server was down).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

TIME_SLACK_SEC = 1.0  # create/boot times read at different moments may differ by a clock tick

_HELD: set[str] = set()  # files that a live object of this process still works on
_HELD_LOCK = threading.Lock()


@dataclass(frozen=True)
class Owner:
    """The process that wrote a state file: its pid with its start time, its host and the machine's boot time."""

    pid: int
    create_time: float
    host: str
    boot_time: float

    @classmethod
    def me(cls) -> Owner:
        proc = psutil.Process()
        return cls(proc.pid, proc.create_time(), socket.gethostname(), psutil.boot_time())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Owner | None:
        try:
            return cls(int(data["pid"]), float(data["create_time"]), str(data["host"]), float(data["boot_time"]))
        except (KeyError, TypeError, ValueError):
            return None

    def is_me(self) -> bool:
        me = psutil.Process()
        return (
            self.pid == me.pid
            and self.host == socket.gethostname()
            and abs(self.create_time - me.create_time()) <= TIME_SLACK_SEC
        )

    def alive(self) -> bool:
        if self.host != socket.gethostname():
            return True  # pids mean nothing on another machine: never take over its files
        if abs(self.boot_time - psutil.boot_time()) > TIME_SLACK_SEC:
            return False
        try:
            proc = psutil.Process(self.pid)
            return (
                proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - self.create_time) <= TIME_SLACK_SEC
            )
        except psutil.Error:
            return False


def hold(path: Path) -> None:
    """Mark `path` as worked on by a live object of this process."""
    with _HELD_LOCK:
        _HELD.add(str(Path(path).resolve()))


def release(path: Path) -> None:
    with _HELD_LOCK:
        _HELD.discard(str(Path(path).resolve()))


def held(path: Path) -> bool:
    with _HELD_LOCK:
        return str(Path(path).resolve()) in _HELD


def is_leftover(path: Path, owner: Owner | None) -> bool:
    """True when nobody works on `path` any more: its owner died, or it is this process and nothing holds it.
    A file of another host is never a leftover here."""
    if owner is None:
        return True
    if owner.host != socket.gethostname():
        return False
    if owner.is_me():
        return not held(path)
    return not owner.alive()
