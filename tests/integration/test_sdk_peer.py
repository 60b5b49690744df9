"""Acceptance: the real `clearml` SDK, configured by the embedded server's clearml.conf, works against it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)


def run_sdk(code: str, env: dict[str, str], cwd: Path, *args: str) -> str:
    """Run SDK code in its own interpreter (the SDK installs process-wide hooks) and return its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, f"SDK process failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def values(stdout: str, prefix: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in stdout.splitlines() if line.startswith(prefix + " ")]


@pytest.fixture
def sdk_env(client_env: dict[str, str], server) -> dict[str, str]:
    # Configured by the server's clearml.conf alone, as a user would be: no CLEARML_API_* variables.
    env = {k: v for k, v in client_env.items() if not k.startswith("CLEARML_API_")}
    env = {k: v for k, v in env.items() if k not in ("CLEARML_WEB_HOST", "CLEARML_FILES_HOST")}
    env["CLEARML_CONFIG_FILE"] = str(server.config_file)
    return env


def test_create_enqueue_get_status(sdk_env, tmp_path, raw):
    (tmp_path / "job.py").write_text("print('hello')\n")
    out = run_sdk(
        """
        from clearml import Task
        task = Task.create(project_name="sdk project", task_name="created by sdk", script="job.py",
                           add_task_init_call=False, packages=["six"])
        Task.enqueue(task, queue_name="default")
        again = Task.get_task(task_id=task.id)
        print("ID", task.id)
        print("STATUS", again.get_status())
        print("NAME", again.name)
        """,
        sdk_env,
        tmp_path,
    )
    (task_id,) = values(out, "ID")
    assert values(out, "STATUS") == ["queued"]
    assert values(out, "NAME") == ["created by sdk"]
    # The server agrees: the task waits in the default queue, with the script and requirements the SDK sent.
    queue = raw.ok("queues.get_by_id", {"queue": raw.default_queue()})["queue"]
    assert [e["task"] for e in queue["entries"]] == [task_id]
    task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
    assert task["script"]["entry_point"] == "job.py"
    assert "six" in task["script"]["requirements"]["pip"]
    assert "development" not in task["system_tags"]


def test_task_init_script_console_and_scalars(sdk_env, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from clearml import Task
            task = Task.init(project_name="sdk project", task_name="local run",
                             auto_connect_frameworks=False, auto_resource_monitoring=False)
            print("TASK", task.id)
            for i in range(3):
                print("step", i)
                task.get_logger().report_scalar("loss", "train", value=1.0 / (i + 1), iteration=i)
            print("a warning on stderr", file=sys.stderr)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], env=sdk_env, cwd=tmp_path, capture_output=True, text=True, timeout=150
    )
    assert done.returncode == 0, done.stderr
    (task_id,) = values(done.stdout, "TASK")
    out = run_sdk(
        """
        import json, sys
        from clearml import Task
        task = Task.get_task(task_id=sys.argv[1])
        print("STATUS", task.get_status())
        print("LOG", json.dumps(task.get_reported_console_output(number_of_reports=50)))
        print("SCALARS", json.dumps(task.get_reported_scalars()))
        """,
        sdk_env,
        tmp_path,
        task_id,
    )
    import json

    assert values(out, "STATUS") == ["completed"]
    console = "\n".join(json.loads(values(out, "LOG")[0]))
    for expected in ("step 0", "step 1", "step 2", "a warning on stderr", f"TASK {task_id}"):
        assert expected in console
    scalars = json.loads(values(out, "SCALARS")[0])
    assert scalars["loss"]["train"]["x"] == [0, 1, 2]
    assert scalars["loss"]["train"]["y"] == pytest.approx([1.0, 0.5, 1 / 3])


def test_api_client_lists_queues_and_workers(sdk_env, tmp_path, raw):
    queue_id = raw.default_queue()
    raw.ok("workers.register", {"worker": "peer-host:cpu:0", "queues": [queue_id]}, version=None)
    out = run_sdk(
        """
        from clearml.backend_api.session.client import APIClient
        client = APIClient()
        for q in client.queues.get_all():
            print("QUEUE", q.name, q.id)
        for w in client.workers.get_all():
            print("WORKER", w.id, ",".join(q.name for q in w.queues))
        """,
        sdk_env,
        tmp_path,
    )
    assert values(out, "QUEUE") == [f"default {queue_id}"]
    assert values(out, "WORKER") == ["peer-host:cpu:0 default"]
