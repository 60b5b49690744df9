"""Acceptance: task slots. `--services-mode N` runs at most N tasks at once; `--dynamic-gpus` runs tasks side by
side, each on the GPUs its queue asks for (the seed's `--gpus 0-7 --queue quad_gpu=4 dual_gpu=2` example)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from notebook_agent.engine.events import WorkerState, WorkerStateChanged
from tests.integration.engine.conftest import wait_for
from tests.integration.engine.test_run_tasks import script_task

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def timed_source(marks: Path, name: str, sleep_sec: float) -> str:
    """A task that records when it ran and the GPUs it saw, in `<marks>/<name>.json`."""
    return (
        "import json, os, time\n"
        "start = time.time()\n"
        f"time.sleep({sleep_sec})\n"
        f"record = {{'start': start, 'end': time.time(), 'gpus': os.environ.get('CUDA_VISIBLE_DEVICES')}}\n"
        f"open({str(marks / (name + '.json'))!r}, 'w').write(json.dumps(record))\n"
    )


def records(marks: Path, names: list[str]) -> dict[str, dict]:
    return {name: json.loads((marks / f"{name}.json").read_text()) for name in names}


def max_overlap(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def test_services_mode_runs_at_most_n_tasks_at_once(raw, run_worker, tmp_path):
    queue = raw.default_queue()
    marks = tmp_path / "marks"
    marks.mkdir()
    names = [f"service{i}" for i in range(4)]
    ids = [script_task(raw, name, timed_source(marks, name, 2.0), queue) for name in names]
    with run_worker([], services_mode=2) as run:
        run.wait()
    for task_id in ids:
        task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
        assert task["status"] == "completed", task["status_reason"]
    spans = [(r["start"], r["end"]) for r in records(marks, names).values()]
    assert max_overlap(spans) == 2
    states = [e.state for e in run.events if isinstance(e, WorkerStateChanged)]
    assert WorkerState.RUNNING in states and states[-1] is WorkerState.OFFLINE


def test_services_mode_stop_aborts_every_running_task_as_stopped(raw, run_worker, tmp_path):
    queue = raw.default_queue()
    ids = [script_task(raw, f"long{i}", "import time\ntime.sleep(120)\n", queue) for i in range(2)]
    with run_worker([], services_mode=0, stop_when_idle=False, grace_sec=2.0) as run:
        wait_for(
            lambda: (
                all(raw.ok("tasks.get_by_id", {"task": t})["task"]["status"] == "in_progress" for t in ids)
                and len(run.worker.slots_snapshot().running) == 2
            ),
            timeout=120,
        )
        assert run.worker.current is not None and run.worker.current[0] in ids
        # The limit where clearml-agent keeps it: "no limit" is -1 there.
        props = raw.ok("workers.get_runtime_properties", {"worker": run.worker.worker_id})["runtime_properties"]
        assert {"key": "max_num_instances", "value": "-1"} in [{k: p[k] for k in ("key", "value")} for p in props]
        run.worker.stop(drain=False, timeout=60, reason="agent stopped")
        assert not run.worker._thread.is_alive()
    for task_id in ids:
        task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
        assert task["status"] == "stopped", task["status"]  # never `completed` (clearml-agent#188)
        assert task["status_reason"] == "agent stopped"


def test_dynamic_gpus_share_out_the_pool_as_in_the_seed_example(raw, run_worker, tmp_path):
    quad = raw.ok("queues.create", {"name": "quad_gpu"})["id"]
    dual = raw.ok("queues.create", {"name": "dual_gpu"})["id"]
    marks = tmp_path / "marks"
    marks.mkdir()
    # The seed's example: a quad_gpu task on GPUs 0-3, then a dual_gpu task on 4-5 (and another on 6-7); the
    # last dual_gpu task waits until a task ends and runs on the GPUs it gave back.
    plan = [("quad0", quad), ("dual0", dual), ("dual1", dual), ("dual2", dual)]
    for name, queue in plan:
        script_task(raw, name, timed_source(marks, name, 3.0), queue)
    with run_worker(
        ["quad_gpu", "dual_gpu"],
        gpus="0,1,2,3,4,5,6,7",
        dynamic_gpus=True,
        queue_gpus={"quad_gpu": (4, 4), "dual_gpu": (2, 2)},
    ) as run:
        run.wait()
        assert run.worker.worker_id.endswith(":dgpu0-7")
        assert run.worker.slots_snapshot().gpus.free == tuple(str(i) for i in range(8))  # all given back
    seen = records(marks, [name for name, _ in plan])
    assert seen["quad0"]["gpus"] == "0,1,2,3"
    assert seen["dual0"]["gpus"] == "4,5"
    assert seen["dual1"]["gpus"] == "6,7"
    assert len(seen["dual2"]["gpus"].split(",")) == 2
    # dual2 reused GPUs a finished task gave back: it started only after one of the first three ended.
    assert seen["dual2"]["start"] >= min(seen[name]["end"] for name in ("quad0", "dual0", "dual1"))
    # No GPU was ever given to two tasks running at the same time.
    for a in seen:
        for b in seen:
            if a < b and seen[a]["start"] < seen[b]["end"] and seen[b]["start"] < seen[a]["end"]:
                assert not set(seen[a]["gpus"].split(",")) & set(seen[b]["gpus"].split(",")), (a, b)
    spans = [(r["start"], r["end"]) for r in seen.values()]
    assert max_overlap(spans) == 3  # side by side, as many as the GPUs allow
    assert len(run.worker.outcomes) == len(plan)


def test_services_mode_drain_waits_for_every_task_and_pause_stops_pulling(raw, run_worker, tmp_path):
    queue = raw.default_queue()
    ids = [script_task(raw, f"short{i}", "import time\ntime.sleep(3)\n", queue) for i in range(2)]
    with run_worker([], services_mode=0, stop_when_idle=False) as run:
        wait_for(lambda: len(run.worker.slots_snapshot().running) == 2, timeout=60)
        run.worker.pause()
        late = script_task(raw, "queued while paused", "print('late')\n", queue)
        run.worker.stop(drain=True, timeout=60)
        assert not run.worker._thread.is_alive()
    for task_id in ids:
        task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
        assert task["status"] == "completed", task["status_reason"]
    assert raw.ok("tasks.get_by_id", {"task": late})["task"]["status"] == "queued"  # never pulled
    states = [e.state for e in run.events if isinstance(e, WorkerStateChanged)]
    assert WorkerState.DRAINING in states
