"""`workers.set_runtime_properties` / `get_runtime_properties` of the embedded server: expiry on its clock."""

from __future__ import annotations

import pytest

from notebook_agent import api
from notebook_agent.api import Session
from notebook_agent.config import load_config

WORKER = "host:cpu:0"


def props(raw) -> dict[str, dict]:
    return {p["key"]: p for p in raw.ok("workers.get_runtime_properties", {"worker": WORKER})["runtime_properties"]}


def set_props(raw, *items: dict) -> None:
    raw.ok("workers.set_runtime_properties", {"worker": WORKER, "runtime_properties": list(items)})


@pytest.fixture
def registered(raw):
    raw.ok("workers.register", {"worker": WORKER})
    return raw


class TestExpiry:
    def test_docs_example_force_on_for_a_day(self, registered, clock):
        # The request body of the ClearML docs' curl example.
        set_props(registered, {"key": "force", "value": "on", "expiry": 86400})
        assert props(registered)["force"] == {"key": "force", "value": "on", "expiry": 86400}
        clock.advance(86400 - 60)
        assert props(registered)["force"]["expiry"] == 60  # seconds left, as clearml-agent's --status reads it
        clock.advance(60)
        assert props(registered) == {}

    def test_seconds_left_round_up(self, registered, clock):
        # 0 would read as "no expiry" to a client.
        set_props(registered, {"key": "force", "value": "off", "expiry": 10})
        clock.advance(9.5)
        assert props(registered)["force"]["expiry"] == 1

    def test_without_expiry_it_stays(self, registered, clock):
        set_props(registered, {"key": "force", "value": "on"})
        clock.advance(365 * 86400)
        registered._token = None  # the login token has expired meanwhile
        assert props(registered)["force"] == {"key": "force", "value": "on", "expiry": None}

    def test_expiry_zero_deletes(self, registered):
        set_props(registered, {"key": "force", "value": "on"}, {"key": "gpus", "value": "0"})
        set_props(registered, {"key": "force", "value": "", "expiry": 0})
        assert set(props(registered)) == {"gpus"}
        set_props(registered, {"key": "never-set", "expiry": 0})  # deleting what is not there is fine
        assert set(props(registered)) == {"gpus"}

    def test_setting_again_replaces_value_and_expiry(self, registered, clock):
        set_props(registered, {"key": "force", "value": "on", "expiry": 60})
        set_props(registered, {"key": "force", "value": "off"})
        clock.advance(120)
        assert props(registered)["force"] == {"key": "force", "value": "off", "expiry": None}
        set_props(registered, {"key": "force", "value": "on", "expiry": 30})
        clock.advance(31)
        assert props(registered) == {}

    def test_an_expired_property_does_not_come_back(self, registered, clock):
        set_props(registered, {"key": "force", "value": "on", "expiry": 5})
        clock.advance(6)
        set_props(registered, {"key": "other", "value": "x"})  # rewrites the list of the worker's properties
        clock.advance(-6)  # even if the clock went back, the expired entry was dropped
        assert set(props(registered)) == {"other"}

    @pytest.mark.parametrize("expiry", [-1, "86400", True, [60]])
    def test_bad_expiry_is_a_validation_error_and_stores_nothing(self, registered, expiry):
        reply = registered.call(
            "workers.set_runtime_properties",
            {
                "worker": WORKER,
                "runtime_properties": [{"key": "ok", "value": "1"}, {"key": "force", "value": "on", "expiry": expiry}],
            },
        )
        assert (reply.status, reply.subcode) == (400, 12)
        assert "expiry" in reply.meta["result_msg"]
        assert props(registered) == {}

    def test_unregistered_worker_cannot_set(self, raw):
        reply = raw.call("workers.set_runtime_properties", {"worker": "nobody", "runtime_properties": []})
        assert (reply.status, reply.subcode) == (400, 1004)


def test_api_helpers_round_trip(server, registered, clock):
    """Our client's helpers, as the worker's gate uses them."""
    config = load_config(server.config_file, env={})
    with Session.from_config(config.api) as session:
        api.workers.set_runtime_properties(session, WORKER, [{"key": "force", "value": "off", "expiry": 30}])
        assert api.workers.get_runtime_properties(session, WORKER) == [{"key": "force", "value": "off", "expiry": 30}]
        clock.advance(30)
        assert api.workers.get_runtime_properties(session, WORKER) == []
