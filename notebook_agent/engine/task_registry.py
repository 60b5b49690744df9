"""Pid files of running tasks, and reaping the task processes that a dead kernel or daemon left behind.

While a task process runs, its runner keeps `<state_dir>/running/<task_id>.json`. A task leads its own session,
so a kernel restart (SIGKILL to the kernel's process group) kills the agent's threads but not the task: it goes on
as an orphan that nobody watches, and the server shows it `in_progress` until its watchdog gives up hours later.
The same holds for a `notebook-agent daemon` killed with SIGKILL. The next `%load_ext notebook_agent`,
`Agent.start()` or `notebook-agent daemon` calls `reap()`: for every file whose owner (the process
that ran the agent) is dead, it ends the task's session, tells the server the task was stopped, and removes the
file. Pids are checked together with their start time, so a pid reused by an unrelated process is never signalled.

Before that, `reap()` delivers what a stopped or dead agent could not (its owner gone): the log lines left in its
spools (engine/log_spool.py), then the final statuses it had not delivered (engine/final_status.py), keeping the
files when the server is unreachable, as it keeps pid files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import psutil

from notebook_agent import api
from notebook_agent.api import APIError, TransportError
from notebook_agent.config import ApiConfig
from notebook_agent.engine import final_status, log_spool

# The signalling helpers of the module that owns task processes: the same guards (never our own process or
# process group, never init) apply when a later kernel ends a task that an earlier one started.
from notebook_agent.engine.process import _alive, _descendants, _session_members, _signal_group, _signal_pid
from notebook_agent.masking import mask_url

logger = logging.getLogger(__name__)

RUNNING_DIR = "running"
SCHEMA = 1
REAP_GRACE_SEC = 5.0  # SIGTERM to SIGKILL for an orphan: nobody reads its output any more
KILL_WAIT_SEC = 5.0  # after SIGKILL: how long to wait for the processes to go
REAP_RETRY_SEC = 5.0  # the server's retry budget while reaping: an unreachable server keeps the file for next time
TIME_SLACK_SEC = 1.0  # create/boot times read at different moments may differ by a clock tick or a btime jitter
# The task's status on the server. clearml-agent reports `stopped` when its own run is cut short (Ctrl-C:
# handle_user_abort) and the server's non-responsive watchdog forces `stopped` on a task whose agent vanished;
# `failed` is kept for an exit code seen, which nobody saw here. So both cases are `stopped`; the reason differs.
# Who ran the agent that left a task (TaskRecord.owner): said in the reason, since a CLI daemon is no kernel.
KERNEL_OWNER = "notebook kernel"
AGENT_OWNER = "agent process"


def leftover_reason(owner: str, process: str) -> str:
    """The status reason of a task whose agent ended while it ran: `owner` as recorded, `process` "stopped" (the
    reaper ended it) or "gone" (it had ended by itself)."""
    what = "its process was stopped" if process == "stopped" else "the task process was gone"
    return f"the {owner} that ran the task ended (killed or restarted) while the task ran; {what}"


def owner_kind() -> str:
    """What runs this agent, for the records it writes: an IPython kernel, or another process (a CLI daemon)."""
    return KERNEL_OWNER if "ipykernel" in sys.modules else AGENT_OWNER


_REAP_LOCK = threading.Lock()  # `%load_ext` and `Agent.start()` may both reap; one at a time, so each file once


@dataclass(frozen=True)
class TaskRecord:
    """What `<state_dir>/running/<task_id>.json` holds: enough to find the task's process group again after the
    process that started it died, and to tell a reused pid apart (pid plus its psutil create time)."""

    task_id: str
    worker_id: str
    api_server: str
    pid: int  # the task process: leader of its own session and process group
    pgid: int
    sid: int
    create_time: float  # psutil create_time of `pid`
    owner_pid: int  # the process that runs the agent (the kernel)
    owner_create_time: float
    host: str  # pids mean nothing on another machine (a state_dir on a shared drive)
    boot_time: float  # after a reboot every recorded process is gone
    started_at: float  # wall clock, when the task process started
    stopped_at: float | None = None  # a reaper ended the process but could not tell the server yet
    owner: str = KERNEL_OWNER  # KERNEL_OWNER or AGENT_OWNER (records written before this field: kernels')
    schema: int = SCHEMA

    @classmethod
    def for_process(cls, task_id: str, worker_id: str, api_server: str, pid: int) -> TaskRecord:
        """The record of the running task process `pid`, owned by this process; psutil.Error if `pid` is gone."""
        proc, owner = psutil.Process(pid), psutil.Process()
        return cls(
            task_id=task_id,
            worker_id=worker_id,
            api_server=api_server,
            pid=pid,
            pgid=os.getpgid(pid),
            sid=os.getsid(pid),
            create_time=proc.create_time(),
            owner_pid=owner.pid,
            owner_create_time=owner.create_time(),
            host=socket.gethostname(),
            boot_time=psutil.boot_time(),
            started_at=time.time(),
            owner=owner_kind(),
        )

    @classmethod
    def from_json(cls, text: str) -> TaskRecord:
        data = json.loads(text)
        fields = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in data.items() if key in fields})


@dataclass(frozen=True)
class Reaped:
    """One leftover task handled by `reap()`: what happened to its process and what the server was told."""

    task_id: str
    worker_id: str
    pid: int
    process: str  # "stopped" (we ended it), "gone" (it had ended already) or "unreadable" (a broken file)
    server: str  # "stopped" when the task was marked, else what kept us from it
    kept: bool = False  # the file stays, so that the next load tries the server again
    owner: str = "agent"  # what ran the agent that left the task (TaskRecord.owner); unknown for a broken file

    def message(self) -> str:
        """One line for `Agent.messages` and the panel."""
        process = {"stopped": f"its process {self.pid} was stopped", "gone": f"its process {self.pid} was gone"}.get(
            self.process, "its pid file was unreadable and was removed"
        )
        server = "marked stopped on the server" if self.server == "stopped" else self.server
        retry = "; kept for the next start of an agent" if self.kept else ""
        return (
            f"task {self.task_id} (worker {self.worker_id or '?'}) outlived the {self.owner} that ran it: {process}; "
            f"{server}{retry}"
        )


# the pid files ----------------------------------------------------------------------------------------------------
def running_dir(state_dir: Path) -> Path:
    return Path(state_dir) / RUNNING_DIR


def pid_file(state_dir: Path, task_id: str) -> Path:
    return running_dir(state_dir) / f"{task_id}.json"


def write(state_dir: Path, record: TaskRecord) -> Path:
    """Write the record atomically (a reader never sees half a file), readable by its owner only."""
    folder = running_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{record.task_id}.", suffix=".tmp", dir=folder)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(record), handle, indent=1, sort_keys=True)
        target = pid_file(state_dir, record.task_id)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def register(state_dir: Path | None, task_id: str, worker_id: str, api_server: str, pid: int | None) -> Path | None:
    """The runner's call once the task process started: write its pid file (None: no state_dir, or it failed).

    A failure is logged, never raised: the task runs fine without the file, only a kernel restart would then
    leave it unreaped."""
    if state_dir is None or pid is None:
        return None
    try:
        return write(state_dir, TaskRecord.for_process(task_id, worker_id, api_server, pid))
    except (OSError, psutil.Error) as err:
        logger.warning("could not write the pid file of task %s: %s", task_id, err)
        return None


def remove(state_dir: Path | None, task_id: str) -> None:
    """The runner's call when the task ended, whichever way."""
    if state_dir is None:
        return
    try:
        pid_file(state_dir, task_id).unlink(missing_ok=True)
    except OSError as err:
        logger.warning("could not remove the pid file of task %s: %s", task_id, err)


def read(path: Path) -> TaskRecord | None:
    """The record in `path`; None when it is missing or not a record."""
    try:
        return TaskRecord.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as err:
        logger.warning("unreadable pid file %s: %s", path, err)
        return None


# liveness ---------------------------------------------------------------------------------------------------------
def _same_process(pid: int, create_time: float) -> psutil.Process | None:
    """The live process `pid` if it is the one that started at `create_time` (not a reuse of its pid)."""
    try:
        proc = psutil.Process(pid)
        if _alive(proc) and abs(proc.create_time() - create_time) <= TIME_SLACK_SEC:
            return proc
    except psutil.Error:
        pass
    return None


def _this_boot(record: TaskRecord) -> bool:
    return abs(record.boot_time - psutil.boot_time()) <= TIME_SLACK_SEC


def owner_alive(record: TaskRecord) -> bool:
    """True while the process that ran the agent lives: its tasks are its own business."""
    return _this_boot(record) and _same_process(record.owner_pid, record.owner_create_time) is not None


def group_alive(record: TaskRecord) -> bool:
    """True while the task process, or anything left in its session, still runs."""
    if not _this_boot(record):
        return False
    with contextlib.suppress(psutil.Error):
        leader = psutil.Process(record.pid)
        if _alive(leader):
            # A live pid that is not our task: the pid was reused, which the system does only once the old
            # session and group are empty, so nothing of the task is left.
            return _same_process(record.pid, record.create_time) is not None
    return any(_alive(p) for p in _session_members(record.sid))


def terminate_group(record: TaskRecord, grace: float = REAP_GRACE_SEC) -> None:
    """SIGTERM to the task's group, session and descendants, up to `grace` seconds to exit, then SIGKILL."""
    if not group_alive(record):  # also when the pid was reused: then the group is no longer the task's
        return
    leader = _same_process(record.pid, record.create_time)
    members = {p.pid: p for p in _session_members(record.sid)}
    if leader is not None:
        members[leader.pid] = leader
        members.update((p.pid, p) for p in _descendants(leader.pid))  # children that called setsid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT_SEC)):
        _signal_group(record.pgid, sig)
        for proc in members.values():
            if _alive(proc):
                _signal_pid(proc.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not any(_alive(p) for p in members.values()) and not any(
                _alive(p) for p in _session_members(record.sid)
            ):
                return
            time.sleep(0.05)
        members.update((p.pid, p) for p in _session_members(record.sid))
    logger.warning("task %s: process group %s did not exit after SIGKILL", record.task_id, record.pgid)


# reaping ----------------------------------------------------------------------------------------------------------
SessionFor = Callable[[str], api.Session | None]


def session_factory(api_configs: Iterable[ApiConfig], *, retry_sec: float = REAP_RETRY_SEC) -> SessionFor:
    """`session_for(api_server)` over the servers we have credentials for; None for any other server."""
    known: dict[str, ApiConfig] = {}
    for config in api_configs:
        if config.configured:
            known.setdefault(config.api_server.rstrip("/"), config)

    def session_for(api_server: str) -> api.Session | None:
        config = known.get(api_server.rstrip("/"))
        if config is None:
            return None
        return api.Session.from_config(config, retry_total_seconds=retry_sec, timeout=retry_sec)

    return session_for


Leftover = Reaped | log_spool.Replayed | final_status.Delivered


def reap(state_dir: Path, session_for: SessionFor, *, grace: float = REAP_GRACE_SEC) -> list[Leftover]:
    """Deliver leftover log spools and final statuses, then handle the pid files under `state_dir` whose owner is
    dead (see the module docstring); entries of a live owner, or of another machine, are left alone. Blocks up to
    `grace` + a few seconds per live orphan plus the server calls: run it in a thread where that matters."""
    with _REAP_LOCK:
        results: list[Leftover] = [*_replay_spools(state_dir, session_for), *_deliver_statuses(state_dir, session_for)]
        folder = running_dir(state_dir)
        if not folder.is_dir():
            return results
        for path in sorted(folder.glob("*.json")):
            record = read(path)
            if record is None:
                if path.exists():  # not a record at all (ours are written atomically): it can never be reaped
                    path.unlink(missing_ok=True)
                    results.append(Reaped(path.stem, "", 0, "unreadable", "the server was not told"))
                continue
            if record.host != socket.gethostname() or owner_alive(record):
                continue
            results.append(_reap_one(path, state_dir, record, session_for, grace))
        return results


def _replay_spools(state_dir: Path, session_for: SessionFor) -> list[log_spool.Replayed]:
    results = []
    for path, meta in log_spool.leftover_spools(state_dir):
        task_id = str(meta.get("task_id") or path.name.removesuffix(".jsonl"))
        session = session_for(str(meta.get("api_server") or ""))
        if session is None:
            results.append(
                log_spool.Replayed(task_id, 0, f"no credentials for its server {meta.get('api_server')}", True)
            )
            continue
        try:
            results.append(log_spool.replay_leftover(state_dir, task_id, session, REAP_RETRY_SEC))
        finally:
            session.close()
    return results


def _deliver_statuses(state_dir: Path, session_for: SessionFor) -> list[final_status.Delivered]:
    results = []
    for path, pending in final_status.leftovers(state_dir):
        if pending is None:
            logger.warning("removing the unreadable final status file %s", path)
            path.unlink(missing_ok=True)
            continue
        if log_spool.spool_path(state_dir, pending.task_id).exists():
            # Its log is still in the spool (the server went away again): the status must not come before it.
            results.append(final_status.Delivered(pending.task_id, pending.status, "waits for its log", True))
            continue
        session = session_for(pending.api_server)
        if session is None:
            outcome = f"not delivered: no credentials for its server {mask_url(pending.api_server)}"
            results.append(final_status.Delivered(pending.task_id, pending.status, outcome, True))
            continue
        try:
            results.append(final_status.deliver(path, pending, session))
        finally:
            session.close()
    return results


def _reap_one(path: Path, state_dir: Path, record: TaskRecord, session_for: SessionFor, grace: float) -> Reaped:
    if record.stopped_at is None and group_alive(record):
        logger.info("task %s outlived its %s; stopping its process group %s", record.task_id, record.owner, record.pgid)
        terminate_group(record, grace)
        record = replace(record, stopped_at=time.time())
    process = "stopped" if record.stopped_at is not None else "gone"
    reason = leftover_reason(record.owner, process)
    session = session_for(record.api_server)
    if session is None:
        outcome, keep = f"no credentials for its server {mask_url(record.api_server)}", True
    else:
        try:
            outcome, keep = _mark(session, record, reason), False
        except TransportError as err:
            outcome, keep = f"server {mask_url(record.api_server)} unreachable ({err.cause})", True
        except APIError as err:
            # A login refused may work with the next load's credentials; anything else never will.
            outcome, keep = f"the server refused: {err}", err.code in (401, 403)
        finally:
            session.close()
    if keep:
        write(state_dir, record)  # with stopped_at, so the next try gives the right reason
    else:
        path.unlink(missing_ok=True)
    return Reaped(record.task_id, record.worker_id, record.pid, process, outcome, keep, record.owner)


def _mark(session: api.Session, record: TaskRecord, reason: str) -> str:
    """Mark the task stopped if it still shows as run by this worker; else say why it was left alone."""
    moved = final_status.moved_on(session, record.task_id, record.worker_id)
    if moved:
        return f"left alone: {moved}"
    api.tasks.stopped(
        session, record.task_id, status_reason=reason, status_message=f"Changed by notebook-agent {record.worker_id}"
    )
    return "stopped"
