"""Build progress: steps timed and logged, installer output turned into package counts."""

from __future__ import annotations

from notebook_agent.environment import ListReporter
from notebook_agent.environment.progress import BuildProgress


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_steps_are_timed_logged_and_summed() -> None:
    inner, clock = ListReporter(), _Clock()
    progress = BuildProgress(inner, clock)
    progress.step("clone", 0.0)
    clock.now += 1.5
    progress.step("requirements", 0.4)
    clock.now += 2.25
    progress.finish()
    assert inner.lines[0] == "environment: clone"
    assert inner.lines[1] == "environment: requirements"
    assert inner.lines[-1] == "environment built in 3.75 s (clone 1.50 s, requirements 2.25 s)"
    ended = [(name, seconds) for name, _f, _d, seconds in inner.events if seconds is not None]
    assert ended == [("clone", 1.5), ("requirements", 2.25)]
    assert inner.steps == [("clone", 0.0), ("requirements", 0.4)]


def test_installer_lines_become_package_counts() -> None:
    inner = ListReporter()
    progress = BuildProgress(inner, _Clock())
    progress.step("requirements", 0.4)
    for line in [
        "Collecting na-hello",  # pip: news, no count yet
        "Successfully installed na-extra-2.0 na-hello-1.0",  # pip: two
        "Resolved 3 packages in 5ms",
        "Installed 3 packages in 4ms",  # uv's total is not added to its per-package lines below
        " + na-hello==1.0",  # already counted
        " + other-pkg==3.1",
        "  - Installing poetry-dep (1.2.3)",
        "conda (py-rattler): installed 4 packages into /p in 0.3 s",
    ]:
        progress.log(line)
    progress.finish()
    details = [detail for _n, _f, detail, seconds in inner.events if detail and seconds is None]
    assert details[0] == "collecting na-hello"
    assert details[1] == "2 packages installed"
    assert progress.installed == 2 + 1 + 1 + 4
    assert inner.lines[-1].endswith("; 8 packages installed")


def test_repeated_step_name_is_news_not_a_new_step() -> None:
    inner = ListReporter()
    progress = BuildProgress(inner, _Clock())
    progress.step("cache", 0.2)
    progress.step("cache", 0.2, detail="hit")
    progress.finish()
    assert [line for line in inner.lines if line.startswith("environment: ")] == ["environment: cache"]
    assert ("cache", 0.2, "hit", None) in inner.events
