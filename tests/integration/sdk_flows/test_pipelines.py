"""Pipelines: `PipelineController` with two function steps, its controller in the test's SDK process
(`start_locally`) or on the agent's services-mode daemon (`start(queue=...)`), and `PipelineDecorator` components;
the steps are run by the agent under test from its regular queue.

A function step's return value travels to the next step as the step task's `return/NAME` parameter when it is a
basic type (int, float, bool, str) and as an artifact otherwise; an artifact goes to the files server unless the
pipeline has an `output_uri`. The embedded server has no files server (an upload is `POST /`, answered "Invalid
request path '/'"), so the flows here return ints; the artifact variant is xfailed for issue 15.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.integration.sdk_flows.conftest import values

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# step_two adds 1 to step_one's doubling of 20: 41 says both ran, in order, and the value travelled between them.
# `pool_frequency` is in minutes: the controller looks at its steps every 0.6 s instead of every 12 s. Arguments by
# argparse, so that a controller run remotely (`start(queue=...)`) gets them back from its task.
CONTROLLER = """
import argparse
from clearml import PipelineController


def step_one(x, as_list):
    return [x * 2] if as_list else x * 2


def step_two(y):
    return y[0] + 1 if isinstance(y, list) else y + 1


parser = argparse.ArgumentParser()
parser.add_argument("--name")
parser.add_argument("--queue")
parser.add_argument("--controller", default="locally")
parser.add_argument("--artifact", action="store_true")
args = parser.parse_args()
pipe = PipelineController(name=args.name, project="sdk matrix", version="1.0.0", pool_frequency=0.01)
pipe.add_function_step(
    name="step_one", function=step_one, function_kwargs=dict(x=20, as_list=args.artifact),
    function_return=["doubled"], execution_queue=args.queue, cache_executed_step=False,
)
pipe.add_function_step(
    name="step_two", function=step_two, function_kwargs=dict(y="${step_one.doubled}"), function_return=["result"],
    execution_queue=args.queue, cache_executed_step=False,
)
print("PIPELINE", pipe.id, flush=True)
if args.controller == "locally":
    pipe.start_locally(run_pipeline_steps_locally=False)
else:
    pipe.start(queue=args.controller)  # enqueues the controller task and leaves the process
"""

# The decorator form: components on the agent's queue (the default execution queue), the pipeline logic here
# (`start_controller_locally`). `PipelineDecorator` waits on a component with a fixed 20 s between looks
# (`_wait_for_node`, no setting): the jobs' `wait` is made to look every 0.2 s instead.
DECORATOR = """
import sys
from clearml import PipelineDecorator, Task
from clearml.automation import job

_wait = job.BaseJob.wait
job.BaseJob.wait = lambda self, timeout=None, pool_period=30.0, **kw: _wait(self, timeout, min(pool_period, 0.2), **kw)


@PipelineDecorator.component(return_values=["doubled"], cache=False)
def step_one(x):
    return x * 2


@PipelineDecorator.component(return_values=["result"], cache=False)
def step_two(y):
    return y + 1


@PipelineDecorator.pipeline(
    name=sys.argv[1], project="sdk matrix", version="1.0.0", pool_frequency=0.01, start_controller_locally=True
)
def pipeline(x=20):
    print("PIPELINE", Task.current_task().id, flush=True)
    result = step_two(step_one(x))
    print("RESULT", result, flush=True)


PipelineDecorator.set_default_execution_queue(sys.argv[2])
pipeline()
"""


def steps(agent, pipeline_id: str) -> dict[str, dict]:
    """The pipeline's step tasks (their parent is the controller task), by name."""
    return {t["name"]: t for t in agent.raw.ok("tasks.get_all", {"parent": pipeline_id})["tasks"]}


def returned(task: dict, name: str) -> str:
    """A function step's basic-typed return value: its task's `return/NAME` parameter."""
    return task["hyperparams"]["return"][name]["value"]


def expect_steps_completed(agent, pipeline_id: str) -> dict[str, dict]:
    found = steps(agent, pipeline_id)
    assert set(found) == {"step_one", "step_two"}, found
    for task in found.values():
        agent.expect_completed(task["id"])
    return steps(agent, pipeline_id)


def run_controller(agent, tmp_path: Path, *args: str) -> str:
    script = tmp_path / "pipeline.py"
    script.write_text(CONTROLLER)
    done = agent.run([sys.executable, str(script), *args], cwd=tmp_path, timeout=150)
    assert done.returncode == 0, f"pipeline script failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    (pipeline_id,) = values(done.stdout, "PIPELINE")
    return pipeline_id


@pytest.mark.flow(
    "`PipelineController`, 2 function steps, `start_locally(run_pipeline_steps_locally=False)`; "
    "a step re-run by `execute --id --clone`"
)
def test_pipeline_controller_locally(agent, tmp_path):
    """`PipelineController`, two function steps, `start_locally(run_pipeline_steps_locally=False)`; a step
    re-run by `execute --id --clone`."""
    pipeline_id = run_controller(agent, tmp_path, "--name", "pipe local", "--queue", agent.queue)
    assert agent.task(pipeline_id)["status"] == "completed"
    found = expect_steps_completed(agent, pipeline_id)
    assert returned(found["step_one"], "doubled") == "40"
    assert returned(found["step_two"], "result") == "41"
    # A step task runs again as a clone, by `execute --id --clone`: its input was stored on it, resolved.
    before = {t["id"] for t in agent.raw.ok("tasks.get_all", {"name": "^Clone of step_two$"})["tasks"]}
    done = agent.execute(found["step_two"]["id"], clone=True, cwd=tmp_path)
    assert done.returncode == 0, f"{agent.name} execute --clone:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    (clone,) = [
        t for t in agent.raw.ok("tasks.get_all", {"name": "^Clone of step_two$"})["tasks"] if t["id"] not in before
    ]
    clone = agent.expect_completed(clone["id"])
    assert returned(clone, "result") == "41"


@pytest.mark.flow("`PipelineController`, 2 function steps, `start(queue=services)` on `--services-mode`")
def test_pipeline_controller_on_services_queue(agent, tmp_path):
    """`PipelineController`, two function steps, `start(queue=services)` on a services-mode daemon."""
    services = agent.services_queue
    args = ["--name", "pipe services", "--queue", agent.queue, "--controller", services]
    pipeline_id = run_controller(agent, tmp_path, *args)
    agent.expect_completed(pipeline_id)
    found = expect_steps_completed(agent, pipeline_id)
    assert returned(found["step_two"], "result") == "41"


@pytest.mark.flow("`PipelineController` step returning a list (an artifact)")
@pytest.mark.xfail(reason="needs a files server (artifact uploads) on the embedded server (issue 15)", strict=False)
def test_pipeline_controller_artifact_return(agent, tmp_path):
    """`PipelineController` whose step returns a list: passed on as an artifact (files server)."""
    pipeline_id = run_controller(agent, tmp_path, "--name", "pipe artifact", "--queue", agent.queue, "--artifact")
    found = expect_steps_completed(agent, pipeline_id)
    assert returned(found["step_two"], "result") == "41"


@pytest.mark.flow("`PipelineDecorator`, 2 components")
@pytest.mark.xfail(
    reason="needs tasks.get_by_id to answer execution.artifacts (a list, [] when none) on the embedded server "
    "(issue 15): PipelineDecorator._update_eager_generated_steps iterates it and raises TypeError on None",
    strict=False,
)
def test_pipeline_decorator(agent, tmp_path):
    """`PipelineDecorator`: the pipeline run here, its two components on the agent."""
    script = tmp_path / "decorated.py"
    script.write_text(DECORATOR)
    done = agent.run([sys.executable, str(script), "pipe decorator", agent.queue], cwd=tmp_path, timeout=150)
    assert done.returncode == 0, f"pipeline script failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    assert values(done.stdout, "RESULT") == ["41"]
    (pipeline_id,) = values(done.stdout, "PIPELINE")
    found = expect_steps_completed(agent, pipeline_id)
    assert returned(found["step_two"], "result") == "41"
