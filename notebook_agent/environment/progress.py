"""Build progress: each step timed and written to the task log, and installer output read for package counts, so
the panel's progress bar and the log tell the same story."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from notebook_agent.environment.reporter import BuildReporter

# What installers print per package (pip, uv, poetry), and our conda engine's total.
_COLLECTING = re.compile(r"^Collecting (\S+)")
_UV_PLUS = re.compile(r"^ \+ ([^=\s]+)")
_POETRY_INSTALLING = re.compile(r"^\s+- (?:Installing|Updating) ([^\s(]+)")
_PIP_INSTALLED = re.compile(r"^Successfully installed (.+)$")
_CONDA_INSTALLED = re.compile(r"^conda.*: installed (\d+) packages?")


class BuildProgress:
    """A BuildReporter that wraps another: logs `environment: <step>` when a step begins, reports each step's
    seconds when the next begins (and in `finish`), and turns installer lines into "N packages installed" news on
    the current step. Calls come from the build's one thread."""

    def __init__(self, inner: BuildReporter, clock: Callable[[], float] = time.perf_counter) -> None:
        self.inner = inner
        self._clock = clock
        self._current: tuple[str, float | None, float] | None = None  # (name, fraction, started)
        self.timings: list[tuple[str, float]] = []
        self.installed = 0  # packages installed so far (all installers of this build)
        self._seen: set[str] = set()

    def log(self, line: str) -> None:
        self.inner.log(line)
        collecting = _COLLECTING.match(line)
        if collecting:
            self._news(f"collecting {collecting.group(1)}")
        elif self._count(line):
            self._news(f"{_packages(self.installed)} installed")

    def step(self, name: str, fraction: float | None = None, *, detail: str = "", seconds: float | None = None) -> None:
        if seconds is not None:  # a nested reporter's own timing: pass it on as it is
            self.inner.step(name, fraction, detail=detail, seconds=seconds)
            return
        if self._current is not None and self._current[0] == name:
            self._news(detail)
            return
        self._end_current()
        self._current = (name, fraction, self._clock())
        self.inner.log(f"environment: {name}" + (f" ({detail})" if detail else ""))
        self.inner.step(name, fraction, detail=detail)

    def finish(self) -> None:
        """End the last step and log one line with every step's seconds."""
        self._end_current()
        if self.timings:
            parts = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.timings)
            total = sum(seconds for _, seconds in self.timings)
            installed = f"; {_packages(self.installed)} installed" if self.installed else ""
            self.inner.log(f"environment built in {total:.2f} s ({parts}){installed}")

    def _end_current(self) -> None:
        if self._current is None:
            return
        name, fraction, started = self._current
        seconds = max(0.0, self._clock() - started)
        self.timings.append((name, seconds))
        self.inner.step(name, fraction, seconds=seconds)
        self._current = None

    def _news(self, detail: str) -> None:
        if self._current is not None and detail:
            name, fraction, _ = self._current
            self.inner.step(name, fraction, detail=detail)

    def _count(self, line: str) -> bool:
        """Update `installed` from one output line; True when it changed. Named packages count once each (uv's
        " + name==version" lines, pip's "Successfully installed", poetry's "- Installing"); conda's total adds."""
        before = self.installed
        for pattern in (_UV_PLUS, _POETRY_INSTALLING):
            match = pattern.match(line)
            if match:
                self._add(match.group(1))
        match = _PIP_INSTALLED.match(line)
        if match:
            for name in match.group(1).split():
                self._add(name.rsplit("-", 1)[0])
        match = _CONDA_INSTALLED.match(line)
        if match:
            self.installed += int(match.group(1))
        return self.installed != before

    def _add(self, package: str) -> None:
        key = package.lower()
        if key not in self._seen:
            self._seen.add(key)
            self.installed += 1


def _packages(count: int) -> str:
    return f"{count} package" + ("" if count == 1 else "s")
