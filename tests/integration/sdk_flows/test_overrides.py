"""Clone and override: a base task made by `Task.init` (argparse `--lr`, `task.connect({'batch': 8})`) and left as a
draft by `execute_remotely(queue_name=None)`; another process clones it, overrides both with `set_parameters` and
enqueues the clone; the agent-run script sees the overridden values."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.integration.sdk_flows.conftest import values

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# A folder with no repository (the SDK stores the script as the diff); its requirements.txt instead of the SDK's
# import analysis. Without a queue, execute_remotely resets the task to a draft and leaves, as a template.
TRAIN = """
import argparse
from clearml import Task
Task.force_requirements_env_freeze(force=False, requirements_file="requirements.txt")
task = Task.init(project_name="sdk matrix", task_name={name!r}, auto_connect_frameworks=False,
                 auto_resource_monitoring=False)
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
args = parser.parse_args()
config = task.connect({{"batch": 8}})
print("ID", task.id, flush=True)
task.execute_remotely(queue_name=None)
print("LR", args.lr)
print("BATCH", config["batch"], type(config["batch"]).__name__)
"""

# set_parameters replaces all of the task's parameters, so both overrides go in one call.
CLONE = """
import sys
from clearml import Task
base, name, queue = sys.argv[1:4]
cloned = Task.clone(source_task=base, name=name)
cloned.set_parameters({"Args/lr": 0.5, "General/batch": 32})
Task.enqueue(cloned, queue_name=queue)
print("ID", cloned.id)
"""

_MADE: dict[str, tuple[str, str]] = {}


def base_task(agent, root: Path) -> str:
    """The draft template task (made once per agent and session; test_execute_id clones it too)."""
    folder = root / "base"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(TRAIN.format(name=f"override base {agent.short}"))
    (folder / "requirements.txt").write_text("clearml\ndemo-dep\n")
    done = agent.run([sys.executable, "train.py"], cwd=folder)
    assert done.returncode == 0, f"train.py failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    (task_id,) = values(done.stdout, "ID")
    return task_id


def overridden_task(agent, root: Path) -> tuple[str, str]:
    """(base, clone): the clone with lr 0.5 and batch 32, completed by the agent's daemon."""
    if agent.name not in _MADE:
        base = base_task(agent, root)
        task = agent.task(base)
        assert task["status"] == "created", task["status"]
        params = task["hyperparams"]
        assert params["Args"]["lr"]["value"] == "0.1" and params["General"]["batch"]["value"] == "8", params
        out = agent.sdk(CLONE, base, f"override clone {agent.short}", agent.queue, cwd=root)
        (clone,) = values(out, "ID")
        agent.expect_completed(clone)
        _MADE[agent.name] = (base, clone)
    return _MADE[agent.name]


@pytest.mark.flow("clone + `set_parameters` (`Args/lr` argparse, `General/batch` from `connect(dict)`)")
def test_clone_set_parameters_argparse_and_connect(agent, tmp_path):
    base, clone = overridden_task(agent, tmp_path)
    log = agent.log(clone)
    assert values(log, "LR") == ["0.5"], log[-3000:]
    assert values(log, "BATCH") == ["32 int"], log[-3000:]  # cast back to the connected default's type
    assert agent.task(base)["status"] == "created"  # the template is left as it was
