"""Scenario end_to_end: enqueue -> completed for a trivial task with a warm environment, per agent.

The same warm-task sequence as `pickup` (a warm-up task fills the venv cache, then tasks enqueued one at a time at
offsets spread over clearml-agent's 5 s poll cycle after the previous one completed); here the whole run counts."""

from __future__ import annotations

from bench.report import Metric, lower
from bench.scenarios.base import ScenarioContext, ScenarioResult
from bench.scenarios.pickup import run_warm_tasks

NAME = "end_to_end"
DESCRIPTION = (
    "Trivial task (prints, imports its one requirement), warm environment (venv-cache hit), tasks enqueued one at a "
    "time at offsets over clearml-agent's 5 s poll cycle after the previous one completed: enqueue -> completed."
)
METRICS: dict[str, Metric] = {
    "total_s": lower("enqueue -> completed (server stamps; the primary metric)"),
    "pickup_s": lower("enqueue -> pulled (first in_progress): long poll for ours, a 5 s poll for clearml-agent"),
    "first_instruction_s": lower("enqueue -> the task script's first instruction (a time.time() it writes to a file)"),
    "finish_s": lower("the script's last instruction -> completed (process exit noticed, logs flushed, status sent)"),
}
TABLE = ["total_s", "pickup_s", "first_instruction_s", "finish_s"]


def run(ctx: ScenarioContext) -> ScenarioResult:
    return run_warm_tasks(ctx, NAME, METRICS, TABLE)
