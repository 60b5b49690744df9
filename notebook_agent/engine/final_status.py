"""A task's final status (completed/failed/stopped) on its way to the server, kept on disk until it landed.

The runner writes `<state_dir>/final/<task_id>.json` before it reports the status and deletes it once delivered.
If the worker is stopped or the process dies first, the next load (engine/task_registry.reap) delivers it, after
the task's leftover log spool, so that whoever sees the status sees every line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from notebook_agent import api
from notebook_agent.api import APIError, TransportError
from notebook_agent.engine import owner as owners
from notebook_agent.masking import mask_url

logger = logging.getLogger(__name__)

FINAL_DIR = "final"
STATUSES = ("completed", "failed", "stopped")


@dataclass(frozen=True)
class PendingStatus:
    """What `<state_dir>/final/<task_id>.json` holds."""

    task_id: str
    worker_id: str
    api_server: str
    status: str  # one of STATUSES
    reason: str
    message: str

    def send(self, session: api.Session) -> None:
        """Report the status once (the session retries transport failures); raises APIError."""
        call: Callable[..., Any] = {"completed": api.tasks.completed, "failed": api.tasks.failed}.get(
            self.status, api.tasks.stopped
        )
        call(session, self.task_id, status_reason=self.reason, status_message=self.message)


@dataclass(frozen=True)
class Delivered:
    """One pending final status handled on load."""

    task_id: str
    status: str
    outcome: str  # "delivered", or what kept it from the server
    kept: bool

    def message(self) -> str:
        retry = "; kept for the next load" if self.kept else ""
        return f"task {self.task_id}: final status {self.status} from an earlier run {self.outcome}{retry}"


def final_path(state_dir: Path, task_id: str) -> Path:
    return Path(state_dir) / FINAL_DIR / f"{task_id}.json"


def save(state_dir: Path | None, pending: PendingStatus) -> Path | None:
    """Write the pending status atomically (0600, folder 0700), owned by this process; None without a state dir.
    A failure is logged, never raised: the status is then only tried in this run."""
    if state_dir is None:
        return None
    path = final_path(state_dir, pending.task_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{pending.task_id}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump({**asdict(pending), "owner": owners.Owner.me().as_dict()}, handle, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as err:
        logger.warning("could not keep the final status of task %s on disk: %s", pending.task_id, err)
        return None
    owners.hold(path)
    return path


def release(state_dir: Path | None, task_id: str, *, delivered: bool) -> None:
    """This run is done with the status: delete it when delivered, else leave it to the next load."""
    if state_dir is None:
        return
    path = final_path(state_dir, task_id)
    owners.release(path)
    if delivered:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _read(path: Path) -> tuple[PendingStatus | None, owners.Owner | None]:
    try:
        data = json.loads(path.read_text())
        fields = {k: str(data[k]) for k in PendingStatus.__dataclass_fields__}
        return PendingStatus(**fields), owners.Owner.from_dict(data.get("owner"))
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def leftovers(state_dir: Path) -> list[tuple[Path, PendingStatus | None]]:
    """The pending statuses under `state_dir` that nobody works on any more (None: an unreadable file)."""
    folder = Path(state_dir) / FINAL_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        pending, owner = _read(path)
        if pending is None or owners.is_leftover(path, owner):
            found.append((path, pending))
    return found


def moved_on(session: api.Session, task_id: str, worker_id: str) -> str:
    """Why a task that `worker_id` ran is no longer its to end (re-run by another worker, reset, ended meanwhile),
    else "" (it is still in_progress there)."""
    found = api.tasks.get_all(session, ids=[task_id], only_fields=["status", "last_worker"], search_hidden=True)
    if not found:
        return "the task is no longer on the server"
    status, last_worker = str(found[0].get("status") or ""), str(found[0].get("last_worker") or "")
    if status != "in_progress":
        return f"the task is {status or 'unknown'} now"
    if last_worker and last_worker != worker_id:
        return f"worker {last_worker} runs the task now"
    return ""


def deliver(path: Path, pending: PendingStatus, session: api.Session) -> Delivered:
    """Report a leftover status, unless the task moved on meanwhile; the file goes once delivered or not needed."""
    owners.hold(path)
    try:
        moved = moved_on(session, pending.task_id, pending.worker_id)
        if moved:
            outcome, keep = f"not delivered: {moved}", False
        else:
            pending.send(session)
            outcome, keep = "delivered", False
    except TransportError as err:
        outcome, keep = f"not delivered: server {mask_url(pending.api_server)} unreachable ({err.cause})", True
    except APIError as err:
        # E.g. 400/110: the task's own SDK (or a user) moved it on meanwhile; that status stands.
        outcome, keep = f"not delivered: the server refused ({err})", err.code in (401, 403)
    finally:
        owners.release(path)
    if not keep:
        path.unlink(missing_ok=True)
    return Delivered(pending.task_id, pending.status, outcome, keep)
