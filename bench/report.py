"""Bench results: per-metric statistics, the JSON file of a run and the printed ours-vs-clearml-agent table."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

OURS = "ours"
PEER = "clearml-agent"


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def p90(values: Sequence[float]) -> float | None:
    """The 90th percentile, nearest rank (with 3 samples: the largest; a bench has few samples, so no interpolation
    that would invent a value nobody measured)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


LOWER, HIGHER, NEITHER = "lower", "higher", "neither"  # Metric.better
RATIO_MEANING = (
    "above 1: ours is better (clearml-agent / ours where lower is better: times, memory, CPU, request counts; "
    "ours / clearml-agent where higher is better: rates); '=' equal, '-' no finite ratio (one side 0)"
)


@dataclass(frozen=True)
class Metric:
    """A metric a scenario measures: what it is, and which way is better. The ratio of every table and JSON comes
    from `better`, so that a ratio above 1 always means ours is better."""

    what: str
    better: str = LOWER  # LOWER (times, memory, CPU, requests, faults), HIGHER (rates), NEITHER (no ratio)

    def __post_init__(self) -> None:
        if self.better not in (LOWER, HIGHER, NEITHER):
            raise ValueError(f"Metric.better: {self.better!r} is not one of {LOWER}, {HIGHER}, {NEITHER}")

    def as_dict(self) -> dict[str, str]:
        return {"what": self.what, "better": self.better}


def lower(what: str) -> Metric:
    """A metric where less is better (a time, memory, CPU, a count of requests or of lost lines)."""
    return Metric(what, LOWER)


def higher(what: str) -> Metric:
    """A metric where more is better (lines or tasks per second)."""
    return Metric(what, HIGHER)


def neither(what: str) -> Metric:
    """A metric with no better side (a count that describes the run): it gets no ratio."""
    return Metric(what, NEITHER)


@dataclass(frozen=True)
class Row:
    """One line of the table: a metric of one (case, phase) for both agents."""

    case: str
    phase: str
    metric: str
    ours: list[float]
    peer: list[float]
    better: str = LOWER

    @property
    def ratio(self) -> float | None:
        return ratio(median(self.ours), median(self.peer), self.better)

    def as_dict(self) -> dict[str, Any]:
        ours, peer = median(self.ours), median(self.peer)
        return {
            "case": self.case,
            "phase": self.phase,
            "metric": self.metric,
            "better": self.better,
            OURS: {"n": len(self.ours), "median": ours, "p90": p90(self.ours), "values": self.ours},
            PEER: {"n": len(self.peer), "median": peer, "p90": p90(self.peer), "values": self.peer},
            "ratio": self.ratio,  # above 1: ours is better (RATIO_MEANING); the table prints the same number
        }


def ratio(ours: float | None, peer: float | None, better: str = LOWER) -> float | None:
    """How many times better ours is than clearml-agent: above 1 ours is better, below 1 worse, whichever way the
    metric goes (`better`): clearml-agent / ours where lower is better (3.0: ours takes a third of the time),
    ours / clearml-agent where higher is better (3.0: ours ships three times the lines per second).

    Equal medians give 1.0 (both 0 included). None where there is no finite, meaningful ratio: a median missing, a
    metric without a better side, a negative value (a difference), or 0 on one side only."""
    if ours is None or peer is None or better == NEITHER or ours < 0 or peer < 0:
        return None
    if ours == peer:
        return 1.0
    if ours == 0 or peer == 0:
        return None
    return peer / ours if better == LOWER else ours / peer


def ratio_text(ours: float | None, peer: float | None, better: str = LOWER) -> str:
    """The table's ratio cell: `3.2x`, `=` for equal medians (both 0 included), `-` where one side is 0 (no finite
    ratio; the medians beside it say which is better), `n/a` where there is nothing to compare."""
    if ours is None or peer is None or better == NEITHER:
        return "n/a"
    if ours == peer:
        return "="
    factor = ratio(ours, peer, better)
    if factor is None:
        return "-" if min(ours, peer) == 0 and max(ours, peer) > 0 else "n/a"
    if factor >= 100:
        return f"{factor:.0f}x"
    if factor >= 1:
        return f"{factor:.1f}x"
    return f"{factor:.2g}x"


def rows_from_samples(samples: Iterable[Mapping[str, Any]], metrics: Mapping[str, Metric]) -> list[Row]:
    """Group completed samples by (case, phase) in first-seen order; one Row per metric, in `metrics`' order."""
    groups: dict[tuple[str, str], dict[str, list[Mapping[str, Any]]]] = {}
    for sample in samples:
        if sample.get("status") != "completed":
            continue
        by_agent = groups.setdefault((sample["case"], sample["phase"]), {OURS: [], PEER: []})
        by_agent[sample["agent"]].append(sample)
    rows = []
    for (case, phase), by_agent in groups.items():
        for metric, spec in metrics.items():
            values = {
                agent: [float(s[metric]) for s in found if s.get(metric) is not None]
                for agent, found in by_agent.items()
            }
            rows.append(Row(case, phase, metric, values[OURS], values[PEER], spec.better))
    return rows


def format_table(rows: Sequence[Row]) -> str:
    """A Markdown table (pastes into bench/README.md as it is): medians, p90 in brackets, and the ratio (above 1:
    ours is better). Rows where neither agent has a value are left out. Units are in the metric's name."""
    header = ["case", "build", "metric", f"{OURS} median (p90)", f"{PEER} median (p90)", "ratio (>1: ours better)"]
    lines = [header]
    for row in rows:
        if not row.ours and not row.peer:
            continue
        ours, peer = median(row.ours), median(row.peer)
        lines.append(
            [row.case, row.phase, row.metric, _cell(row.ours), _cell(row.peer), ratio_text(ours, peer, row.better)]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def _cell(values: Sequence[float]) -> str:
    mid, high = median(values), p90(values)
    if mid is None or high is None:
        return "n/a"
    return f"{_number(mid)} ({_number(high)})"


def _number(value: float) -> str:
    # Hundredths below ten: a warm start of ours takes a few hundredths of a second.
    if abs(value) < 10:
        return f"{value:.2f}"
    return f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"


def machine() -> dict[str, Any]:
    """What a reader needs to weigh the numbers: cores, Python, OS, and the load others put on the machine."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg": list(load) if load else None,
    }


def write_results(results_dir: Path, scenario: str, payload: Mapping[str, Any]) -> Path:
    """`results_dir/<scenario>-<timestamp>.json`, written through a .tmp file so a reader never sees half of it."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = results_dir / f"{scenario}-{stamp}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
