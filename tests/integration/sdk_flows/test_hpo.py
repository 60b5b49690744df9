"""Hyperparameter optimization: `HyperParameterOptimizer` with `RandomSearch` over a base task's argparse `--lr`,
each job a clone of the base task run by the agent under test from its queue.

The optimizer runs here with `start()` (its jobs enqueued on the agent's queue); `start_locally()` would swap in
`LocalClearmlJob` and run the jobs as subprocesses of this process, never touching the agent.
"""

from __future__ import annotations

import sys

import pytest

from tests.integration.sdk_flows.conftest import values

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# The base task: its loss is smallest at lr = 0.3, so the jobs' values differ and the best one is known.
BASE = """
import argparse
from clearml import Task

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.9)
args = parser.parse_args()
task = Task.init(project_name="sdk matrix", task_name="hpo base", reuse_last_task_id=False)
loss = (args.lr - 0.3) ** 2
for iteration in range(3):
    task.get_logger().report_scalar("loss", "val", value=loss, iteration=iteration)
print("LOSS", args.lr, loss, flush=True)
"""

# The optimizer: 3 jobs one at a time. `pool_period_min` (minutes) is how often it looks at its jobs: 0.6 s
# instead of 2 min; its progress report every 0.6 s instead of 5 min.
OPTIMIZE = """
import sys
from clearml import Task
from clearml.automation import HyperParameterOptimizer, RandomSearch, UniformParameterRange

base_id, queue = sys.argv[1:3]
task = Task.init(
    project_name="sdk matrix", task_name="hpo optimizer", task_type=Task.TaskTypes.optimizer, reuse_last_task_id=False
)
print("OPTIMIZER", task.id, flush=True)
optimizer = HyperParameterOptimizer(
    base_task_id=base_id,
    hyper_parameters=[UniformParameterRange("Args/lr", min_value=0.0, max_value=1.0, step_size=0.05)],
    objective_metric_title="loss",
    objective_metric_series="val",
    objective_metric_sign="min",
    optimizer_class=RandomSearch,
    execution_queue=queue,
    max_number_of_concurrent_tasks=1,
    total_max_jobs=3,
    pool_period_min=0.01,
    time_limit_per_job=2.0,
)
optimizer.set_report_period(0.01)
optimizer.start()
assert optimizer.wait(timeout=3.0), "the optimizer did not finish within 3 minutes"
optimizer.stop()
for job in Task.get_tasks(task_filter={"parent": task.id}):
    metric = job.get_last_scalar_metrics().get("loss", {}).get("val", {})
    print("JOB", job.id, job.get_status(), job.get_parameter("Args/lr"), metric.get("last"), flush=True)
for top in optimizer.get_top_experiments(1):
    print("TOP", top.id, flush=True)
"""


@pytest.mark.flow("`HyperParameterOptimizer` + `RandomSearch`, 3 jobs, best job named")
def test_hpo_random_search(agent, tmp_path):
    """`HyperParameterOptimizer` with `RandomSearch`, 3 jobs: it finishes and names the best job."""
    base = tmp_path / "train.py"
    base.write_text(BASE)
    # The base task: made by running the script here once (Task.init records its argparse arguments).
    out = agent.run([sys.executable, str(base)], cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    (base_id,) = [line.split("id=", 1)[1].strip() for line in out.stdout.splitlines() if "created new task id=" in line]

    out = agent.sdk(OPTIMIZE, base_id, agent.queue, cwd=tmp_path, timeout=240)
    (optimizer_id,) = values(out, "OPTIMIZER")
    jobs = {}
    for line in values(out, "JOB"):
        job_id, status, lr, loss = line.split()
        jobs[job_id] = (status, float(lr), float(loss))
    assert len(jobs) == 3, out
    for job_id in jobs:
        agent.expect_completed(job_id)
    for _status, lr, loss in jobs.values():
        assert loss == pytest.approx((lr - 0.3) ** 2), jobs  # each job ran with the lr the optimizer gave it
    (top,) = values(out, "TOP")
    assert jobs[top][2] == min(loss for _, _, loss in jobs.values()), (top, jobs)
    # The optimizer's own task closes with its process.
    assert agent.task(optimizer_id)["status"] == "completed", agent.task(optimizer_id)
