"""What a scenario gets (where to work, how many rounds) and what it hands back (samples and their metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report import Metric

# --quick only: clearml-agent's queue poll and task-process tick, through its own CLEARML_AGENT_QUEUE_POLL_FREQ_SEC
# (default 5 s). Its smoke runs then wait 1 s where a full run waits 5: clearml-agent's times in the quick tables
# are shorter than with its defaults. `idle` leaves it at 5 s (there the polling is what is measured).
QUICK_PEER_POLL_S = 1.0


@dataclass(frozen=True)
class ScenarioContext:
    work_dir: Path  # a fresh temporary folder, removed after the scenario unless `keep`
    rounds: int | None  # None: the scenario's default (1 with --quick)
    quick: bool  # one round, the smallest case, short windows: a smoke run (about 1.5 minutes for all of them)
    keep: bool = False  # leave agent folders and logs behind for a look
    # What one invocation's scenarios may share (with --quick: the warm-task run of pickup and end_to_end).
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def peer_poll_s(self) -> float | None:
        """clearml-agent's queue poll for this run: QUICK_PEER_POLL_S with --quick, else None (its default, 5 s)."""
        return QUICK_PEER_POLL_S if self.quick else None


@dataclass
class ScenarioResult:
    samples: list[dict[str, Any]]  # one per task run: agent, case, phase, round, status, metrics
    metrics: dict[str, Metric]  # metric name -> what it measures and which way is better, in table order
    table: list[str] = field(default_factory=list)  # the metrics the printed table shows (default: all)
    settings: dict[str, Any] = field(default_factory=dict)  # what both agents were given
    errors: list[str] = field(default_factory=list)  # runs that did not complete, one line each
    notes: list[str] = field(default_factory=list)  # printed under the table (what a reader must know of this run)

    @property
    def ok(self) -> bool:
        return not self.errors


def peer_poll_notes(ctx: ScenarioContext) -> list[str]:
    """The note under a table whose clearml-agent ran with the shortened --quick poll (none otherwise)."""
    if ctx.peer_poll_s is None:
        return []
    return [
        f"--quick: clearml-agent polled its queue and checked its task every {ctx.peer_poll_s:g} s "
        "(CLEARML_AGENT_QUEUE_POLL_FREQ_SEC; its default and full runs: 5 s), so its times are shorter, and the "
        "ratios of times smaller, than with its defaults."
    ]
