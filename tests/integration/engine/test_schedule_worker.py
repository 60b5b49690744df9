"""Acceptance: a worker outside its working hours stays registered and idle; force switches override that."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from notebook_agent.engine.events import TaskPulled, WorkerState, WorkerStateChanged
from tests.integration.engine.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ALWAYS_DOWN = ["0-00 SUN-SAT"]  # every hour of the week is downtime, whatever the time the test runs


def enqueue_script(raw, name: str, queue: str) -> str:
    task_id = raw.new_task(
        name, script={"binary": "python3", "entry_point": "job.py", "working_dir": ".", "diff": "print('ran')\n"}
    )
    raw.ok("tasks.enqueue", {"task": task_id, "queue": queue})
    return task_id


def status(raw, task_id: str) -> str:
    return raw.ok("tasks.get_by_id", {"task": task_id})["task"]["status"]


def holds(predicate: Callable[[], bool], seconds: float, interval: float = 0.1) -> None:
    """Assert that `predicate` stays true for `seconds` (several of the worker's hold cycles)."""
    pause = threading.Event()
    for _ in range(int(seconds / interval)):
        assert predicate()
        pause.wait(interval)
    assert predicate()


def test_downtime_holds_force_on_pulls_queue_tag_off_beats_it(raw, run_worker):
    queue = raw.default_queue()
    first = enqueue_script(raw, "queued in downtime", queue)
    run = run_worker([], stop_when_idle=False, downtime=ALWAYS_DOWN, force_check_sec=0.2, queue_tags_check_sec=0.2)
    with run:
        worker = run.worker
        schedule_reason = "outside working hours (downtime 0-00 SUN-SAT)"
        wait_for(lambda: worker.state_detail == schedule_reason, timeout=15)
        assert worker.state is WorkerState.IDLE
        live = {w["id"] for w in raw.ok("workers.get_all", {})["workers"]}
        assert worker.worker_id in live  # registered and reporting, only not pulling
        holds(lambda: status(raw, first) == "queued", seconds=1.5)
        assert not [e for e in run.events if isinstance(e, TaskPulled)]
        worker.pause()  # ends the hold's short wait at once
        wait_for(lambda: worker.state is WorkerState.PAUSED, timeout=1)
        worker.resume()
        wait_for(lambda: worker.state_detail == schedule_reason, timeout=5)

        # The worker runtime property beats the schedule.
        force_on = [{"key": "force", "value": "on", "expiry": 600}]
        raw.ok("workers.set_runtime_properties", {"worker": worker.worker_id, "runtime_properties": force_on})
        wait_for(lambda: status(raw, first) == "completed", timeout=60)

        # The queue tag beats the runtime property.
        raw.ok("queues.update", {"queue": queue, "tags": ["force_workers:off"]})
        tag_reason = "forced off by queue tag force_workers:off on queue default"
        wait_for(lambda: worker.state_detail == tag_reason, timeout=10)
        second = enqueue_script(raw, "queued while tagged off", queue)
        holds(lambda: status(raw, second) == "queued", seconds=1.5)
        assert worker.state is WorkerState.IDLE

    details = [e.detail for e in run.events if isinstance(e, WorkerStateChanged) and e.state is WorkerState.IDLE]
    assert schedule_reason in details and tag_reason in details  # what the CLI and the notebook show
    assert [e.task_id for e in run.events if isinstance(e, TaskPulled)] == [first]


def test_a_switch_flipped_during_a_long_poll_is_read_when_the_wait_ends(raw, run_worker):
    """The server ends a pending long poll when a force switch changes; the worker then reads the switches again,
    however long their usual staleness bound (here 10 minutes: only the ended wait can explain a prompt read)."""
    queue = raw.default_queue()
    run = run_worker([], stop_when_idle=False, force_check_sec=600, queue_tags_check_sec=600)
    with run:
        worker = run.worker
        wait_for(lambda: worker._long_poll and worker.state is WorkerState.IDLE, timeout=15)
        force_off = [{"key": "force", "value": "off", "expiry": 600}]
        raw.ok("workers.set_runtime_properties", {"worker": worker.worker_id, "runtime_properties": force_off})
        wait_for(lambda: "force" in worker.state_detail, timeout=10)
        task_id = enqueue_script(raw, "queued while forced off", queue)
        holds(lambda: status(raw, task_id) == "queued", seconds=1.0)
        raw.ok("queues.update", {"queue": queue, "tags": ["force_workers:on"]})
        wait_for(lambda: status(raw, task_id) == "completed", timeout=60)
