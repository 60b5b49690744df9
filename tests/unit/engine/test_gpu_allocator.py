"""Dynamic GPU allocation on 8 fake GPUs: the seed's example, min-max, no starvation, release and reuse, threads."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Sequence

import pytest

from notebook_agent.config import ApiConfig, Credentials
from notebook_agent.engine.gpu_allocator import GpuAllocator, Grant
from notebook_agent.engine.gpus import QueueNeed, nvml_gpu_ids, parse_gpus, parse_queue_gpus, worker_id_suffix
from notebook_agent.engine.task_env import task_environment
from notebook_agent.monitor import GpuMonitor
from tests.fakes.fake_nvml import FakeGpu, FakeNvml

API = ApiConfig("http://127.0.0.1:8008", "", "", Credentials("AK", "SK"))


class FakeQueues:
    """Server queues as lists of task ids: `has_task` peeks (queues.get_by_id), `pop` takes (get_next_task)."""

    def __init__(self, **tasks: Iterable[str]) -> None:
        self.tasks = {name: list(ids) for name, ids in tasks.items()}

    def has_task(self, queue: str) -> bool:
        return bool(self.tasks.get(queue))

    def pop(self, queue: str) -> str | None:
        return self.tasks[queue].pop(0) if self.tasks.get(queue) else None


def daemon(gpus: str, *queues: str) -> tuple[GpuAllocator, list[str]]:
    """`--dynamic-gpus --gpus <gpus> --queue <queues>` on a machine with 8 fake GPUs."""
    available = nvml_gpu_ids(GpuMonitor(nvml=FakeNvml(FakeGpu(uuid=f"GPU-{i}") for i in range(8))))
    needs = [parse_queue_gpus(q) for q in queues]
    return GpuAllocator(parse_gpus(gpus, available), needs), [n.queue for n in needs]


def pull_all(allocator: GpuAllocator, order: Sequence[str], queues: FakeQueues) -> list[tuple[str, str, str]]:
    """What the loop does until nothing more can start (priority mode: every pull restarts at the first queue):
    (task, queue, CUDA_VISIBLE_DEVICES) of each task started."""
    started = []
    while (grant := allocator.pull(order, queues.has_task, queues.pop)) is not None:
        started.append((grant.task_id, grant.queue, grant.visible_devices))
    return started


def release(allocator: GpuAllocator, visible_devices: str) -> None:
    allocator.release(visible_devices.split(","))


class TestSeedExample:
    def test_quad_then_dual_with_the_visible_devices_of_each(self, tmp_path) -> None:
        # clearml-agent daemon --dynamic-gpus --gpus 0-7 --queue quad_gpu=4 dual_gpu=2
        allocator, order = daemon("0-7", "quad_gpu=4", "dual_gpu=2")
        queues = FakeQueues(quad_gpu=["q1"], dual_gpu=["d1", "d2", "d3"])
        # "pick a Task from the quad_gpu queue, use GPUs 0-3 and spin it. Then ... dual_gpu ... GPUs 4-5."
        assert pull_all(allocator, order, queues) == [
            ("q1", "quad_gpu", "0,1,2,3"),
            ("d1", "dual_gpu", "4,5"),
            ("d2", "dual_gpu", "6,7"),
        ]
        snap = allocator.snapshot()
        assert snap.free == () and snap.busy == {
            **dict.fromkeys("0123", "q1"),
            **dict.fromkeys("45", "d1"),
            **dict.fromkeys("67", "d2"),
        }
        assert snap.waiting == (QueueNeed("dual_gpu", 2, 2),)  # d3 waits for two GPUs
        # what each task process gets, and the worker id it runs as (clearml-agent: <name>:gpu0,1,2,3)
        env = task_environment(
            {}, task_id="q1", worker_id="w", api=API, config_file=tmp_path / "c", visible_devices="0,1,2,3"
        )
        assert env["CUDA_VISIBLE_DEVICES"] == env["NVIDIA_VISIBLE_DEVICES"] == "0,1,2,3"
        assert worker_id_suffix(["0", "1", "2", "3"]) == "gpu0,1,2,3"
        assert worker_id_suffix(allocator.snapshot().gpus, dynamic=True) == "dgpu0-7"

        release(allocator, "4,5")  # d1 ends: its GPUs go to d3
        assert pull_all(allocator, order, queues) == [("d3", "dual_gpu", "4,5")]
        release(allocator, "0,1,2,3")  # q1 ends; a new quad task reuses 0-3
        queues.tasks["quad_gpu"].append("q2")
        assert pull_all(allocator, order, queues) == [("q2", "quad_gpu", "0,1,2,3")]
        for devices in ("0,1,2,3", "4,5", "6,7"):
            release(allocator, devices)
        assert allocator.snapshot().free == tuple("01234567") and allocator.snapshot().waiting == ()

    def test_opportunistic_takes_what_is_free_up_to_its_max(self) -> None:
        # clearml-agent daemon --dynamic-gpus --gpus 0-7 --queue dual=2 opportunistic=1-4
        allocator, order = daemon("0-7", "dual=2", "opportunistic=1-4")
        queues = FakeQueues(dual=["d1"], opportunistic=["o1", "o2", "o3"])
        assert pull_all(allocator, order, queues) == [
            ("d1", "dual", "0,1"),
            ("o1", "opportunistic", "2,3,4,5"),  # up to 4
            ("o2", "opportunistic", "6,7"),  # what is left, at least 1
        ]
        release(allocator, "6,7")
        assert pull_all(allocator, order, queues) == [("o3", "opportunistic", "6,7")]
        queues.tasks["dual"].append("d2")
        release(allocator, "0,1")
        assert pull_all(allocator, order, queues) == [("d2", "dual", "0,1")]


class TestNoStarvation:
    def test_a_waiting_quad_is_not_overtaken_by_a_stream_of_duals(self) -> None:
        # dual first in priority and always busy: without the line, every 2 freed GPUs would go to the next dual
        allocator, order = daemon("0-7", "dual=2", "quad=4")
        queues = FakeQueues(dual=[f"d{i}" for i in range(1, 20)], quad=["q1"])
        assert [devices for _, _, devices in pull_all(allocator, order, queues)] == ["0,1", "2,3", "4,5", "6,7"]
        # both wait from the same round; the larger need is ahead
        assert [n.queue for n in allocator.snapshot().waiting] == ["quad", "dual"]
        release(allocator, "0,1")
        assert pull_all(allocator, order, queues) == []  # 2 free GPUs are held for the quad
        release(allocator, "2,3")
        assert pull_all(allocator, order, queues) == [("q1", "quad", "0,1,2,3")]

    def test_a_queue_served_from_the_line_waits_behind_the_others_next_time(self) -> None:
        allocator, order = daemon("0-7", "quad=4", "dual=2")
        queues = FakeQueues(quad=["q1", "q2", "q3"], dual=["d1"])
        assert pull_all(allocator, order, queues) == [("q1", "quad", "0,1,2,3"), ("q2", "quad", "4,5,6,7")]
        release(allocator, "0,1,2,3")
        # quad and dual started waiting in the same round: quad (4) ahead of dual (2), so q3 goes first ...
        assert pull_all(allocator, order, queues) == [("q3", "quad", "0,1,2,3")]
        queues.tasks["quad"].append("q4")
        assert pull_all(allocator, order, queues) == []
        # ... but quad now waits behind dual, which has waited since before: d1 gets the next free GPUs
        assert [n.queue for n in allocator.snapshot().waiting] == ["dual", "quad"]
        release(allocator, "4,5,6,7")
        assert pull_all(allocator, order, queues) == [("d1", "dual", "4,5")]

    def test_opportunistic_does_not_nibble_at_the_gpus_a_waiting_quad_needs(self) -> None:
        allocator, order = daemon("0-7", "opportunistic=1-4", "quad=4")
        queues = FakeQueues(opportunistic=["o1", "o2", "o3", "o4"], quad=["q1"])
        assert pull_all(allocator, order, queues) == [
            ("o1", "opportunistic", "0,1,2,3"),
            ("o2", "opportunistic", "4,5,6,7"),
        ]
        release(allocator, "0,1,2,3")
        assert pull_all(allocator, order, queues) == [("q1", "quad", "0,1,2,3")]

    def test_a_waiting_queue_whose_task_went_away_leaves_the_line(self) -> None:
        allocator, order = daemon("0-7", "quad=4", "dual=2")
        queues = FakeQueues(quad=["q1", "q2", "q3"], dual=[])
        pull_all(allocator, order, queues)
        assert [n.queue for n in allocator.snapshot().waiting] == ["quad"]
        queues.tasks["quad"].clear()  # q3 dequeued, or pulled by another agent
        queues.tasks["dual"].append("d1")
        release(allocator, "0,1,2,3")
        assert pull_all(allocator, order, queues) == [("d1", "dual", "0,1")]
        assert allocator.snapshot().waiting == ()


class TestPull:
    def test_an_empty_pop_gives_the_gpus_back(self) -> None:
        allocator, order = daemon("0-3", "dual=2")
        grant = allocator.pull(order, lambda q: True, lambda q: None)  # peeked a task, another agent popped it
        assert grant is None and allocator.snapshot().free == tuple("0123") and allocator.snapshot().waiting == ()

    def test_a_failing_pop_gives_the_gpus_back(self) -> None:
        allocator, order = daemon("0-3", "dual=2")

        def broken(queue: str) -> str | None:
            raise ConnectionError("server gone")

        with pytest.raises(ConnectionError):
            allocator.pull(order, lambda q: True, broken)
        assert allocator.snapshot().free == tuple("0123")

    def test_grant(self) -> None:
        allocator, order = daemon("0:0,0:1,1:0,1:1", "one=1", "two=2")
        queues = FakeQueues(two=["t1"], one=["o1"])
        assert allocator.pull(["two", "one"], queues.has_task, queues.pop) == Grant("two", "t1", ("0:0", "0:1"))
        assert pull_all(allocator, order, queues) == [("o1", "one", "1:0")]


class TestBookkeeping:
    def test_construction_is_validated(self) -> None:
        with pytest.raises(ValueError, match="needs 4 GPUs but only 2 are given"):
            GpuAllocator(["0", "1"], [QueueNeed("quad", 4, 4)])
        with pytest.raises(ValueError, match="queue q is given twice"):
            GpuAllocator(["0", "1"], [QueueNeed("q", 1, 1), QueueNeed("q", 2, 2)])
        with pytest.raises(ValueError, match="needs GPUs"):
            GpuAllocator([], [QueueNeed("q", 1, 1)])
        with pytest.raises(ValueError, match="needs queues"):
            GpuAllocator(["0"], [])
        with pytest.raises(ValueError, match="listed twice"):
            GpuAllocator(["0", "0"], [QueueNeed("q", 1, 1)])
        # a max above the pool is fine: it takes what there is
        assert GpuAllocator(["0", "1"], [QueueNeed("o", 1, 4)]).try_allocate("o") == ["0", "1"]

    def test_release_of_a_free_gpu_and_unknown_queues_are_errors(self) -> None:
        allocator = GpuAllocator(["0", "1"], [QueueNeed("q", 1, 1)])
        with pytest.raises(ValueError, match="GPU 1 released but not allocated"):
            allocator.release(["1"])
        with pytest.raises(ValueError, match="queue nope has no GPU count"):
            allocator.try_allocate("nope")

    def test_freed_gpus_are_reused_lowest_first(self) -> None:
        allocator = GpuAllocator(parse_gpus("0-7"), [QueueNeed("one", 1, 1)])
        assert [allocator.try_allocate("one") for _ in range(3)] == [["0"], ["1"], ["2"]]
        allocator.release(["1"])
        assert allocator.try_allocate("one", owner="t9") == ["1"]
        assert allocator.snapshot().busy == {"0": "one", "1": "t9", "2": "one"}


def test_threads_never_share_a_gpu() -> None:
    """8 threads allocate and release at random for a while; no GPU is ever held by two at once."""
    allocator = GpuAllocator(parse_gpus("0-7"), [QueueNeed("a", 1, 3), QueueNeed("b", 2, 2), QueueNeed("c", 1, 1)])
    held: set[str] = set()
    check = threading.Lock()
    errors: list[str] = []
    grants = [0]

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(400):
            queue = rng.choice("abc")
            gpus = allocator.try_allocate(queue)
            if gpus is None:
                allocator.withdraw(queue)  # keep the line short, so the threads keep getting GPUs
                continue
            with check:
                if held & set(gpus):
                    errors.append(f"{gpus} given twice")
                held.update(gpus)
                grants[0] += 1
            with check:
                held.difference_update(gpus)
            allocator.release(gpus)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and grants[0] > 100
    snap = allocator.snapshot()
    assert snap.free == tuple("01234567") and snap.busy == {}
