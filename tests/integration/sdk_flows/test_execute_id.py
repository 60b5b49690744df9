"""`execute --id ID --clone`: the agent clones a task made by an earlier flow (a completed one, or the draft
template) and runs the clone in the foreground; the clone completes and has what the original ran with.

The originals are the tasks of test_clearml_task_cli (a local script, a repository), test_execute_remotely (a git
repository with a remote and an uncommitted diff, a folder without one) and test_overrides (the draft template, and
its clone with overridden parameters), made once per agent and session; a pipeline step's clone is in
test_pipelines. A completed original carries the requirements its run froze, which
the clone installs. Standalone `Task.create(script=/abs/path)` tasks are left to test_task_create.
"""

from __future__ import annotations

import re

import pytest

from tests.integration.sdk_flows import test_clearml_task_cli, test_execute_remotely, test_overrides
from tests.integration.sdk_flows.conftest import values

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# The original's task id, and lines "PREFIX value" its clone must print.
SOURCES = {
    "cli-script": lambda agent, root: (test_clearml_task_cli.script_task(agent, root), {"VALUE": "demo-dep says 42"}),
    "cli-repo": lambda agent, root: (test_clearml_task_cli.repo_task(agent, root), {"VALUE": "demo-dep says 42"}),
    "remote-folder": lambda agent, root: (
        test_execute_remotely.remote_task(agent, root, "folder"),
        {"VALUE": "demo-dep says 42", "LIVE": "True"},
    ),
    "remote-git": lambda agent, root: (
        test_execute_remotely.remote_task(agent, root, "git"),
        {"VALUE": "demo-dep says 42", "DIFF": "a line only the uncommitted diff prints"},
    ),
    "override": lambda agent, root: (test_overrides.overridden_task(agent, root)[1], {"LR": "0.5", "BATCH": "32 int"}),
    # The draft template, never run: no frozen requirements of a run.
    "template": lambda agent, root: (test_overrides.overridden_task(agent, root)[0], {"LR": "0.1", "BATCH": "8 int"}),
}


@pytest.mark.flow("`execute --id --clone` of an earlier flow's task")
@pytest.mark.parametrize("source", list(SOURCES))
def test_execute_clone(agent, tmp_path, source):
    original, expected = SOURCES[source](agent, tmp_path)
    done = agent.execute(original, clone=True, cwd=tmp_path)
    # Each agent names the clone: ours "cloned A as B", clearml-agent "Task cloned, new task id=B".
    found = re.findall(r"(?:cloned \w+ as |new task id=)(\w+)", done.stdout)
    assert done.returncode == 0 and found, f"execute failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr}"
    clone = found[0]
    assert clone != original
    agent.expect_completed(clone)
    log = agent.log(clone)
    for prefix, value in expected.items():
        assert values(log, prefix) == [value], f"{prefix}: {values(log, prefix)}\n{log[-3000:]}"
    if not source.startswith("cli-"):
        assert values(log, "ID") == [clone], log[-3000:]  # Task.init under the agent attached to the clone
    assert agent.task(original)["status"] in ("completed", "created")  # the original is left as it was
