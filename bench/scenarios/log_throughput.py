"""Scenario log_throughput: a task prints numbered lines as fast as it can; how soon the last one is stored on the
server, whether any was lost, doubled or cut, and what shipping them cost the agent (peak RSS, CPU seconds).

Timing comes from one clock: the task stamps `time.time()` in its first line, and the bench's EventRecorder stamps
every `add_events` call of the embedded server's store. The agent's process tree (the task excluded) is sampled
every 0.1 s with psutil while the task runs.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.agents import AGENTS, AgentDirs, AgentKind, AgentProcess, CacheSettings
from bench.harness import BenchServer, BenchTimeout, EventRecorder, StoredLogBatch, alternate, delta
from bench.report import OURS, Metric, higher, lower, neither
from bench.scenarios.base import ScenarioContext, ScenarioResult, peer_poll_notes
from bench.wheelhouse import offline_pip_env

logger = logging.getLogger(__name__)

NAME = "log_throughput"
DESCRIPTION = (
    "A task prints N unique numbered lines as fast as it can (one write per line, PYTHONUNBUFFERED): its first "
    "line -> the last line stored by the server, lines lost/doubled/cut, the agent tree's peak RSS and CPU seconds "
    "(the task process excluded)."
)
DEFAULT_ROUNDS = 3
LINES = 200_000
QUICK_LINES = 20_000
METRICS: dict[str, Metric] = {
    "ship_s": lower("the task's first line (its own time.time()) -> the last numbered line stored by the server"),
    "lines_per_s": higher("N / ship_s"),
    "lost": lower("numbers 0..N-1 whose exact line the server never stored"),
    "doubled": lower("extra copies of exact lines the server stored more than once"),
    "malformed": lower("stored lines that look like a numbered line but are not one as written (cut or merged)"),
    "rss_peak_mb": lower("peak RSS of the agent's process tree, the task excluded (psutil, every 0.1 s)"),
    "cpu_s": lower("user+system CPU seconds of the agent's tree, the task excluded: first line -> last line stored"),
    "write_s": lower("the task's first line -> its last line (its own stamps): how fast it wrote"),
    "lag_s": lower("the task's last line (its own stamp) -> the last numbered line stored"),
    "reordered": lower("numbered lines that come before their predecessor in the server's log order (timestamp, seq)"),
    "rss_start_mb": lower("the agent tree's RSS just before the task's first line (the task already running)"),
    "stamp_ahead_s": lower("the most an event's timestamp is ahead of its storing (clearml-agent adds 1 ms a line)"),
    "events": neither("log events the server stored for the task"),
    "store_calls": neither("add_events calls of the server's store that held the task's log events"),
}
TABLE = ["ship_s", "lines_per_s", "lost", "doubled", "malformed", "rss_peak_mb", "cpu_s"]
SETTLE_S = 0.5  # the task's pause before its first line: a few samples of the idle agent with the task running
SCRIPT = "bench_log_flood.py"  # the entry point: how the sampler tells the task process from the agent's own
PAYLOAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_LINE = re.compile(r"line (\d{6}) (\S*) (\d{6})")
_NUMBERED = re.compile(r"line \d")  # at the start: a line meant to be numbered (a traceback says ", line 3")
_STAMP = re.compile(r"^BENCH_(START|END) ([0-9.]+)$")
# How each agent's log event holds console text: ours whole lines joined with "\n" (no trailing newline);
# clearml-agent raw text, each line with its "\n", cut into events of 64 KiB at any character.
_EVENT_SUFFIX = {OURS: "\n"}


@dataclass(frozen=True)
class Limits:
    ready: float  # agent start -> worker registered
    task: float  # enqueue -> terminal status
    last_line: float  # terminal status -> the last line stored (clearml-agent ships on a 5 s tick)


FULL = Limits(ready=90.0, task=600.0, last_line=60.0)
QUICK = Limits(ready=45.0, task=120.0, last_line=30.0)


def script_source(lines: int) -> str:
    """The task: a pause (so the sampler sees the task and the idle agent before the flood), a stamp, `lines`
    numbered lines written one by one as fast as Python can, a stamp."""
    return (
        "import sys\nimport time\n"
        f"time.sleep({SETTLE_S})\n"
        'print("BENCH_START %.6f" % time.time(), flush=True)\n'
        "write = sys.stdout.write\n"
        f"for i in range({lines}):\n"
        f'    write("line %06d {PAYLOAD} %06d\\n" % (i, i))\n'
        "sys.stdout.flush()\n"
        'print("BENCH_END %.6f" % time.time(), flush=True)\n'
    )


def expected_line(number: int) -> str:
    return f"line {number:06d} {PAYLOAD} {number:06d}"


# sampling the agent's process tree ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TreeSample:
    at: float  # time.time()
    task_seen: bool  # the task process was in the tree
    rss: int  # bytes, the agent's processes (the task excluded)
    cpu: float  # user+system seconds of every agent process seen so far (the last value seen of each)


class TreeSampler:
    """Samples RSS and CPU time of a process tree every `interval` s, leaving out processes running SCRIPT.

    CPU is kept per pid at its last value, so a process that ends (or turns into the task by exec, as
    clearml-agent's `execute` child does) keeps what it used until then.
    """

    def __init__(self, root: psutil.Process, interval: float = 0.1) -> None:
        self._root = root
        self._interval = interval
        self._cpu: dict[int, float] = {}
        self.samples: list[TreeSample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._run, name="bench-tree-sampler", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = self._sample()
            if sample is None:
                return  # the agent is gone
            self.samples.append(sample)
            self._stop.wait(self._interval)

    def _sample(self) -> TreeSample | None:
        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return None
        rss, task_seen = 0, False
        for proc in procs:
            try:
                with proc.oneshot():
                    if any(part.endswith(SCRIPT) for part in proc.cmdline()):
                        task_seen = True
                        continue
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
                    self._cpu[proc.pid] = times.user + times.system
            except psutil.Error:
                continue
        return TreeSample(time.time(), task_seen, rss, sum(self._cpu.values()))


def agent_root(queue: str) -> psutil.Process:
    """The agent daemon: the bench's own child whose command line names the agent's queue."""
    for child in psutil.Process().children():
        try:
            if queue in child.cmdline():
                return child
        except psutil.Error:
            continue
    raise RuntimeError(f"no agent process serving queue {queue}")


def tree_metrics(samples: Sequence[TreeSample], start: float | None, until: float | None) -> dict[str, Any]:
    """Peak RSS and CPU delta over [the last sample with the task at or before `start`, the first sample at or
    after `until`]: the task pauses before its first line, so the window opens on an idle agent."""
    seen = [i for i, s in enumerate(samples) if s.task_seen]
    if not seen or start is None or until is None:
        return {"rss_peak_mb": None, "rss_start_mb": None, "cpu_s": None}
    first = max((i for i in seen if samples[i].at <= start), default=seen[0])
    last = next((i for i in range(first, len(samples)) if samples[i].at >= until), len(samples) - 1)
    window = samples[first : last + 1]
    return {
        "rss_peak_mb": round(max(s.rss for s in window) / 2**20, 1),
        "rss_start_mb": round(window[0].rss / 2**20, 1),
        "cpu_s": round(window[-1].cpu - window[0].cpu, 3),
    }


# reading the stored log ------------------------------------------------------------------------------------------
@dataclass
class LogCheck:
    """What the stored log holds: every exact numbered line counted, and when the last one was stored."""

    lines: int
    counts: Counter[int] = field(default_factory=Counter)
    malformed: int = 0
    stamps: dict[str, float] = field(default_factory=dict)
    last_stored_at: float | None = None
    events: int = 0
    store_calls: int = 0

    def feed(self, text_lines: Iterable[str], at: float) -> None:
        last = self.lines - 1
        for line in text_lines:
            match = _LINE.fullmatch(line)
            if match and match[1] == match[3] and match[2] == PAYLOAD:
                number = int(match[1])
                self.counts[number] += 1
                if number == last and self.last_stored_at is None:
                    self.last_stored_at = at
            elif _NUMBERED.match(line):
                self.malformed += 1
            elif stamp := _STAMP.match(line):
                self.stamps.setdefault(stamp[1], float(stamp[2]))

    @property
    def lost(self) -> int:
        return sum(1 for number in range(self.lines) if number not in self.counts)

    @property
    def doubled(self) -> int:
        return sum(count - 1 for count in self.counts.values() if count > 1)


def check_log(batches: Sequence[StoredLogBatch], agent: str, lines: int) -> LogCheck:
    """The stored events in arrival order, turned back into console text the way `agent` cut it into events."""
    suffix = _EVENT_SUFFIX.get(agent, "")
    check = LogCheck(lines, store_calls=len(batches))
    carry = ""
    for batch in batches:
        check.events += len(batch.events)
        parts = (carry + "".join(msg + suffix for _, msg in batch.events)).split("\n")
        carry = parts.pop()
        check.feed(parts, batch.at)
    if carry:
        check.feed([carry], batches[-1].at)
    return check


def reordered(batches: Sequence[StoredLogBatch], agent: str) -> int:
    """Numbered lines shown before their predecessor when the log is read in the server's (timestamp, seq) order,
    as the web UI and `events.get_task_log` read it."""
    suffix = _EVENT_SUFFIX.get(agent, "")
    flat = [(ts, seq, msg) for seq, (ts, msg) in enumerate(e for b in batches for e in b.events)]
    flat.sort()
    previous, count = -1, 0
    for line in "".join(msg + suffix for _, _, msg in flat).split("\n"):
        match = _LINE.fullmatch(line)
        if match and match[1] == match[3]:
            number = int(match[1])
            count += number < previous
            previous = number
    return count


def last_line_stored(agent: str, lines: int) -> Callable[[list[StoredLogBatch]], bool]:
    """A predicate for EventRecorder.wait_for: the exact last numbered line is in the stored text. It looks only at
    batches it has not seen yet (keeping the tail of the last one, where the line may have been cut)."""
    wanted = expected_line(lines - 1) + "\n"
    suffix = _EVENT_SUFFIX.get(agent, "")
    checked, tail = 0, ""

    def found(batches: list[StoredLogBatch]) -> bool:
        nonlocal checked, tail
        for batch in batches[checked:]:
            checked += 1
            text = tail + "".join(msg + suffix for _, msg in batch.events)
            if wanted in text:
                return True
            tail = text[-len(wanted) :]
        return False

    return found


# running it ------------------------------------------------------------------------------------------------------
def run(ctx: ScenarioContext) -> ScenarioResult:
    lines = QUICK_LINES if ctx.quick else LINES
    limits = QUICK if ctx.quick else FULL
    rounds = ctx.rounds or (1 if ctx.quick else DEFAULT_ROUNDS)
    cache = CacheSettings()
    wheelhouse = ctx.work_dir / "wheelhouse"  # empty: the task needs no package; pip stays offline
    wheelhouse.mkdir(parents=True, exist_ok=True)
    extra_env = offline_pip_env(wheelhouse)
    case = f"{lines // 1000}k_lines"
    result = ScenarioResult(
        samples=[],
        metrics=METRICS,
        table=TABLE,
        settings={
            "rounds": rounds,
            "lines": lines,
            "line": expected_line(0),
            "script": script_source(lines),
            "pip_env": {k: v for k, v in extra_env.items() if k != "PIP_FIND_LINKS"},
            "agent_config": {kind.name: kind.config(AgentDirs(Path("<agent dir>")), "", cache) for kind in AGENTS},
            "order": "per round: A B in even rounds, B A in odd ones; a fresh agent per run",
            "sampling_s": 0.1,
            "limits_s": {"ready": limits.ready, "task": limits.task, "last_line": limits.last_line},
            "clearml_agent_poll_s": ctx.peer_poll_s or 5.0,
        },
        notes=peer_poll_notes(ctx),
    )
    with BenchServer(ctx.work_dir / "server") as server:
        recorder = EventRecorder()
        assert server.server.backend is not None
        recorder.attach(server.server.backend.store)
        for round_index in range(rounds):
            for kind in alternate(AGENTS, round_index):
                sample = _run_agent(server, recorder, kind, case, lines, round_index, ctx, extra_env, cache, limits)
                result.samples.append(sample)
                logger.info("%s", _describe(sample))
                if problem := _problem(sample):
                    result.errors.append(problem)
    return result


def _run_agent(
    server: BenchServer,
    recorder: EventRecorder,
    kind: AgentKind,
    case: str,
    lines: int,
    round_index: int,
    ctx: ScenarioContext,
    extra_env: Mapping[str, str],
    cache: CacheSettings,
    limits: Limits,
) -> dict[str, Any]:
    """A fresh agent runs the flooding task once; the sample of that run."""
    tag = f"{kind.name}-logs-r{round_index}"
    dirs = AgentDirs(ctx.work_dir / tag)
    queue = f"bench-{tag}"
    queue_id = server.create_queue(queue)
    base = {"agent": kind.name, "case": case, "phase": "flood", "round": round_index}
    worker_id = f"bench-{tag}:cpu:0"
    agent = AgentProcess(kind, server, dirs, queue, worker_id, extra_env=extra_env, cache=cache, poll_s=ctx.peer_poll_s)
    try:
        with agent:
            agent.start(limits.ready)
            sampler = TreeSampler(agent_root(queue)).start()
            try:
                logger.info("%s: %d lines, round %d", kind.name, lines, round_index + 1)
                sample = _run_task(server, recorder, agent, lines, queue_id, limits)
            finally:
                sampler.close()
            window = sample.pop("_window", (None, None))
            sample.update(tree_metrics(sampler.samples, *window))
            if sample["status"] != "completed":
                sample["agent_log_tail"] = agent.log_tail()
            return {**base, **sample}
    except (BenchTimeout, RuntimeError) as err:
        logger.error("%s round %d: %s", kind.name, round_index + 1, err)
        return {**base, "status": "error", "error": str(err)}
    finally:
        if not ctx.keep:
            shutil.rmtree(dirs.root, ignore_errors=True)


def _run_task(
    server: BenchServer, recorder: EventRecorder, agent: AgentProcess, lines: int, queue_id: str, limits: Limits
) -> dict[str, Any]:
    name = f"{agent.kind.name}-log-flood"
    task_id = server.create_script_task(name, script_source(lines), "", entry_point=SCRIPT)
    server.enqueue(task_id, queue_id)
    try:
        status = server.recorder.wait_terminal(task_id, limits.task, alive=agent.alive)
    except BenchTimeout as err:
        return {"task_id": task_id, "status": "timeout", "error": str(err)}
    if not recorder.wait_for(task_id, last_line_stored(agent.kind.name, lines), limits.last_line):
        logger.warning("%s: the last line was not stored within %.0f s", agent.kind.name, limits.last_line)
    batches = recorder.batches(task_id)
    recorder.forget(task_id)
    sample = measure(batches, agent.kind.name, lines)
    sample.update(task_id=task_id, status=status)
    return sample


def measure(batches: Sequence[StoredLogBatch], agent: str, lines: int) -> dict[str, Any]:
    """The metrics of one run from the log events the server stored (the tree's metrics come separately)."""
    check = check_log(batches, agent, lines) if batches else LogCheck(lines)
    start, end, last = check.stamps.get("START"), check.stamps.get("END"), check.last_stored_at
    ship = delta(start, last)
    return {
        "ship_s": ship,
        "lines_per_s": round(lines / ship) if ship else None,
        "lost": check.lost,
        "doubled": check.doubled,
        "malformed": check.malformed,
        "write_s": delta(start, end),
        "lag_s": delta(end, last),
        "reordered": reordered(batches, agent),
        "stamp_ahead_s": _stamp_ahead(batches),
        "events": check.events,
        "store_calls": check.store_calls,
        "_window": (start, last),
    }


def _stamp_ahead(batches: Sequence[StoredLogBatch]) -> float | None:
    ahead = [ts / 1000 - batch.at for batch in batches for ts, _ in batch.events]
    return round(max(ahead), 3) if ahead else None


def _problem(sample: Mapping[str, Any]) -> str | None:
    """Why a sample does not count: not completed, or its last line never stored. Ours must also keep every line
    as written; clearml-agent's cuts (a line split where its 5 s file read stopped) are its results, not errors."""
    where = f"{sample['agent']} round {sample['round'] + 1}"
    if sample["status"] != "completed":
        return f"{where}: {sample['status']} {sample.get('error', '')}".strip()
    if sample.get("ship_s") is None:
        return f"{where}: the last line was never stored (or the task's first line is missing)"
    if sample["agent"] == OURS and (sample["lost"] or sample["doubled"] or sample["malformed"]):
        return f"{where}: lines lost {sample['lost']}, doubled {sample['doubled']}, malformed {sample['malformed']}"
    return None


def _describe(sample: Mapping[str, Any]) -> str:
    if sample["status"] != "completed":
        return f"  -> {sample['status']}: {sample.get('error', '')}"
    parts = [f"{key} {sample[key]}" for key in METRICS if sample.get(key) is not None]
    return "  -> " + ", ".join(parts)
