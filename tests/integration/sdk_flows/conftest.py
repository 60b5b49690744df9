"""The SDK workflow matrix: each flow run by our daemon and by the real clearml-agent, on the embedded server.

Each agent gets a regular daemon on its own queue and, when a flow asks for it, a services-mode daemon on a second
queue; both run as separate processes for the whole session, as a user would start them. The clearml-agent column
runs in a second pytest process beside this one, on its own server (peer_process.py). Every (flow, agent) outcome
is written to `tests/artifacts/sdk_matrix.json`, and as the README's table to `tests/artifacts/sdk_matrix.md`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from notebook_agent.environment.agent_wheels import agent_closure, repack
from notebook_agent.server import EmbeddedServer
from tests.conftest import RawClient
from tests.fakes.wheels import build_wheel
from tests.integration.sdk_flows import peer_process
from tests.integration.sdk_flows.peer_process import PeerFailed, PeerRun, end_group

AGENTS = ("notebook-agent", "clearml-agent")
FINAL = ("completed", "failed", "stopped", "published")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
# The SDK's own pacing, short so that flows do not wait on it (report and ping periods, repository detection in the
# main thread: its background detection forks git from a busy process and now and then hangs, see test_sdk_git_task).
# The reporter in a thread, not a subprocess: a subprocess reporter holds every SDK process about 10 s at its exit.
SDK_CONF = """
sdk {
  development {
    vcs_repo_detect_async: false
    report_use_subprocess: false
    worker { report_period_sec: 1, ping_period_sec: 5, report_event_flush_threshold: 10 }
  }
}
"""

# The head of a script that makes its task with `Task.init` and hands it to a queue with `execute_remotely` (the
# rest runs only under the agent): the folder's requirements.txt instead of the SDK's import analysis, which may look
# packages up online; `ID` is printed by the local run and by the agent's, which must name the same task.
REMOTE_HEAD = """
from clearml import Task
Task.force_requirements_env_freeze(force=False, requirements_file="requirements.txt")
task = Task.init(project_name="sdk matrix", task_name={name!r}, auto_connect_frameworks=False,
                 auto_resource_monitoring=False)
print("ID", task.id, flush=True)
task.execute_remotely(queue_name={queue!r})
"""


def values(stdout: str, prefix: str) -> list[str]:
    """The values of the lines "PREFIX value" that SDK code printed."""
    return [line.split(" ", 1)[1] for line in stdout.splitlines() if line.startswith(prefix + " ")]


class Daemon:
    """One agent daemon process on one queue, its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.log_path = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        end_group(self.proc, signal.SIGINT)  # Ctrl-C, as a user stops a daemon
        self._log.close()


class AgentUnderTest:
    """An agent (ours or clearml-agent) with its daemons on the matrix server, and helpers to drive SDK flows."""

    def __init__(self, name: str, server: EmbeddedServer, raw: RawClient, root: Path, wheelhouse: Path) -> None:
        self.name = name
        self.server = server
        self.raw = raw
        self.root = root
        short = "na" if name == "notebook-agent" else "ca"
        self.short = short
        # Worker ids unique to this run: clearml-agent refuses a second instance of a worker id on one machine, and
        # both agents keep work folders named after it.
        self.host = f"{short}-{os.getpid()}"
        self.queue = f"{short}-queue"
        self._services_queue = f"{short}-services"
        self._daemons: dict[str, Daemon] = {}
        self._lock = threading.Lock()
        home = root / "home"
        home.mkdir(parents=True, exist_ok=True)
        sdk_conf = root / "sdk.conf"
        sdk_conf.write_text(server.config_file.read_text() + SDK_CONF)
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_", "PIP_"))}
        self.env = {
            **keep,
            "HOME": str(home),
            "CLEARML_CONFIG_FILE": str(sdk_conf),
            "CLEARML_OFFLINE_MODE": "0",
            "PYTHONUNBUFFERED": "1",
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(wheelhouse),
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        }
        self._agent_conf = root / "agent.conf"
        self._agent_conf.write_text(sdk_conf.read_text() + self._agent_section())

    def _agent_section(self) -> str:
        cache = self.root / "venvs-cache"
        if self.name == "notebook-agent":
            return (
                "agent {\n  package_manager { system_site_packages: true }\n"
                f'  venvs_cache {{ path: "{cache}" }}\n  vcs_cache {{ path: "{self.root / "vcs-cache"}" }}\n}}\n'
            )
        # clearml-agent: a venv that sees the system's packages, no pip upgrade, no download; its own venv cache.
        return (
            'agent {\n  package_manager { system_site_packages: true, pip_version: "" }\n'
            f'  venvs_cache {{ path: "{cache}" }}\n}}\n'
        )

    # daemons --------------------------------------------------------------------------------------------------
    def _daemon(self, queue: str, *, services: bool) -> None:
        with self._lock:
            if queue in self._daemons:
                return
            kind = "services" if services else "cpu"
            env = {
                **self.env,
                "CLEARML_CONFIG_FILE": str(self._agent_conf),
                "CLEARML_WORKER_ID": f"{self.host}:{kind}",
            }
            if self.name == "notebook-agent":
                argv = [sys.executable, "-m", "notebook_agent", "daemon", "--queue", queue, "--create-queue"]
                argv += ["--cpu-only"] + (["--services-mode"] if services else [])
            else:
                # Its poll interval cut from 5 s to 0.2 s, for the tests' pace (ours long-polls the embedded server).
                env["CLEARML_AGENT_QUEUE_POLL_FREQ_SEC"] = "0.2"
                argv = [sys.executable, "-m", "clearml_agent", "daemon", "--queue", queue, "--create-queue"]
                argv += ["--foreground", "--cpu-only"] + (["--services-mode"] if services else [])
            daemon = Daemon(argv, env, self.root / f"daemon-{queue}.log", self.root)
            self._daemons[queue] = daemon
        self._wait_registered(queue, daemon)

    def _wait_registered(self, queue: str, daemon: Daemon) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert daemon.proc.poll() is None, f"{self.name} daemon on {queue} exited:\n{daemon.tail()}"
            for worker in self.raw.ok("workers.get_all", {})["workers"]:
                if any(q.get("name") == queue for q in worker.get("queues") or []):
                    return
            time.sleep(0.2)
        raise AssertionError(f"{self.name} daemon on {queue} did not register:\n{daemon.tail()}")

    def start(self) -> AgentUnderTest:
        self._daemon(self.queue, services=False)
        return self

    @property
    def services_queue(self) -> str:
        self._daemon(self._services_queue, services=True)
        return self._services_queue

    def daemon_logs(self) -> str:
        return "\n".join(f"--- {q}\n{d.tail()}" for q, d in self._daemons.items())

    def stop(self) -> None:
        for daemon in self._daemons.values():
            daemon.stop()

    # flows ----------------------------------------------------------------------------------------------------
    def run(self, argv: list[str], *, cwd: Path, timeout: float = 150, env: dict | None = None):
        return subprocess.run(
            argv, env={**self.env, **(env or {})}, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )

    def sdk(self, code: str, *args: str, cwd: Path, timeout: float = 150) -> str:
        """Run SDK code in its own interpreter (the SDK installs process-wide hooks); its stdout."""
        done = self.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=cwd, timeout=timeout)
        assert done.returncode == 0, f"SDK process failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def task(self, task_id: str) -> dict:
        return self.raw.ok("tasks.get_by_id", {"task": task_id})["task"]

    def wait(self, task_id: str, timeout: float = 150) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            task = self.task(task_id)
            if task["status"] in FINAL:
                return task
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"task {task_id} still {task['status']} after {timeout} s under {self.name}\n"
                    f"{self.log(task_id)[-2000:]}\n{self.daemon_logs()}"
                )
            time.sleep(0.2)

    def log(self, task_id: str) -> str:
        events = self.raw.ok("events.get_task_log", {"task": task_id, "batch_size": 10000, "navigate_earlier": False})[
            "events"
        ]
        return "\n".join(e["msg"] for e in events)

    def expect_completed(self, task_id: str, timeout: float = 150) -> dict:
        task = self.wait(task_id, timeout)
        assert task["status"] == "completed", (
            f"{self.name}: task {task_id} {task['status']}: {task.get('status_reason')}\n{self.log(task_id)[-3000:]}"
        )
        return task

    def execute(self, task_id: str, *, clone: bool = False, cwd: Path, timeout: float = 150):
        """`execute --id` in the foreground, as each agent's own command."""
        env = {"CLEARML_CONFIG_FILE": str(self._agent_conf), "CLEARML_WORKER_ID": f"{self.host}:execute"}
        if self.name == "notebook-agent":
            argv = [sys.executable, "-m", "notebook_agent", "execute", "--id", task_id, "--cpu-only"]
        else:
            argv = [sys.executable, "-m", "clearml_agent", "execute", "--id", task_id, "--cpu-only"]
        return self.run(argv + (["--clone"] if clone else []), cwd=cwd, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def matrix_wheelhouse(tmp_path_factory) -> Path:
    """The wheels tasks install from, with no index: demo-dep, and clearml with its dependencies repacked from this
    environment (clearml-agent installs a task's `clearml` like any package; ours takes the same copy itself)."""
    folder = tmp_path_factory.mktemp("matrix-wheels")
    for dist in agent_closure("clearml"):
        repack(dist, folder)
    build_wheel(folder, "demo-dep", "1.0", modules={"demo_dep.py": "VALUE = 'demo-dep says 42'\n"})
    return folder


@pytest.fixture(scope="session")
def matrix_server(tmp_path_factory) -> Iterator[EmbeddedServer]:
    srv = EmbeddedServer(tmp_path_factory.mktemp("matrix-server")).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def matrix_raw(matrix_server) -> RawClient:
    return RawClient(matrix_server)


@pytest.fixture
def raw(matrix_raw) -> RawClient:
    return matrix_raw


@pytest.fixture(scope="session")
def _agents(matrix_server, matrix_raw, matrix_wheelhouse, tmp_path_factory) -> Iterator[dict[str, AgentUnderTest]]:
    made: dict[str, AgentUnderTest] = {}
    try:
        yield made
    finally:
        for agent in made.values():
            agent.stop()
        _write_matrix()


@pytest.fixture(params=AGENTS)
def agent(request, _agents, matrix_server, matrix_raw, matrix_wheelhouse, tmp_path_factory) -> AgentUnderTest | None:
    name = request.param
    if _PEER is not None and name == PEER_AGENT:
        return None  # the peer process runs this item; pytest_pyfunc_call reports its result
    if name not in _agents:
        root = tmp_path_factory.mktemp(name)
        _agents[name] = AgentUnderTest(name, matrix_server, matrix_raw, root, matrix_wheelhouse)
    return _agents[name].start()


_RESULTS: dict[str, dict[str, str]] = {}
PEER_AGENT = "clearml-agent"
_PEER: PeerRun | None = None
_PEER_ITEMS: list[str] = []


def _is_peer(item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("agent") == PEER_AGENT


@pytest.hookimpl(trylast=True)  # after -k and -m deselected what they do
def pytest_collection_modifyitems(session, config, items):
    if config.option.collectonly or peer_process.in_peer() or os.environ.get(peer_process.SERIAL_ENV):
        return
    _PEER_ITEMS[:] = [item.nodeid for item in items if _is_peer(item)]


@pytest.hookimpl(tryfirst=True)  # before the item's fixtures: the agent fixture asks whether the peer runs it
def pytest_runtest_setup(item):
    """The peer process starts with the matrix's first item, so that it runs beside the matrix only (not beside
    the rest of the suite, whose timings assume the machine to themselves)."""
    global _PEER
    if _PEER is None and _PEER_ITEMS:
        _PEER = PeerRun(_PEER_ITEMS, Path(str(item.config.rootpath)), ARTIFACTS / "sdk_matrix_peer")


def pytest_sessionfinish(session, exitstatus):
    if _PEER is not None:
        _PEER.stop()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """A clearml-agent item here: what the peer process reported for it, as if it ran here."""
    if _PEER is None or not _is_peer(pyfuncitem):
        return None
    found = _PEER.result(pyfuncitem.nodeid, timeout=290)
    if found["outcome"] == "passed":  # an xpass too
        return True
    if found["outcome"] == "skipped" and not found["wasxfail"]:
        pytest.skip(found["text"])
    raise PeerFailed(f"in the clearml-agent process:\n{found['text']}")  # an xfail item turns it into its xfail


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    callspec = getattr(item, "callspec", None)
    if callspec is None or "agent" not in callspec.params:
        return
    if peer_process.in_peer() and (report.when == "call" or report.outcome != "passed"):
        peer_process.record(
            Path(os.environ[peer_process.RESULTS_ENV]),
            item.nodeid,
            report.outcome,
            report.longreprtext,
            getattr(report, "wasxfail", None),
        )
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        # The flow: the test with its parameter ids other than the agent's ("test_x[packages]").
        others = callspec.id.replace(callspec.params["agent"], "").strip("-").replace("--", "-")
        flow = item.originalname + (f"[{others}]" if others else "")
        if hasattr(report, "wasxfail"):
            result = "xfail" if report.outcome == "skipped" else "xpass"
        else:
            result = {"passed": "pass", "failed": "FAIL", "skipped": "skip"}[report.outcome]
        row = _RESULTS.setdefault(flow, {"file": item.path.name, "title": _title(item, others)})
        row[callspec.params["agent"]] = result


def _title(item, params: str) -> str:
    """The flow's name in the README table: its `@pytest.mark.flow("...")`, and its parameters."""
    marker = item.get_closest_marker("flow")
    title = marker.args[0] if marker else item.originalname
    return title + (f" ({params})" if params else "")


def matrix_table(results: dict[str, dict[str, str]]) -> str:
    """The README's table: one row per flow, in file order, with each agent's outcome."""
    lines = ["| flow | notebook-agent | clearml-agent |", "|---|---|---|"]
    for _flow, row in sorted(results.items(), key=lambda kv: (kv[1]["file"], kv[0])):
        lines.append(f"| {row['title']} | {row.get('notebook-agent', '-')} | {row.get('clearml-agent', '-')} |")
    return "\n".join(lines) + "\n"


def _write_matrix() -> None:
    if not _RESULTS or peer_process.in_peer():  # the main process writes both columns
        return
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "sdk_matrix.json").write_text(json.dumps(_RESULTS, indent=1, sort_keys=True) + "\n")
    (ARTIFACTS / "sdk_matrix.md").write_text(matrix_table(_RESULTS))
