"""`clearml-task`: the SDK's command line that makes a task from a local script or a repository and enqueues it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.fakes.gitrepo import make_git_repo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SCRIPT = """
import demo_dep
print("VALUE", demo_dep.VALUE)
"""


def clearml_task(agent, cwd: Path, *args: str) -> str:
    """Run `clearml-task ARGS --queue <agent's queue>`; the id of the task it made."""
    done = agent.run(["clearml-task", *args, "--queue", agent.queue], cwd=cwd)
    assert done.returncode == 0, f"clearml-task failed:\n{done.stdout}\n{done.stderr}"
    found = re.findall(r"New task created id=(\w+)", done.stdout)
    assert found, done.stdout
    return found[0]


_MADE: dict[str, str] = {}


def script_task(agent, root: Path) -> str:
    """The completed task of `clearml-task --script x.py --requirements req.txt` (once per agent and session:
    test_execute_id clones it)."""
    if agent.name not in _MADE:
        folder = root / "cli"
        folder.mkdir()
        (folder / "x.py").write_text(SCRIPT)
        (folder / "req.txt").write_text("demo-dep\n")
        name = f"cli script {agent.short}"
        args = ["--project", "sdk matrix", "--name", name, "--script", "x.py", "--requirements", "req.txt"]
        task_id = clearml_task(agent, folder, *args)
        agent.expect_completed(task_id)
        _MADE[agent.name] = task_id
    return _MADE[agent.name]


@pytest.mark.flow("`clearml-task --script x.py --requirements req.txt --queue Q`")
def test_clearml_task_local_script_with_requirements(agent, tmp_path):
    """A script in a folder with no repository: the SDK stores its source as the diff and the requirements file's
    lines (plus `clearml`) as the task's pip requirements."""
    task_id = script_task(agent, tmp_path)
    script = agent.task(task_id)["script"]
    assert not script.get("repository") and "demo_dep" in script["diff"], script
    assert "VALUE demo-dep says 42" in agent.log(task_id)


def repo_task(agent, root: Path) -> str:
    """The completed task of `clearml-task --repo <bare repo> --branch main --script x.py` (once per agent and
    session: test_execute_id clones it)."""
    key = agent.name + " repo"
    if key not in _MADE:
        work = root / "work"
        make_git_repo(work, {"x.py": SCRIPT, "requirements.txt": "demo-dep\n"})
        origin = root / "origin.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(origin)], check=True)
        args = ["--project", "sdk matrix", "--name", f"cli repo {agent.short}", "--repo", origin.as_uri()]
        task_id = clearml_task(agent, root, *args, "--branch", "main", "--script", "x.py")
        script = agent.task(task_id)["script"]
        assert script["repository"] == origin.as_uri() and script["branch"] == "main", script
        agent.expect_completed(task_id)
        _MADE[key] = task_id
    return _MADE[key]


@pytest.mark.flow("`clearml-task --repo file:///... --branch main --script x.py`")
def test_clearml_task_repo_branch(agent, tmp_path):
    """`--repo` a bare repository (file://) and `--branch`: the agent clones it and runs the script at the tip."""
    task_id = repo_task(agent, tmp_path)
    assert "VALUE demo-dep says 42" in agent.log(task_id)
