"""Bad input, each with an error that names the culprit and the fix, and nothing lost.

Bad tasks (a repository that is not there, a missing commit, a diff that does not apply, an unknown requirement, a
missing entry point, a Python that is not installed, a failing setup script) run on one worker with good tasks among
them: each bad one ends `failed` with a status_reason naming what and which, its build output in its log, and the
worker goes on. Bad agent input (a broken clearml.conf, wrong credentials, an unreachable server, an unknown queue)
stops the CLI with the file/line/key, the masked key or URL, or the queues that exist.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from notebook_agent.config import ConfigError, load_config
from notebook_agent.engine.log_lines import CUT_MARKER
from notebook_agent.engine.worker import WorkerOptions
from notebook_agent.server import EmbeddedServer
from tests.conftest import FakeClock, RawClient
from tests.fakes.gitrepo import make_git_repo
from tests.integration.engine.conftest import WorkerRun
from tests.reliability.conftest import FAKE_ACCESS_KEY, FAKE_SECRET_KEY
from tests.reliability.harness import task_log_lines

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

URL_PASSWORD = "Url-Pa55word-Zq8"  # in a repository URL and a server URL: must never show
# 4.9 MB without a newline, numbered so that a piece out of order shows; the task builds it the same way.
LONG_LINE = "".join(f"{i:07d}" for i in range(700_000))
LONG_LINE_TASK = (
    "import sys\nsys.stdout.write(''.join(f'{i:07d}' for i in range(700_000)))\nprint()\nprint('after the long line')\n"
)
BAD_UTF8_TASK = "import sys\nsys.stdout.buffer.write(b'before bad bytes\\nbad \\xff\\xfe bytes\\nafter bad bytes\\n')\n"
GOOD = ("long line", "bad utf-8", "good")  # the tasks that complete


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def script(entry_point: str = "job.py", diff: str = "", **fields: Any) -> dict[str, Any]:
    return {"binary": "python3", "entry_point": entry_point, "working_dir": ".", "diff": diff, **fields}


@dataclass(frozen=True)
class Case:
    """One bad task: what it asks for, and what its status_reason and its log must say."""

    name: str
    task: dict[str, Any]  # tasks.create fields
    reason: tuple[str, ...]  # each in the status_reason
    log: tuple[str, ...] = ()  # each in some line of the task log (the build output)
    never: tuple[str, ...] = (URL_PASSWORD,)  # in neither


def cases(repo: Path, sha: str, dead_port: int) -> list[Case]:
    bad_url = f"http://someone:{URL_PASSWORD}@127.0.0.1:{dead_port}/team/repo.git"
    missing = "0123456789abcdef0123456789abcdef01234567"
    bad_diff = "diff --git a/train.py b/train.py\n--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-not v1\n+v2\n"
    return [
        Case(
            "bad repository URL",
            {"script": script("train.py", repository=bad_url)},
            ("git clone failed: repository not reachable", f"http://someone:****@127.0.0.1:{dead_port}/team/repo.git"),
            ("$ git -c advice.detachedHead=false clone", "Failed to connect to 127.0.0.1"),
        ),
        Case(
            "missing commit",
            {"script": script("train.py", repository=str(repo), version_num=missing)},
            (f"commit {missing} not found in {repo}",),
            ("$ git -c advice.detachedHead=false clone",),
        ),
        Case(
            "diff that does not apply",
            {"script": script("train.py", bad_diff, repository=str(repo), version_num=sha)},
            (f"git apply failed: the uncommitted diff does not apply to {sha[:7]}", "train.py"),
            ("patch failed: train.py:1",),
        ),
        Case(
            "unknown requirement",
            {"script": script(diff="print('never')\n", requirements={"pip": "no-such-package==9.9\n"})},
            ("pip install failed", "no-such-package==9.9"),
            ("no-such-package",),
        ),
        Case(
            "missing entry point",
            {"script": script("missing.py", repository=str(repo), version_num=sha)},
            ("entry point not found: missing.py in working dir .",),
        ),
        Case(
            "Python not installed",
            {"script": {**script(diff="print('never')\n"), "binary": "python3.77"}},
            ("python3.77 requested by the task (script.binary) is not installed", "ignore_requested_python_version"),
        ),
        Case(
            "setup script fails",
            {
                "script": script(diff="print('never')\n"),
                "container": {"setup_shell_script": "echo preparing-the-host; exit 3"},
            },
            ("setup shell script failed with exit code 3",),
            ("preparing-the-host",),
        ),
    ]


# -- one worker runs every task --------------------------------------------------------------------------------


@dataclass
class Matrix:
    """The one worker run of the module: each task's document and log after the queue ran empty."""

    raw: RawClient
    run: WorkerRun
    ids: dict[str, str] = field(default_factory=dict)  # case name (or "long line", "bad utf-8", "good") -> id
    logs: dict[str, list[str]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)


def _agent_env(home: Path, wheelhouse: Path) -> dict[str, str]:
    """The agent_env fixture's environment (pip offline, from the wheelhouse), for a module-wide worker."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_", "PIP_"))}
    return {**keep, "HOME": str(home), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Iterator[Matrix]:
    """Every bad task plus good ones, queued in order and run by one worker until the queue is empty."""
    root = tmp_path_factory.mktemp("bad-input")
    server = EmbeddedServer(
        root / "server", clock=FakeClock(), access_key=FAKE_ACCESS_KEY, secret_key=FAKE_SECRET_KEY
    ).start()
    try:
        raw = RawClient(server)
        repo = root / "repo"
        sha = make_git_repo(repo, {"train.py": "print('v1')\n"})
        queue = raw.default_queue()
        conf = root / "agent.conf"
        conf.write_text(
            server.config_file.read_text()
            + "agent {\n  enable_setup_shell_script: true\n  package_manager { system_site_packages: true }\n"
            + f'  venvs_cache {{ path: "{root / "venvs-cache"}" }}\n  vcs_cache {{ path: "{root / "vcs-cache"}" }}\n'
            + "}\n"
        )
        ids: dict[str, str] = {}
        good_tasks = {"long line": script(diff=LONG_LINE_TASK), "bad utf-8": script(diff=BAD_UTF8_TASK)}
        for case in cases(repo, sha, closed_port()):
            ids[case.name] = raw.new_task(case.name, **case.task)
        for name, fields in good_tasks.items():
            ids[name] = raw.new_task(name, script=fields)
        ids["good"] = raw.new_task("good", script=script(diff="print('the worker went on')\n"))
        for task_id in ids.values():
            raw.ok("tasks.enqueue", {"task": task_id, "queue": queue})
        options = WorkerOptions(queues=[], stop_when_idle=True, state_dir=root / "state")
        with WorkerRun(load_config(conf, env={}), options, _agent_env(root / "home", wheelhouse)) as run:
            run.wait()
        result = Matrix(raw, run, ids)
        for name, task_id in ids.items():
            result.tasks[name] = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
            result.logs[name] = task_log_lines(raw, task_id)
        yield result
    finally:
        server.stop()


CASE_NAMES = [case.name for case in cases(Path("/repo"), "0" * 40, 1)]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_a_bad_task_fails_naming_its_culprit_with_the_build_output_in_its_log(matrix: Matrix, name: str) -> None:
    task, log = matrix.tasks[name], matrix.logs[name]
    reason = task["status_reason"]
    assert task["status"] == "failed", (name, task["status"], reason)
    expected = _expected(matrix, name)
    for part in expected.reason:
        assert part in reason, (name, part, reason)
    assert f"Environment setup failed: {reason}" in log, log[-10:]
    for part in expected.log:
        assert any(part in line for line in log), (name, part, log[-30:])
    for secret in expected.never:
        assert secret not in reason and not any(secret in line for line in log)


def _expected(matrix: Matrix, name: str) -> Case:
    """The case with the values this run used (the repo path, its sha, the closed port), read back from the tasks."""
    repo_task = matrix.tasks["missing commit"]["script"]
    repo = Path(repo_task["repository"])
    sha = matrix.tasks["diff that does not apply"]["script"]["version_num"]
    url = matrix.tasks["bad repository URL"]["script"]["repository"]
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    return next(c for c in cases(repo, sha, port) if c.name == name)


def test_the_worker_went_on_and_left_nothing_behind(matrix: Matrix) -> None:
    outcomes = [o.task_id for o in matrix.run.worker.outcomes]
    assert outcomes == list(matrix.ids.values())  # each task once, in queue order
    statuses = {name: task["status"] for name, task in matrix.tasks.items()}
    assert statuses == {
        name: "completed" if name in ("long line", "bad utf-8", "good") else "failed" for name in statuses
    }
    assert "the worker went on" in matrix.logs["good"]
    queue = matrix.raw.ok("queues.get_by_id", {"queue": matrix.raw.default_queue()})["queue"]
    assert queue["entries"] == []


def test_an_over_long_line_arrives_whole_in_marked_pieces(matrix: Matrix) -> None:
    log = matrix.logs["long line"]
    start = next(i for i, line in enumerate(log) if line.startswith("0000000"))
    pieces = [log[start]]
    while pieces[-1].endswith(CUT_MARKER):
        pieces.append(log[start + len(pieces)])
    assert len(pieces) > 10  # really cut, not sent as one 5 MB event
    assert "".join(p.removesuffix(CUT_MARKER) for p in pieces) == LONG_LINE
    assert log[start + len(pieces)] == "after the long line"


def test_invalid_utf8_arrives_replaced_with_its_neighbours_intact(matrix: Matrix) -> None:
    log = matrix.logs["bad utf-8"]
    at = log.index("before bad bytes")
    assert log[at : at + 3] == ["before bad bytes", "bad \ufffd\ufffd bytes", "after bad bytes"]


def test_no_line_of_a_failed_build_is_logged_twice(matrix: Matrix) -> None:
    for name in CASE_NAMES:
        counts = Counter(matrix.logs[name])
        assert not {line: n for line, n in counts.items() if n > 1}, name


def test_an_agent_python_that_does_not_run_names_the_setting(raw, server, agent_env, tmp_path) -> None:
    missing = tmp_path / "no-such-python" / "python3.99"
    conf = tmp_path / "agent.conf"
    conf.write_text(server.config_file.read_text() + f'agent {{ python_binary: "{missing}" }}\n')
    task_id = raw.new_task("any task", script=script(diff="print('never')\n"))
    raw.ok("tasks.enqueue", {"task": task_id, "queue": raw.default_queue()})
    options = WorkerOptions(queues=[], stop_when_idle=True, state_dir=tmp_path / "state")
    with WorkerRun(load_config(conf, env={}), options, agent_env) as run:
        run.wait()
    task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
    assert task["status"] == "failed"
    assert task["status_reason"].startswith(f"the agent's Python {missing} (agent.python_binary) is not an interpreter")
    assert f"Environment setup failed: {task['status_reason']}" in task_log_lines(raw, task_id)
    assert raw.ok("queues.get_by_id", {"queue": raw.default_queue()})["queue"]["entries"] == []


# -- bad agent input: clearml.conf, credentials, server, queue -------------------------------------------------

API = f"""api {{
  api_server: "http://127.0.0.1:8008"
  credentials {{ access_key: "AKEY1234567890", secret_key: "{FAKE_SECRET_KEY}" }}
}}
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            API + "agent {\n  worker_name = = foo\n}\n",
            ("line 6, column 17", "HOCON syntax error: Expected '}', found '='", "in: worker_name = = foo"),
            id="a stray token",
        ),
        pytest.param(
            API + "agent {\n  worker_name: foo\n",
            ("line 6", "found the end of the file", "every { needs its }"),
            id="a missing closing brace",
        ),
        pytest.param(
            API.replace("}\n}", "}\n}}"),
            ("line 4, column 2", "Expected end of text, found '}'"),
            id="one brace too many",
        ),
        pytest.param(
            API.replace(f'"{FAKE_SECRET_KEY}" }}', f'"{FAKE_SECRET_KEY}" ]'),
            ("line 3", "a token on a line that may hold a secret (not shown)"),
            id="a syntax error on the secret's line",
        ),
        pytest.param(
            API + 'agent { queue_poll_freq_sec: "fast" }\n',
            (
                "line 5: agent.queue_poll_freq_sec: expected a number of seconds above 0, got the string 'fast'",
                "Fix: set agent.queue_poll_freq_sec to a number of seconds above 0",
            ),
            id="a known key of the wrong type",
        ),
        pytest.param(
            API + "agent {\n  venvs_cache {\n    max_entries: 2.5\n  }\n}\n",
            ("line 7: agent.venvs_cache.max_entries: expected a whole number, 0 or more, got the number 2.5",),
            id="a nested key of the wrong type",
        ),
        pytest.param(
            API + "agent { api_retry_total_sec: -1 }\n",
            ("agent.api_retry_total_sec: expected a number of seconds above 0, got the number -1",),
            id="the retry budget below zero",
        ),
    ],
)
def test_a_broken_clearml_conf_names_file_line_and_key(tmp_path: Path, text: str, expected: tuple[str, ...]) -> None:
    conf = tmp_path / "clearml.conf"
    conf.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(conf, env={})
    message = str(info.value)
    assert message.startswith(f"{conf}, line ")
    for part in expected:
        assert part in message, (part, message)
    assert FAKE_SECRET_KEY not in message and FAKE_SECRET_KEY[:12] not in message


def test_a_wrong_type_in_an_environment_variable_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("/nonexistent/clearml.conf", env={"CLEARML_AGENT_QUEUE_POLL_FREQ_SEC": "fast"})
    message = str(info.value)
    assert message.startswith("CLEARML_AGENT_QUEUE_POLL_FREQ_SEC: bad environment variable value")
    assert "agent.queue_poll_freq_sec" in message and "expected a number" in message


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "notebook_agent", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    return done, time.monotonic() - started


@pytest.fixture
def cli_env(agent_env: dict[str, str], server: EmbeddedServer, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment: the embedded server's CLEARML_* settings, and a config file with a 2 s retry budget."""
    conf = tmp_path / "cli.conf"
    conf.write_text("agent { api_retry_total_sec: 2 }\n")
    return {**agent_env, **server.client_env(), "CLEARML_CONFIG_FILE": str(conf)}


def test_the_cli_stops_on_a_broken_clearml_conf_with_where_and_how(cli_env: dict[str, str], tmp_path: Path) -> None:
    conf = tmp_path / "broken.conf"
    conf.write_text(API + "agent {\n  worker_name = = foo\n}\n")
    done, _ = cli({**cli_env, "CLEARML_CONFIG_FILE": str(conf)}, "daemon", "--queue", "default")
    assert done.returncode == 2
    assert done.stderr.startswith(f"notebook-agent: {conf}, line 6, column 17: HOCON syntax error"), done.stderr
    assert "Traceback" not in done.stderr


COMMANDS = [
    pytest.param(("daemon", "--queue", "default"), id="daemon"),
    pytest.param(("execute", "--id", "f" * 32), id="execute"),
]


@pytest.mark.parametrize("command", COMMANDS)
def test_wrong_credentials_say_the_server_refused_the_masked_key(cli_env, server, command: tuple[str, ...]) -> None:
    wrong = "wrong-secret-Hq3Zk8Vn2"
    done, took = cli({**cli_env, "CLEARML_API_SECRET_KEY": wrong}, *command)
    assert done.returncode == 2, done.stderr
    assert took < 30
    assert (
        f"notebook-agent {command[0]}: the ClearML server at {server.url} refused the access key "
        f"{FAKE_ACCESS_KEY[:4]}****" in done.stderr
    ), done.stderr
    assert "Fix: check api.credentials access_key and secret_key" in done.stderr
    output = done.stdout + done.stderr
    assert "Traceback" not in output
    for secret in (wrong, FAKE_SECRET_KEY, FAKE_ACCESS_KEY):
        assert secret not in output


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreachable_server_is_named_masked_with_its_cause_in_bounded_time(
    cli_env, command: tuple[str, ...]
) -> None:
    port = closed_port()
    url = f"http://someone:{URL_PASSWORD}@127.0.0.1:{port}"
    done, took = cli({**cli_env, "CLEARML_API_HOST": url}, *command)
    assert done.returncode == 2, done.stderr
    assert took < 30  # the 2 s retry budget, the last attempt's timeout and the start-up, not the default minute
    expected = f"cannot reach the ClearML server at http://someone:****@127.0.0.1:{port}: Connection refused"
    assert expected in done.stderr, done.stderr
    assert "gave up after 2 s of retries; agent.api_retry_total_sec sets how long" in done.stderr
    assert "Traceback" not in done.stderr and URL_PASSWORD not in done.stdout + done.stderr


def test_an_unknown_queue_is_named_with_the_known_ones_and_how_to_create_it(cli_env: dict[str, str], raw) -> None:
    raw.ok("queues.create", {"name": "gpu-queue"})
    done, _ = cli(cli_env, "daemon", "--queue", "no-such-queue")
    assert done.returncode == 2
    assert "queue 'no-such-queue' does not exist on http://127.0.0.1:" in done.stderr, done.stderr
    assert "(known queues: default, gpu-queue)" in done.stderr
    assert "--create-queue" in done.stderr and "Traceback" not in done.stderr
    assert not any(w["id"] for w in raw.ok("workers.get_all", {})["workers"])  # it registered no worker


def test_no_queue_and_no_default_queue_says_to_name_one(cli_env: dict[str, str], raw) -> None:
    raw.ok("queues.create", {"name": "gpu-queue"})
    raw.ok("queues.delete", {"queue": raw.default_queue(), "force": True})
    done, _ = cli(cli_env, "daemon")
    assert done.returncode == 2
    assert "no queue given, and http://127.0.0.1:" in done.stderr, done.stderr
    assert "has no default queue (known queues: gpu-queue); name the queues to listen to: --queue NAME" in done.stderr


@pytest.mark.parametrize(
    "command", [("daemon", "--queue", "default"), ("submit", "--script", "job.py")], ids=["daemon", "submit"]
)
def test_with_the_default_budget_an_unreachable_server_is_one_warning_and_one_error_in_seconds(
    cli_env: dict[str, str], tmp_path: Path, command: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "empty.conf"
    conf.write_text("agent { }\n")  # agent.api_retry_total_sec at its default
    (tmp_path / "job.py").write_text("print('hi')\n")
    monkeypatch.chdir(tmp_path)
    port = closed_port()
    env = {**cli_env, "CLEARML_CONFIG_FILE": str(conf), "CLEARML_API_HOST": f"http://127.0.0.1:{port}"}
    done, took = cli(env, *command)
    assert done.returncode == 2, done.stderr
    assert took < 20  # the 12 s default, the last attempt and the start-up: an interactive start, not a minute
    assert f"notebook-agent {command[0]}: cannot reach the ClearML server at http://127.0.0.1:{port}" in done.stderr
    assert "gave up after 12 s of retries; agent.api_retry_total_sec sets how long" in done.stderr
    retries = [line for line in done.stderr.splitlines() if "retrying" in line]
    assert retries == ["notebook-agent: auth.login failed (Connection refused); retrying for up to 12 s"], done.stderr
    assert "urllib3" not in done.stderr and "HTTPConnectionPool" not in done.stderr


def test_submit_to_an_unknown_queue_points_to_its_own_create_queue_flag(cli_env: dict[str, str], tmp_path, raw) -> None:
    script = tmp_path / "job.py"
    script.write_text("print('hi')\n")
    done, _ = cli(cli_env, "submit", "--script", str(script), "--queue", "made-by-submit")
    assert done.returncode == 2
    assert "queue 'made-by-submit' does not exist" in done.stderr and "pass --create-queue" in done.stderr
    done, _ = cli(cli_env, "submit", "--script", str(script), "--queue", "made-by-submit", "--create-queue")
    assert done.returncode == 0, done.stderr
    (task,) = raw.ok("tasks.get_all", {"id": [done.stdout.strip()]})["tasks"]
    queue = raw.ok("queues.get_all", {"name": "^made-by-submit$"})["queues"][0]
    assert [e["task"] for e in queue["entries"]] == [task["id"]]


def test_the_daemon_names_its_worker_queues_and_server_at_start(cli_env: dict[str, str], raw, server) -> None:
    raw.ok("queues.create", {"name": "high"})
    raw.ok("queues.create", {"name": "low"})
    agent = subprocess.Popen(
        [sys.executable, "-m", "notebook_agent", "daemon", "--queue", "high", "low", "--cpu-only"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert agent.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline and " listening on " not in line:
            line = agent.stdout.readline()
            assert line or agent.poll() is None, "the daemon ended before it listened"
        assert line.strip().endswith(f"listening on queues high, low (in priority order) at {server.url}"), line
        assert line.startswith("worker ") and ":cpu:" in line, line
    finally:
        agent.send_signal(signal.SIGINT)
        agent.wait(60)
