"""Dynamic GPU allocation (`--dynamic-gpus --gpus 0-7 --queue quad=4 dual=2 opportunistic=1-4`): which GPUs a
task pulled from each queue gets, freed when it ends, with no queue starved by queues that need fewer GPUs.

The allocator is pure bookkeeping behind one lock; it does no I/O. The worker loop drives it, and `pull` is that
loop's step written once (peek, allocate, pop, give back on an empty pop), with the server calls passed in.

The rule, in full:

1. A task from a queue with need `min-max` gets the lowest free GPUs (in `--gpus` order), as many as are free up
   to `max`, and only if that is at least `min` (`quad=4` is `4-4`).
2. A queue that has a task waiting but cannot be served joins the *waiting line*. The line is ordered by the
   round in which a queue started waiting; among queues that started in the same round, the larger `min` goes
   first (then the order the loop gave). A queue leaves the line when it is served or has no task any more.
3. No queue may take GPUs that the queues ahead of it in the line still need: a queue behind them (or not in
   the line) is served only if the GPUs left after its allocation still cover the sum of their `min`. Waiting
   queues are tried first in every round (`next_queues`).

So a queue needing 4 GPUs, once it waits, is served as soon as 4 GPUs are free, however many 2-GPU tasks arrive
behind it; and a queue served from the head of the line goes behind those still waiting if it waits again, so
the larger need cannot starve the smaller either. While GPUs sit free for the head of the line, they stay free
(the allocator cannot know which running task ends first, so it does not lend them out).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from notebook_agent.engine.gpus import QueueNeed


@dataclass(frozen=True)
class Grant:
    """A task pulled in dynamic mode and the GPUs it runs on (`CUDA_VISIBLE_DEVICES`); release them when it ends."""

    queue: str
    task_id: str
    gpus: tuple[str, ...]

    @property
    def visible_devices(self) -> str:
        return ",".join(self.gpus)


@dataclass(frozen=True)
class AllocatorSnapshot:
    """The state for the worker card and status: which GPU runs what, and who waits for how many."""

    gpus: tuple[str, ...]
    free: tuple[str, ...]
    busy: Mapping[str, str] = field(default_factory=dict)  # GPU -> owner (the task id once known, else the queue)
    waiting: tuple[QueueNeed, ...] = ()  # the line; the first one holds the reservation


class GpuAllocator:
    """Hands out GPUs of a fixed pool to queues with `QueueNeed`s. Thread-safe: every method takes one lock,
    so task threads may `release` while the loop allocates; no GPU is ever given to two tasks."""

    def __init__(self, gpus: Sequence[str], queues: Sequence[QueueNeed]) -> None:
        if not gpus:
            raise ValueError("dynamic GPU allocation needs GPUs (--gpus)")
        if len(set(gpus)) != len(gpus):
            raise ValueError(f"GPU listed twice in {','.join(gpus)}")
        if not queues:
            raise ValueError("dynamic GPU allocation needs queues with GPU counts (--queue name=N)")
        self._gpus = tuple(gpus)
        self._needs: dict[str, QueueNeed] = {}
        for need in queues:
            if need.queue in self._needs:
                raise ValueError(f"queue {need.queue} is given twice")
            if need.min > len(gpus):
                raise ValueError(
                    f"queue {need.queue} needs {need.min} GPUs but only {len(gpus)} are given ({','.join(gpus)})"
                )
            self._needs[need.queue] = need
        self._owner: dict[str, str] = {}  # busy GPU -> owner
        self._waiting: dict[str, tuple[int, int, int]] = {}  # queue -> sort key (round, -min, order position)
        self._round = 0
        self._order: dict[str, int] = {}  # queue -> position in the last round's order (a tie-break of rule 2)
        self._lock = threading.Lock()

    @property
    def needs(self) -> tuple[QueueNeed, ...]:
        return tuple(self._needs.values())

    def need(self, queue: str) -> QueueNeed:
        try:
            return self._needs[queue]
        except KeyError:
            raise ValueError(f"queue {queue} has no GPU count (--queue {queue}=N)") from None

    # the rule ---------------------------------------------------------------------------------------------
    def next_queues(self, order: Sequence[str]) -> list[str]:
        """The queues to try this round: the waiting line first, then the rest in `order` (the loop's priority
        or fairness order). Each call is a new round (rule 2 orders the line by round)."""
        with self._lock:
            self._round += 1
            self._order = {queue: position for position, queue in enumerate(order)}
            line = self._line()
            return line + [q for q in order if q not in self._waiting and q in self._needs]

    def try_allocate(self, queue: str, owner: str = "") -> list[str] | None:
        """The GPUs for a task from `queue` (rule 1), now taken; or None, with `queue` put in the waiting line.

        Call it only for a queue that has a task waiting (peek first): the line is for queues with work.
        """
        need = self.need(queue)
        with self._lock:
            free = [g for g in self._gpus if g not in self._owner]
            reserved = sum(self._needs[q].min for q in self._ahead_of(queue))
            take = min(need.max, len(free) - reserved)
            if take < need.min:
                if queue not in self._waiting:
                    position = self._order.get(queue, len(self._order))
                    self._waiting[queue] = (self._round, -need.min, position)
                return None
            gpus = free[:take]
            for gpu in gpus:
                self._owner[gpu] = owner or queue
            self._waiting.pop(queue, None)
            return gpus

    def withdraw(self, queue: str) -> None:
        """`queue` has no task waiting any more (taken elsewhere, dequeued): it leaves the line."""
        with self._lock:
            self._waiting.pop(queue, None)

    def release(self, gpus: Iterable[str]) -> None:
        """The task on `gpus` ended: they are free for the next one. Freeing a GPU that is not busy is a bug."""
        gpus = list(gpus)
        with self._lock:
            idle = [g for g in gpus if g not in self._owner]
            if idle:
                raise ValueError(f"GPU {','.join(idle)} released but not allocated")
            for gpu in gpus:
                del self._owner[gpu]

    def set_owner(self, gpus: Iterable[str], owner: str) -> None:
        """Name the task on `gpus` (allocation happens before the pop, so the task id comes after)."""
        with self._lock:
            for gpu in gpus:
                if gpu in self._owner:
                    self._owner[gpu] = owner

    def snapshot(self) -> AllocatorSnapshot:
        with self._lock:
            return AllocatorSnapshot(
                gpus=self._gpus,
                free=tuple(g for g in self._gpus if g not in self._owner),
                busy={g: self._owner[g] for g in self._gpus if g in self._owner},
                waiting=tuple(self._needs[q] for q in self._line()),
            )

    # the loop's step ----------------------------------------------------------------------------------------
    def pull(
        self,
        order: Sequence[str],
        has_task: Callable[[str], bool],
        pop: Callable[[str], str | None],
    ) -> Grant | None:
        """One pull of the dynamic loop: try the queues of `next_queues(order)`; for each, peek (`has_task`,
        e.g. queues.get_by_id entries), allocate, then pop (`pop`, e.g. queues.get_next_task); an empty pop
        gives the GPUs back. Returns the first task started, or None when nothing can start now.

        The callbacks run outside the lock. Only the loop thread should call this; task threads only release.
        """
        for queue in self.next_queues(order):
            if not has_task(queue):
                self.withdraw(queue)
                continue
            gpus = self.try_allocate(queue)
            if gpus is None:
                continue
            try:
                task_id = pop(queue)
            except BaseException:
                self.release(gpus)
                raise
            if task_id is None:  # another agent took it between the peek and the pop
                self.release(gpus)
                self.withdraw(queue)
                continue
            self.set_owner(gpus, task_id)
            return Grant(queue, task_id, tuple(gpus))
        return None

    # helpers (lock held) -------------------------------------------------------------------------------------
    def _line(self) -> list[str]:
        return sorted(self._waiting, key=self._waiting.__getitem__)

    def _ahead_of(self, queue: str) -> list[str]:
        line = self._line()
        return line[: line.index(queue)] if queue in line else line
