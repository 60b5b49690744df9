"""Acceptance 6: docker mode through a stand-in `docker` (no docker engine runs here; see tests/fakes/docker_standin).

A queued task with container.image runs through `docker run` to completed with its log on the server, and the
recorded command is the expected one; `build --docker` records the run, commit and rm sequence.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from notebook_agent import __version__
from notebook_agent.engine import docker
from notebook_agent.engine.events import TaskPhase, TaskPhaseChanged
from tests.fakes.docker_standin import install_docker_standin, recorded_calls
from tests.integration.engine.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

JOB = (
    "import os\nprint('inside the container', os.environ['CLEARML_TASK_ID'], 'FROM_TASK=' + os.environ['FROM_TASK'])\n"
)
WHEEL = f"notebook_agent-{__version__}-py3-none-any.whl"


@pytest.fixture
def agent_env(agent_env, tmp_path):
    """The agent's environment with the stand-in docker first on PATH (and no ssh agent socket to mount)."""
    install_docker_standin(tmp_path / "standin-bin", tmp_path / "docker-calls.jsonl", tmp_path / "container-home")
    env = {**agent_env, "PATH": f"{tmp_path / 'standin-bin'}{os.pathsep}{agent_env['PATH']}"}
    env.pop("SSH_AUTH_SOCK", None)
    return env


@pytest.fixture
def standin(agent_env, tmp_path):
    """(the agent's environment, the stand-in's record file, the emulated container's home)."""
    return agent_env, tmp_path / "docker-calls.jsonl", tmp_path / "container-home"


def container_task(raw, name: str, source: str, **container) -> str:
    script = {"binary": "python3", "entry_point": "job.py", "working_dir": ".", "diff": source}
    task_id = raw.new_task(name, script=script, container=container)
    raw.ok("tasks.enqueue", {"task": task_id, "queue": raw.default_queue()})
    return task_id


def task_log(raw, task_id: str) -> list[str]:
    events = raw.ok("events.get_task_log", {"task": task_id, "batch_size": 10000, "navigate_earlier": False})
    return [line for e in events["events"] for line in e["msg"].split("\n")]


def test_a_queued_container_task_runs_through_docker_run(raw, run_worker, standin, agent_config, tmp_path):
    env, record, _ = standin
    task_id = container_task(
        raw,
        "in a container",
        JOB,
        image="python:3.11-slim",
        arguments="--ipc=host -e FROM_TASK=1",
        setup_shell_script="echo setup",
    )
    with run_worker([], docker=[], gpus="0,1") as run:
        run.wait()
    task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
    assert task["status"] == "completed", task["status_reason"]
    log = task_log(raw, task_id)
    assert f"inside the container {task_id} FROM_TASK=1" in log  # the -e of the task's arguments reached the task
    assert any(line.startswith(f"Running task {task_id} inside docker: python:3.11-slim") for line in log)
    phases = [e.phase for e in run.events if isinstance(e, TaskPhaseChanged)]
    assert phases == [TaskPhase.PULLED, TaskPhase.BUILDING, TaskPhase.RUNNING, TaskPhase.COMPLETED]

    worker_id = run.worker.worker_id
    assert worker_id.endswith(":gpu0,1")
    work = Path(tempfile.gettempdir()) / "notebook-agent" / worker_id.replace(":", "_") / task_id
    home = Path(env["HOME"])
    calls = recorded_calls(record)
    assert [c[0] for c in calls] == ["run"]
    argv = calls[0]
    assert argv[:-1] == [
        "run", "-t",
        "--gpus", '"device=0,1"',
        "--ipc=host", "-e", "FROM_TASK=1",
        "--network", "host",  # the embedded server listens on 127.0.0.1
        "-l", f"clearml-worker-id={worker_id}", "-l", f"clearml-parent-worker-id={worker_id}",
        "-e", f"CLEARML_WORKER_ID={worker_id}", "-e", "CLEARML_DOCKER_IMAGE=python:3.11-slim",
        "-e", f"CLEARML_TASK_ID={task_id}",
        "--name", docker.container_name(worker_id, task_id),
        "-v", f"{work}/container.clearml.conf:/tmp/clearml.conf", "-e", "CLEARML_CONFIG_FILE=/tmp/clearml.conf",
        "-v", f"{home}/.clearml/apt-cache:/var/cache/apt/archives",
        "-v", f"{home}/.clearml/pip-cache:/root/.cache/pip",
        "-v", f"{tmp_path}/pip-download-cache:/root/.clearml/pip-download-cache",
        "-v", f"{home}/.clearml/cache:/clearml_agent_cache",
        "-v", f"{tmp_path}/vcs-cache:/root/.clearml/vcs-cache",
        "-v", f"{tmp_path}/venvs-cache/{docker.image_folder('python:3.11-slim')}:/root/.clearml/venvs-cache",
        "-v", f"{work}/{WHEEL}:/tmp/{WHEEL}:ro",
        "--rm",
        "python:3.11-slim", "bash", "-c",
    ]  # fmt: skip
    parts = argv[-1].split(" ; ")
    assert parts[-2:] == [
        "echo setup",
        f"NVIDIA_VISIBLE_DEVICES=all $LOCAL_PYTHON -u -m notebook_agent execute --disable-monitoring --id {task_id}",
    ]
    assert agent_config.api.credentials.secret_key not in json.dumps(calls)  # only in the 0600 mounted file
    # The venv was built by the agent "inside", into the per-image cache folder the container saw.
    assert list((tmp_path / "venvs-cache" / docker.image_folder("python:3.11-slim")).iterdir())


def test_an_abort_stops_the_container_first(raw, run_worker, standin):
    _, record, _ = standin
    task_id = container_task(
        raw, "stop me", "import time\nprint('RUNNING', flush=True)\ntime.sleep(600)\n", image="python:3.11-slim"
    )
    with run_worker([], docker=["fallback:1"], cpu_only=True, grace_sec=2.0) as run:
        wait_for(lambda: any("RUNNING" in line for line in task_log(raw, task_id)), timeout=120)
        assert run.worker.abort(task_id)
        run.wait()
    assert raw.ok("tasks.get_by_id", {"task": task_id})["task"]["status"] == "stopped"
    calls = recorded_calls(record)
    name = docker.container_name(run.worker.worker_id, task_id)
    assert [c[0] for c in calls] == ["run", "stop"]
    assert calls[1] == ["stop", "-t", "2", name]
    assert "--gpus" not in calls[0]  # --cpu-only


def cli(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notebook_agent", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_build_docker_records_run_commit_and_rm(raw, standin, client_env):
    env, record, container_home = standin
    env = {**env, **{k: v for k, v in client_env.items() if k.startswith("CLEARML_")}}
    task_id = container_task(raw, "to build", "print('built')\n", image="python:3.11-slim")
    built = cli(env, "build", "--id", task_id, "--docker", "--target", "me/task:1", "--entry-point", "clone_task",
                "--cpu-only")  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    calls = recorded_calls(record)
    assert [c[0] for c in calls] == ["run", "commit", "rm"]
    run, commit, rm = calls
    name = run[run.index("--name") + 1]
    assert name.startswith("notebook-agent-build.") and name.endswith(f".{task_id}")
    assert "--rm" not in run and "--gpus" not in run
    assert run[-1].split(" ; ")[-1] == f"$LOCAL_PYTHON -u -m notebook_agent build --id {task_id} --in-image"
    entry = json.dumps(["notebook-agent", "execute", "--id", task_id, "--clone"])
    assert commit == ["commit", f"--change=ENTRYPOINT {entry}", name, "me/task:1"]
    assert rm == ["rm", "-f", name]
    # The agent "inside" built the environment into the image's venv cache and left its settings, no secrets.
    assert list((container_home / ".notebook_agent" / "venvs-cache").iterdir())
    image_conf = (container_home / "clearml.conf").read_text()
    assert "system_site_packages" in image_conf and "secret" not in image_conf.lower()
    assert raw.ok("tasks.get_by_id", {"task": task_id})["task"]["status"] == "queued"  # built, not run


def test_execute_docker_runs_the_task_through_the_standin(raw, standin, client_env):
    env, record, _ = standin
    env = {**env, **{k: v for k, v in client_env.items() if k.startswith("CLEARML_")}}
    task_id = container_task(raw, "execute in docker", "print('executed in docker')\n")  # no image: the default
    done = cli(env, "execute", "--id", task_id, "--docker", "python:3.12-slim", "--cpu-only")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "executed in docker" in done.stdout
    (run,) = recorded_calls(record)
    assert run[run.index("bash") - 1] == "python:3.12-slim"
    assert "CLEARML_DOCKER_IMAGE=python:3.12-slim" in run
    assert raw.ok("tasks.get_by_id", {"task": task_id})["task"]["status"] == "completed"
