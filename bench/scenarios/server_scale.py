"""Scenario server_scale: the embedded server under many workers, then tasks per minute through four real agents.

Part 1 (ours only: clearml-agent does not talk to our server's long poll): 20 simulated workers, each its own
process with our REST client, registered as a worker and polling one queue as our agent does, with our long-poll
headers or (the variant) a plain get_next_task every 0.25 s. Phases: a backlog of queued trivial tasks drained (pop,
tasks.started, tasks.completed), a few seconds of idle polling, then tasks enqueued one at a time (a trickle). The
latency of every non-waiting `queues.get_next_task` is timed by its caller.

Part 2: four real daemons (two with --quick) of one agent on one queue run trivial tasks (no requirements,
environment cache warm after one warm-up task each) until all N completed: tasks per minute, enqueue of the first ->
completion of the last.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.agents import AGENTS, AgentDirs, AgentKind, AgentProcess, CacheSettings
from bench.harness import TERMINAL, BenchServer, BenchTimeout, alternate, percentile, wait_for
from bench.report import OURS, Metric, higher, lower, neither
from bench.scenarios.base import ScenarioContext, ScenarioResult, peer_poll_notes
from notebook_agent import api

logger = logging.getLogger(__name__)

NAME = "server_scale"
DESCRIPTION = (
    "20 simulated workers (processes, our REST client) polling the embedded server with and without long poll: "
    "get_next_task latency while 1,000 queued tasks drain, idle, and under a trickle; then tasks per minute "
    "through 4 real agents of each kind (trivial tasks, warm cache)."
)
DEFAULT_ROUNDS = 1
LONG_POLL, PLAIN_POLL = "long_poll", "plain_poll"
BACKLOG, IDLE, TRICKLE = "backlog", "idle", "trickle"
REPO_ROOT = Path(__file__).resolve().parents[2]
METRICS: dict[str, Metric] = {
    "next_task_p50_ms": lower("median latency of a non-waiting queues.get_next_task, seen by its caller, ms"),
    "next_task_p99_ms": lower("its 99th percentile (nearest rank), ms"),
    "pickup_p50_ms": lower("a task's queue entry added -> popped by a worker, median, ms"),
    "pickup_p99_ms": lower("its 99th percentile, ms"),
    "requests_per_s": neither(
        "get_next_task calls answered per second, all workers (a call counts in the phase it ended in)"
    ),
    "tasks_per_s": higher("backlog: tasks popped, started and completed per second by the simulated workers"),
    "tasks_per_min": higher("real agents: tasks completed per minute (enqueue of the first -> completion of the last)"),
    "s_per_task": lower("real agents: 60 / tasks_per_min, seconds per task"),
}
TABLE = list(METRICS)
TRIVIAL_LINE = "bench trivial task"
TRIVIAL = f"print({TRIVIAL_LINE!r})\n"
POLL_SEC = 0.25  # our agent's agent.queue_poll_freq_sec default, when the server has no long poll
LONG_POLL_SEC = 20.0  # what our worker asks the server to hold an empty get_next_task (engine.worker)


@dataclass(frozen=True)
class Sizes:
    pollers: int  # simulated workers
    backlog: int  # tasks queued before the pollers start
    idle_s: float  # idle polling, measured between the backlog and the trickle
    trickle: int  # tasks enqueued one at a time
    trickle_gap_s: float  # between two of them
    agents: int  # real daemons per kind in part 2
    tasks: int  # tasks through our daemons
    peer_tasks: int  # tasks through clearml-agent's (it polls every 5 s); 0 skips it
    ready: float  # an agent's start -> its worker registered
    warmup: float  # the warm-up tasks (cold builds) -> all terminal
    task_s: float  # per measured task, for the deadline of part 2 (a floor of 120 s)


FULL = Sizes(
    pollers=20, backlog=1000, idle_s=3.0, trickle=200, trickle_gap_s=0.05,
    agents=4, tasks=1000, peer_tasks=40, ready=90.0, warmup=300.0, task_s=2.0,
)  # fmt: skip
QUICK = Sizes(
    pollers=5, backlog=40, idle_s=1.0, trickle=10, trickle_gap_s=0.05,
    agents=2, tasks=20, peer_tasks=4, ready=45.0, warmup=120.0, task_s=2.0,
)  # fmt: skip


def run(ctx: ScenarioContext) -> ScenarioResult:
    sizes = QUICK if ctx.quick else FULL
    rounds = ctx.rounds or (1 if ctx.quick else DEFAULT_ROUNDS)
    kinds = [kind for kind in AGENTS if kind.name == OURS or sizes.peer_tasks > 0]
    result = ScenarioResult(
        samples=[],
        metrics=METRICS,
        table=TABLE,
        settings={
            "rounds": rounds,
            "sizes": asdict(sizes),
            "pollers": "one process each: api.Session with X-ClearML-Worker, workers.register, then get_next_task; "
            "a popped task gets tasks.started and tasks.completed",
            "long_poll": f"a plain get_next_task, and when empty one with X-NotebookAgent-Wait: {LONG_POLL_SEC:g} "
            "(and -Watch), as engine.worker does",
            "plain_poll": f"a plain get_next_task every {POLL_SEC} s when empty (agent.queue_poll_freq_sec)",
            "throughput": "N trivial tasks (no requirements) on one queue shared by the daemons; each daemon first "
            "runs one warm-up task from a queue of its own (listed first), not counted",
            "agents": {kind.name: " ".join(kind.command("Q")) for kind in kinds},
            "order": "poll variants and agents: A B in even rounds, B A in odd ones",
            "clearml_agent_poll_s": ctx.peer_poll_s or 5.0,
        },
        notes=peer_poll_notes(ctx) if sizes.peer_tasks else [],
    )
    with BenchServer(ctx.work_dir / "server") as server:
        for round_index in range(rounds):
            for variant in alternate((LONG_POLL, PLAIN_POLL), round_index):
                logger.info("server_scale round %d: %d pollers, %s", round_index + 1, sizes.pollers, variant)
                samples, errors = _poll_load(server, variant, round_index, sizes, ctx.work_dir)
                result.samples += samples
                result.errors += errors
            for kind in alternate(kinds, round_index):
                tasks = sizes.tasks if kind.name == OURS else sizes.peer_tasks
                logger.info(
                    "server_scale round %d: %d %s daemons, %d tasks", round_index + 1, sizes.agents, kind.name, tasks
                )
                sample = _throughput(server, kind, tasks, round_index, ctx, sizes)
                result.samples.append(sample)
                if sample["status"] != "completed":
                    result.errors.append(f"{kind.name} throughput (round {round_index + 1}): {sample.get('error')}")
    return result


# part 1: simulated pollers ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PollerSpec:
    """What one simulated worker process needs; it travels as JSON on the child's command line."""

    url: str
    access_key: str
    secret_key: str
    queue_id: str
    worker_id: str
    long_poll: bool
    folder: str  # the `start` and `stop` signals, and where the child leaves `<name>.ready` and `<name>.json`
    name: str
    max_s: float  # the child leaves by itself after this long, whatever happens to the bench


# (sent at time.time(), "plain" or "wait", latency ms, popped a task, pickup ms or None)
Record = tuple[float, str, float, bool, float | None]


def poller_main(spec_json: str) -> None:
    """One simulated worker (a child process): register, wait for `start`, poll until `stop`, unregister, and
    write its records. Signals are files: the bench process also runs the server, so children are plain
    interpreters, not multiprocessing ones that would re-import the bench's main module."""
    spec = PollerSpec(**json.loads(spec_json))
    folder = Path(spec.folder)
    deadline = time.monotonic() + spec.max_s
    records: list[Record] = []
    session = api.Session(spec.url, spec.access_key, spec.secret_key, worker=spec.worker_id)
    try:
        api.workers.register(session, spec.worker_id, queues=[spec.queue_id])
        (folder / f"{spec.name}.ready").touch()
        while not (folder / "start").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("no start signal")
            time.sleep(0.01)
        stop = folder / "stop"
        while not stop.exists() and time.monotonic() < deadline:
            entry = _timed_pop(session, spec, records, wait=False)
            if entry is None and spec.long_poll and not stop.exists():
                entry = _timed_pop(session, spec, records, wait=True)
            if entry is not None:
                api.tasks.started(session, entry.task, force=True)
                api.tasks.completed(session, entry.task, force=True)
            elif not spec.long_poll:
                time.sleep(POLL_SEC)
        api.workers.unregister(session, spec.worker_id)
        _write_json(folder / f"{spec.name}.json", records)
    except Exception as err:  # the bench reports it
        _write_json(folder / f"{spec.name}.error", f"{type(err).__name__}: {err}")
    finally:
        session.close()


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value), encoding="utf-8")
    os.replace(tmp, path)


def _timed_pop(session: api.Session, spec: PollerSpec, records: list[Record], wait: bool) -> Any:
    sent = time.time()
    begin = time.perf_counter()
    if wait:
        entry = api.queues.get_next_task(session, spec.queue_id, wait_sec=LONG_POLL_SEC, watch=[spec.queue_id])
    else:
        entry = api.queues.get_next_task(session, spec.queue_id)
    elapsed = (time.perf_counter() - begin) * 1000.0
    pickup = None
    if entry is not None and entry.added:
        pickup = round((time.time() - datetime.fromisoformat(entry.added).timestamp()) * 1000.0, 3)
    records.append((sent, "wait" if wait else "plain", round(elapsed, 3), entry is not None, pickup))
    return entry


class PollerGroup:
    """The simulated workers as child interpreters, and their start and stop signals."""

    def __init__(self, server: BenchServer, folder: Path, specs: Sequence[PollerSpec]) -> None:
        self.server = server
        self.folder = folder
        self.specs = list(specs)
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, timeout: float) -> None:
        """Start the children and wait until each registered its worker (or failed)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        code = "import sys\nfrom bench.scenarios.server_scale import poller_main\npoller_main(sys.argv[1])\n"
        for spec in self.specs:
            with (self.folder / f"{spec.name}.log").open("wb") as log:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", code, json.dumps(asdict(spec))],
                        cwd=REPO_ROOT,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        wait_for(lambda: self._all(".ready") or self._fail_fast(), timeout, "pollers registered", 0.1)

    def release(self) -> None:
        (self.folder / "start").touch()

    def alive(self) -> bool:
        return any(proc.poll() is None for proc in self.procs)

    def stop(self, timeout: float = 60.0) -> tuple[list[Record], list[str]]:
        """Signal stop, end pending long polls (as a worker's own status report would), gather what the children
        wrote; a child still there after `timeout` is killed."""
        (self.folder / "stop").touch()
        backend = self.server.server.backend
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            if backend is not None:
                for spec in self.specs:
                    backend.wake_worker(spec.worker_id)
            time.sleep(0.2)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        records: list[Record] = []
        errors: list[str] = []
        for spec in self.specs:
            done, failed = self.folder / f"{spec.name}.json", self.folder / f"{spec.name}.error"
            if done.exists():
                rows = json.loads(done.read_text(encoding="utf-8"))
                records += [(float(r[0]), str(r[1]), float(r[2]), bool(r[3]), r[4]) for r in rows]
            elif failed.exists():
                errors.append(f"poller {spec.worker_id}: {json.loads(failed.read_text(encoding='utf-8'))}")
            else:
                log = (self.folder / f"{spec.name}.log").read_text(encoding="utf-8", errors="replace")
                errors.append(f"poller {spec.worker_id}: no records; {log[-500:]}")
        return records, errors

    def _all(self, suffix: str) -> bool:
        return all((self.folder / f"{spec.name}{suffix}").exists() for spec in self.specs)

    def _fail_fast(self) -> bool:
        failed = [s.worker_id for s in self.specs if (self.folder / f"{s.name}.error").exists()]
        exited = [p.args for p in self.procs if p.poll() is not None]
        if failed or exited:
            raise RuntimeError(f"pollers failed at start: {failed[:3]} (exited: {len(exited)})")
        return False


def _poll_load(
    server: BenchServer, variant: str, round_index: int, sizes: Sizes, work_dir: Path
) -> tuple[list[dict[str, Any]], list[str]]:
    """The three phases for one variant; samples per phase, and what went wrong."""
    tag = f"{variant}-r{round_index}"
    queue_id = server.create_queue(f"bench-poll-{tag}")
    backlog = [_task(server, f"backlog-{tag}-{i}") for i in range(sizes.backlog)]
    trickle = [_task(server, f"trickle-{tag}-{i}") for i in range(sizes.trickle)]
    for task_id in backlog:
        server.enqueue(task_id, queue_id)
    creds = server.server.credentials
    assert creds is not None
    folder = work_dir / f"pollers-{tag}"
    max_s = 600.0 + sizes.backlog * 0.5 + sizes.trickle * (sizes.trickle_gap_s + 0.5)
    specs = [
        PollerSpec(
            url=server.server.url,
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            queue_id=queue_id,
            worker_id=f"bench-poll-{tag}-{i}:cpu:0",
            long_poll=variant == LONG_POLL,
            folder=str(folder),
            name=f"p{i}",
            max_s=max_s,
        )
        for i in range(sizes.pollers)
    ]
    group = PollerGroup(server, folder, specs)
    windows: dict[str, tuple[float, float]] = {}
    errors: list[str] = []
    try:
        group.start(60.0 + 2.0 * len(specs))
        began = time.time()
        group.release()
        statuses = _wait_terminal(server, backlog, 60.0 + sizes.backlog * 0.5, group.alive)
        windows[BACKLOG] = (began, _last_change(server, backlog))
        windows[IDLE] = (time.time(), time.time() + sizes.idle_s)
        time.sleep(sizes.idle_s)
        began = time.time()
        for task_id in trickle:
            server.enqueue(task_id, queue_id)
            time.sleep(sizes.trickle_gap_s)
        statuses.update(_wait_terminal(server, trickle, 60.0, group.alive))
        windows[TRICKLE] = (began, _last_change(server, trickle))
        errors += [f"{variant}: task {t} {s}" for t, s in statuses.items() if s != "completed"][:10]
    except (BenchTimeout, RuntimeError) as err:
        errors.append(f"{variant}: {err}")
    finally:
        records, failed = group.stop()
    errors += [f"{variant}: {problem}" for problem in failed]
    samples = [_phase_sample(variant, phase, round_index, records, window, sizes) for phase, window in windows.items()]
    for sample in samples:
        logger.info("  %s %s: %s", variant, sample["phase"], _describe(sample))
    return samples, errors


def _task(server: BenchServer, name: str) -> str:
    return server.create_script_task(name, TRIVIAL, "")


def _phase_sample(
    variant: str, phase: str, round_index: int, records: Sequence[Record], window: tuple[float, float], sizes: Sizes
) -> dict[str, Any]:
    began, ended = window
    # By when the answer came: a long poll sent while idle may come back with a task of the trickle.
    inside = [r for r in records if began <= r[0] + r[2] / 1000.0 < ended]
    plain = [r[2] for r in inside if r[1] == "plain"]
    pickups = [r[4] for r in inside if r[3] and r[4] is not None]
    span = max(ended - began, 1e-6)
    sample: dict[str, Any] = {
        "agent": OURS,
        "case": variant,
        "phase": phase,
        "round": round_index,
        "status": "completed",
        "window_s": round(span, 3),
        "calls": len(inside),
        "waiting_calls": sum(1 for r in inside if r[1] == "wait"),
        "popped": sum(1 for r in inside if r[3]),
        "requests_per_s": round(len(inside) / span, 1),
    }
    if plain:
        sample.update(
            next_task_p50_ms=round(percentile(plain, 50), 3),
            next_task_p99_ms=round(percentile(plain, 99), 3),
            next_task_max_ms=round(max(plain), 3),
        )
    if pickups and phase != BACKLOG:  # a backlog's pickup is its wait in the queue, not the dispatch latency
        sample.update(pickup_p50_ms=round(percentile(pickups, 50), 1), pickup_p99_ms=round(percentile(pickups, 99), 1))
    if phase == BACKLOG:
        sample["tasks_per_s"] = round(sizes.backlog / span, 1)
    return sample


# part 2: real agents ------------------------------------------------------------------------------------------
class AlsoPolling:
    """An agent kind that polls its own queue first, then `shared` (both agents take `--queue A B`)."""

    def __init__(self, kind: AgentKind, shared: str) -> None:
        self.kind = kind
        self.name = kind.name
        self.shared = shared

    def config(self, dirs: AgentDirs, api_section: str, cache: CacheSettings) -> str:
        return self.kind.config(dirs, api_section, cache)

    def poll_env(self, poll_s: float | None) -> dict[str, str]:
        return self.kind.poll_env(poll_s)

    def command(self, queue: str) -> list[str]:
        command = self.kind.command(queue)
        at = command.index(queue) + 1
        return [*command[:at], self.shared, *command[at:]]


def _throughput(
    server: BenchServer, kind: AgentKind, count: int, round_index: int, ctx: ScenarioContext, sizes: Sizes
) -> dict[str, Any]:
    tag = f"{kind.name}-r{round_index}"
    shared = f"bench-tp-{tag}"
    shared_id = server.create_queue(shared)
    case = f"{sizes.agents}_agents"
    base: dict[str, Any] = {"agent": kind.name, "case": case, "phase": "trivial", "round": round_index}
    agents: list[AgentProcess] = []
    own_ids: list[str] = []
    options: dict[str, Any] = {"extra_env": {}, "cache": CacheSettings(), "poll_s": ctx.peer_poll_s}
    try:
        for i in range(sizes.agents):
            own = f"{shared}-a{i}"
            own_ids.append(server.create_queue(own))
            dirs, worker_id = AgentDirs(ctx.work_dir / f"tp-{tag}-a{i}"), f"bench-tp-{tag}-a{i}:cpu:0"
            agents.append(AgentProcess(AlsoPolling(kind, shared), server, dirs, own, worker_id, **options))
        _parallel([lambda a=a: a.start(sizes.ready) for a in agents])

        def alive() -> bool:
            return all(a.alive() for a in agents)

        warmups = [_task(server, f"warmup-{tag}-{i}") for i in range(sizes.agents)]
        for task_id, queue_id in zip(warmups, own_ids, strict=True):
            server.enqueue(task_id, queue_id)
        bad = {t: s for t, s in _wait_terminal(server, warmups, sizes.warmup, alive).items() if s != "completed"}
        if bad:
            raise RuntimeError(f"warm-up tasks did not complete: {bad}")
        tasks = [_task(server, f"tp-{tag}-{i}") for i in range(count)]
        began = time.time()
        for task_id in tasks:
            server.enqueue(task_id, shared_id)
        enqueued = time.time()
        statuses = _wait_terminal(server, tasks, max(120.0, count * sizes.task_s), alive)
        ended = _last_change(server, tasks)
        output = _task_output(server, tasks[-1])  # before the agents stop: clearml-agent ships logs every 5 s
    except (BenchTimeout, RuntimeError) as err:
        logger.error("%s throughput: %s", kind.name, err)
        tails = {a.worker_id: a.log_tail(1500) for a in agents if not a.alive()}
        return {**base, "status": "error", "error": str(err), "agent_log_tails": tails}
    finally:
        _parallel([lambda a=a: a.stop() for a in agents])
        if not ctx.keep:
            for agent in agents:
                shutil.rmtree(agent.dirs.root, ignore_errors=True)
    failed = {t: s for t, s in statuses.items() if s != "completed"}
    per_agent = _tasks_per_worker(server, tasks)
    span = max(ended - began, 1e-6)
    sample = {
        **base,
        "status": "completed" if not failed else "failed",
        "tasks": count,
        "agents": sizes.agents,
        "tasks_per_min": round(count / span * 60.0, 1),
        "s_per_task": round(span / count, 3),
        "span_s": round(span, 2),
        "enqueue_s": round(enqueued - began, 2),
        "per_worker": per_agent,
        "last_task_log": output[-8:],  # the last task's console: the script's line, the agent's build lines
    }
    if failed:
        sample["error"] = f"{len(failed)} tasks not completed: {list(failed.items())[:5]}"
    elif not any(TRIVIAL_LINE in line for line in output):
        sample.update(status="failed", error=f"the last task's log lacks {TRIVIAL_LINE!r}: {output[-20:]}")
    logger.info("  -> %s", _describe(sample))
    return sample


def _task_output(server: BenchServer, task_id: str, timeout: float = 15.0) -> list[str]:
    """The task's console once it holds the script's line (after `timeout`: whatever is there)."""

    def printed() -> list[str] | None:
        lines = server.task_log(task_id)
        return lines if any(TRIVIAL_LINE in line for line in lines) else None

    try:
        return wait_for(printed, timeout, f"task {task_id}: its line in the log", 0.5)
    except BenchTimeout:
        return server.task_log(task_id)


def _tasks_per_worker(server: BenchServer, task_ids: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for start in range(0, len(task_ids), 200):
        chunk = list(task_ids[start : start + 200])
        for task in api.tasks.get_all(server.session, ids=chunk, only_fields=["id", "last_worker"]):
            worker = str(task.get("last_worker") or "")
            counts[worker] = counts.get(worker, 0) + 1
    return dict(sorted(counts.items()))


# shared helpers -----------------------------------------------------------------------------------------------
def _wait_terminal(
    server: BenchServer, task_ids: Iterable[str], timeout: float, alive: Callable[[], bool]
) -> dict[str, str]:
    """Each task's terminal status, within `timeout` seconds for all of them together."""
    deadline = time.monotonic() + timeout
    return {
        task_id: server.recorder.wait_terminal(task_id, max(0.1, deadline - time.monotonic()), alive=alive)
        for task_id in task_ids
    }


def _last_change(server: BenchServer, task_ids: Iterable[str]) -> float:
    """When the last of the tasks reached its terminal status (the server's stamp)."""
    return max(next((c.at for c in server.recorder.changes(t) if c.status in TERMINAL), time.time()) for t in task_ids)


def _parallel(calls: Sequence[Callable[[], Any]]) -> None:
    """Run the calls side by side (agents start and stop together); re-raise the first error once all ended."""
    with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        futures = [pool.submit(call) for call in calls]
    for future in futures:
        future.result()


def _describe(sample: Mapping[str, Any]) -> str:
    if sample.get("status") not in ("completed", "failed"):
        return f"{sample.get('status')}: {sample.get('error', '')}"
    parts = [f"{key} {sample[key]:g}" for key in METRICS if sample.get(key) is not None]
    for key in ("calls", "waiting_calls", "popped", "per_worker"):
        if key in sample:
            parts.append(f"{key} {sample[key]}")
    return ", ".join(parts)
