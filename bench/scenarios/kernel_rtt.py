"""Scenario kernel_rtt: how responsive a notebook stays while the in-kernel agent runs a task that logs as fast as it
can. A real ipykernel started by jupyter_client runs trivial cells (`1+1`); the round trip execute_request ->
execute_reply is timed in a separate probe process (so the bench's own server, busy taking the task's log, does not
delay the clock), once in a kernel without the agent and once in the same kind of kernel whose Agent runs the
log-heavy task. A control runs the same task beside a kernel without the agent, its output piped into `cat`: what
the machine's CPU alone costs the kernel. Ours only: clearml-agent has no in-kernel face."""

from __future__ import annotations

import json
import logging
import queue
import re
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.agents import AgentDirs, CacheSettings, Ours, agent_env
from bench.harness import TERMINAL, BenchServer, BenchTimeout, alternate, percentile, wait_for
from bench.report import OURS, Metric, higher, lower
from bench.scenarios.base import ScenarioContext, ScenarioResult

logger = logging.getLogger(__name__)

NAME = "kernel_rtt"
DESCRIPTION = (
    "Round trip (execute_request -> execute_reply) of trivial cells in a real ipykernel: without the agent, and "
    "while the in-kernel Agent runs a task printing as fast as it can; p50/p99 and what the agent adds. Control: "
    "the same task outside the kernel, piped into cat."
)
DEFAULT_ROUNDS = 3
TARGET_ADDED_P99_MS = 50.0
CASE = "cell_1+1"
IDLE = "no_agent"
LOGGING = "agent_logging"  # the Agent in the kernel, the server in another process (the bench's)
EMBEDDED = "agent_embedded_logging"  # Agent(embedded=True): the server in the kernel too, as on Colab
FLOOD = "flood_no_agent"  # control: the same task outside the kernel, its output piped into `cat`
ADDED = {LOGGING: "added", EMBEDDED: "added_embedded"}  # what each agent variant adds to no_agent
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the colours of an IPython traceback
_SERVER_ENV = ("CLEARML_API_", "CLEARML_WEB_HOST", "CLEARML_FILES_HOST", "CLEARML_CONFIG_FILE")
METRICS: dict[str, Metric] = {
    "p50_ms": lower("median round trip of the round's cells, ms (for `added`: agent_logging minus no_agent)"),
    "p99_ms": lower("99th percentile (nearest rank) of the round's cells, ms (for `added`: the difference)"),
    "max_ms": lower("slowest cell of the round, ms (for `added`: the difference)"),
    "mean_ms": lower("mean round trip, ms (for `added`: the difference)"),
    "log_lines_per_s": higher("lines the task printed per second over its run (agent_logging: the log path's pace)"),
}
TABLE = ["p50_ms", "p99_ms", "max_ms", "log_lines_per_s"]
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Sizes:
    cells: int  # timed cells per kernel
    warmup_cells: int  # untimed cells first (imports, first-use caches)
    interval_s: float  # pause between cells: the timed window spans several of the log shipper's 1 s flushes
    kernel_ready: float  # kernel start -> kernel_info reply
    task_ready: float  # enqueue -> the task's lines reach the server
    task_max_s: float  # the log task stops by itself after this long, whatever happens to the bench


FULL = Sizes(cells=200, warmup_cells=10, interval_s=0.02, kernel_ready=60.0, task_ready=120.0, task_max_s=300.0)
QUICK = Sizes(cells=20, warmup_cells=3, interval_s=0.02, kernel_ready=60.0, task_ready=60.0, task_max_s=90.0)


def log_task_source(stop_file: Path, stats_file: Path, max_s: float) -> str:
    """The log-heavy task: print numbered lines as fast as it can until `stop_file` exists (or `max_s` passed),
    then write how many lines it printed, and when, to `stats_file`."""
    return textwrap.dedent(
        f"""\
        import json, os, time
        stop, stats = {str(stop_file)!r}, {str(stats_file)!r}
        first = time.time()
        deadline = first + {max_s!r}
        print("BENCH_LOG_START %.6f" % first, flush=True)
        n = 0
        while True:
            for _ in range(1000):
                n += 1
                print(f"step {{n}}: loss=0.{{n % 9973:04d}} lr=0.001 some more text to make a typical line")
            if os.path.exists(stop) or time.time() > deadline:
                break
        last = time.time()
        with open(stats + ".tmp", "w") as f:
            json.dump({{"lines": n, "first": first, "last": last, "stopped": os.path.exists(stop)}}, f)
        os.replace(stats + ".tmp", stats)
        print("BENCH_LOG_END %d %.6f" % (n, last), flush=True)
        """
    )


def run(ctx: ScenarioContext) -> ScenarioResult:
    sizes = QUICK if ctx.quick else FULL
    rounds = ctx.rounds or (1 if ctx.quick else DEFAULT_ROUNDS)
    result = ScenarioResult(
        samples=[],
        metrics=METRICS,
        table=TABLE,
        settings={
            "rounds": rounds,
            "cells": sizes.cells,
            "warmup_cells": sizes.warmup_cells,
            "interval_s": sizes.interval_s,
            "cell": "1+1",
            "probe": "a separate process with jupyter_client's BlockingKernelClient on the kernel's connection file",
            "kernel": "python3 (ipykernel) started by jupyter_client's KernelManager, HOME/TMPDIR fresh per kernel",
            "agent": "Agent([queue], cpu_only=True).start() in the kernel, server: the bench's (another process)",
            "agent_embedded": "Agent(['default'], embedded=True, cpu_only=True): the server in the kernel as well",
            "log_task": "prints numbered ~80-character lines as fast as it can during the whole measurement",
            "control": "flood_no_agent: the same task beside a kernel without the agent, piped into `cat`",
            "order": "per round: no_agent, agent_logging, agent_embedded_logging, flood_no_agent in even rounds, "
            "the reverse in odd ones",
            "target_added_p99_ms": TARGET_ADDED_P99_MS,
        },
    )
    with BenchServer(ctx.work_dir / "server") as server:
        for round_index in range(rounds):
            by_variant: dict[str, dict[str, Any]] = {}
            for variant in alternate((IDLE, LOGGING, EMBEDDED, FLOOD), round_index):
                logger.info("kernel_rtt round %d: %s", round_index + 1, variant)
                sample = _run_variant(server, variant, round_index, ctx, sizes)
                logger.info("  -> %s", _describe(sample))
                by_variant[variant] = sample
                result.samples.append(sample)
                if sample["status"] != "completed":
                    result.errors.append(f"{variant} (round {round_index + 1}): {sample.get('error', '')}".strip())
            for variant in (LOGGING, EMBEDDED):
                if by_variant[IDLE]["status"] == by_variant[variant]["status"] == "completed":
                    added = added_sample(by_variant[IDLE], by_variant[variant], round_index)
                    logger.info("  %s: p50 %+.1f ms, p99 %+.1f ms", added["phase"], added["p50_ms"], added["p99_ms"])
                    result.samples.append(added)
    _log_verdict(result.samples)
    return result


def _run_variant(
    server: BenchServer, variant: str, round_index: int, ctx: ScenarioContext, sizes: Sizes
) -> dict[str, Any]:
    tag = f"{variant}-r{round_index}"
    dirs = AgentDirs(ctx.work_dir / tag).create()
    base = {"agent": OURS, "case": CASE, "phase": variant, "round": round_index}
    kernel: KernelUnderTest | None = None
    try:
        dirs.config_file.write_text(Ours().config(dirs, server.api_config_text(), CacheSettings()), encoding="utf-8")
        env = agent_env(server, dirs, f"bench-{tag}:cpu:0", {})
        if variant == EMBEDDED:  # no server configured: the Agent starts its own in the kernel
            env = {key: value for key, value in env.items() if not key.startswith(_SERVER_ENV)}
        kernel = KernelUnderTest(env, dirs.root, sizes.kernel_ready)
        if variant == LOGGING:
            measured = _measure_while_logging(server, kernel, dirs, tag, sizes)
        elif variant == EMBEDDED:
            measured = _measure_embedded(kernel, dirs, sizes)
        elif variant == FLOOD:
            measured = _measure_beside_flood(kernel, dirs, env, sizes)
        else:
            measured = {"rtt": probe_kernel(kernel.connection_file, sizes)}
        return {**base, "status": "completed", **_stats(measured.pop("rtt")), **measured}
    except (BenchTimeout, RuntimeError, OSError, subprocess.SubprocessError) as err:
        logger.error("%s: %s", tag, err)
        return {**base, "status": "error", "error": f"{type(err).__name__}: {err}"}
    finally:
        if kernel is not None:
            kernel.close()
        if not ctx.keep:
            shutil.rmtree(dirs.root, ignore_errors=True)


def _measure_while_logging(
    server: BenchServer, kernel: KernelUnderTest, dirs: AgentDirs, tag: str, sizes: Sizes
) -> dict[str, Any]:
    """Start the Agent in the kernel, let it run the log task, time the cells, then stop the task."""
    queue_name = f"bench-{tag}"
    queue_id = server.create_queue(queue_name)
    kernel.run(
        "from pathlib import Path\nfrom notebook_agent import Agent\n"
        f"agent = Agent([{queue_name!r}], cpu_only=True, state_dir=Path({str(dirs.root / 'state')!r})).start()\n"
    )
    stop_file, stats_file = dirs.root / "stop-logging", dirs.root / "log-stats.json"
    task_id = server.create_script_task(
        f"log-heavy-{tag}", log_task_source(stop_file, stats_file, sizes.task_max_s), ""
    )
    server.enqueue(task_id, queue_id)
    try:
        wait_for(lambda: _logging(server.session, task_id), sizes.task_ready, f"task {task_id}: lines on the server")
        time.sleep(1.0)  # past the first flushes: the log path at its steady pace
        rtt = probe_kernel(kernel.connection_file, sizes)
    finally:
        stop_file.touch()
    status = server.recorder.wait_terminal(task_id, 60.0)
    measured = _checked(rtt, stats_file, status)
    kernel.run("agent.close()", timeout=60.0)
    return {**measured, "task_id": task_id}


def _measure_embedded(kernel: KernelUnderTest, dirs: AgentDirs, sizes: Sizes) -> dict[str, Any]:
    """As `_measure_while_logging`, with the Agent's own embedded server in the kernel: it also takes the log."""
    from notebook_agent import api

    stop_file, stats_file = dirs.root / "stop-logging", dirs.root / "log-stats.json"
    source = log_task_source(stop_file, stats_file, sizes.task_max_s)
    printed = kernel.run(
        "import json\nfrom pathlib import Path\nfrom notebook_agent import Agent\n"
        f"agent = Agent(['default'], embedded=True, cpu_only=True, state_dir=Path({str(dirs.root / 'state')!r}))\n"
        f"agent.start()\ntask_id = agent.submit({source!r}, name='log-heavy')\n"
        "api = agent.config.api\n"
        "print(json.dumps([api.api_server, api.credentials.access_key, api.credentials.secret_key, task_id]))\n"
    )
    url, access_key, secret_key, task_id = json.loads(printed.strip().splitlines()[-1])
    session = api.Session(url, access_key, secret_key)
    try:
        try:
            wait_for(lambda: _logging(session, task_id), sizes.task_ready, f"task {task_id}: lines on the server", 0.2)
            time.sleep(1.0)
            rtt = probe_kernel(kernel.connection_file, sizes)
        finally:
            stop_file.touch()
        status = wait_for(lambda: _terminal(session, task_id), 60.0, f"task {task_id}: its end", 0.5)
    finally:
        session.close()
    measured = _checked(rtt, stats_file, status)
    kernel.run("agent.close()", timeout=60.0)
    return {**measured, "task_id": task_id}


def _terminal(session: Any, task_id: str) -> str | None:
    from notebook_agent import api

    status = str(api.tasks.get_by_id(session, task_id).get("status") or "")
    return status if status in TERMINAL else None


def _checked(rtt: dict[str, Any], stats_file: Path, status: str) -> dict[str, Any]:
    """The task's own account (lines, first and last) once it ended; RuntimeError unless it completed and ran
    through the whole measurement."""
    stats = json.loads(stats_file.read_text(encoding="utf-8")) if stats_file.exists() else {}
    covered = bool(stats) and stats["first"] < rtt["started"] and stats["last"] > rtt["ended"]
    if status != "completed" or not covered:
        raise RuntimeError(
            f"the log task did not run through the measurement (status {status}, stats {stats}, "
            f"cells {rtt['started']:.3f}..{rtt['ended']:.3f})"
        )
    return {
        "rtt": rtt,
        "log_lines": stats["lines"],
        "log_lines_per_s": round(stats["lines"] / max(stats["last"] - stats["first"], 1e-6)),
    }


def _measure_beside_flood(
    kernel: KernelUnderTest, dirs: AgentDirs, env: Mapping[str, str], sizes: Sizes
) -> dict[str, Any]:
    """The control: the log task runs beside a kernel without the agent, its output read by `cat` (the cheapest
    reader there is). What it costs the kernel is the machine's CPU, not anything in the kernel's process."""
    stop_file, stats_file = dirs.root / "stop-logging", dirs.root / "log-stats.json"
    script = dirs.root / "flood.py"
    script.write_text(log_task_source(stop_file, stats_file, sizes.task_max_s), encoding="utf-8")
    task = subprocess.Popen(
        [sys.executable, "-u", str(script)],
        cwd=dirs.root,
        env=dict(env),
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    reader = subprocess.Popen(["cat"], stdin=task.stdout, stdout=subprocess.DEVNULL, start_new_session=True)
    assert task.stdout is not None
    task.stdout.close()  # `cat` holds the read end now
    try:
        time.sleep(1.5)  # the same head start as the agent's task gets past its first lines
        rtt = probe_kernel(kernel.connection_file, sizes)
    finally:
        stop_file.touch()
        for proc in (task, reader):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    return _checked(rtt, stats_file, "completed" if task.returncode == 0 else f"exit {task.returncode}")


def _logging(session: Any, task_id: str) -> bool:
    """True once the task's printed lines have reached the server (the whole log path is busy)."""
    from notebook_agent import api

    events = api.events.get_task_log(session, task_id, batch_size=1).get("events") or []
    return any("loss=" in str(event.get("msg") or "") for event in events)


class KernelUnderTest:
    """A python3 ipykernel started as Jupyter does, and a blocking client for the set-up cells (the timed cells
    come from a probe process of their own)."""

    def __init__(self, env: Mapping[str, str], cwd: Path, ready_timeout: float) -> None:
        from jupyter_client import KernelManager

        self.connection_file = cwd / "kernel.json"
        self.km = KernelManager(kernel_name="python3", connection_file=str(self.connection_file))
        self.km.shutdown_wait_time = 30.0
        self.km.start_kernel(env=dict(env), cwd=str(cwd))
        self.kc = self.km.blocking_client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=ready_timeout)
        except RuntimeError:
            self.close()
            raise

    def run(self, code: str, timeout: float = 120.0) -> str:
        """Execute a cell and return what it printed; RuntimeError with its traceback if it raised."""
        out: list[str] = []

        def collect(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream" and msg["content"].get("name") == "stdout":
                out.append(msg["content"]["text"])

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=collect)
        content = reply["content"]
        if content["status"] != "ok":
            trace = _ANSI.sub("", "\n".join(content.get("traceback") or []))
            raise RuntimeError(f"cell failed: {content.get('ename')}: {content.get('evalue')}\n{trace[-1500:]}")
        return "".join(out)

    def close(self) -> None:
        from notebook_agent.engine import task_registry

        state = self.connection_file.parent / "state"
        self.kc.stop_channels()
        if self.km.is_alive():
            self.km.shutdown_kernel(now=True)
        self.km.cleanup_resources()
        # A task the killed kernel left running goes too (its owner is dead; the server is not told).
        task_registry.reap(state, lambda _: None, grace=1.0)


def probe_kernel(connection_file: Path, sizes: Sizes) -> dict[str, Any]:
    """Run `probe()` in a fresh interpreter: the bench process also hosts the server, whose work on the task's log
    would otherwise hold the GIL that the timing client needs."""
    code = (
        "import json, sys\nfrom pathlib import Path\nfrom bench.scenarios.kernel_rtt import probe\n"
        f"json.dump(probe(Path({str(connection_file)!r}), {sizes.cells}, {sizes.warmup_cells}, "
        f"{sizes.interval_s!r}), sys.stdout)\n"
    )
    limit = 60.0 + (sizes.cells + sizes.warmup_cells) * (sizes.interval_s + 5.0)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=limit, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the probe failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def probe(connection_file: Path, cells: int, warmup: int, interval_s: float, timeout: float = 30.0) -> dict[str, Any]:
    """Time `cells` executions of `1+1` on the kernel of `connection_file` (after `warmup` untimed ones): ms from
    sending execute_request to receiving its execute_reply, one after another with `interval_s` between."""
    from jupyter_client import BlockingKernelClient

    kc = BlockingKernelClient(connection_file=str(connection_file))
    kc.load_connection_file()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=timeout)
        for _ in range(warmup):
            _round_trip(kc, timeout)
        started = time.time()
        rtts = []
        for _ in range(cells):
            rtts.append(round(_round_trip(kc, timeout), 3))
            time.sleep(interval_s)
        return {"rtts_ms": rtts, "started": started, "ended": time.time()}
    finally:
        kc.stop_channels()


def _round_trip(kc: Any, timeout: float) -> float:
    begin = time.perf_counter()
    msg_id = kc.execute("1+1")
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = kc.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"no execute_reply within {timeout:.0f} s") from None
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    elapsed = (time.perf_counter() - begin) * 1000.0
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"the cell failed: {reply['content']}")
    while True:  # the cell's iopub traffic (busy, execute_input, execute_result, idle): read so it never piles up
        try:
            kc.get_iopub_msg(timeout=0)
        except queue.Empty:
            return elapsed


def _stats(rtt: Mapping[str, Any]) -> dict[str, Any]:
    values: list[float] = list(rtt["rtts_ms"])
    return {
        "cells": len(values),
        "p50_ms": round(percentile(values, 50), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "max_ms": round(max(values), 3),
        "mean_ms": round(statistics.fmean(values), 3),
        "window_s": round(rtt["ended"] - rtt["started"], 3),
        "rtts_ms": values,
    }


def added_sample(idle: Mapping[str, Any], logging_: Mapping[str, Any], round_index: int) -> dict[str, Any]:
    """What the agent adds in one round: an agent variant minus no_agent, per statistic."""
    added = {key: round(logging_[key] - idle[key], 3) for key in ("p50_ms", "p99_ms", "max_ms", "mean_ms")}
    return {
        "agent": OURS,
        "case": CASE,
        "phase": ADDED[logging_["phase"]],
        "round": round_index,
        "status": "completed",
        **added,
        "target_p99_ms": TARGET_ADDED_P99_MS,
        "target_met": added["p99_ms"] <= TARGET_ADDED_P99_MS,
    }


def _log_verdict(samples: Sequence[Mapping[str, Any]]) -> None:
    for phase in ADDED.values():
        added = [s["p99_ms"] for s in samples if s["phase"] == phase]
        if not added:
            continue
        mid = statistics.median(added)
        verdict = "within" if mid <= TARGET_ADDED_P99_MS else "ABOVE"
        log = logger.info if mid <= TARGET_ADDED_P99_MS else logger.warning
        text = f"kernel_rtt {phase}: p99 {mid:+.1f} ms (median of {len(added)} rounds), {verdict} the target"
        log("%s (%.0f ms)", text, TARGET_ADDED_P99_MS)


def _describe(sample: Mapping[str, Any]) -> str:
    if sample["status"] != "completed":
        return f"{sample['status']}: {sample.get('error', '')}"
    text = f"p50 {sample['p50_ms']:.2f} ms, p99 {sample['p99_ms']:.2f} ms, max {sample['max_ms']:.2f} ms"
    if "log_lines_per_s" in sample:
        text += f", task logging {sample['log_lines_per_s']} lines/s ({sample['log_lines']} lines)"
    return text
