"""The two agents under test as daemon subprocesses, each with its own HOME, temp dir, caches and clearml.conf."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from bench.harness import BenchServer, wait_for
from bench.report import OURS, PEER

logger = logging.getLogger(__name__)

# Variables of the bench's own environment that would point an agent somewhere else than its fresh folders.
_DROPPED_PREFIXES = ("CLEARML_", "TRAINS_", "PIP_", "UV_", "XDG_", "VIRTUAL_ENV", "CONDA_", "PYTHONPATH")


@dataclass(frozen=True)
class AgentDirs:
    """Everything one agent run writes, under `root` (removed when the run ends)."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def venvs_cache(self) -> Path:
        return self.root / "venvs-cache"

    @property
    def venvs_builds(self) -> Path:
        return self.root / "venvs-builds"

    @property
    def downloads(self) -> Path:
        return self.root / "pip-download-cache"

    @property
    def config_file(self) -> Path:
        return self.root / "clearml.conf"

    @property
    def log_file(self) -> Path:
        return self.root / "agent.log"

    def create(self) -> AgentDirs:
        for path in (self.home, self.tmp):
            path.mkdir(parents=True, exist_ok=True)
        return self


@dataclass(frozen=True)
class CacheSettings:
    """agent.venvs_cache, the same for both agents."""

    max_entries: int = 10
    # 0 turns the free-space check off for both: a shared build machine's free space must not decide whether an
    # agent caches (clearml-agent's default is 2 GB, ours the same).
    free_space_threshold_gb: float = 0.0


class AgentKind(Protocol):
    """How to configure and start one agent implementation."""

    name: str

    def config(self, dirs: AgentDirs, api_section: str, cache: CacheSettings) -> str: ...

    def command(self, queue: str) -> list[str]: ...

    def poll_env(self, poll_s: float | None) -> dict[str, str]: ...


def _agent_section(dirs: AgentDirs, cache: CacheSettings, package_manager: str) -> str:
    return (
        "agent {\n"
        f"  package_manager {{ {package_manager} }}\n"
        f'  venvs_dir: "{dirs.venvs_builds}"\n'
        f'  venvs_cache {{ path: "{dirs.venvs_cache}", max_entries: {cache.max_entries}, '
        f"free_space_threshold_gb: {cache.free_space_threshold_gb} }}\n"
        f'  pip_download_cache {{ enabled: true, path: "{dirs.downloads}" }}\n'
        "}\n"
    )


class Ours:
    name = OURS

    def config(self, dirs: AgentDirs, api_section: str, cache: CacheSettings) -> str:
        # pip mode; uv installs (uv_replace_pip, our default) and reads PIP_NO_INDEX / PIP_FIND_LINKS as flags.
        return api_section + _agent_section(dirs, cache, "type: pip, system_site_packages: false")

    def command(self, queue: str) -> list[str]:
        return [sys.executable, "-m", "notebook_agent", "daemon", "--queue", queue, "--foreground", "--cpu-only"]

    def poll_env(self, poll_s: float | None) -> dict[str, str]:
        return {}  # ours long-polls the embedded server: no poll period to shorten


class ClearmlAgent:
    name = PEER

    def config(self, dirs: AgentDirs, api_section: str, cache: CacheSettings) -> str:
        # pip_version "": its default first runs `pip install "pip<22.3"`, which needs an index that holds that
        # pip; "" makes it `pip install --upgrade pip`, which the venv's own pip satisfies offline.
        return api_section + _agent_section(dirs, cache, 'type: pip, system_site_packages: false, pip_version: ""')

    def command(self, queue: str) -> list[str]:
        return [sys.executable, "-m", "clearml_agent", "daemon", "--queue", queue, "--foreground", "--cpu-only"]

    def poll_env(self, poll_s: float | None) -> dict[str, str]:
        # Its queue poll, and the tick on which its daemon checks the task process and ships its console (5 s by
        # default; `--polling-interval` cannot go below 5, this variable can).
        return {} if poll_s is None else {"CLEARML_AGENT_QUEUE_POLL_FREQ_SEC": f"{poll_s:g}"}


AGENTS: tuple[AgentKind, ...] = (Ours(), ClearmlAgent())


def agent_env(server: BenchServer, dirs: AgentDirs, worker_id: str, extra: Mapping[str, str]) -> dict[str, str]:
    """A fresh environment: the server's CLEARML_* variables, its own HOME and TMPDIR, and `extra` (the package
    sources both agents share)."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_PREFIXES)}
    return {
        **keep,
        **server.client_env(),
        "CLEARML_CONFIG_FILE": str(dirs.config_file),
        "CLEARML_WORKER_ID": worker_id,
        "CLEARML_OFFLINE_MODE": "0",
        "HOME": str(dirs.home),
        "TMPDIR": str(dirs.tmp),
        "PYTHONUNBUFFERED": "1",
        # The interpreter running the bench first, so `python3` (script.binary) and the agents' own entry
        # points resolve to it.
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        **extra,
    }


class AgentProcess:
    """One agent daemon in its own session (so its whole process tree can be signalled), logging to a file.

    `stop()` sends SIGINT to the group (both agents unregister on Ctrl-C), then SIGKILL after `grace` seconds.
    `poll_s` shortens clearml-agent's 5 s poll (ScenarioContext.peer_poll_s: --quick only); None keeps it.
    """

    def __init__(
        self,
        kind: AgentKind,
        server: BenchServer,
        dirs: AgentDirs,
        queue: str,
        worker_id: str,
        *,
        extra_env: Mapping[str, str],
        cache: CacheSettings,
        poll_s: float | None = None,
    ) -> None:
        self.kind = kind
        self.server = server
        self.dirs = dirs
        self.queue = queue
        self.worker_id = worker_id
        self._extra_env = {**extra_env, **kind.poll_env(poll_s)}
        self._cache = cache
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, ready_timeout: float) -> AgentProcess:
        """Start the daemon and wait until its worker is registered with the server."""
        self.dirs.create()
        self.dirs.config_file.write_text(
            self.kind.config(self.dirs, self.server.api_config_text(), self._cache), encoding="utf-8"
        )
        command = self.kind.command(self.queue)
        logger.info("starting %s: %s", self.kind.name, shlex.join(command))
        self._log = self.dirs.log_file.open("wb")
        self._proc = subprocess.Popen(
            command,
            env=agent_env(self.server, self.dirs, self.worker_id, self._extra_env),
            cwd=self.dirs.root,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def registered() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.kind.name} exited at start:\n{self.log_tail()}")
            return self.server.worker_registered(self.worker_id)

        wait_for(registered, ready_timeout, f"{self.kind.name} worker {self.worker_id} registered", interval=0.2)
        return self

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGINT to the process group, SIGKILL after `grace` seconds; the exit code (None if never started)."""
        proc, self._proc = self._proc, None
        try:
            if proc is None:
                return None
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    logger.warning("%s did not stop within %.0f s of SIGINT: killing it", self.kind.name, grace)
            # Children (clearml-agent's `execute`, a task) may outlive the daemon: kill what is left of the group.
            _signal_group(proc.pid, signal.SIGKILL)
            try:
                code = proc.wait(timeout=10)
                logger.info("%s stopped (exit code %s)", self.kind.name, code)
                return code
            except subprocess.TimeoutExpired:
                logger.error("%s (pid %d) survived SIGKILL", self.kind.name, proc.pid)
                return None
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.dirs.log_file.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(pid, sig)
