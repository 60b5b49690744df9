"""task_registry: pid files of running tasks, and reaping the orphans of a dead kernel against the embedded server.

Real processes stand in for the task (`sleep`/`bash` in their own session, as TaskProcess starts them) and for the
dead kernel (a process that has exited); the server is the embedded one on a free port.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from notebook_agent import api
from notebook_agent.config import load_config
from notebook_agent.engine import task_registry
from notebook_agent.engine.task_registry import (
    AGENT_OWNER,
    KERNEL_OWNER,
    Reaped,
    TaskRecord,
    leftover_reason,
    owner_kind,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups and sessions")

WORKER = "host:test:0"


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting to be reaped."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    ticker = threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        ticker.wait(0.05)


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start processes in their own session (as tasks run); whatever is left is killed afterwards."""
    started: list[subprocess.Popen[str]] = []

    def start(argv: list[str], **kwargs: object) -> subprocess.Popen[str]:
        proc = subprocess.Popen(argv, start_new_session=True, text=True, **kwargs)  # type: ignore[call-overload]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture
def dead_owner(spawn) -> tuple[int, float]:
    """The pid and create time of a process that has exited: the kernel that ran the agent, now dead."""
    proc = spawn(["sleep", "60"])
    create_time = psutil.Process(proc.pid).create_time()
    proc.kill()
    proc.wait(5)
    return proc.pid, create_time


@pytest.fixture
def sessions(server) -> task_registry.SessionFor:
    return task_registry.session_factory([load_config(server.config_file, env={}).api])


def in_progress_task(raw, worker: str = WORKER) -> str:
    """A task that `worker` runs, as the server sees it (started, and reported by the worker)."""
    task_id = raw.new_task("long task")
    raw.ok("tasks.started", {"task": task_id, "force": True})
    raw.ok("workers.register", {"worker": worker, "queues": []})
    raw.ok("workers.status_report", {"worker": worker, "task": task_id, "timestamp": int(time.time() * 1000)})
    return task_id


def orphan_record(server, state_dir: Path, task_id: str, pid: int, owner: tuple[int, float]) -> TaskRecord:
    """The pid file a kernel (now `owner`, dead) wrote for task process `pid`."""
    record = replace(
        TaskRecord.for_process(task_id, WORKER, server.url, pid), owner_pid=owner[0], owner_create_time=owner[1]
    )
    task_registry.write(state_dir, record)
    return record


def task_doc(raw, task_id: str) -> dict:
    return raw.ok("tasks.get_by_id", {"task": task_id})["task"]


class TestPidFiles:
    def test_register_writes_an_owner_only_record_and_remove_deletes_it(self, tmp_path, spawn) -> None:
        proc = spawn(["sleep", "60"])
        path = task_registry.register(tmp_path, "t1", WORKER, "http://server:8008", proc.pid)
        assert path == tmp_path / "running" / "t1.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert [p.name for p in path.parent.iterdir()] == ["t1.json"]  # the temporary file was renamed away
        data = json.loads(path.read_text())
        me = psutil.Process()
        assert data["task_id"] == "t1" and data["worker_id"] == WORKER and data["api_server"] == "http://server:8008"
        assert data["pid"] == proc.pid and data["create_time"] == psutil.Process(proc.pid).create_time()
        # the task leads its own session and group, apart from ours: a SIGINT to our group never reaches it
        assert data["pgid"] == data["sid"] == proc.pid != os.getsid(0)
        assert data["owner_pid"] == me.pid and data["owner_create_time"] == me.create_time()
        assert data["started_at"] <= time.time()
        assert task_registry.read(path) == TaskRecord.from_json(path.read_text())
        task_registry.remove(tmp_path, "t1")
        assert not path.exists()
        task_registry.remove(tmp_path, "t1")  # already gone: fine

    def test_nothing_is_written_without_a_state_dir_or_a_process(self, tmp_path, dead_owner) -> None:
        assert task_registry.register(None, "t1", WORKER, "http://s", os.getpid()) is None
        assert task_registry.register(tmp_path, "t1", WORKER, "http://s", None) is None
        assert task_registry.register(tmp_path, "t1", WORKER, "http://s", dead_owner[0]) is None
        assert not (tmp_path / "running" / "t1.json").exists()


class TestReap:
    def test_a_live_orphan_group_is_ended_and_its_task_marked_stopped(
        self, server, raw, sessions, tmp_path, spawn, dead_owner
    ) -> None:
        # The task ignores SIGTERM, as does the child it started in its group: the reaper steps up to SIGKILL.
        task = spawn(["bash", "-c", 'trap "" TERM; sleep 60 & echo $!; wait'], stdout=subprocess.PIPE)
        child = int(task.stdout.readline())
        task_id = in_progress_task(raw)
        orphan_record(server, tmp_path, task_id, task.pid, dead_owner)

        started = time.monotonic()
        (reaped,) = task_registry.reap(tmp_path, sessions, grace=0.5)

        assert task.wait(5) == -signal.SIGKILL and gone(child)
        assert time.monotonic() - started < 0.5 + task_registry.KILL_WAIT_SEC
        assert (reaped.task_id, reaped.process, reaped.server, reaped.kept) == (task_id, "stopped", "stopped", False)
        assert task_id in reaped.message() and "was stopped" in reaped.message()
        doc = task_doc(raw, task_id)
        assert doc["status"] == "stopped" and doc["status_reason"] == leftover_reason(owner_kind(), "stopped")
        assert doc["status_message"] == f"Changed by notebook-agent {WORKER}"
        assert not task_registry.pid_file(tmp_path, task_id).exists()

    def test_a_task_whose_process_is_gone_is_marked_with_that_reason(
        self, server, raw, sessions, tmp_path, spawn, dead_owner
    ) -> None:
        task = spawn(["sleep", "60"])
        task_id = in_progress_task(raw)
        orphan_record(server, tmp_path, task_id, task.pid, dead_owner)
        task.kill()
        task.wait(5)

        (reaped,) = task_registry.reap(tmp_path, sessions)

        assert (reaped.process, reaped.server) == ("gone", "stopped")
        doc = task_doc(raw, task_id)
        assert doc["status"] == "stopped" and doc["status_reason"] == leftover_reason(owner_kind(), "gone")

    def test_entries_of_a_live_owner_are_left_alone(self, server, raw, sessions, tmp_path, spawn) -> None:
        task = spawn(["sleep", "60"])
        task_id = in_progress_task(raw)
        path = task_registry.register(tmp_path, task_id, WORKER, server.url, task.pid)  # owner: this process

        assert task_registry.reap(tmp_path, sessions, grace=0.5) == []

        assert path is not None and path.exists() and task.poll() is None
        assert task_doc(raw, task_id)["status"] == "in_progress"

    def test_an_unreachable_server_keeps_the_file_for_the_next_load(
        self, server, raw, sessions, tmp_path, spawn, dead_owner
    ) -> None:
        task = spawn(["sleep", "60"])
        task_id = in_progress_task(raw)
        orphan_record(server, tmp_path, task_id, task.pid, dead_owner)
        creds = server.credentials

        def unreachable(_: str) -> api.Session:
            return api.Session("http://127.0.0.1:9", creds.access_key, creds.secret_key, retry_total_seconds=0.2)

        (first,) = task_registry.reap(tmp_path, unreachable, grace=0.5)

        assert (first.process, first.kept) == ("stopped", True) and "unreachable" in first.server
        assert "kept for the next" in first.message()
        assert task.wait(5) == -signal.SIGTERM  # the orphan is ended all the same
        kept = task_registry.read(task_registry.pid_file(tmp_path, task_id))
        assert kept is not None and kept.stopped_at is not None
        assert task_doc(raw, task_id)["status"] == "in_progress"

        (second,) = task_registry.reap(tmp_path, sessions)  # the next load reaches the server

        assert (second.process, second.server, second.kept) == ("stopped", "stopped", False)
        assert task_doc(raw, task_id)["status_reason"] == leftover_reason(
            owner_kind(), "stopped"
        )  # it was stopped, not found gone
        assert not task_registry.pid_file(tmp_path, task_id).exists()

    def test_without_credentials_for_its_server_the_file_is_kept(self, server, raw, tmp_path, spawn, dead_owner):
        task = spawn(["sleep", "60"])
        task_id = in_progress_task(raw)
        orphan_record(server, tmp_path, task_id, task.pid, dead_owner)

        (reaped,) = task_registry.reap(tmp_path, task_registry.session_factory([]), grace=0.5)

        assert reaped.kept and "no credentials" in reaped.server
        assert task_registry.pid_file(tmp_path, task_id).exists()

    def test_a_reused_task_pid_is_never_signalled(self, server, raw, sessions, tmp_path, spawn, dead_owner) -> None:
        task = spawn(["sleep", "60"])
        task_id = in_progress_task(raw)
        record = orphan_record(server, tmp_path, task_id, task.pid, dead_owner)
        # The same pid, but a process that started at another time: an unrelated program got the pid.
        task_registry.write(tmp_path, replace(record, create_time=record.create_time - 1000))

        (reaped,) = task_registry.reap(tmp_path, sessions, grace=0.5)

        assert task.poll() is None  # still running
        assert (reaped.process, reaped.server) == ("gone", "stopped")
        assert task_doc(raw, task_id)["status_reason"] == leftover_reason(owner_kind(), "gone")

    def test_a_reused_owner_pid_counts_as_dead(self, server, raw, sessions, tmp_path, spawn) -> None:
        task = spawn(["sleep", "60"])
        task_id = in_progress_task(raw)
        me = psutil.Process()
        orphan_record(server, tmp_path, task_id, task.pid, (me.pid, me.create_time() - 1000))

        (reaped,) = task_registry.reap(tmp_path, sessions, grace=2.0)

        assert reaped.process == "stopped" and task.wait(5) == -signal.SIGTERM

    def test_a_task_another_worker_runs_now_or_already_ended_is_left_as_it_is(
        self, server, raw, sessions, tmp_path, spawn, dead_owner
    ) -> None:
        moved_on = in_progress_task(raw, worker="host:other:0")
        completed = in_progress_task(raw)
        raw.ok("tasks.completed", {"task": completed})
        for task_id in (moved_on, completed):
            orphan_record(server, tmp_path, task_id, spawn(["sleep", "60"]).pid, dead_owner)

        reaped = {r.task_id: r for r in task_registry.reap(tmp_path, sessions, grace=0.5)}

        assert "worker host:other:0 runs the task now" in reaped[moved_on].server
        assert reaped[completed].server == "left alone: the task is completed now"
        assert task_doc(raw, moved_on)["status"] == "in_progress"
        assert task_doc(raw, completed)["status"] == "completed"
        assert not any(task_registry.running_dir(tmp_path).iterdir())

    def test_entries_of_another_machine_are_left_alone(self, server, sessions, tmp_path, spawn, dead_owner) -> None:
        record = orphan_record(server, tmp_path, "t-elsewhere", spawn(["sleep", "60"]).pid, dead_owner)
        task_registry.write(tmp_path, replace(record, host="another-machine"))

        assert task_registry.reap(tmp_path, sessions) == []
        assert task_registry.pid_file(tmp_path, "t-elsewhere").exists()

    def test_an_unreadable_file_is_removed_and_reported(self, sessions, tmp_path) -> None:
        broken = task_registry.running_dir(tmp_path)
        broken.mkdir(parents=True)
        (broken / "t-broken.json").write_text("{not json")

        (reaped,) = task_registry.reap(tmp_path, sessions)

        assert (reaped.task_id, reaped.process) == ("t-broken", "unreadable")
        assert not (broken / "t-broken.json").exists()

    def test_no_running_folder_means_nothing_to_do(self, sessions, tmp_path) -> None:
        assert task_registry.reap(tmp_path / "missing", sessions) == []


def test_reaping_waits_with_a_deadline(monkeypatch, server, raw, sessions, tmp_path, spawn, dead_owner) -> None:
    """A group that survives even SIGKILL (here: signals swallowed) costs grace + KILL_WAIT_SEC, not forever."""
    task = spawn(["sleep", "60"])
    task_id = in_progress_task(raw)
    orphan_record(server, tmp_path, task_id, task.pid, dead_owner)
    monkeypatch.setattr(task_registry, "_signal_group", lambda pgid, sig: None)
    monkeypatch.setattr(task_registry, "_signal_pid", lambda pid, sig: None)
    monkeypatch.setattr(task_registry, "KILL_WAIT_SEC", 0.3)

    started = time.monotonic()
    (reaped,) = task_registry.reap(tmp_path, sessions, grace=0.3)

    assert time.monotonic() - started < 3.0
    assert reaped.process == "stopped" and task.poll() is None


class TestLeftoverDelivery:
    """What a dead (or stopped) agent could not deliver: its log spool first, then its final status."""

    @staticmethod
    def owned_by(path: Path, owner: tuple[int, float]) -> None:
        data = json.loads(path.read_text())
        data["owner"].update(pid=owner[0], create_time=owner[1])
        path.write_text(json.dumps(data))

    def leave_behind(self, server, state_dir: Path, task_id: str, owner: tuple[int, float]) -> None:
        """A spool with three lines and a pending `completed`, as an agent that died during an outage leaves them."""
        from notebook_agent.engine import final_status
        from notebook_agent.engine.log_spool import LogSpool, spool_path

        spool = LogSpool(spool_path(state_dir, task_id), meta={"task_id": task_id, "api_server": server.url})
        spool.append(
            [
                {"task": task_id, "type": "log", "timestamp": 1_700_000_000_000 + i, "level": "info", "msg": f"l{i}"}
                for i in range(3)
            ]
        )
        spool.keep()
        self.owned_by(spool.path.with_name(f"{task_id}.state.json"), owner)
        pending = final_status.PendingStatus(task_id, WORKER, server.url, "completed", "worker execution done", "m")
        path = final_status.save(state_dir, pending)
        assert path is not None
        final_status.release(state_dir, task_id, delivered=False)
        self.owned_by(path, owner)

    def test_the_log_then_the_final_status_are_delivered_and_the_files_go(
        self, server, raw, sessions, tmp_path, dead_owner
    ) -> None:
        task_id = in_progress_task(raw)
        self.leave_behind(server, tmp_path, task_id, dead_owner)

        replayed, delivered = task_registry.reap(tmp_path, sessions)

        assert "3 leftover log events sent" in replayed.message() and not replayed.kept
        assert delivered.outcome == "delivered" and not delivered.kept
        doc = task_doc(raw, task_id)
        assert (doc["status"], doc["status_reason"]) == ("completed", "worker execution done")
        page = raw.ok("events.get_task_log", {"task": task_id, "navigate_earlier": False, "order": "asc"})
        assert [e["msg"] for e in page["events"]] == ["l0", "l1", "l2"]
        assert list((tmp_path / "spool").iterdir()) == [] and list((tmp_path / "final").iterdir()) == []

    def test_an_unreachable_server_keeps_both_and_the_status_waits_for_its_log(
        self, server, raw, sessions, tmp_path, dead_owner
    ) -> None:
        task_id = in_progress_task(raw)
        self.leave_behind(server, tmp_path, task_id, dead_owner)
        creds = server.credentials

        def unreachable(_: str) -> api.Session:
            return api.Session("http://127.0.0.1:9", creds.access_key, creds.secret_key, retry_total_seconds=0.2)

        replayed, waiting = task_registry.reap(tmp_path, unreachable)

        assert replayed.kept and "unreachable" in replayed.outcome
        assert waiting.kept and waiting.outcome == "waits for its log"
        assert task_doc(raw, task_id)["status"] == "in_progress"
        assert len(task_registry.reap(tmp_path, sessions)) == 2  # the next load delivers both
        assert task_doc(raw, task_id)["status"] == "completed"

    def test_files_of_a_live_owner_are_left_alone(self, server, raw, sessions, tmp_path, spawn) -> None:
        live = spawn(["sleep", "60"])
        task_id = in_progress_task(raw)
        self.leave_behind(server, tmp_path, task_id, (live.pid, psutil.Process(live.pid).create_time()))
        assert task_registry.reap(tmp_path, sessions) == []
        assert task_doc(raw, task_id)["status"] == "in_progress"

    def test_a_status_for_a_task_that_moved_on_is_dropped(self, server, raw, sessions, tmp_path, dead_owner) -> None:
        task_id = in_progress_task(raw, worker="another:worker:1")  # re-run elsewhere meanwhile
        self.leave_behind(server, tmp_path, task_id, dead_owner)
        _, dropped = task_registry.reap(tmp_path, sessions)
        assert "another:worker:1 runs the task now" in dropped.outcome and not dropped.kept
        assert task_doc(raw, task_id)["status"] == "in_progress"
        assert list((tmp_path / "final").iterdir()) == []


def test_leftovers_name_what_left_them() -> None:
    daemon = Reaped("t" * 32, "host:cpu:0", 123, "stopped", "stopped", owner=AGENT_OWNER)
    assert "outlived the agent process that ran it: its process 123 was stopped" in daemon.message()
    assert "kernel" not in daemon.message() and "%load_ext" not in daemon.message()
    assert "kernel" not in leftover_reason(AGENT_OWNER, "stopped")
    kernel = Reaped("t" * 32, "host:0", 123, "gone", "stopped", owner=KERNEL_OWNER)
    assert "outlived the notebook kernel that ran it: its process 123 was gone" in kernel.message()
    # A CLI daemon imports no ipykernel: its records say so. Records written before the field were kernels'.
    probe = "from notebook_agent.engine.task_registry import owner_kind; print(owner_kind())"
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == AGENT_OWNER
    fields = {"task_id": "t", "worker_id": "w", "api_server": "http://x", "pid": 1, "pgid": 1, "sid": 1}
    times = {"create_time": 1.0, "owner_pid": 2, "owner_create_time": 1.0, "boot_time": 1.0, "started_at": 1.0}
    old = {**fields, **times, "host": "h", "schema": 1}
    assert TaskRecord.from_json(json.dumps(old)).owner == KERNEL_OWNER
