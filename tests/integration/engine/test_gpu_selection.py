"""Acceptance: `--gpus` reaches the task as parsed ids (a range written out, a MIG slice as CUDA spells it) and
names the worker as clearml-agent does (`<name>:gpu0,1,2.0`)."""

from __future__ import annotations

import pytest

from tests.integration.engine.test_run_tasks import script_task, task_log

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_a_task_sees_the_parsed_gpus_and_the_worker_id_names_them(raw, run_worker):
    queue = raw.default_queue()
    source = "import os\nprint('visible=' + os.environ['CUDA_VISIBLE_DEVICES'], os.environ['NVIDIA_VISIBLE_DEVICES'])\n"
    task_id = script_task(raw, "gpu selection", source, queue)
    with run_worker([], gpus="0-1, 2:0") as run:
        run.wait()
    task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
    assert task["status"] == "completed", task["status_reason"]
    assert run.worker.worker_id.endswith(":gpu0,1,2.0")
    assert task["last_worker"] == run.worker.worker_id
    assert any(line.startswith("visible=0,1,2:0 0,1,2:0") for line in task_log(raw, task_id))


def test_the_worker_waits_for_free_gpu_memory(raw, run_worker, monkeypatch):
    # On Colab the notebook and its task share the GPU: the worker pulls only while the GPU has room.
    from notebook_agent.engine import worker as worker_module
    from notebook_agent.engine.events import WorkerStateChanged
    from notebook_agent.monitor.nvml import GpuMonitor
    from tests.fakes.fake_nvml import FakeGpu, FakeNvml
    from tests.integration.engine.conftest import wait_for

    board = FakeGpu(memory_used_mb=38000.0, memory_total_mb=40960.0)
    monkeypatch.setattr(worker_module, "GpuMonitor", lambda: GpuMonitor(nvml=FakeNvml([board])))
    queue = raw.default_queue()
    task_id = script_task(raw, "needs gpu memory", "print('had room')\n", queue)
    with run_worker([], gpus="0", gpu_min_free_gb=4.0, stop_when_idle=False) as run:
        held = wait_for(
            lambda: [e for e in run.events if isinstance(e, WorkerStateChanged) and "free GPU memory" in e.detail],
            timeout=30,
        )
        assert "GPU 0 has 2.9 GiB free, needs 4.0 GiB" in held[0].detail
        assert raw.ok("tasks.get_by_id", {"task": task_id})["task"]["status"] == "queued"
        board.memory_used_mb = 1000.0  # the notebook freed its memory
        wait_for(lambda: raw.ok("tasks.get_by_id", {"task": task_id})["task"]["status"] == "completed", timeout=60)
