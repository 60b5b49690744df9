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


@dataclass(frozen=True)
class Row:
    """One line of the table: a metric of one (case, phase) for both agents."""

    case: str
    phase: str
    metric: str
    ours: list[float]
    peer: list[float]

    def as_dict(self) -> dict[str, Any]:
        ours, peer = median(self.ours), median(self.peer)
        return {
            "case": self.case,
            "phase": self.phase,
            "metric": self.metric,
            OURS: {"n": len(self.ours), "median": ours, "p90": p90(self.ours), "values": self.ours},
            PEER: {"n": len(self.peer), "median": peer, "p90": p90(self.peer), "values": self.peer},
            "ratio": ratio(peer, ours),
        }


def ratio(peer: float | None, ours: float | None) -> float | None:
    """clearml-agent's median over ours: 3.0 means ours takes a third of the time."""
    if peer is None or ours is None or ours <= 0:
        return None
    return peer / ours


def rows_from_samples(samples: Iterable[Mapping[str, Any]], metrics: Sequence[str]) -> list[Row]:
    """Group completed samples by (case, phase) in first-seen order; one Row per metric."""
    groups: dict[tuple[str, str], dict[str, list[Mapping[str, Any]]]] = {}
    for sample in samples:
        if sample.get("status") != "completed":
            continue
        by_agent = groups.setdefault((sample["case"], sample["phase"]), {OURS: [], PEER: []})
        by_agent[sample["agent"]].append(sample)
    rows = []
    for (case, phase), by_agent in groups.items():
        for metric in metrics:
            values = {
                agent: [float(s[metric]) for s in found if s.get(metric) is not None]
                for agent, found in by_agent.items()
            }
            rows.append(Row(case, phase, metric, values[OURS], values[PEER]))
    return rows


def format_table(rows: Sequence[Row]) -> str:
    """A Markdown table (pastes into bench/README.md as it is): medians, p90 in brackets, and the ratio."""
    header = ["case", "build", "metric", f"{OURS} median (p90) s", f"{PEER} median (p90) s", f"{PEER} / {OURS}"]
    lines = [header]
    for row in rows:
        peer, ours = median(row.peer), median(row.ours)
        factor = ratio(peer, ours)
        lines.append(
            [
                row.case,
                row.phase,
                row.metric,
                _cell(row.ours),
                _cell(row.peer),
                f"{factor:.1f}x" if factor is not None else "n/a",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def _cell(values: Sequence[float]) -> str:
    mid, high = median(values), p90(values)
    if mid is None or high is None:
        return "n/a"
    return f"{_seconds(mid)} ({_seconds(high)})"


def _seconds(value: float) -> str:
    # Hundredths below ten seconds: a warm start of ours takes a few of them.
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


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
