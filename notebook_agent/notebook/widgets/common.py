"""What the panel's sections share: assigning only changed values, message lines, durations, and the runner
that keeps slow button actions off the kernel's thread."""

from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import ipywidgets as w

from notebook_agent.api.errors import APIError, TransportError, UnauthorizedError
from notebook_agent.config.errors import ConfigError
from notebook_agent.notebook.agent import AgentError

logger = logging.getLogger(__name__)

NOTE_COLORS = {"ok": "#2e7d32", "error": "#c62828", "busy": "#555", "info": "#555"}
NOTE_MARKS = {"ok": "&#10004; ", "error": "&#10006; ", "busy": "&hellip; ", "info": ""}


def assign(widget: Any, name: str, value: Any) -> bool:
    """Set a trait only when it differs: every assignment is a comm message to the browser."""
    if getattr(widget, name) == value:
        return False
    setattr(widget, name, value)
    return True


def show(widget: w.Widget, visible: bool) -> None:
    assign(widget.layout, "display", None if visible else "none")


def note(kind: str, text: str) -> str:
    """One message line: `kind` is ok, error, busy or info; the text is escaped (it may quote a server)."""
    if not text:
        return ""
    body = html.escape(text).replace("\n", "<br>")
    return f"<span style='color:{NOTE_COLORS.get(kind, '#555')};font-size:90%'>{NOTE_MARKS.get(kind, '')}{body}</span>"


def describe_error(exc: BaseException) -> str:
    """A sentence for the form, never a traceback; our errors' messages are written to be shown (no secrets)."""
    if isinstance(exc, UnauthorizedError):
        return f"the server refused these credentials ({exc.message})"
    if isinstance(exc, TransportError):
        return f"cannot reach the server: {exc.cause}"
    if isinstance(exc, APIError):
        return f"the server answered {exc.code}/{exc.subcode}: {exc.message}"
    if isinstance(exc, (ConfigError, AgentError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def format_duration(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


Report = Callable[[str, str], None]


class Actions:
    """Runs the panel's slow actions (server calls, stopping a worker) in daemon threads, so a click handler
    returns at once; a failure becomes a message through `report(kind, text)`, never a traceback."""

    def __init__(self, on_done: Callable[[], None] | None = None) -> None:
        self.on_done = on_done  # the panel re-renders (button states) after each action
        self._lock = threading.Lock()
        self._running: dict[str, threading.Thread] = {}

    def run(self, name: str, work: Callable[[], str | None], report: Report, busy: str = "") -> bool:
        """Start `work` unless an action of that name is still running; its returned text is reported as ok."""
        with self._lock:
            already = name in self._running
            if not already:
                thread = threading.Thread(
                    target=self._run, args=(name, work, report), daemon=True, name=f"notebook-agent-panel-{name}"
                )
                self._running[name] = thread
        if already:  # a second click while the first is still at work
            report("busy", "still working on the previous click")
            return False
        if busy:
            report("busy", busy)
        thread.start()
        return True

    def busy(self, name: str) -> bool:
        with self._lock:
            return name in self._running

    def join(self, timeout: float = 30.0) -> bool:
        """Wait for every running action (tests, close); False when some still run after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:  # an action may start another (Save refreshes the queue list)
            with self._lock:
                threads = list(self._running.values())
            if not threads:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            threads[0].join(left)

    def _run(self, name: str, work: Callable[[], str | None], report: Report) -> None:
        try:
            message = work()
            if message:
                report("ok", message)
        except Exception as exc:
            logger.debug("panel action %s failed", name, exc_info=True)
            report("error", describe_error(exc))
        finally:
            with self._lock:
                self._running.pop(name, None)
            if self.on_done is not None:
                try:
                    self.on_done()
                except Exception:
                    logger.debug("panel refresh after %s failed", name, exc_info=True)


def reporter(line: w.HTML) -> Report:
    """A `report(kind, text)` writing into a message line."""

    def report(kind: str, text: str) -> None:
        assign(line, "value", note(kind, text))

    return report


def walk(widget: Any) -> Iterator[Any]:
    """The widget and everything under it (children, layouts and styles), depth first."""
    yield widget
    for name in ("layout", "style"):
        part = getattr(widget, name, None)
        if isinstance(part, w.Widget):
            yield part
    for child in getattr(widget, "children", ()) or ():
        yield from walk(child)


def close_all(widget: Any) -> None:
    for item in list(walk(widget)):
        try:
            item.close()
        except Exception:
            logger.debug("closing %r failed", item, exc_info=True)
