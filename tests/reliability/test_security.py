"""Security checks, all under the leak scan with the fake secrets: a task run, credentialed git clones, wrong and
unreachable credentials, the notebook's connect form and every repr leak nothing; credential files are private;
the embedded server listens on loopback, asks every caller for a valid token, and signs with a per-directory secret.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import requests

from notebook_agent import api
from notebook_agent.api.errors import TransportError, UnauthorizedError
from notebook_agent.cli.main import build_parser
from notebook_agent.config import PastedCredentials, load_config
from notebook_agent.config.writer import write_api_config, write_credentials
from notebook_agent.engine.worker import Worker, WorkerOptions
from notebook_agent.environment.git import checkout
from notebook_agent.environment.reporter import NullReporter
from notebook_agent.notebook.agent import Agent
from notebook_agent.server import EmbeddedServer, registry
from tests.fakes.git_http import GitHttpServer
from tests.fakes.gitrepo import make_git_repo
from tests.reliability.conftest import (
    FAKE_ACCESS_KEY,
    FAKE_GIT_PASSWORD,
    FAKE_GIT_USER,
    FAKE_SECRET_KEY,
    WorkerRun,
)
from tests.reliability.harness import ServerControl, task_log_lines, wait_until
from tests.reliability.leak_scan import LeakScan

# Endpoints a caller reaches before logging in, as on the real server (reference/server_api.md): they answer
# without any data of the company.
PUBLIC_ENDPOINTS = {"debug.ping", "login.supported_modes", "auth.logout", "login.logout"}
PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700

# What the git task prints: its clearml.conf's mode, then every text file of its checkout's .git (but objects),
# so that the scan of the stored task log sees each one.
GIT_TASK = """\
import os, pathlib, stat
conf = pathlib.Path(os.environ["CLEARML_CONFIG_FILE"])
print("conf mode", oct(stat.S_IMODE(conf.stat().st_mode)))
root = pathlib.Path.cwd()
while not (root / ".git").exists():
    root = root.parent
for path in sorted((root / ".git").rglob("*")):
    if path.is_file() and "objects" not in path.parts and path.name != "index":
        print("FILE", path.relative_to(root), path.read_text(errors="replace"))
print("private repository ran")
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A private repository over HTTP for the fake git user/password: (its URL, its commit)."""
    source = tmp_path / "source"
    sha = make_git_repo(source, {"train.py": GIT_TASK})
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(served / "team.git")], check=True)
    with GitHttpServer(served, FAKE_GIT_USER, FAKE_GIT_PASSWORD) as server:
        yield f"{server.url}/team.git", sha


def _with_password(url: str, user: str, password: str) -> str:
    return url.replace("http://", f"http://{user}:{password}@", 1)


def _worker_with(server: EmbeddedServer, tmp_path: Path, env: dict[str, str], agent_section: str) -> WorkerRun:
    """A worker for `server` whose agent {} section holds `agent_section` (git credentials, say)."""
    conf = tmp_path / "agent-git.conf"
    conf.write_text(
        server.config_file.read_text()
        + "agent {\n  package_manager { system_site_packages: true }\n"
        + f'  venvs_cache {{ path: "{tmp_path / "venvs-cache"}" }}\n'
        + f'  vcs_cache {{ enabled: false, path: "{tmp_path / "vcs-cache"}" }}\n'
        + agent_section
        + "\n}\n"
    )
    options = WorkerOptions(queues=[], state_dir=tmp_path / "state", stop_when_idle=True)
    return WorkerRun(load_config(conf, env={}), options, env)


def _enqueue(raw, name: str, **script) -> str:
    task_id = raw.new_task(name, script={"binary": "python3", "working_dir": ".", **script})
    raw.ok("tasks.enqueue", {"task": task_id, "queue": raw.default_queue()})
    return task_id


def _task(raw, task_id: str) -> dict:
    return raw.ok("tasks.get_by_id", {"task": task_id})["task"]


def _scan_reprs(leaks: LeakScan, **objects: object) -> None:
    for name, obj in objects.items():
        leaks.add_text(f"text repr {name}", repr(obj))
        leaks.add_text(f"text str {name}", str(obj))


# -- scenarios under the scan --------------------------------------------------------------------------------------


def test_a_task_run_end_to_end_leaks_nothing_and_keeps_its_files_private(
    server, raw, run_worker, agent_config, tmp_path, leaks
):
    go = tmp_path / "go"
    source = textwrap.dedent(
        f"""\
        import os, pathlib, stat, time
        conf = pathlib.Path(os.environ["CLEARML_CONFIG_FILE"])
        print("conf mode", oct(stat.S_IMODE(conf.stat().st_mode)))
        deadline = time.time() + 120
        while not pathlib.Path({str(go)!r}).exists() and time.time() < deadline:
            time.sleep(0.05)
        print("task done")
        """
    )
    task_id = _enqueue(raw, "plain task", entry_point="job.py", diff=source)
    state = tmp_path / "state"
    with run_worker([]) as run:
        pid_files = wait_until(lambda: list((state / "running").glob("*.json")), 180, what="the task's pid file")
        # While the task runs: every file of the state dir that can hold a credential or a URL is private.
        for path in [*pid_files, *_state_files(state)]:
            assert _mode(path) == PRIVATE_FILE, path
            assert _mode(path.parent) == PRIVATE_DIR, path.parent
        go.touch()
        run.wait()
        _scan_reprs(
            leaks,
            worker=run.worker,
            session=run.session,
            config=agent_config,
            api_config=agent_config.api,
            credentials=agent_config.api.credentials,
            server=server,
            key_pair=server.credentials,
        )
    task = _task(raw, task_id)
    assert task["status"] == "completed", task["status_reason"]
    lines = task_log_lines(raw, task_id)
    assert f"conf mode {oct(PRIVATE_FILE)}" in lines, lines
    for path in _state_files(state):
        assert _mode(path) == PRIVATE_FILE, path


def test_what_waits_in_the_state_dir_during_an_outage_is_private(server, raw, run_worker, tmp_path):
    """A server outage mid-task leaves the log spool (and its state) in the state dir: owner-only, like pid files."""
    gates = tmp_path / "gates"
    gates.mkdir()
    source = textwrap.dedent(
        f"""\
        import pathlib, time
        def wait(name):
            deadline = time.time() + 120
            while not (pathlib.Path({str(gates)!r}) / name).exists() and time.time() < deadline:
                time.sleep(0.05)
        wait("outage")
        for i in range(50):
            print("line written while the server is down", i, flush=True)
        wait("back")
        """
    )
    task_id = _enqueue(raw, "outage", entry_point="job.py", diff=source)
    state = tmp_path / "state"
    control = ServerControl(server)
    with run_worker([]) as run:
        wait_until(lambda: list((state / "running").glob("*.json")), 180, what="the task's pid file")
        control.stop()
        try:
            (gates / "outage").touch()
            spooled = wait_until(lambda: list((state / "spool").glob("*")), 90, what="the log spool")
            for path in [*spooled, *_state_files(state)]:
                assert _mode(path) == PRIVATE_FILE, path
                assert _mode(path.parent) == PRIVATE_DIR, path.parent
        finally:
            control.start()
        (gates / "back").touch()
        run.wait()
    assert _task(raw, task_id)["status"] == "completed"


def test_the_task_work_dir_is_private(raw, run_worker):
    source = (
        "import os, stat\n"
        "folder = os.path.dirname(os.environ['CLEARML_CONFIG_FILE'])\n"
        "print('work dir mode', oct(stat.S_IMODE(os.stat(folder).st_mode)))\n"
    )
    task_id = _enqueue(raw, "work dir mode", entry_point="job.py", diff=source)
    with run_worker([]) as run:
        run.wait()
    assert _task(raw, task_id)["status"] == "completed"
    assert f"work dir mode {oct(PRIVATE_DIR)}" in task_log_lines(raw, task_id)


def _state_files(state: Path) -> list[Path]:
    """The state dir's files that hold credentials, URLs or task output: pid files, pending statuses, log spools."""
    found: list[Path] = []
    for folder in ("running", "final", "spool", "pending"):
        if (state / folder).is_dir():
            found += [p for p in (state / folder).rglob("*") if p.is_file()]
    return found


@pytest.mark.parametrize("where", ["agent config", "repository URL"])
def test_a_git_task_clones_with_credentials_and_leaks_them_nowhere(
    server, raw, git_server, agent_env, tmp_path, leaks, where
):
    url, sha = git_server
    if where == "agent config":
        section = f'  git_user: "{FAKE_GIT_USER}"\n  git_pass: "{FAKE_GIT_PASSWORD}"\n'
        repository = url
    else:
        section = ""
        repository = _with_password(url, FAKE_GIT_USER, FAKE_GIT_PASSWORD)
        leaks.allow("server * task * script.repository")  # the test itself stored the URL with the password
    task_id = _enqueue(raw, "private repo", repository=repository, version_num=sha, entry_point="train.py")
    with _worker_with(server, tmp_path, agent_env, section) as run:
        run.wait()
    task = _task(raw, task_id)
    assert task["status"] == "completed", task["status_reason"]
    lines = "\n".join(task_log_lines(raw, task_id))
    assert "private repository ran" in lines
    # The scan reads these from the stored log: the checkout's .git files were printed, none with the password.
    assert "FILE .git/config" in lines and '[remote "origin"]' in lines, lines[-2000:]


def test_a_worker_whose_server_url_holds_a_password_leaks_it_nowhere(server, raw, agent_env, tmp_path, leaks):
    password = "Vb6Yr3Qs8-nbaurlpw"
    leaks.register(password, "password in the server URL")
    task_id = _enqueue(raw, "url with a password", entry_point="job.py", diff="print('ran')\n")
    conf = tmp_path / "agent-url.conf"
    conf.write_text(
        server.config_file.read_text().replace("http://", f"http://nbauser:{password}@")
        + "agent {\n  package_manager { system_site_packages: true }\n}\n"
    )
    config = load_config(conf, env={})
    assert password in config.api.api_server
    options = WorkerOptions(queues=[], state_dir=tmp_path / "state", stop_when_idle=True)
    with WorkerRun(config, options, agent_env) as run:
        run.wait()
        _scan_reprs(leaks, worker=run.worker, session=run.session, config=config, api_config=config.api)
    task = _task(raw, task_id)
    assert task["status"] == "completed", task["status_reason"]


def test_wrong_credentials_fail_with_a_reason_and_no_secret(server, raw, git_server, agent_env, tmp_path, leaks):
    wrong_git, wrong_api = "wronggit-Hq4Lz7Ye3", "nbawrong-secret-Pd8Xc3Mv6Rb1"
    leaks.register(wrong_git, "wrong git password")
    leaks.register(wrong_api, "wrong secret key")
    url, sha = git_server
    task_id = _enqueue(raw, "wrong git password", repository=url, version_num=sha, entry_point="train.py")
    section = f'  git_user: "{FAKE_GIT_USER}"\n  git_pass: "{wrong_git}"\n'
    with _worker_with(server, tmp_path, agent_env, section) as run:
        run.wait()
    task = _task(raw, task_id)
    assert task["status"] == "failed"
    assert "authentication failed" in task["status_reason"], task["status_reason"]

    session = api.Session(server.url, FAKE_ACCESS_KEY, wrong_api, retry_total_seconds=0)
    with pytest.raises(UnauthorizedError) as refused:
        session.login()
    session.close()
    assert refused.value.code == 401
    _scan_reprs(leaks, session=session, error=refused.value)


def test_an_unreachable_server_whose_url_holds_a_password(tmp_path, leaks):
    password = "Kw2Nf9Tj5-nbaurlpw"
    leaks.register(password, "password in the server URL")
    url = f"http://nbauser:{password}@127.0.0.1:{_free_port()}"
    conf = tmp_path / "clearml.conf"
    write_api_config(conf, PastedCredentials(url, "", "", FAKE_ACCESS_KEY, FAKE_SECRET_KEY))
    config = load_config(conf, env={})
    session = api.Session.from_config(config.api, retry_total_seconds=0.3, timeout=2)
    with pytest.raises(TransportError) as failed:
        api.queues.get_default(session)
    session.close()
    assert "127.0.0.1" in str(failed.value) and "****" in str(failed.value), failed.value
    agent = Agent(config=config, env={"HOME": str(tmp_path)}, state_dir=tmp_path / "state")
    _scan_reprs(leaks, session=session, error=failed.value, config=config, api_config=config.api, agent=agent)
    leaks.add_text("text Agent.status", agent.status())
    leaks.add_text("text Agent.config_text", agent.config_text())
    leaks.add_text("text Agent._repr_html_", agent._repr_html_())
    assert "127.0.0.1" in agent.status() and "127.0.0.1" in agent.config_text()


def test_the_connect_form_keeps_pasted_keys_in_its_password_field(server, tmp_path, monkeypatch, leaks):
    from notebook_agent.monitor.nvml import GpuMonitor
    from notebook_agent.notebook.panel import Panel
    from tests.fakes.fake_nvml import FakeNvml
    from tests.unit.notebook.test_panel_support import SENT, RecordingAgent, install_recording_comm, widget_texts

    install_recording_comm(monkeypatch)
    home = tmp_path / "home"
    home.mkdir()
    agent = RecordingAgent(env={"HOME": str(home)}, state_dir=tmp_path / "state")
    panel = Panel(agent, shell=None, gpu_monitor=GpuMonitor(nvml=FakeNvml([])), secrets=None)
    try:
        form = panel.connect
        # As the browser sends a paste: through set_state, which is what a comm "update" message calls.
        form.paste.set_state(
            {
                "value": f"""api {{
            web_server: {server.url}
            api_server: {server.url}
            files_server: {server.url}
            credentials {{
                "access_key" = "{FAKE_ACCESS_KEY}"
                "secret_key" = "{FAKE_SECRET_KEY}"
            }}
        }}"""
            }
        )
        assert form.secret_key.value == FAKE_SECRET_KEY and form.paste.value == ""
        form.test.click()
        assert panel.actions.join(30)
        assert "OK: logged in" in form.message.value, form.message.value
        form.save.click()
        assert panel.actions.join(30)
        conf = home / "clearml.conf"
        assert _mode(conf) == PRIVATE_FILE
        panel.refresh()
        # By design the secret stays in the Password field and the access key in its own input field (as the web
        # app shows it); every other text of every widget must hold neither.
        inputs = (form.secret_key, form.access_key)
        walked = 0
        for item, text in widget_texts(panel.widget):
            walked += 1
            shown = f"{item.description} {item.placeholder}" if any(item is field for field in inputs) else text
            leaks.add_text(f"text widget {type(item).__name__}", shown)
        assert walked > 20, walked
        # What went to the browser: every comm message of every widget but those two fields.
        private = {id(field.comm) for field in inputs}
        for comm in SENT:
            if id(comm) not in private:
                leaks.add_text("text widget comm message", repr(comm.messages))
        _scan_reprs(leaks, agent=agent, config=agent.config, panel_agent_status=agent.status())
        leaks.add_text("text Agent.config_text", agent.config_text())
    finally:
        panel.close()
        panel.actions.join(30)


def test_reprs_and_status_mask_every_secret(server, agent_config, agent_env, tmp_path, leaks):
    worker = Worker(agent_config, WorkerOptions(queues=["default"], state_dir=tmp_path / "state"), base_env=agent_env)
    agent = Agent(config=agent_config, env=agent_env, state_dir=tmp_path / "state")
    creds = server.credentials
    pasted = PastedCredentials(server.url, server.url, server.url, creds.access_key, creds.secret_key)
    _scan_reprs(
        leaks,
        worker=worker,
        worker_session=worker.session,
        agent=agent,
        config=agent_config,
        api_config=agent_config.api,
        credentials=agent_config.api.credentials,
        server=server,
        key_pair=creds,
        pasted=pasted,
        masked=agent_config.masked(),
    )
    leaks.add_text("text Agent.status", agent.status())
    leaks.add_text("text Agent.config_text", agent.config_text())
    leaks.add_text("text Agent._repr_html_", agent._repr_html_())
    # The masked forms still tell which key is in use.
    assert "NBAF****" in repr(agent_config.api) and "NBAF****" in repr(creds)
    worker.session.close()


# -- credential files ----------------------------------------------------------------------------------------------


def test_credential_files_and_their_folders_are_private(server, tmp_path):
    written = write_credentials(
        PastedCredentials(server.url, server.url, server.url, FAKE_ACCESS_KEY, FAKE_SECRET_KEY),
        tmp_path / "home" / "clearml.conf",
    )
    assert written.created and _mode(written.path) == PRIVATE_FILE
    own = write_api_config(
        tmp_path / "own" / "clearml.conf", PastedCredentials(server.url, "", "", FAKE_ACCESS_KEY, FAKE_SECRET_KEY)
    )
    assert _mode(own) == PRIVATE_FILE
    assert _mode(server.data_dir) == PRIVATE_DIR
    assert _mode(server.config_file) == PRIVATE_FILE
    for db in server.data_dir.glob("server.db*"):  # the database, its WAL and shared memory
        assert _mode(db) == PRIVATE_FILE, db


# -- the embedded server -------------------------------------------------------------------------------------------


def test_the_embedded_server_binds_loopback_by_default(tmp_path):
    assert EmbeddedServer().host == "127.0.0.1"  # nothing happens at construction: no data dir is touched
    server = EmbeddedServer(tmp_path / "default-host")
    with server:
        assert server._http is not None and server._http.server_address[0] == "127.0.0.1"
    assert build_parser().parse_args(["server"]).host == "127.0.0.1"


def test_every_endpoint_but_the_public_ones_requires_a_valid_token(server, raw, tmp_path):
    with EmbeddedServer(tmp_path / "other") as other:
        foreign = api.Session(other.url, other.credentials.access_key, other.credentials.secret_key)
        foreign.login()
        foreign_token = foreign._token
        foreign.close()
    names = registry.endpoint_names()
    assert len(names) > 30 and "tasks.get_all" in names and "queues.get_next_task" in names
    denied: dict[str, dict[str, int]] = {}
    http = requests.Session()
    for name in names:
        if name in PUBLIC_ENDPOINTS:
            continue
        for label, header in (
            ("no token", {}),
            ("garbage token", {"Authorization": "Bearer not-a-jwt"}),
            ("other server's token", {"Authorization": f"Bearer {foreign_token}"}),
        ):
            reply = http.post(f"{server.url}/{name}", json={}, headers=header, timeout=10)
            denied.setdefault(name, {})[label] = reply.status_code
    http.close()
    allowed = {name: codes for name, codes in denied.items() if set(codes.values()) != {401}}
    assert not allowed, allowed
    for name in PUBLIC_ENDPOINTS & set(names):
        data = requests.post(f"{server.url}/{name}", json={}, timeout=10).json()["data"] or {}
        assert not {"token", "credentials", "tasks", "queues", "workers"} & set(data), (name, data)


def test_the_token_secret_is_random_per_data_dir_and_survives_a_restart(server, raw, tmp_path):
    token = raw.token()
    secret = server.backend.token_secret
    with EmbeddedServer(tmp_path / "other") as other:
        assert other.backend.token_secret != secret
        assert len(secret) >= 64 and len(other.backend.token_secret) >= 64
    server.stop()
    server.start()
    assert server.backend.token_secret == secret
    reply = raw.call("queues.get_default", authorization=f"Bearer {token}")
    assert reply.status == 200, reply.meta  # a token from before the restart still verifies


# -- git credentials only through GIT_ASKPASS ----------------------------------------------------------------------


@contextmanager
def _argv_watch() -> Iterator[list[str]]:
    """Every command line on the machine, sampled every ~5 ms (a clone's git processes live for milliseconds)."""
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for proc in psutil.process_iter(["cmdline"]):
                seen.append(" ".join(proc.info["cmdline"] or []))
            done.wait(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join(10)


@pytest.mark.parametrize("where", ["git_user/git_pass", "repository URL"])
def test_git_credentials_go_only_through_askpass(git_server, tmp_path, where):
    url, sha = git_server
    if where == "repository URL":
        repository, kwargs = _with_password(url, FAKE_GIT_USER, FAKE_GIT_PASSWORD), {}
    else:
        repository, kwargs = url, {"git_user": FAKE_GIT_USER, "git_pass": FAKE_GIT_PASSWORD}
    dest = tmp_path / "work" / "code"
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    with _argv_watch() as seen:
        got = checkout(repository, dest, commit=sha, env=env, reporter=NullReporter(), **kwargs)
    assert got == sha and (dest / "train.py").exists()
    assert any("clone" in argv for argv in seen), "the watcher never saw the clone"
    assert not [argv for argv in seen if FAKE_GIT_PASSWORD in argv]
    secret = FAKE_GIT_PASSWORD.encode()
    holders = [p for p in (tmp_path / "work").rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert not holders, holders  # .git/config, the remotes, the reflog: the URL is stored without the password
    assert not list((tmp_path / "work").glob(".git-askpass-*")), "the askpass script outlived the clone"
