"""`python -m bench [--quick] [--scenario NAME ...] [--rounds N]`: run scenarios, write JSON, print the table."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench.report import RATIO_MEANING, format_table, machine, rows_from_samples, write_results
from bench.scenarios import SCENARIOS, ScenarioContext

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description="notebook-agent vs clearml-agent benchmarks")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: one round, the smallest case, short windows, clearml-agent polling every 1 s "
        "(about 1.5 minutes for every scenario on 2 cores)",
    )
    p.add_argument(
        "--scenario", nargs="+", choices=sorted(SCENARIOS), default=sorted(SCENARIOS), help="scenarios to run"
    )
    p.add_argument("--rounds", type=int, default=None, help="rounds per scenario (default: the scenario's own)")
    p.add_argument(
        "--results-dir",
        type=Path,
        default=Path(os.environ.get("BENCH_RESULTS_DIR") or DEFAULT_RESULTS),
        help="where <scenario>-<timestamp>.json goes (default: $BENCH_RESULTS_DIR or bench/results)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary folders (agent logs, venvs) for a look")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    failed = False
    shared: dict[str, object] = {}  # what the scenarios of this invocation share (ScenarioContext.shared)
    printed: set[str] = set()  # notes printed under a table already
    for name in args.scenario:
        scenario = SCENARIOS[name]
        work_dir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        started, machine_before = time.time(), machine()
        try:
            result = scenario.run(ScenarioContext(work_dir, args.rounds, args.quick, args.keep, shared))
        finally:
            if args.keep:
                print(f"kept {work_dir}", file=sys.stderr)
            else:
                shutil.rmtree(work_dir, ignore_errors=True)
        rows = rows_from_samples(result.samples, result.metrics)
        shown = [row for row in rows if row.metric in (result.table or result.metrics)]
        payload = {
            "scenario": name,
            "description": scenario.DESCRIPTION,
            "command": command,
            "quick": args.quick,
            "started": datetime.fromtimestamp(started).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - started, 1),
            "machine": machine_before,
            "loadavg_after": machine()["loadavg"],
            "settings": result.settings,
            "metrics": {metric: spec.as_dict() for metric, spec in result.metrics.items()},
            "ratio": RATIO_MEANING,
            "notes": result.notes,
            "summary": [row.as_dict() for row in rows],
            "errors": result.errors,
            "samples": result.samples,
        }
        path = write_results(args.results_dir, name, payload)
        print(f"\n## {name} ({payload['duration_s']} s, results in {path})\n")
        print(format_table(shown))
        for note in result.notes:
            if note not in printed:  # once per invocation (every JSON keeps its own)
                printed.add(note)
                print(f"\n{note}")
        for error in result.errors:
            print(f"not completed: {error}")
        failed = failed or not result.ok
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
