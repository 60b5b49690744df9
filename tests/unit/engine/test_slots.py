"""TaskSlots: at most `capacity` tasks at once, slots freed on every path, waiting and joining."""

from __future__ import annotations

import threading

import pytest

from notebook_agent.engine.slots import RunningSlot, TaskSlots


class TestCapacity:
    def test_a_full_set_of_slots_has_no_room_until_one_ends(self) -> None:
        slots = TaskSlots(2)
        release = threading.Event()
        slots.launch(RunningSlot("a", "q"), release.wait)
        assert slots.has_room()
        slots.launch(RunningSlot("b", "q"), release.wait)
        assert not slots.has_room()
        with pytest.raises(RuntimeError, match="no free task slot for c"):
            slots.launch(RunningSlot("c", "q"), release.wait)
        assert [s.task_id for s in slots.running] == ["a", "b"]  # in launch order: status reports show the first
        release.set()
        assert slots.join(timeout=5)
        assert slots.has_room() and slots.running == []

    def test_no_capacity_means_no_limit(self) -> None:
        slots = TaskSlots(None)
        release = threading.Event()
        for i in range(20):
            slots.launch(RunningSlot(str(i), "q"), release.wait)
        assert slots.has_room()
        release.set()
        assert slots.join(timeout=5)

    def test_a_capacity_below_one_is_refused(self) -> None:
        with pytest.raises(ValueError, match="capacity 0 must be at least 1"):
            TaskSlots(0)

    def test_one_task_id_takes_one_slot(self) -> None:
        slots = TaskSlots(None)
        release = threading.Event()
        slots.launch(RunningSlot("a", "q"), release.wait)
        with pytest.raises(ValueError, match="task a is already running"):
            slots.launch(RunningSlot("a", "q"), release.wait)
        release.set()
        assert slots.join(timeout=5)


class TestEnd:
    def test_on_end_and_on_freed_run_even_when_the_task_fails(self) -> None:
        slots = TaskSlots(1)
        calls: list[str] = []

        def boom() -> None:
            raise RuntimeError("task thread broke")

        def freed() -> None:
            calls.append(f"freed running={len(slots.running)}")

        slots.launch(RunningSlot("a", "q", "0,1"), boom, lambda: calls.append("end"), on_freed=freed)
        assert slots.join(timeout=5)
        for _ in range(50):  # on_freed runs just after the slot is given back
            if len(calls) == 2:
                break
            threading.Event().wait(0.02)
        assert calls == ["end", "freed running=0"]
        assert slots.has_room()

    def test_join_times_out_while_a_task_runs(self) -> None:
        slots = TaskSlots(1)
        release = threading.Event()
        slots.launch(RunningSlot("a", "q"), release.wait)
        assert not slots.join(timeout=0.1)
        release.set()
        assert slots.join(timeout=5)

    def test_wait_change_returns_when_a_slot_frees(self) -> None:
        slots = TaskSlots(1)
        release = threading.Event()
        slots.launch(RunningSlot("a", "q"), release.wait)
        threading.Timer(0.1, release.set).start()
        waited = threading.Event()

        def wait() -> None:
            slots.wait_change(10.0)
            waited.set()

        threading.Thread(target=wait, daemon=True).start()
        assert waited.wait(5)
