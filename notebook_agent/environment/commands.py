"""The one place this package starts subprocesses: output is streamed line by line to a reporter, secrets masked.

Nothing that leaves this module (log lines, the returned output, the returned argv) carries a secret.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO
from urllib.parse import quote

from notebook_agent.environment.reporter import BuildReporter
from notebook_agent.masking import mask_url

logger = logging.getLogger(__name__)

# Lines kept for an error's detail; a pip build can print tens of thousands and only the end tells why it failed.
TAIL_LINES = 200
# After a kill, how long to wait for pipes to close (a grandchild that left the process group may hold them).
_DRAIN_AFTER_KILL_S = 5.0
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


class CommandResult(subprocess.CompletedProcess[str]):
    """A finished command. `args` and `stdout` are masked; `stdout` is the last TAIL_LINES lines of the output
    (stderr merged in), or the whole stdout with `capture=True` (then `stderr` holds stderr's tail)."""

    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str = "", timed_out: bool = False):
        super().__init__(args, returncode, stdout, stderr)
        self.timed_out = timed_out


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Hide the given secrets (as written and URL-encoded) and any password inside a URL in `text`."""
    for secret in secrets:
        if secret:
            for form in {secret, quote(secret, safe="")}:
                text = text.replace(form, "****")
    return _URL.sub(lambda m: mask_url(m.group(0)), text)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | str | None,
    env: Mapping[str, str],
    reporter: BuildReporter,
    timeout: float | None = None,
    input: str | None = None,
    secrets: Iterable[str] = (),
    capture: bool = False,
    quiet: bool = False,
) -> CommandResult:
    """Run `argv` to completion, logging `$ command` and each output line to `reporter` as it comes.

    Never raises for a failing command (a missing executable gives returncode 127, a timeout kills the process
    group and sets `timed_out`); callers decide what a failure means. `quiet` keeps the reporter out of it
    (internal queries such as `git rev-parse`); `capture` keeps all of stdout apart from stderr.
    """
    args = [os.fspath(a) for a in argv]
    secrets = [s for s in secrets if s]
    shown_args = [mask_text(a, secrets) for a in args]
    shown = shlex.join(shown_args)
    logger.debug("running in %s: %s", cwd, shown)
    if not quiet:
        reporter.log(f"$ {shown}")
    try:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if capture else subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            # Own process group, so a timeout also kills what the command started (pip's build backends).
            start_new_session=os.name == "posix",
        )
    except OSError as exc:
        line = mask_text(f"cannot run {args[0]}: {exc.strerror or exc}", secrets)
        if not quiet:
            reporter.log(line)
        return CommandResult(shown_args, 127, line + "\n")

    pending: queue.Queue[tuple[str, str | None]] = queue.Queue()
    streams: dict[str, IO[str] | None] = {"out": proc.stdout}
    if capture:
        streams["err"] = proc.stderr
    for name, stream in streams.items():
        threading.Thread(target=_pump, args=(name, stream, pending), daemon=True).start()
    if input is not None:
        threading.Thread(target=_feed, args=(proc.stdin, input), daemon=True).start()

    everything: list[str] = []
    tails: dict[str, collections.deque[str]] = {name: collections.deque(maxlen=TAIL_LINES) for name in streams}
    deadline = None if timeout is None else time.monotonic() + timeout
    open_streams, timed_out = len(streams), False
    try:
        while open_streams:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                name, raw = pending.get(timeout=wait)
            except queue.Empty:
                if timed_out:
                    break
                timed_out = True
                _kill(proc)
                deadline = time.monotonic() + _DRAIN_AFTER_KILL_S
                note = f"timed out after {timeout:g} s: {shown}"
                tails["out"].append(note)
                if not quiet:
                    reporter.log(note)
                continue
            if raw is None:
                open_streams -= 1
                continue
            line = mask_text(raw.rstrip("\r\n"), secrets)
            if not quiet:
                reporter.log(line)
            tails[name].append(line)
            if capture and name == "out":
                everything.append(line)
        try:
            returncode = proc.wait(timeout=_DRAIN_AFTER_KILL_S if timed_out else None)
        except subprocess.TimeoutExpired:
            returncode = -9
    except BaseException:
        # An interrupt (Ctrl-C in the notebook, an abort) must not leave the command running in its own session.
        _kill(proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=_DRAIN_AFTER_KILL_S)
        raise
    logger.debug("exit %s%s: %s", returncode, " (timed out)" if timed_out else "", shown)
    lines = everything if capture else list(tails["out"])
    stdout = "".join(line + "\n" for line in lines)
    stderr = "".join(line + "\n" for line in tails.get("err", ()))
    return CommandResult(shown_args, returncode, stdout, stderr, timed_out)


def _pump(name: str, stream: IO[str] | None, pending: queue.Queue[tuple[str, str | None]]) -> None:
    # Reader threads only queue lines: the reporter is called from the caller's thread alone.
    if stream is not None:
        try:
            for line in iter(stream.readline, ""):
                pending.put((name, line))
        except (OSError, ValueError):
            pass
        finally:
            stream.close()
    pending.put((name, None))


def _feed(stream: IO[str] | None, text: str) -> None:
    # A separate writer so a large stdin cannot deadlock against a command that writes while it reads.
    if stream is None:
        return
    try:
        stream.write(text)
    except (BrokenPipeError, OSError, ValueError):
        pass  # the command exited early; its output and exit code say why
    finally:
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            stream.close()


def _kill(proc: subprocess.Popen[str]) -> None:
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass
