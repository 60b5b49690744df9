"""Which queue to pull from next: strict priority (first queue first, every time) or a fair round robin."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class QueueRef:
    id: str
    name: str


class QueueOrder:
    """Priority mode restarts from the first queue after each task; fairness mode remembers where it stopped.

    With fairness, after a task is taken from queue i the next round starts at queue i+1, so every queue with
    work gets a turn (clearml-agent's `--order-fairness`). A round that finds nothing keeps its start.
    """

    def __init__(self, queues: Sequence[QueueRef], fairness: bool = False) -> None:
        if not queues:
            raise ValueError("at least one queue is needed")
        self.queues = list(queues)
        self.fairness = fairness
        self._start = 0

    def round(self) -> list[QueueRef]:
        """The queues to try now, in order."""
        if not self.fairness:
            return list(self.queues)
        return self.queues[self._start :] + self.queues[: self._start]

    def took(self, queue: QueueRef) -> None:
        """A task was taken from `queue`."""
        if self.fairness:
            self._start = (self.queues.index(queue) + 1) % len(self.queues)
