"""Scenario idle: what an idle agent (registered, its queue empty) costs: API requests per minute, counted where
the embedded server dispatches them, and the CPU of the agent's whole process tree, over a 60 s window."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.agents import AGENTS, AgentDirs, AgentKind, AgentProcess, CacheSettings
from bench.harness import BenchServer, BenchTimeout, RequestCounter, alternate
from bench.report import Metric, lower
from bench.scenarios.base import ScenarioContext, ScenarioResult

logger = logging.getLogger(__name__)

NAME = "idle"
DESCRIPTION = (
    "An idle agent (registered, its queue empty) over a 60 s window: API requests per minute (counted by the "
    "embedded server, per endpoint) and CPU of the agent's process tree. Ours long-polls the embedded server."
)
METRICS: dict[str, Metric] = {
    "requests_per_min": lower("API requests the server dispatched in the window (only this agent runs), per minute"),
    "cpu_percent": lower(
        "CPU time (user + system, reaped children included) of the agent's process tree / wall, % of one core"
    ),
    "rss_mb": lower("resident memory of the agent's process tree at the window's end, MB"),
}
TABLE = list(METRICS)
CASE = "idle"
DEFAULT_ROUNDS = 2


@dataclass(frozen=True)
class Timing:
    ready: float  # agent start -> worker registered
    settle: float  # registered -> the window opens (start-up work done: the steady state is measured)
    window: float  # the measured idle time


FULL = Timing(ready=90.0, settle=5.0, window=60.0)
QUICK = Timing(ready=45.0, settle=1.0, window=5.0)  # one of clearml-agent's 5 s poll cycles


@dataclass(frozen=True)
class TreeUsage:
    """CPU seconds and memory of a process tree at one moment."""

    cpu_s: float
    rss_mb: float
    pids: tuple[int, ...]


def tree_usage(root: psutil.Process) -> TreeUsage:
    """user + system + children_user + children_system over the root and its live descendants. A child that exits
    is reaped by its parent in the tree, which then carries its time in children_*: the sum's delta over a window
    is the tree's CPU in it, short-lived children included."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return TreeUsage(0.0, 0.0, ())
    cpu = rss = 0.0
    pids = []
    for proc in procs:
        try:
            times = proc.cpu_times()
            memory = proc.memory_info()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        cpu += times.user + times.system + times.children_user + times.children_system
        rss += memory.rss / 2**20
        pids.append(proc.pid)
    return TreeUsage(cpu, rss, tuple(pids))


def agent_root(root_dir: Path) -> psutil.Process:
    """The agent daemon: the bench's own child process started in `root_dir` (AgentProcess runs it there)."""
    wanted = os.path.realpath(root_dir)
    found = []
    for child in psutil.Process().children():
        try:
            if os.path.realpath(child.cwd()) == wanted:
                found.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    if len(found) != 1:
        raise RuntimeError(f"expected one agent process started in {root_dir}, found {len(found)}")
    return found[0]


def run(ctx: ScenarioContext) -> ScenarioResult:
    timing = QUICK if ctx.quick else FULL
    rounds = ctx.rounds or (1 if ctx.quick else DEFAULT_ROUNDS)
    cache = CacheSettings()
    result = ScenarioResult(
        samples=[],
        metrics=METRICS,
        table=TABLE,
        settings={
            "rounds": rounds,
            "timing_s": asdict(timing),
            "counted": "every request the embedded server dispatched to a handler in the window, by its arrival",
            "cpu": "psutil cpu_times of the agent's process tree, delta over the window / wall",
            "ours": "long polls the embedded server (get_next_task held up to 20 s, status_report every 30 s)",
            "agent_config": {kind.name: kind.config(AgentDirs(Path("<agent dir>")), "", cache) for kind in AGENTS},
            "order": "per round: A B in even rounds, B A in odd ones; a fresh agent each",
        },
    )
    with BenchServer(ctx.work_dir / "server") as server:
        assert server.server.backend is not None
        with RequestCounter().attach(server.server.backend) as counter:
            for round_index in range(rounds):
                for kind in alternate(AGENTS, round_index):
                    sample = _measure(server, counter, kind, round_index, ctx, cache, timing)
                    result.samples.append(sample)
                    if problem := _problem(sample):
                        result.errors.append(problem)
    return result


def _measure(
    server: BenchServer,
    counter: RequestCounter,
    kind: AgentKind,
    round_index: int,
    ctx: ScenarioContext,
    cache: CacheSettings,
    timing: Timing,
) -> dict[str, Any]:
    """A fresh agent, registered and settled, left alone for the window; the bench makes no request meanwhile."""
    tag = f"{kind.name}-r{round_index}"
    dirs = AgentDirs(ctx.work_dir / tag)
    worker_id = f"bench-{tag}:cpu:0"
    server.create_queue(f"bench-{tag}")
    agent = AgentProcess(kind, server, dirs, f"bench-{tag}", worker_id, extra_env={}, cache=cache)
    base = {"agent": kind.name, "case": CASE, "phase": f"{timing.window:g}s", "round": round_index}
    try:
        with agent:
            agent.start(timing.ready)
            time.sleep(timing.settle)
            root = agent_root(dirs.root)
            logger.info("%s: idle for %.0f s, round %d", kind.name, timing.window, round_index + 1)
            before, opened, clock = tree_usage(root), time.time(), time.monotonic()
            time.sleep(timing.window)
            after, closed, wall = tree_usage(root), time.time(), time.monotonic() - clock
            if not agent.alive():
                raise RuntimeError(f"{kind.name} exited during the window:\n{agent.log_tail()}")
        requests = counter.requests(opened, closed)
        sample = {
            **base,
            "status": "completed",
            "worker_id": worker_id,
            "window_s": round(wall, 3),
            "requests": len(requests),
            "requests_per_min": round(len(requests) * 60.0 / wall, 2),
            "cpu_s": round(after.cpu_s - before.cpu_s, 3),
            "cpu_percent": round(100.0 * (after.cpu_s - before.cpu_s) / wall, 3),
            "rss_mb": round(after.rss_mb, 1),
            "processes": len(after.pids),
            "by_endpoint": dict(Counter(r.endpoint for r in requests).most_common()),
            "by_worker": dict(Counter(r.worker for r in requests).most_common()),
            "request_times_s": [round(r.at - opened, 2) for r in requests],
        }
        logger.info("  -> %s", _describe(sample))
        return sample
    except (BenchTimeout, RuntimeError, psutil.Error) as err:
        logger.error("%s round %d: %s", kind.name, round_index + 1, err)
        return {**base, "status": "error", "error": str(err), "agent_log_tail": agent.log_tail()}
    finally:
        if not ctx.keep:
            shutil.rmtree(dirs.root, ignore_errors=True)


def _problem(sample: Mapping[str, Any]) -> str | None:
    """Why a sample does not count: the agent did not stay up, or another bench agent's requests fell in the window.

    Only our agent sends its worker id in X-ClearML-Worker; clearml-agent 3.0.3 sends the host name there."""
    where = f"{sample['agent']} (round {sample['round'] + 1})"
    if sample["status"] != "completed":
        return f"{where}: {sample['status']} {sample.get('error', '')}".strip()
    foreign = [w for w in sample["by_worker"] if w.startswith("bench-") and w != sample["worker_id"]]
    if foreign:
        return f"{where}: requests from other workers in the window: {foreign}"
    return None


def _describe(sample: Mapping[str, Any], keys: Sequence[str] = TABLE) -> str:
    parts = [f"{key} {sample[key]}" for key in keys]
    return ", ".join(parts) + f"; {sample['requests']} requests: {sample['by_endpoint']}"
