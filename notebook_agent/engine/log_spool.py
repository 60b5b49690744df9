"""The disk spool of a task's log events that could not be sent yet, and the replay of a dead agent's spool.

`<state_dir>/spool/<task_id>.jsonl` (0600, folder 0700) is append-only: one wire event per line, in the order they
must reach the server. `<task_id>.state.json` beside it says how many bytes of it were delivered (`sent`), which
server and worker it belongs to, and which process owns it. The file is deleted once everything in it was sent, so
an idle spool costs nothing; its size is bounded by `max_bytes` (writers wait while it is full).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notebook_agent import api
from notebook_agent.api import APIError, TransportError
from notebook_agent.engine import owner as owners
from notebook_agent.engine.log_delivery import EventDelivery

logger = logging.getLogger(__name__)

SPOOL_DIR = "spool"
DEFAULT_MAX_BYTES = 256 << 20  # agent.log_spool.max_bytes
REPLAY_BATCH_BYTES = 1 << 20
REPLAY_RETRY_SEC = 1.0


def spool_dir(state_dir: Path) -> Path:
    return Path(state_dir) / SPOOL_DIR


def spool_path(state_dir: Path, task_id: str) -> Path:
    return spool_dir(state_dir) / f"{task_id}.jsonl"


def _state_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".jsonl") + ".state.json")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically (a reader never sees half a file), readable by its owner only."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class LogSpool:
    """One task's spool file. Not thread-safe: its LogShipper calls it under its own lock.

    `append` adds events at the end, `peek` reads the oldest unsent ones without taking them, `consume` marks
    them delivered (persisted, so a replay never sends them again) and deletes the files once all is sent.
    """

    def __init__(self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, meta: dict[str, Any] | None = None) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.meta = dict(meta or {})
        self._writer: int | None = None
        self._reader: Any = None
        self._size = 0  # bytes in the file
        self._sent = 0  # bytes of it delivered

    @classmethod
    def open_leftover(cls, path: Path) -> LogSpool:
        """A spool file left by an earlier agent, positioned after what it had delivered."""
        spool = cls(path)
        state = _read_state(path)
        spool.meta = dict(state.get("meta") or {})
        spool._size = path.stat().st_size
        spool._sent = min(int(state.get("sent") or 0), spool._size)
        return spool

    # state --------------------------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """True while the file holds events not yet delivered."""
        return self._sent < self._size

    @property
    def unsent_bytes(self) -> int:
        return self._size - self._sent

    @property
    def full(self) -> bool:
        """No room for more: the file (sent part included, it goes only when all is sent) reached max_bytes."""
        return self._size >= self.max_bytes

    def _save_state(self) -> None:
        state = {"meta": self.meta, "sent": self._sent, "owner": owners.Owner.me().as_dict()}
        _write_json(_state_path(self.path), state)

    # writing ------------------------------------------------------------------------------------------------
    def append(self, events: Sequence[dict[str, Any]]) -> int:
        """Add events at the end of the file; returns the bytes written."""
        if not events:
            return 0
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with contextlib.suppress(OSError):
                os.chmod(self.path.parent, 0o700)
            owners.hold(self.path)
            self._writer = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            # A spool an earlier run of this task left (not replayed yet) goes first: new events follow it.
            self._size = os.fstat(self._writer).st_size
            self._sent = min(int(_read_state(self.path).get("sent") or 0), self._size) if self._size else 0
            self._save_state()  # before the first line: a crash leaves a spool that says whose it is
        data = b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)
        view = memoryview(data)
        while view:
            view = view[os.write(self._writer, view) :]
        self._size += len(data)
        return len(data)

    # reading ------------------------------------------------------------------------------------------------
    def peek(self, max_bytes: int) -> tuple[list[dict[str, Any]], int]:
        """The oldest unsent events, at most `max_bytes` of lines (at least one), and the bytes they span."""
        if not self.active:
            return [], 0
        if self._reader is None:
            self._reader = open(self.path, "rb")  # noqa: SIM115 (kept open while the spool is)
        self._reader.seek(self._sent)
        events: list[dict[str, Any]] = []
        size = 0
        while size < self._size - self._sent:
            line = self._reader.readline()
            if not line.endswith(b"\n"):
                break  # a line cut by a crash while it was written: it never was a whole event
            if events and size + len(line) > max_bytes:
                break
            size += len(line)
            try:
                events.append(json.loads(line))
            except ValueError:
                logger.warning("%s: skipping an unreadable line", self.path)
        if not events and size == 0:
            self._size = self._sent  # nothing whole is left (a torn tail): the spool is done
        return events, size

    def consume(self, nbytes: int) -> None:
        """Mark the next `nbytes` delivered; once everything is, the files go."""
        self._sent = min(self._sent + nbytes, self._size)
        if self.active:
            self._save_state()
        else:
            self.discard()

    # ending -------------------------------------------------------------------------------------------------
    def _close_handles(self) -> None:
        if self._writer is not None:
            os.close(self._writer)
            self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def keep(self) -> None:
        """Leave the unsent events on disk for the next load (the state says what was delivered)."""
        if (self._writer is not None or self.path.exists()) and self.active:
            self._save_state()
        self._close_handles()
        owners.release(self.path)

    def discard(self) -> None:
        """Delete the spool: everything in it was delivered (or can never be)."""
        self._close_handles()
        for path in (self.path, _state_path(self.path)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._size = self._sent = 0
        owners.release(self.path)


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(_state_path(path).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


# replay -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Replayed:
    """One leftover spool handled on load: how many events went out, and whether the file stays for next time."""

    task_id: str
    sent_events: int
    outcome: str  # "sent", or why not all of it was
    kept: bool

    def message(self) -> str:
        retry = "; kept for the next load" if self.kept else ""
        return (
            f"task {self.task_id}: {self.sent_events} leftover log events sent from the spool ({self.outcome}){retry}"
        )


def leftover_spools(state_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(path, meta) of the spool files under `state_dir` that nobody works on any more."""
    folder = spool_dir(state_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.jsonl")):
        state = _read_state(path)
        if owners.is_leftover(path, owners.Owner.from_dict(state.get("owner"))):
            found.append((path, dict(state.get("meta") or {})))
    return found


def replay_leftover(
    state_dir: Path,
    task_id: str,
    session: api.Session,
    timeout: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> Replayed:
    """Send what a dead agent's spool for `task_id` holds, in order, each event once (same ids and timestamps;
    a real server gets a read-back first, since the dead agent may have sent the first batch), then delete it.
    Gives up after `timeout` seconds of an unreachable server, keeping the file (and what was delivered)."""
    path = spool_path(state_dir, task_id)
    if not path.exists():
        return Replayed(task_id, 0, "no spool", False)
    spool = LogSpool.open_leftover(path)
    owners.hold(path)
    delivery = EventDelivery(session, task_id, uncertain=True)
    deadline = time.monotonic() + timeout
    sent = 0
    try:
        while spool.active:
            events, nbytes = spool.peek(REPLAY_BATCH_BYTES)
            if not events:
                spool.consume(nbytes)
                continue
            try:
                delivery(events)
            except TransportError as err:
                if time.monotonic() + REPLAY_RETRY_SEC > deadline:
                    spool.keep()
                    return Replayed(task_id, sent, f"server unreachable ({err.cause})", True)
                sleep(REPLAY_RETRY_SEC)
                continue
            except APIError as err:
                # The server answered: the task is gone or refuses the events; they can never land.
                keep = err.code in (401, 403)  # a login refused may work with the next load's credentials
                spool.keep() if keep else spool.discard()
                return Replayed(task_id, sent, f"the server refused: {err}", keep)
            spool.consume(nbytes)
            sent += len(events)
        spool.discard()
        return Replayed(task_id, sent, "sent", False)
    finally:
        owners.release(path)
