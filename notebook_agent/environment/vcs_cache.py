"""The repository mirror cache (`agent.vcs_cache`): one bare mirror per repository URL, fetched before each task
and cloned from locally, so a second task from the same repository transfers only what is new."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from notebook_agent.environment.commands import run
from notebook_agent.environment.reporter import BuildReporter

_GIT = ("git", "-c", "advice.detachedHead=false")
# As clearml-agent: a mirror is held at most this long by another build before we give up waiting for it.
LOCK_TIMEOUT_S = 300.0


class MirrorUnavailable(Exception):
    """The mirror could not be made or updated; the message says why (already masked)."""


def mirror_path(root: Path, url: str) -> Path:
    """`<root>/<repo name>.<md5 of the URL without credentials>` (clearml-agent's naming)."""
    clean = _without_userinfo(url)
    name = clean.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git") or "repo"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:64]
    return root / f"{safe}.{hashlib.md5(clean.encode(), usedforsecurity=False).hexdigest()}"


@contextlib.contextmanager
def locked_mirror(
    root: Path,
    url: str,
    *,
    genv: Mapping[str, str],
    reporter: BuildReporter,
    secrets: Sequence[str] = (),
    fetch_args: Sequence[str] = (),
    timeout: float = LOCK_TIMEOUT_S,
) -> Iterator[Path]:
    """Create or update the mirror of `url` and yield its path while holding its lock (clone from it inside the
    `with`). Raises MirrorUnavailable when it cannot be made or fetched."""
    mirror = mirror_path(root, url)
    root.mkdir(parents=True, exist_ok=True)
    with _flock(mirror.with_name(mirror.name + ".lock"), timeout):
        if (mirror / "HEAD").is_file():
            _git(["remote", "set-url", "origin", url], mirror, genv, reporter, secrets, quiet=True)
            # `--all` (clearml-agent's default git_fetch_args) takes no remote name.
            remote = [] if "--all" in fetch_args else ["origin"]
            fetched = _git(["fetch", "--prune", *fetch_args, *remote], mirror, genv, reporter, secrets)
            if fetched.returncode != 0:
                raise MirrorUnavailable(f"git fetch into the mirror failed: {_last_line(fetched.stdout)}")
            reporter.log(f"vcs cache: mirror {mirror.name} updated")
        else:
            if mirror.exists():
                shutil.rmtree(mirror, ignore_errors=True)  # a half-made mirror of a killed build
            tmp = Path(tempfile.mkdtemp(prefix=f".{mirror.name}.tmp-", dir=root))
            try:
                cloned = _git(["clone", "--mirror", url, str(tmp)], root, genv, reporter, secrets)
                if cloned.returncode != 0:
                    raise MirrorUnavailable(f"git clone --mirror failed: {_last_line(cloned.stdout)}")
                os.rename(tmp, mirror)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            reporter.log(f"vcs cache: mirror {mirror.name} created")
        yield mirror


def _git(
    args: list[str],
    cwd: Path,
    genv: Mapping[str, str],
    reporter: BuildReporter,
    secrets: Sequence[str],
    *,
    quiet: bool = False,
):
    return run([*_GIT, *args], cwd=cwd, env=genv, reporter=reporter, secrets=secrets, quiet=quiet)


@contextlib.contextmanager
def _flock(path: Path, timeout: float) -> Iterator[None]:
    handle = io.FileIO(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "r+")
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise MirrorUnavailable(f"mirror busy for {timeout:.0f} s ({path.name})") from None
                time.sleep(0.1)  # another build holds the mirror: poll its lock until the deadline
        yield
    finally:
        handle.close()


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc or parts.scheme not in ("http", "https", "ssh", "git"):
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
