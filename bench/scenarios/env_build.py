"""Scenario env_build: a task without repository, cold (empty caches) then warm (venv-cache hit), per agent, with
one requirement and with a small typical stack, installed offline from the same local wheelhouse."""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.agents import AGENTS, AgentDirs, AgentKind, AgentProcess, CacheSettings
from bench.harness import BenchServer, BenchTimeout, StatusChange, alternate, delta, wait_for
from bench.report import OURS, Metric, lower
from bench.scenarios.base import ScenarioContext, ScenarioResult, peer_poll_notes
from bench.wheelhouse import build_wheelhouse, offline_pip_env

logger = logging.getLogger(__name__)

NAME = "env_build"
DESCRIPTION = (
    "Task without repository (script in script.diff), cold build with empty caches, then the identical task again "
    "(venv-cache hit); one requirement, and a small stack (numpy + pure-Python packages); offline wheelhouse."
)
DEFAULT_ROUNDS = 3
METRICS: dict[str, Metric] = {
    "total_s": lower("enqueue -> completed (server stamps; the primary, comparable metric)"),
    "start_s": lower("enqueue -> the task script's first line (a time.time() it prints)"),
    "launch_s": lower("pulled -> the task script's first line (start_s without the queue's pickup)"),
    "env_s": lower("pulled (first in_progress) -> 'worker starting task execution' (both agents send it at launch)"),
    "env_reported_s": lower(
        "ours: its log line 'environment built in X s'; clearml-agent: 'worker started execution' -> "
        "'worker starting task execution' (its execute child's build, as in wire_traces.md section 5)"
    ),
    "pickup_s": lower("enqueue -> pulled (queue polling: long poll for ours, every 5 s for clearml-agent)"),
    "finish_s": lower("the task script's last line -> completed"),
}
TABLE = ["total_s", "start_s", "launch_s", "env_s", "env_reported_s"]
STARTING = "worker starting task execution"
PEER_BUILD_STARTED = "worker started execution"
_BUILT = re.compile(r"environment built in ([0-9.]+) s")
_STAMP = re.compile(r"^BENCH_(START|END) ([0-9.]+)$")
_MODULE = re.compile(r"^BENCH_MODULE (\S+) (.+)$")


@dataclass(frozen=True)
class Case:
    name: str
    packages: tuple[str, ...]  # requirement lines (unpinned: the wheelhouse holds one version of each)
    modules: tuple[str, ...]  # what the script imports to prove they were installed


CASES = (
    Case("one_req", ("six",), ("six",)),
    Case(
        "small_stack",
        ("numpy", "six", "attrs", "python-dateutil", "pyparsing"),
        ("numpy", "six", "attr", "dateutil", "pyparsing"),
    ),
)


@dataclass(frozen=True)
class Limits:
    ready: float  # agent start -> worker registered
    task: float  # enqueue -> terminal status


FULL = Limits(ready=90.0, task=600.0)
QUICK = Limits(ready=45.0, task=90.0)


def script_source(case: Case) -> str:
    """The task: stamp its start, import each package (and say from where), stamp its end."""
    imports = "\n".join(f"import {module}" for module in case.modules)
    shown = ", ".join(case.modules)
    return (
        "import os\nimport time\n"
        'print("BENCH_START %.6f" % time.time(), flush=True)\n'
        f"{imports}\n"
        f"for module in ({shown},):\n"
        '    print("BENCH_MODULE", module.__name__, os.path.realpath(module.__file__), flush=True)\n'
        'print("BENCH_END %.6f" % time.time(), flush=True)\n'
    )


def run(ctx: ScenarioContext) -> ScenarioResult:
    cases = CASES[:1] if ctx.quick else CASES
    limits = QUICK if ctx.quick else FULL
    rounds = ctx.rounds or (1 if ctx.quick else DEFAULT_ROUNDS)
    cache = CacheSettings()
    wheelhouse = ctx.work_dir / "wheelhouse"
    wheels = build_wheelhouse({p for case in cases for p in case.packages}, wheelhouse)
    extra_env = offline_pip_env(wheelhouse)
    result = ScenarioResult(
        samples=[],
        metrics=METRICS,
        table=TABLE,
        settings={
            "rounds": rounds,
            "cases": {case.name: list(case.packages) for case in cases},
            "wheelhouse": sorted(w.name for w in wheels),
            "pip_env": {k: v for k, v in extra_env.items() if k != "PIP_FIND_LINKS"},
            "venvs_cache": {
                "max_entries": cache.max_entries,
                "free_space_threshold_gb": cache.free_space_threshold_gb,
            },
            "system_site_packages": False,
            "agent_config": {kind.name: kind.config(AgentDirs(Path("<agent dir>")), "", cache) for kind in AGENTS},
            "order": "per case and round: A B in even rounds, B A in odd ones",
            "limits_s": {"ready": limits.ready, "task": limits.task},
            "clearml_agent_poll_s": ctx.peer_poll_s or 5.0,
        },
        notes=peer_poll_notes(ctx),
    )
    with BenchServer(ctx.work_dir / "server") as server:
        for round_index in range(rounds):
            for case in cases:
                for kind in alternate(AGENTS, round_index):
                    samples = _run_pair(server, kind, case, round_index, ctx, extra_env, cache, limits)
                    result.samples += samples
                    result.errors += [problem for sample in samples if (problem := _problem(sample))]
    return result


def _run_pair(
    server: BenchServer,
    kind: AgentKind,
    case: Case,
    round_index: int,
    ctx: ScenarioContext,
    extra_env: Mapping[str, str],
    cache: CacheSettings,
    limits: Limits,
) -> list[dict[str, Any]]:
    """A fresh agent (new HOME, empty caches) runs the case's task twice: cold, then warm."""
    tag = f"{kind.name}-{case.name}-r{round_index}"
    dirs = AgentDirs(ctx.work_dir / tag)
    queue = f"bench-{tag}"
    queue_id = server.create_queue(queue)
    samples: list[dict[str, Any]] = []
    worker_id = f"bench-{tag}:cpu:0"
    agent = AgentProcess(kind, server, dirs, queue, worker_id, extra_env=extra_env, cache=cache, poll_s=ctx.peer_poll_s)
    try:
        with agent:
            agent.start(limits.ready)
            for phase in ("cold", "warm"):
                logger.info("%s: %s %s task, round %d", kind.name, case.name, phase, round_index + 1)
                sample = _run_task(server, agent, case, phase, queue_id, limits)
                samples.append({"agent": kind.name, "case": case.name, "phase": phase, "round": round_index, **sample})
                logger.info("%s", _describe(samples[-1]))
                if sample["status"] != "completed":
                    samples[-1]["agent_log_tail"] = agent.log_tail()
                    break  # a warm run after a failed cold one measures nothing
    except (BenchTimeout, RuntimeError) as err:
        logger.error("%s %s round %d: %s", kind.name, case.name, round_index + 1, err)
        samples.append(
            {
                "agent": kind.name,
                "case": case.name,
                "phase": "start",
                "round": round_index,
                "status": "error",
                "error": str(err),
            }
        )
    finally:
        if not ctx.keep:
            shutil.rmtree(dirs.root, ignore_errors=True)
    return samples


def _run_task(
    server: BenchServer, agent: AgentProcess, case: Case, phase: str, queue_id: str, limits: Limits
) -> dict[str, Any]:
    name = f"{agent.kind.name}-{case.name}-{phase}"
    task_id = server.create_script_task(name, script_source(case), "\n".join(case.packages) + "\n")
    server.enqueue(task_id, queue_id)
    try:
        status = server.recorder.wait_terminal(task_id, limits.task, alive=agent.alive)
    except BenchTimeout as err:
        return {"task_id": task_id, "status": "timeout", "error": str(err), "log_tail": server.task_log(task_id)[-60:]}
    lines = _log_with_last_line(server, task_id) if status == "completed" else server.task_log(task_id)
    sample = measure(server.recorder.changes(task_id), lines, agent.kind.name, agent.dirs.root)
    sample.update(task_id=task_id, status=status)
    if status != "completed":
        sample["log_tail"] = lines[-60:]
    return sample


def _log_with_last_line(server: BenchServer, task_id: str, timeout: float = 15.0) -> list[str]:
    """The task's log once it holds the script's last line: clearml-agent ships the console in 5 s batches and
    may report the status first. After `timeout`, whatever is there (that sample then lacks finish_s)."""

    def complete() -> list[str] | None:
        lines = server.task_log(task_id)
        return lines if any(line.startswith("BENCH_END ") for line in lines) else None

    try:
        return wait_for(complete, timeout, f"task {task_id}: the script's last line in the log", interval=0.5)
    except BenchTimeout:
        return server.task_log(task_id)


def measure(changes: Sequence[StatusChange], lines: Sequence[str], agent: str, root: Path) -> dict[str, Any]:
    """The metrics of one task run from its recorded status changes and its console log."""

    def at(match: Callable[[StatusChange], bool]) -> float | None:
        found = next((c for c in changes if match(c)), None)
        return found.at if found is not None else None

    enqueued = at(lambda c: c.status == "queued")
    pulled = at(lambda c: c.status == "in_progress")
    launched = at(lambda c: c.reason == STARTING)
    done = at(lambda c: c.status in ("completed", "failed", "stopped"))
    stamps = {m.group(1): float(m.group(2)) for m in map(_STAMP.match, lines) if m}
    if agent == OURS:
        found = next((m for m in map(_BUILT.search, lines) if m), None)
        built = float(found.group(1)) if found else None
        detail = found.string if found else None
        cache_hit = any("cache hit" in line for line in lines)
    else:
        build_started = at(lambda c: c.reason == PEER_BUILD_STARTED)
        detail = None
        built = delta(build_started, launched)
        cache_hit = any("Using Cached environment" in line for line in lines)
    modules = {m.group(1): m.group(2) for m in map(_MODULE.match, lines) if m}
    real_root = os.path.realpath(root)
    return {
        "total_s": delta(enqueued, done),
        "start_s": delta(enqueued, stamps.get("START")),
        "launch_s": delta(pulled, stamps.get("START")),
        "env_s": delta(pulled, launched),
        "env_reported_s": round(built, 3) if built is not None else None,
        "pickup_s": delta(enqueued, pulled),
        "finish_s": delta(stamps.get("END"), done),
        "cache_hit": cache_hit,
        "env_detail": detail,  # ours: the build's own line with its steps
        # Each package came from this agent's own folders (not the bench's interpreter): the build was real.
        "isolated": bool(modules) and all(path.startswith(real_root + os.sep) for path in modules.values()),
        "modules": modules,
        "status_changes": [[round(c.at - (enqueued or c.at), 3), c.status, c.reason, c.message] for c in changes],
    }


def _problem(sample: Mapping[str, Any]) -> str | None:
    """Why a sample does not count (or would mislead): not completed, a cold run that hit a cache or a warm one
    that missed it, packages imported from outside the agent's own folders."""
    where = f"{sample['agent']} {sample['case']} {sample['phase']} (round {sample['round'] + 1})"
    if sample["status"] != "completed":
        return f"{where}: {sample['status']} {sample.get('error', '')}".strip()
    if sample["cache_hit"] != (sample["phase"] == "warm"):
        return f"{where}: venv cache {'hit' if sample['cache_hit'] else 'missed'}"
    if not sample["isolated"]:
        return f"{where}: packages not imported from the agent's own venv: {sample['modules']}"
    return None


def _describe(sample: Mapping[str, Any]) -> str:
    if sample["status"] != "completed":
        return f"  -> {sample['status']}: {sample.get('error', '')}"
    parts = [f"{key} {sample[key]:.2f}" for key in METRICS if sample.get(key) is not None]
    flags = f"cache_hit={sample['cache_hit']} isolated={sample['isolated']}"
    return "  -> " + ", ".join(parts) + f" ({flags})"
