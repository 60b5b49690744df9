"""The fault harness does what the matrix relies on: each proxy fault reaches the client as that fault, a cut reply
means the server acted, and a restarted server keeps its data, port and keys."""

from __future__ import annotations

import time

import pytest
import requests

from notebook_agent import api
from notebook_agent.api import TransportError
from tests.reliability.harness import Fault, FaultProxy, ServerControl, task_status, wait_until


@pytest.fixture
def proxy(server):
    with FaultProxy(server.port) as proxy:
        yield proxy


def _session(server, proxy, timeout: float = 2.0, retry: float = 0.0) -> api.Session:
    creds = server.credentials
    return api.Session(proxy.url, creds.access_key, creds.secret_key, timeout=timeout, retry_total_seconds=retry)


def test_pass_through_and_delay(server, proxy) -> None:
    session = _session(server, proxy)
    assert api.queues.get_default(session)["name"] == "default"
    proxy.set(Fault.DELAY, 0.3)
    started = time.monotonic()
    api.queues.get_default(session)
    assert time.monotonic() - started >= 0.3
    session.close()


@pytest.mark.parametrize("fault", [Fault.DROP, Fault.RESET, Fault.BLACKHOLE])
def test_faults_reach_the_client_as_transport_errors(server, proxy, fault) -> None:
    session = _session(server, proxy, timeout=0.5)
    api.queues.get_default(session)  # logged in, a keep-alive connection open
    proxy.set(fault)
    with pytest.raises(TransportError):
        api.queues.get_default(session)
    proxy.heal()
    assert api.queues.get_default(session)["name"] == "default"
    session.close()


def test_a_cut_reply_means_the_server_acted(server, proxy, raw) -> None:
    session = _session(server, proxy)
    task_id = raw.new_task("cut reply")
    proxy.cut_next_responses(1, "tasks.started")
    with pytest.raises(TransportError):
        api.tasks.started(session, task_id)
    assert proxy.cut_count == 1
    assert task_status(raw, task_id) == "in_progress"
    session.close()


def test_a_restarted_server_keeps_port_data_and_keys(server, raw) -> None:
    control = ServerControl(server)
    task_id = raw.new_task("survives a restart")
    with control.down(), pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/debug.ping", timeout=2)
    assert wait_until(lambda: requests.get(f"{server.url}/debug.ping", timeout=2).ok, 10)
    assert task_status(raw, task_id) == "created"
