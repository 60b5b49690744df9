"""`Task.init` + `task.execute_remotely(queue_name=Q)`: the SDK enqueues the task it just made and leaves; the agent
runs the script again, and `Task.init` there attaches to that same task (running remotely).

Three places the script can live: a git repository with a remote (the agent clones the remote and applies the
uncommitted diff), a folder with no repository (the SDK stores the whole script as the diff), and a repository with
no remote at all (the SDK stores a repository it cannot give anyone).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.gitrepo import make_git_repo
from tests.integration.sdk_flows.conftest import REMOTE_HEAD, values

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# After the head, what only the agent's run does; its Logger reports are read back by test_reporting.
TRAIN = (
    REMOTE_HEAD
    + """
import clearml
import demo_dep
print("VALUE", demo_dep.VALUE)
print("LOCALLY", Task.running_locally())
print("REMOTELY", clearml.config.running_remotely())
logger = task.get_logger()
for i in range(3):
    logger.report_scalar("loss", "train", value=1.0 / (i + 1), iteration=i)
logger.report_text("TEXT a line sent with report_text")
{live}"""
)

# While the task still runs, the SDK's reporter sends its reports every report_period_sec (1 s here): the task
# itself polls the server for its scalars, as a user watching the UI would, and says whether they arrived.
LIVE = """
import time
deadline, live = time.monotonic() + 8, False
while not live and time.monotonic() < deadline:
    live = bool(Task.get_task(task_id=task.id).get_reported_scalars().get("loss"))
    if not live:
        time.sleep(0.5)
print("LIVE", live)
"""

_MADE: dict[tuple[str, str], str] = {}


def write_script(agent, folder: Path, name: str, live: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(TRAIN.format(name=name, queue=agent.queue, live=LIVE if live else ""))
    (folder / "requirements.txt").write_text("clearml\ndemo-dep\n")


def launch(agent, folder: Path, name: str) -> str:
    """Run `train.py` in `folder` as a user would; the id of the task it enqueued (only one with that name)."""
    done = agent.run([sys.executable, "train.py"], cwd=folder)
    assert done.returncode == 0, f"train.py failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    (task_id,) = values(done.stdout, "ID")
    tasks = agent.raw.ok("tasks.get_all", {"name": f"^{name}$"})["tasks"]
    assert [t["id"] for t in tasks] == [task_id]
    return task_id


def git_with_remote(agent, root: Path, name: str) -> Path:
    """A clone-able repository: a file:// bare origin, `main` tracking it, and an uncommitted change."""
    repo = root / "work"
    write_script(agent, repo, name)
    make_git_repo(repo, {})  # the files written above, committed
    origin = root / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(origin)], check=True)
    subprocess.run(["git", "-C", str(repo), "remote", "add", "origin", origin.as_uri()], check=True)
    subprocess.run(["git", "-C", str(repo), "fetch", "-q", "origin"], check=True)
    subprocess.run(["git", "-C", str(repo), "branch", "-q", "-u", "origin/main"], check=True)
    with (repo / "train.py").open("a") as f:  # only the diff can print this line
        f.write('print("DIFF a line only the uncommitted diff prints")\n')
    return repo


def remote_task(agent, root: Path, where: str) -> str:
    """The task of a script in `where` ("git" or "folder") run with execute_remotely, once per agent and session:
    test_reporting and test_execute_id read the same run."""
    key = (where, agent.name)
    if key not in _MADE:
        name = f"remote {where} {agent.short}"
        if where == "git":
            folder = git_with_remote(agent, root, name)
        else:
            folder = root / "plain"
            write_script(agent, folder, name, live=True)
        task_id = launch(agent, folder, name)
        agent.expect_completed(task_id)
        _MADE[key] = task_id
    return _MADE[key]


def assert_attached(agent, task_id: str) -> str:
    log = agent.log(task_id)
    # The local run's console went to the task too: both printed ID, and the agent's run attached to the same task.
    assert set(values(log, "ID")) == {task_id} and len(values(log, "ID")) == 2, log[-3000:]
    assert values(log, "LOCALLY") == ["False"] and values(log, "REMOTELY") == ["True"], log[-3000:]
    assert values(log, "VALUE") == ["demo-dep says 42"], log[-3000:]
    return log


@pytest.mark.flow("`Task.init` + `execute_remotely`, git repo with a remote and a diff")
def test_execute_remotely_git_with_remote(agent, tmp_path):
    task_id = remote_task(agent, tmp_path, "git")
    script = agent.task(task_id)["script"]
    assert script["repository"].startswith("file://") and script["diff"] and script["version_num"], script
    log = assert_attached(agent, task_id)
    assert "DIFF a line only the uncommitted diff prints" in log


@pytest.mark.flow("`Task.init` + `execute_remotely`, outside any git repo")
def test_execute_remotely_no_repository(agent, tmp_path):
    task_id = remote_task(agent, tmp_path, "folder")
    script = agent.task(task_id)["script"]
    # No repository: the script's whole source is the diff.
    assert not script.get("repository") and "execute_remotely" in script["diff"], script
    assert_attached(agent, task_id)


@pytest.mark.flow("`Task.init` + `execute_remotely`, git repo without remote (the SDK stores no source): fails clearly")
def test_execute_remotely_git_without_remote_sdk_stores_no_source(agent, tmp_path):
    """The SDK's fault: in a repository with no remote it warns "Can't get url information for git repo", then
    stores the branch and commit with an empty repository and an empty diff, i.e. nothing to run. The task fails;
    ours says why before building anything, clearml-agent builds the environment and then finds no file."""
    name = f"remote no-remote {agent.short}"
    repo = tmp_path / "work"
    write_script(agent, repo, name)
    make_git_repo(repo, {})
    task_id = launch(agent, repo, name)
    script = agent.task(task_id)["script"]
    assert script["repository"] == "" and script["diff"] == "" and script["version_num"], script
    assert script["entry_point"] == "train.py", script
    task = agent.wait(task_id)
    assert task["status"] == "failed", task["status"]
    if agent.name == "notebook-agent":
        assert "no repository and no script source" in task["status_reason"], task["status_reason"]
    else:
        assert "can't open file" in agent.log(task_id)
