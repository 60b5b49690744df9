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

    def __init__(self, reason: str, detail: str = "") -> None:
        # status_reason is one line: fold anything longer so a stray newline cannot break the UI field.
        self.reason = " ".join(reason.split())
        self.detail = detail
        super().__init__(self.reason)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep both fields when the error crosses a process boundary (the default pickles only the message).
        return (EnvironmentSetupError, (self.reason, self.detail))
