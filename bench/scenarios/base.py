"""What a scenario gets (where to work, how many rounds) and what it hands back (samples and their metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report import Metric


@dataclass(frozen=True)
class ScenarioContext:
    work_dir: Path  # a fresh temporary folder, removed after the scenario unless `keep`
    rounds: int | None  # None: the scenario's default (1 with --quick)
    quick: bool  # one round, the smallest case, short deadlines: a smoke run in about a minute
    keep: bool = False  # leave agent folders and logs behind for a look


@dataclass
class ScenarioResult:
    samples: list[dict[str, Any]]  # one per task run: agent, case, phase, round, status, metrics
    metrics: dict[str, Metric]  # metric name -> what it measures and which way is better, in table order
    table: list[str] = field(default_factory=list)  # the metrics the printed table shows (default: all)
    settings: dict[str, Any] = field(default_factory=dict)  # what both agents were given
    errors: list[str] = field(default_factory=list)  # runs that did not complete, one line each

    @property
    def ok(self) -> bool:
        return not self.errors
