"""Acceptance: a task made by the real SDK from a git repo with a diff and a requirement runs and re-attaches.

Every request our engine sends on the way is checked against the real SDK's v2.23 request schemas.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from notebook_agent.api import Session
from tests.fakes.gitrepo import make_git_repo
from tests.unit.api.test_contract import validate_request

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TRAIN = textwrap.dedent(
    """
    from clearml import Task
    # The repository's requirements.txt, instead of the SDK's import analysis (which may look packages up online).
    Task.force_requirements_env_freeze(force=False, requirements_file="requirements.txt")
    task = Task.init(project_name="engine acceptance", task_name="from git", auto_connect_frameworks=False,
                     auto_resource_monitoring=False)
    task.execute_remotely(queue_name="default", exit_process=True)
    import demo_dep
    print("attached to", task.id)
    print(demo_dep.VALUE)
    """
)


class RecordingSession(Session):
    """Our real Session, keeping what it sent so the test can validate every body."""

    def send(self, endpoint, data=None, *, version=None, lines=None, **options):
        self.sent.append((endpoint, data, lines))
        return super().send(endpoint, data, version=version, lines=lines, **options)


def test_sdk_git_task_with_diff_and_requirement(raw, run_worker, agent_config, client_env, tmp_path):
    origin = tmp_path / "origin.git"
    repo = tmp_path / "work"
    make_git_repo(repo, {"train.py": TRAIN, "requirements.txt": "demo-dep==1.0\n"})
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(origin)], check=True)
    subprocess.run(["git", "-C", str(repo), "remote", "add", "origin", origin.as_uri()], check=True)
    subprocess.run(["git", "-C", str(repo), "fetch", "-q", "origin"], check=True)
    subprocess.run(["git", "-C", str(repo), "branch", "-q", "-u", "origin/main"], check=True)
    # The uncommitted change: only the diff can print this line.
    (repo / "train.py").write_text(TRAIN + 'print("a line only the uncommitted diff prints")\n')

    # Repository detection in the main thread: the SDK's background detection forks git from a busy
    # multi-threaded process and now and then hangs before exec (seen here with clearml 2.1.12).
    sdk_conf = tmp_path / "sdk.conf"
    sdk_conf.write_text(
        Path(client_env["CLEARML_CONFIG_FILE"]).read_text() + "sdk { development { vcs_repo_detect_async: false } }\n"
    )
    done = subprocess.run(
        [sys.executable, "train.py"],
        cwd=repo,
        env={**client_env, "CLEARML_CONFIG_FILE": str(sdk_conf)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (task,) = raw.ok("tasks.get_all", {"name": "^from git$"})["tasks"]
    assert task["status"] == "queued"
    assert task["script"]["diff"] and task["script"]["version_num"]

    run = run_worker([])
    recording = RecordingSession.from_config(agent_config.api)
    recording.sent = []
    run.worker.session = recording
    with run:
        run.wait()
    task = raw.ok("tasks.get_by_id", {"task": task["id"]})["task"]
    assert task["status"] == "completed", task["status_reason"]
    events = raw.ok("events.get_task_log", {"task": task["id"], "batch_size": 10000, "navigate_earlier": False})
    log = "\n".join(e["msg"] for e in events["events"])
    assert "a line only the uncommitted diff prints" in log
    assert "demo-dep says 42" in log
    assert f"attached to {task['id']}" in log
    # No second task: the SDK inside attached to the one the agent ran.
    assert len(raw.ok("tasks.get_all", {"name": "^from git$"})["tasks"]) == 1
    assert any("demo-dep" in line for line in task["script"]["requirements"]["pip"])
    assert {e for e, _, _ in recording.sent} >= {"queues.get_next_task", "tasks.started", "events.add_batch"}
    for endpoint, data, lines in recording.sent:
        validate_request(endpoint, data, lines)
