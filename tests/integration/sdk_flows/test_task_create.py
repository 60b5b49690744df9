"""`Task.create(script=...)`: the SDK's way to make a task from a local script, with and without packages."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.sdk_flows.conftest import values

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SCRIPT = """
import sys
print("standalone ran from", __file__, "args", sys.argv[1:])
"""

CREATE = """
import sys
from clearml import Task
name, script, packages = sys.argv[1:4]
kwargs = dict(project_name="sdk matrix", task_name=name, detect_repository=False)
if script.startswith("-m "):
    kwargs["module"] = script[3:]
else:
    kwargs["script"] = script
if packages != "-":
    kwargs["packages"] = packages.split(",")
else:
    kwargs["add_task_init_call"] = False
task = Task.create(**kwargs)
print("ID", task.id)
"""


def create(agent, tmp_path: Path, name: str, packages: str, script: str | None = None) -> tuple[str, str]:
    """A task made by `Task.create` from `tmp_path/scripts/train.py` (or `script`); not enqueued yet."""
    if script is None:
        path = tmp_path / "scripts" / "train.py"
        path.parent.mkdir()
        path.write_text(SCRIPT)
        script = str(path)
    out = agent.sdk(CREATE, name, script, packages, cwd=tmp_path)
    (task_id,) = values(out, "ID")
    return task_id, script


def enqueue(agent, task_id: str) -> None:
    queue = agent.raw.ok("queues.get_all", {"name": f"^{agent.queue}$"})["queues"][0]["id"]
    agent.raw.ok("tasks.enqueue", {"task": task_id, "queue": queue})


@pytest.mark.flow("`Task.create(script=<absolute path>)`")
@pytest.mark.parametrize("packages", ["-", "demo-dep"], ids=["no-packages", "packages"])
def test_task_create_absolute_script(agent, tmp_path, packages):
    """`Task.create(script=<absolute path>)`, no repository."""
    task_id, script = create(agent, tmp_path, f"create {packages}", packages)
    assert agent.task(task_id)["script"]["entry_point"] == script  # the standalone form: a path on this machine
    enqueue(agent, task_id)
    agent.expect_completed(task_id)
    assert "standalone ran from" in agent.log(task_id)


@pytest.mark.flow("`Task.create(module=...)`, no repository")
def test_task_create_module(agent, tmp_path):
    """`Task.create(module=...)`, no repository: `-m pkg.mod` from the task's packages."""
    task_id, _ = create(agent, tmp_path, "create module", "demo-dep", script="-m demo_dep")
    assert agent.task(task_id)["script"]["entry_point"] == "-m demo_dep"
    enqueue(agent, task_id)
    agent.expect_completed(task_id)


@pytest.mark.flow("`Task.create(script=<absolute path>)`, file deleted: a clear failure")
def test_task_create_absolute_script_deleted(agent, tmp_path):
    """`Task.create(script=<absolute path>)` after the file was deleted: a clear failure."""
    task_id, script = create(agent, tmp_path, "deleted script", "-")
    Path(script).unlink()
    enqueue(agent, task_id)
    task = agent.wait(task_id)
    assert task["status"] == "failed"
    if agent.name == "notebook-agent":
        reason = task["status_reason"]
        assert script in reason and "Task.init" in reason, reason


@pytest.mark.flow("`execute --id` and `--clone` of a `Task.create(script=<absolute path>)` task")
def test_task_create_absolute_script_execute_id(agent, tmp_path):
    """`execute --id` and `execute --id --clone` on a standalone `Task.create(script=...)` task."""
    task_id, _ = create(agent, tmp_path, f"execute standalone {agent.short}", "-")
    for clone in (False, True):
        done = agent.execute(task_id, clone=clone, cwd=tmp_path)
        assert done.returncode == 0, (
            f"{agent.name} execute (clone={clone}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    assert agent.task(task_id)["status"] == "completed"
    (clone,) = agent.raw.ok("tasks.get_all", {"name": f"^Clone of execute standalone {agent.short}$"})["tasks"]
    assert agent.task(clone["id"])["status"] == "completed"
