"""The one error of the environment package: the task's code or packages could not be set up.

`reason` is a single line fit for the task's `status_reason`; `detail` is the longer tool output for the log.
"""

from __future__ import annotations

from typing import Any


class EnvironmentSetupError(Exception):
    """Setting up a task's code or environment failed; the task cannot run.

    Callers build both fields from masked text only (see `commands.mask_text`), so they are safe to send to
    the server and to show in a notebook.
    """

    def __init__(self, reason: str, detail: str = "", *, logged: bool = False) -> None:
        # status_reason is one line: fold anything longer so a stray newline cannot break the UI field.
        self.reason = " ".join(reason.split())
        self.detail = detail
        # True when `detail` is output the build reporter already got line by line (a command's output).
        self.logged = logged
        super().__init__(self.reason)

    @property
    def log_detail(self) -> str:
        """What of `detail` still belongs in the task log: nothing when its lines are there already (a log line
        must not appear twice)."""
        return "" if self.logged else self.detail

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep every field when the error crosses a process boundary (the default pickles only the message).
        return (_rebuild, (self.reason, self.detail, self.logged))


def _rebuild(reason: str, detail: str, logged: bool = False) -> EnvironmentSetupError:
    return EnvironmentSetupError(reason, detail, logged=logged)
