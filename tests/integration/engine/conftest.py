"""Fixtures for engine acceptance tests: an offline wheelhouse, a configured worker, a way to run it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from notebook_agent.api import Session
from notebook_agent.config import load_config
from notebook_agent.engine.events import Event, EventBus
from notebook_agent.engine.worker import Worker, WorkerOptions
from tests.fakes.wheels import build_wheel


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> Path:
    """Wheels the tests install from, with no package index."""
    folder = tmp_path_factory.mktemp("wheels")
    build_wheel(folder, "demo-dep", "1.0", modules={"demo_dep.py": "VALUE = 'demo-dep says 42'\n"})
    return folder


@pytest.fixture
def agent_env(wheelhouse, tmp_path) -> dict[str, str]:
    """The agent process environment: pip offline, from the wheelhouse only."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_", "PIP_"))}
    return {**keep, "HOME": str(tmp_path / "home"), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)}


@pytest.fixture
def agent_config(server, tmp_path):
    """Our agent's configuration: the embedded server's clearml.conf plus an agent section."""
    conf = tmp_path / "agent.conf"
    agent = (
        "agent {\n  package_manager { system_site_packages: true }\n"
        f'  venvs_cache {{ path: "{tmp_path / "venvs-cache"}" }}\n'
        f'  vcs_cache {{ path: "{tmp_path / "vcs-cache"}" }}\n'
        f'  pip_download_cache {{ path: "{tmp_path / "pip-download-cache"}" }}\n}}\n'
    )
    conf.write_text(server.config_file.read_text() + agent)
    return load_config(conf, env={})


class WorkerRun:
    """A Worker running in a thread until its queues are empty, recording every event."""

    def __init__(self, config, options: WorkerOptions, env: dict[str, str]) -> None:
        self.bus = EventBus()
        self.events: list[Event] = []
        self.bus.subscribe(self.events.append)
        self.session = Session.from_config(config.api)
        self.worker = Worker(config, options, session=self.session, bus=self.bus, base_env=env)

    def __enter__(self) -> WorkerRun:
        self.worker.start()
        return self

    def wait(self, timeout: float = 240) -> WorkerRun:
        self.worker.join(timeout)
        assert not self.worker._thread.is_alive(), "the worker did not finish in time"
        if self.worker.error:
            raise self.worker.error
        return self

    def __exit__(self, *exc) -> None:
        self.worker.stop(drain=False, timeout=60)
        self.session.close()


@pytest.fixture
def run_worker(agent_config, agent_env, tmp_path) -> Callable[..., WorkerRun]:
    def start(queues: list[str], **options) -> WorkerRun:
        options.setdefault("stop_when_idle", True)
        opts = WorkerOptions(queues=queues, state_dir=tmp_path / "state", **options)
        return WorkerRun(agent_config, opts, agent_env)

    return start


def wait_for(predicate, timeout: float, interval: float = 0.1):
    event = threading.Event()
    deadline_hits = int(timeout / interval) + 1
    for _ in range(deadline_hits):
        value = predicate()
        if value:
            return value
        event.wait(interval)
    raise AssertionError(f"condition not met within {timeout} s")
