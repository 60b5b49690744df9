"""PanelState: engine events become a bounded, thread-safe picture of the worker for the panel and the magics."""

from __future__ import annotations

from notebook_agent.engine.events import (
    EnvBuildStep,
    EventBus,
    TaskLogLines,
    TaskPhase,
    TaskPhaseChanged,
    TaskPulled,
    WorkerState,
    WorkerStateChanged,
)
from notebook_agent.notebook.state import LOG_TAIL_LINES, RECENT_TASKS, PanelState


def test_events_build_the_picture() -> None:
    bus = EventBus()
    state = PanelState(bus)
    bus.publish(WorkerStateChanged("vm:0", WorkerState.IDLE, time=100.0))
    bus.publish(TaskPulled("t1", "q1", "default", time=101.0))
    bus.publish(TaskPhaseChanged("t1", TaskPhase.BUILDING, task_name="train", time=101.1))
    bus.publish(EnvBuildStep("t1", "requirements", 0.4))
    bus.publish(EnvBuildStep("t1", "requirements", 0.4, detail="3 packages installed"))
    bus.publish(EnvBuildStep("t1", "requirements", 0.4, seconds=1.5))  # an end changes nothing shown
    bus.publish(TaskLogLines("t1", "stdout", ("a", "b")))
    snap = state.snapshot()
    assert (snap.worker_id, snap.state, snap.started_at) == ("vm:0", WorkerState.IDLE, 100.0)
    task = snap.current
    assert task is not None and task.name == "train" and task.queue == "default"
    assert (task.step, task.step_detail, task.fraction) == ("requirements", "3 packages installed", 0.4)
    assert task.log_tail == ("a", "b") and task.log_lines == 2
    bus.publish(TaskPhaseChanged("t1", TaskPhase.COMPLETED, "done", exit_code=0, time=110.0))
    done = state.snapshot().task("t1")
    assert done is not None and not done.running and done.duration() == 9.0 and done.name == "train"
    state.close()
    bus.publish(TaskPulled("t2", None, None))
    assert state.snapshot().task("t2") is None  # unsubscribed


def test_bounded_log_and_task_list() -> None:
    state = PanelState()
    state.apply(TaskPulled("long", None, None))
    state.apply(TaskLogLines("long", "stdout", tuple(str(i) for i in range(LOG_TAIL_LINES + 50))))
    view = state.snapshot().task("long")
    assert view is not None and len(view.log_tail) == LOG_TAIL_LINES and view.log_tail[-1] == str(LOG_TAIL_LINES + 49)
    for i in range(RECENT_TASKS + 5):
        state.apply(TaskPulled(f"t{i}", None, None, time=float(i)))
        state.apply(TaskPhaseChanged(f"t{i}", TaskPhase.COMPLETED, time=float(i) + 0.5))
    assert len([t for t in state.snapshot().tasks if not t.running]) == RECENT_TASKS


def test_machine_samples_and_change_signal() -> None:
    state = PanelState()
    state.changed.clear()
    state.add_sample(
        {
            "cpu_usage": [10.0, 30.0],
            "memory_used": 1000.0,
            "memory_free": 3000.0,
            "gpu_usage": [50.0],
            "gpu_memory_used": [2048.0],
            "gpu_memory_free": [6144.0],
            "gpu_temperature": [61.0],
        }
    )
    snap = state.snapshot()
    assert state.changed.is_set() and snap.cpu == (20.0,) and snap.memory_total_mb == 4000.0
    (gpu,) = snap.gpus
    assert (gpu.utilization, gpu.memory_used_mb, gpu.memory_total_mb, gpu.temperature) == (
        (50.0,),
        (2048.0,),
        8192.0,
        61.0,
    )
