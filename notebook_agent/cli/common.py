"""What the CLI commands share: finding the server (or starting the embedded one) and printing engine events."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from typing import TextIO

import requests

from notebook_agent.config import Config, ConfigError, load_config
from notebook_agent.engine.events import (
    EnvBuildStep,
    Event,
    EventBus,
    TaskLogLines,
    TaskPhaseChanged,
    WorkerListening,
    WorkerStateChanged,
)
from notebook_agent.server import DEFAULT_DATA_DIR, EmbeddedServer

DEFAULT_PORT = 8008


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _alive(url: str) -> bool:
    try:
        return requests.get(url.rstrip("/") + "/debug.ping", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def embedded_env(server_conf: Config, env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the embedded server's api settings, keeping the user's clearml.conf for the rest."""
    api = server_conf.api
    assert api.credentials is not None
    return {
        **env,
        "CLEARML_API_HOST": api.api_server,
        "CLEARML_WEB_HOST": api.web_server,
        "CLEARML_FILES_HOST": api.files_server,
        "CLEARML_API_ACCESS_KEY": api.credentials.access_key,
        "CLEARML_API_SECRET_KEY": api.credentials.secret_key,
    }


def connect(
    out: TextIO, *, force_embedded: bool = False, env: Mapping[str, str] | None = None
) -> tuple[Config, EmbeddedServer | None]:
    """The configuration to use, and the embedded server this process started (None when it started none).

    A configured server (clearml.conf or CLEARML_* variables of `env`, default os.environ) is used as it is.
    Otherwise, the embedded server of ~/.notebook_agent/server: the running one if it answers, else one started in
    this process.
    """
    env = dict(os.environ if env is None else env)
    config = load_config(env=env)
    if config.api.configured and not force_embedded:
        return config, None
    conf_file = DEFAULT_DATA_DIR.expanduser() / "clearml.conf"
    if conf_file.exists():
        try:
            running = load_config(conf_file, env={})
        except ConfigError:
            running = None
        if running is not None and running.api.configured and _alive(running.api.api_server):
            print(f"using the embedded server at {running.api.api_server}", file=out, flush=True)
            return load_config(env=embedded_env(running, env)), None
    port = DEFAULT_PORT if port_free(DEFAULT_PORT) else 0
    server = EmbeddedServer(port=port).start()
    reason = "no ClearML server is configured" if not config.api.configured else "the demo runs locally"
    print(f"{reason}: started the embedded server at {server.url} (data in {server.data_dir})", file=out, flush=True)
    return load_config(env=embedded_env(load_config(server.config_file, env={}), env)), server


def listening_line(event: WorkerListening) -> str:
    """`worker HOST:0 listening on queues high, low (in priority order) at http://...`, as the daemon starts."""
    gpus = dict(event.gpus)
    names = ", ".join(f"{q} ({gpus[q]} GPU{'s' if gpus[q] != '1' else ''})" if q in gpus else q for q in event.queues)
    noun = "queue" if len(event.queues) == 1 else "queues"
    order = "" if len(event.queues) < 2 else (" (in turn)" if event.fairness else " (in priority order)")
    line = f"worker {event.worker_id} listening on {noun} {names}{order} at {event.server}"
    if event.services_limit is not None:
        limit = f"at most {event.services_limit} at once" if event.services_limit > 0 else "no limit"
        line += f"; services mode ({limit})"
    return line


class ConsolePrinter:
    """The CLI face: prints worker states, build steps and task log lines as they are published."""

    def __init__(self, bus: EventBus, out: TextIO = sys.stdout, show_logs: bool = True) -> None:
        self.out = out
        self.show_logs = show_logs
        self.subscription = bus.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, WorkerListening):
            line = listening_line(event)
        elif isinstance(event, WorkerStateChanged):
            line = f"[{event.worker_id}] {event.state.value}" + (f": {event.detail}" if event.detail else "")
        elif isinstance(event, TaskPhaseChanged):
            line = f"[task {event.task_id[:8]}] {event.phase.value}" + (f" ({event.reason})" if event.reason else "")
        elif isinstance(event, EnvBuildStep):
            if self.show_logs or event.seconds is not None or event.detail:
                return  # the task log (printed below) has each step, its seconds and its package counts
            line = f"[task {event.task_id[:8]}] environment: {event.step}"
        elif isinstance(event, TaskLogLines) and self.show_logs:
            line = "\n".join(f"[task {event.task_id[:8]}] {text}" for text in event.lines)
        else:
            return
        print(line, file=self.out, flush=True)

    def close(self) -> None:
        self.subscription.close()
