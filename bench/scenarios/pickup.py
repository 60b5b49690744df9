"""Scenario pickup: enqueue -> the task's first instruction, warm environment (venv-cache hit), per agent.

The warm-task sequence here also serves `end_to_end`: per agent and round, one warm-up task fills the venv cache,
then the measured tasks run one at a time. Each is enqueued a set time after the previous one completed; the
offsets spread evenly over clearml-agent's 5 s queue-poll cycle, as a user's arrivals would (a task enqueued the
instant the previous one ended would meet clearml-agent's immediate post-task poll and hide its polling)."""

from __future__ import annotations

import copy
import logging
import random
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.agents import AGENTS, AgentDirs, AgentKind, AgentProcess, CacheSettings
from bench.harness import BenchServer, BenchTimeout, StatusChange, alternate, delta, wait_for
from bench.report import OURS, Metric, lower
from bench.scenarios.base import ScenarioContext, ScenarioResult, peer_poll_notes
from bench.wheelhouse import build_wheelhouse, offline_pip_env

logger = logging.getLogger(__name__)

NAME = "pickup"
DESCRIPTION = (
    "Warm environment (a warm-up task fills the venv cache), then tasks enqueued one at a time, each at an offset "
    "after the previous one completed (spread over clearml-agent's 5 s poll cycle): enqueue -> first instruction."
)
METRICS: dict[str, Metric] = {
    "first_instruction_s": lower("enqueue -> the task script's first instruction (a time.time() it writes to a file)"),
    "pickup_s": lower("enqueue -> pulled (first in_progress): long poll for ours, a 5 s poll for clearml-agent"),
    "launch_s": lower("pulled -> the script's first instruction (the warm environment and the process start)"),
    "total_s": lower("enqueue -> completed (server stamps)"),
}
TABLE = ["first_instruction_s", "pickup_s", "launch_s"]

CASE = "trivial"
PHASE = "warm"
REQUIREMENTS = ("six",)  # one small requirement: a real venv-cache entry for both agents
POLL_CYCLE_S = 5.0  # clearml-agent's default queue poll period (--quick: ScenarioContext.peer_poll_s)
DEFAULT_ROUNDS = 2
TASKS_PER_ROUND = 5  # measured tasks per agent and round: 10 per agent by default
QUICK_TASKS = 1
OURS_HIT = "cache hit"  # our build's progress line on a venv-cache hit
PEER_HIT = "Using Cached environment"  # clearml-agent's console on a venv-cache hit


@dataclass(frozen=True)
class Limits:
    ready: float  # agent start -> worker registered
    warmup: float  # the warm-up task (a cold build): enqueue -> terminal status
    task: float  # a measured task: enqueue -> terminal status
    log: float  # terminal status -> the script's last line in the stored log (clearml-agent ships every 5 s)


FULL = Limits(ready=90.0, warmup=600.0, task=120.0, log=20.0)
QUICK = Limits(ready=45.0, warmup=120.0, task=60.0, log=15.0)


@dataclass(frozen=True)
class Stamp:
    """What the task script wrote: its first and last instruction's time.time(), and where `six` came from."""

    first: float
    last: float
    module: str


def script_source(stamp: Path) -> str:
    """The trivial task: take the time first thing, import its one requirement, write both times to `stamp`."""
    return (
        "import time\n"
        "first = time.time()\n"
        "import os\n"
        "import six\n"
        "where = os.path.realpath(six.__file__)\n"
        'print("BENCH_START %.6f" % first, flush=True)\n'
        'print("BENCH_MODULE six", where, flush=True)\n'
        "last = time.time()\n"
        'print("BENCH_END %.6f" % last, flush=True)\n'
        f"with open({str(stamp)!r}, 'w') as out:\n"
        '    out.write("%.6f %.6f %s\\n" % (first, last, where))\n'
    )


def arrival_offsets(count: int, round_index: int, cycle: float = POLL_CYCLE_S) -> list[float]:
    """`count` offsets spread evenly over one poll cycle (the middle of each of `count` equal slices), in an order
    shuffled per round with a fixed seed: both agents of a round get the same offsets in the same order."""
    offsets = [round((k + 0.5) * cycle / count, 3) for k in range(count)]
    random.Random(round_index).shuffle(offsets)
    return offsets


def run(ctx: ScenarioContext) -> ScenarioResult:
    return run_warm_tasks(ctx, NAME, METRICS, TABLE)


def run_warm_tasks(
    ctx: ScenarioContext, scenario: str, metrics: Mapping[str, Metric], table: Sequence[str]
) -> ScenarioResult:
    """Per round, each agent in turn (A B, then B A): a fresh agent, a warm-up task, then the measured tasks.

    With --quick, pickup and end_to_end of one invocation share one such run (the same tasks, other metrics): the
    first of them measures it, the second reports its samples."""
    shared = ctx.shared.get(SHARED_KEY) if ctx.quick else None
    notes = peer_poll_notes(ctx)
    if shared is None:
        shared = _warm_task_run(ctx, scenario)
        if ctx.quick:
            ctx.shared[SHARED_KEY] = shared
        samples, settings = shared.samples, shared.settings
    else:
        samples = copy.deepcopy(shared.samples)
        settings = {**shared.settings, "samples_from": f"{shared.scenario} (the same run of this invocation)"}
        notes.append(f"--quick: the samples of the {shared.scenario} run above (one warm-task run for both)")
    return ScenarioResult(
        samples=samples,
        metrics=dict(metrics),
        table=list(table),
        settings=settings,
        errors=list(shared.errors),
        notes=notes,
    )


@dataclass(frozen=True)
class WarmTaskRun:
    """The samples, errors and settings of one warm-task run (what pickup and end_to_end report)."""

    scenario: str  # the one that measured it
    samples: list[dict[str, Any]]
    errors: list[str]
    settings: dict[str, Any]


SHARED_KEY = "warm_tasks"  # ScenarioContext.shared: the WarmTaskRun of this invocation (--quick)


def _warm_task_run(ctx: ScenarioContext, scenario: str) -> WarmTaskRun:
    limits = QUICK if ctx.quick else FULL
    rounds = ctx.rounds or (1 if ctx.quick else DEFAULT_ROUNDS)
    tasks = QUICK_TASKS if ctx.quick else TASKS_PER_ROUND
    cycle = ctx.peer_poll_s or POLL_CYCLE_S
    cache = CacheSettings()
    wheelhouse = ctx.work_dir / "wheelhouse"
    wheels = build_wheelhouse(REQUIREMENTS, wheelhouse)
    extra_env = offline_pip_env(wheelhouse)
    schedule = [arrival_offsets(tasks, r, cycle) for r in range(rounds)]
    run = WarmTaskRun(
        scenario=scenario,
        samples=[],
        errors=[],
        settings={
            "rounds": rounds,
            "tasks_per_round": tasks,
            "requirements": list(REQUIREMENTS),
            "arrival_offsets_s": schedule,
            "arrivals": "each measured task is enqueued offset s after the previous one completed (server stamp)",
            "clearml_agent_poll_s": cycle,
            "wheelhouse": sorted(w.name for w in wheels),
            "pip_env": {k: v for k, v in extra_env.items() if k != "PIP_FIND_LINKS"},
            "venvs_cache": {"max_entries": cache.max_entries, "free_space_threshold_gb": cache.free_space_threshold_gb},
            "system_site_packages": False,
            "agent_config": {kind.name: kind.config(AgentDirs(Path("<agent dir>")), "", cache) for kind in AGENTS},
            "order": "per round: A B in even rounds, B A in odd ones; a fresh agent and a warm-up task each",
            "limits_s": asdict(limits),
        },
    )
    with BenchServer(ctx.work_dir / "server") as server:
        for round_index, offsets in enumerate(schedule):
            for kind in alternate(AGENTS, round_index):
                samples = _run_agent(server, kind, round_index, offsets, ctx, extra_env, cache, limits)
                run.samples.extend(samples)
                run.errors.extend(problem for sample in samples if (problem := _problem(sample)))
    return run


def _run_agent(
    server: BenchServer,
    kind: AgentKind,
    round_index: int,
    offsets: Sequence[float],
    ctx: ScenarioContext,
    extra_env: Mapping[str, str],
    cache: CacheSettings,
    limits: Limits,
) -> list[dict[str, Any]]:
    """A fresh agent runs the warm-up task, then one measured task per offset; the samples of the measured ones."""
    tag = f"{kind.name}-r{round_index}"
    dirs = AgentDirs(ctx.work_dir / tag)
    stamps = ctx.work_dir / "stamps"
    stamps.mkdir(parents=True, exist_ok=True)
    queue_id = server.create_queue(f"bench-{tag}")
    worker_id = f"bench-{tag}:cpu:0"
    agent = AgentProcess(
        kind, server, dirs, f"bench-{tag}", worker_id, extra_env=extra_env, cache=cache, poll_s=ctx.peer_poll_s
    )
    base = {"agent": kind.name, "case": CASE, "phase": PHASE, "round": round_index}
    samples: list[dict[str, Any]] = []
    try:
        with agent:
            agent.start(limits.ready)
            logger.info("%s: warm-up task, round %d", kind.name, round_index + 1)
            warmup_id = _create(server, f"{tag}-warmup", stamps)
            server.enqueue(warmup_id, queue_id)
            status = server.recorder.wait_terminal(warmup_id, limits.warmup, alive=agent.alive)
            done = _stamp_of(server.recorder.changes(warmup_id), "terminal")
            if status != "completed" or done is None:
                tail = server.task_log(warmup_id)[-60:]
                return [{**base, "phase": "warmup", "status": status, "error": "warm-up task", "log_tail": tail}]
            warmup_s = delta(_stamp_of(server.recorder.changes(warmup_id), "queued"), done)
            for index, offset in enumerate(offsets):
                task_id = _create(server, f"{tag}-{index}", stamps)
                time.sleep(max(0.0, done + offset - time.time()))
                server.enqueue(task_id, queue_id)
                sample = _await(server, agent, task_id, stamps / f"{tag}-{index}.txt", dirs.root, limits)
                samples.append({**base, "index": index, "offset_s": offset, "warmup_total_s": warmup_s, **sample})
                logger.info("%s", _describe(samples[-1], ("first_instruction_s", "pickup_s", "launch_s", "total_s")))
                done = _stamp_of(server.recorder.changes(task_id), "terminal") or time.time()
            _check_cache_hits(server, kind.name, samples, limits.log)
    except (BenchTimeout, RuntimeError) as err:
        logger.error("%s round %d: %s", kind.name, round_index + 1, err)
        samples.append({**base, "status": "error", "error": str(err), "agent_log_tail": agent.log_tail()})
    finally:
        if not ctx.keep:
            shutil.rmtree(dirs.root, ignore_errors=True)
    return samples


def _create(server: BenchServer, name: str, stamps: Path) -> str:
    return server.create_script_task(name, script_source(stamps / f"{name}.txt"), "\n".join(REQUIREMENTS) + "\n")


def _await(
    server: BenchServer, agent: AgentProcess, task_id: str, stamp_file: Path, root: Path, limits: Limits
) -> dict[str, Any]:
    """Wait for the task's end; its metrics from the recorded status changes and the file the script wrote."""
    try:
        status = server.recorder.wait_terminal(task_id, limits.task, alive=agent.alive)
    except BenchTimeout as err:
        return {"task_id": task_id, "status": "timeout", "error": str(err), "log_tail": server.task_log(task_id)[-60:]}
    stamp = _read_stamp(stamp_file)
    sample = measure(server.recorder.changes(task_id), stamp)
    sample.update(task_id=task_id, status=status, module=stamp.module if stamp else None)
    # The import resolved inside this agent's own folder: the task really ran in the agent's venv.
    sample["isolated"] = bool(stamp) and stamp.module.startswith(str(root.resolve()) + "/")
    if status != "completed":
        sample["log_tail"] = server.task_log(task_id)[-60:]
    return sample


def measure(changes: Sequence[StatusChange], stamp: Stamp | None) -> dict[str, Any]:
    """The metrics of one task from its status changes (server stamps) and the script's own clock (same machine)."""
    enqueued, pulled = _stamp_of(changes, "queued"), _stamp_of(changes, "in_progress")
    done = _stamp_of(changes, "terminal")
    first, last = (stamp.first, stamp.last) if stamp else (None, None)
    return {
        "first_instruction_s": delta(enqueued, first),
        "pickup_s": delta(enqueued, pulled),
        "launch_s": delta(pulled, first),
        "total_s": delta(enqueued, done),
        "finish_s": delta(last, done),
        "status_changes": [[round(c.at - (enqueued or c.at), 3), c.status, c.reason] for c in changes],
    }


def _check_cache_hits(server: BenchServer, agent: str, samples: list[dict[str, Any]], timeout: float) -> None:
    """Mark each sample with whether its log shows a venv-cache hit (read once all ran, so that waiting for
    clearml-agent's 5 s log batches never shifts an arrival)."""
    needle = OURS_HIT if agent == OURS else PEER_HIT
    for sample in samples:
        if sample.get("status") != "completed":
            continue

        def full_log(task_id: str = sample["task_id"]) -> list[str] | None:
            lines = server.task_log(task_id)
            return lines if any(line.startswith("BENCH_END ") for line in lines) else None

        try:
            lines = wait_for(full_log, timeout, f"task {sample['task_id']}: its last line in the log", interval=0.5)
        except BenchTimeout:
            lines = server.task_log(sample["task_id"])
        sample["cache_hit"] = any(needle in line for line in lines)


def _read_stamp(path: Path) -> Stamp | None:
    try:
        first, last, module = path.read_text(encoding="utf-8").split(maxsplit=2)
        return Stamp(float(first), float(last), module.strip())
    except (OSError, ValueError):
        return None


def _stamp_of(changes: Sequence[StatusChange], status: str) -> float | None:
    """When the task first reached `status` ("terminal": completed, failed or stopped)."""
    wanted = ("completed", "failed", "stopped") if status == "terminal" else (status,)
    return next((c.at for c in changes if c.status in wanted), None)


def _problem(sample: Mapping[str, Any]) -> str | None:
    """Why a sample does not count: not completed, no stamp, not the agent's venv, or a venv-cache miss."""
    where = f"{sample['agent']} {sample['phase']} task {sample.get('index', '-')} (round {sample['round'] + 1})"
    if sample["status"] != "completed":
        return f"{where}: {sample['status']} {sample.get('error', '')}".strip()
    if sample.get("first_instruction_s") is None:
        return f"{where}: the script's stamp file is missing"
    if not sample.get("isolated"):
        return f"{where}: six not imported from the agent's own venv: {sample.get('module')}"
    if not sample.get("cache_hit"):
        return f"{where}: no venv-cache hit in its log (the environment was not warm)"
    return None


def _describe(sample: Mapping[str, Any], keys: Sequence[str]) -> str:
    if sample["status"] != "completed":
        return f"  -> {sample['status']}: {sample.get('error', '')}"
    parts = [f"{key} {sample[key]:.2f}" for key in keys if sample.get(key) is not None]
    return f"  -> offset {sample['offset_s']:.2f}: " + ", ".join(parts)
