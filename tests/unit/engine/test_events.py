"""The event bus: typed subscriptions, isolation of failing subscribers, unsubscribe."""

from notebook_agent.engine.events import (
    EventBus,
    TaskLogLines,
    TaskPhase,
    TaskPhaseChanged,
    WorkerState,
    WorkerStateChanged,
)


def test_subscribers_get_only_the_types_they_asked_for():
    bus = EventBus()
    logs, everything = [], []
    bus.subscribe(logs.append, TaskLogLines)
    bus.subscribe(everything.append)
    bus.publish(TaskLogLines("t1", "stdout", ("a", "b")))
    bus.publish(WorkerStateChanged("w", WorkerState.IDLE))
    assert [e.lines for e in logs] == [("a", "b")]
    assert [type(e) for e in everything] == [TaskLogLines, WorkerStateChanged]


def test_a_failing_subscriber_does_not_stop_the_others(caplog):
    bus = EventBus()
    seen = []

    def broken(event):
        raise RuntimeError("widget gone")

    bus.subscribe(broken)
    bus.subscribe(seen.append)
    bus.publish(TaskPhaseChanged("t1", TaskPhase.RUNNING))
    assert len(seen) == 1
    assert "widget gone" in caplog.text


def test_closing_a_subscription_stops_delivery():
    bus = EventBus()
    seen = []
    with bus.subscribe(seen.append):
        bus.publish(TaskPhaseChanged("t1", TaskPhase.PULLED))
    bus.publish(TaskPhaseChanged("t1", TaskPhase.RUNNING))
    assert [e.phase for e in seen] == [TaskPhase.PULLED]
    assert TaskPhase.COMPLETED.final and not TaskPhase.RUNNING.final
