"""The one error of the config package: a bad clearml.conf, environment variable or pasted block.

Its message names where the problem is (file, line, key) and how to fix it; it never carries a secret value.
"""

from __future__ import annotations

from typing import Any


class ConfigError(Exception):
    """A configuration problem the user has to fix.

    `problem` says what is wrong, `fix` what to do about it; `path`, `line`, `column` and `key` say where (each
    may be None: an environment variable has no file, a pasted block has no path). Callers build the message from
    names and types only, so it is safe to show in a notebook or a log.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: Any = None,
        line: int | None = None,
        key: str | None = None,
        fix: str | None = None,
        column: int | None = None,
    ) -> None:
        self.problem = problem
        self.path: str | None = str(path) if path is not None else None
        self.line = line
        self.column = column if line else None  # a column means nothing without its line
        self.key = key
        self.fix = fix
        super().__init__(self._format())

    def _format(self) -> str:
        line = f"line {self.line}" if self.line else None
        column = f"column {self.column}" if self.column else None
        where = ", ".join(p for p in (self.path, line, column) if p)
        text = f"{where}: " if where else ""
        if self.key:
            text += f"{self.key}: "
        text += self.problem
        if self.fix:
            text += f"\n  Fix: {self.fix}"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the fields when the error crosses a process boundary (the default pickles only the message).
        return (_rebuild, (self.problem, self.path, self.line, self.key, self.fix, self.column))


def _rebuild(
    problem: str, path: str | None, line: int | None, key: str | None, fix: str | None, column: int | None = None
) -> Any:
    return ConfigError(problem, path=path, line=line, key=key, fix=fix, column=column)
