"""Final statuses kept on disk until delivered, the runner's retrying of them, and the worker's re-registration."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from notebook_agent.api import APIError, TransportError
from notebook_agent.config import ApiConfig
from notebook_agent.engine import final_status, runner
from notebook_agent.engine.registration import Registration
from notebook_agent.engine.runner import RunnerSettings, TaskRunner


class Flaky:
    """A Sender that raises the given errors in turn, then answers; it records every endpoint called."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls: list[str] = []

    def send(self, endpoint: str, data: Any = None, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(endpoint)
        if self.errors:
            raise self.errors.pop(0)
        return {}


def down() -> TransportError:
    return TransportError("tasks.completed", "connection refused", maybe_delivered=False)


PENDING = final_status.PendingStatus("t1", "w:0", "http://server", "completed", "worker execution done", "by w:0")


def test_a_pending_status_is_private_held_while_worked_on_and_a_leftover_once_released(tmp_path: Path) -> None:
    path = final_status.save(tmp_path, PENDING)
    assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert final_status.leftovers(tmp_path) == []  # the runner still works on it
    final_status.release(tmp_path, "t1", delivered=False)
    assert final_status.leftovers(tmp_path) == [(path, PENDING)]
    final_status.release(tmp_path, "t1", delivered=True)
    assert not path.exists()
    assert final_status.save(None, PENDING) is None


def test_deliver_keeps_the_file_only_while_the_server_is_unreachable(tmp_path: Path) -> None:
    path = final_status.save(tmp_path, PENDING)
    assert path is not None
    final_status.release(tmp_path, "t1", delivered=False)
    kept = final_status.deliver(path, PENDING, Flaky(down()))  # type: ignore[arg-type]
    assert kept.kept and "unreachable" in kept.outcome and path.exists()
    refused = final_status.deliver(path, PENDING, Flaky(APIError(400, 110, "invalid status", "tasks.completed")))  # type: ignore[arg-type]
    assert not refused.kept and "refused" in refused.outcome and not path.exists()


@pytest.fixture
def task_runner(tmp_path: Path, monkeypatch) -> TaskRunner:
    monkeypatch.setattr(runner, "STATUS_RETRY_SEC", 0.01)
    api_config = ApiConfig(api_server="http://server", web_server="", files_server="", credentials=None)
    return TaskRunner(Flaky(), api_config, "w:0", RunnerSettings(work_root=tmp_path), base_env={})  # type: ignore[arg-type]


def test_the_final_status_is_retried_until_it_lands(task_runner: TaskRunner) -> None:
    session = Flaky(down(), down())
    task_runner.session = session  # type: ignore[assignment]
    assert task_runner._deliver_status(PENDING)
    assert session.calls == ["tasks.completed"] * 3


def test_a_definitive_refusal_ends_the_retrying(task_runner: TaskRunner) -> None:
    session = Flaky(APIError(400, 110, "the task's own SDK closed it", "tasks.completed"))
    task_runner.session = session  # type: ignore[assignment]
    assert task_runner._deliver_status(PENDING)
    assert session.calls == ["tasks.completed"]


def test_a_leaving_worker_stops_retrying_and_keeps_the_status(task_runner: TaskRunner) -> None:
    task_runner.session = Flaky(*[down() for _ in range(100)])  # type: ignore[assignment]
    task_runner.leave()
    assert not task_runner._deliver_status(PENDING)


# re-registration ----------------------------------------------------------------------------------------------
def test_a_forgotten_worker_registers_again_and_an_outage_asks_for_it() -> None:
    registered: list[int] = []
    stopping = [False]
    reg = Registration(lambda: registered.append(1), lambda: stopping[0])
    assert reg.failed(APIError(400, 1001, "Invalid worker id", "workers.status_report"))
    assert reg.failed(APIError(400, 1004, "Worker is not registered", "workers.set_runtime_properties"))
    assert not reg.failed(APIError(400, 101, "Invalid task id", "workers.status_report"))
    assert len(registered) == 2
    assert not reg.renew()  # nothing asks for it
    assert not reg.failed(TransportError("queues.get_next_task", "down"))
    assert reg.renew() and len(registered) == 3  # after the outage
    stopping[0] = True
    assert not reg.failed(APIError(400, 1001, "Invalid worker id", "workers.status_report"))  # leaving: never
    assert len(registered) == 3 and reg.renewals == 3
