"""Where a build sends its progress: log lines (the task's console) and named steps (the panel's progress bar)."""

from __future__ import annotations

from typing import Protocol


class BuildReporter(Protocol):
    """Receives build output; lines are already masked. Calls come from the thread that runs the build."""

    def log(self, line: str) -> None: ...

    def step(self, name: str, fraction: float | None = None, *, detail: str = "", seconds: float | None = None) -> None:
        """Step `name` began (or, called again, has news in `detail`, e.g. "12 packages installed"); with
        `seconds`, it has ended after that long."""
        ...


class NullReporter:
    """Drops everything (quiet helper calls, callers that only want the result)."""

    def log(self, line: str) -> None:
        pass

    def step(self, name: str, fraction: float | None = None, *, detail: str = "", seconds: float | None = None) -> None:
        pass


class ListReporter:
    """Records lines and steps in memory, for tests and for replaying a short build."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.steps: list[tuple[str, float | None]] = []
        self.events: list[tuple[str, float | None, str, float | None]] = []  # (name, fraction, detail, seconds)

    def log(self, line: str) -> None:
        self.lines.append(line)

    def step(self, name: str, fraction: float | None = None, *, detail: str = "", seconds: float | None = None) -> None:
        if seconds is None and not detail:
            self.steps.append((name, fraction))
        self.events.append((name, fraction, detail, seconds))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)
