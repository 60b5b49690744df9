"""PullGate: what it reads from the server, how often, and what it makes of failures (fixed clocks)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from notebook_agent.api import NotFoundError, TransportError
from notebook_agent.engine.pull_gate import PullGate
from notebook_agent.engine.queue_order import QueueRef
from notebook_agent.engine.schedule import Schedule

GPU = QueueRef("q1", "gpu")
CPU = QueueRef("q2", "cpu")
SUNDAY_9PM = datetime(2024, 6, 2, 21)
MONDAY_9PM = datetime(2024, 6, 3, 21)


class FakeServer:
    """Answers workers.get_runtime_properties and queues.get_all from its fields; records each call."""

    def __init__(self) -> None:
        self.properties: list[dict[str, Any]] | Exception = []
        self.tags: dict[str, list[str]] = {}
        self.calls: list[str] = []

    def send(self, endpoint: str, data: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
        self.calls.append(endpoint)
        if endpoint == "workers.get_runtime_properties":
            if isinstance(self.properties, Exception):
                raise self.properties
            return {"runtime_properties": self.properties}
        assert endpoint == "queues.get_all" and data is not None
        assert data["only_fields"] == ["id", "name", "tags"]
        return {"queues": [{"id": q, "tags": self.tags.get(q, [])} for q in data["id"]]}


class Clocks:
    def __init__(self, now: datetime) -> None:
        self.now = now
        self.mono = 100.0

    def wall(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono


def gate(server: FakeServer, clocks: Clocks, schedule: Schedule | None = None) -> PullGate:
    return PullGate(
        server,  # type: ignore[arg-type]  # a Sender is all the gate's reads need
        "host:0",
        schedule or Schedule.parse(uptime=["20-23 SUN,TUE"]),
        clock=clocks.wall,
        monotonic=clocks.monotonic,
        properties_every=5,
        tags_every=30,
    )


def test_outside_working_hours_holds_with_the_schedule_reason():
    g = gate(FakeServer(), Clocks(MONDAY_9PM))
    assert g.open_queues([GPU, CPU]) == ([], "outside working hours (uptime 20-23 SUN,TUE)")


def test_within_working_hours_all_queues_open_in_order():
    g = gate(FakeServer(), Clocks(SUNDAY_9PM))
    assert g.open_queues([CPU, GPU]) == ([CPU, GPU], "")


def test_queue_tags_decide_per_queue():
    server = FakeServer()
    server.tags = {"q1": ["force_workers:on"]}
    g = gate(server, Clocks(MONDAY_9PM))
    assert g.open_queues([GPU, CPU]) == ([GPU], "")  # only the tagged queue, outside working hours


def test_held_reason_names_the_tagged_queue():
    server = FakeServer()
    server.tags = {"q1": ["force_workers:off"]}
    g = gate(server, Clocks(SUNDAY_9PM))
    assert g.open_queues([GPU]) == ([], "forced off by queue tag force_workers:off on queue gpu")
    server.tags = {"q1": ["force_workers:off"], "q2": ["force_workers:off"]}
    g = gate(server, Clocks(SUNDAY_9PM))
    _, reason = g.open_queues([GPU, CPU])
    assert reason == "forced off by queue tag force_workers:off on queue gpu; " + (
        "forced off by queue tag force_workers:off on queue cpu"
    )


def test_runtime_properties_are_read_at_most_every_few_seconds():
    server, clocks = FakeServer(), Clocks(MONDAY_9PM)
    g = gate(server, clocks)
    assert not g.open_queues([GPU])[0]
    server.properties = [{"key": "force", "value": "on", "expiry": None}]
    clocks.mono += 4.9
    assert not g.open_queues([GPU])[0]  # not read again yet
    clocks.mono += 0.1
    assert g.open_queues([GPU]) == ([GPU], "")
    assert server.calls.count("workers.get_runtime_properties") == 2
    assert server.calls.count("queues.get_all") == 1  # tags: every 30 s


def test_expiry_counts_from_the_read_on_the_wall_clock():
    server, clocks = FakeServer(), Clocks(MONDAY_9PM)
    server.properties = [{"key": "force", "value": "on", "expiry": 60}]
    g = gate(server, clocks)
    assert g.open_queues([GPU])[0] == [GPU]
    clocks.now = MONDAY_9PM.replace(minute=1)  # expired before the next read is due
    assert g.open_queues([GPU]) == ([], "outside working hours (uptime 20-23 SUN,TUE)")


def test_server_without_runtime_properties_is_not_asked_again():
    server, clocks = FakeServer(), Clocks(SUNDAY_9PM)
    server.properties = NotFoundError(404, 0, "Unable to find endpoint", "workers.get_runtime_properties")
    g = gate(server, clocks)
    assert g.open_queues([GPU]) == ([GPU], "")
    clocks.mono += 60
    g.open_queues([GPU])
    assert server.calls.count("workers.get_runtime_properties") == 1
    assert not g.properties_supported


def test_unreachable_server_keeps_the_last_properties():
    server, clocks = FakeServer(), Clocks(MONDAY_9PM)
    server.properties = [{"key": "force", "value": "on"}]
    g = gate(server, clocks)
    assert g.open_queues([GPU])[0] == [GPU]
    server.properties = TransportError("workers.get_runtime_properties", "connection refused")
    clocks.mono += 5
    assert g.open_queues([GPU])[0] == [GPU]
    assert g.properties_supported


def test_unknown_force_value_is_logged_once(caplog):
    server, clocks = FakeServer(), Clocks(SUNDAY_9PM)
    server.properties = [{"key": "force", "value": "sometimes"}]
    g = gate(server, clocks)
    for _ in range(3):
        clocks.mono += 5
        assert g.open_queues([GPU])[0] == [GPU]  # ignored: the schedule decides
    assert [r.getMessage() for r in caplog.records].count(
        "ignoring runtime property force='sometimes': the values are 'on' and 'off'"
    ) == 1
