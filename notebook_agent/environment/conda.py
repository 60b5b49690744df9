"""Conda mode (`agent.package_manager.type: conda`): the task's conda packages in one prefix, made by micromamba,
mamba or conda when one is on PATH, else by py-rattler in process; its pip requirements go in after them."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from notebook_agent.environment import venv
from notebook_agent.environment.commands import mask_text, run
from notebook_agent.environment.errors import EnvironmentSetupError
from notebook_agent.environment.managers import PipManager
from notebook_agent.environment.reporter import BuildReporter

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The order clearml-agent prefers them in: micromamba and mamba solve faster than conda.
BINARIES = ("micromamba", "mamba", "conda")
NO_ENGINE = "conda mode needs micromamba, mamba or conda on PATH, or py-rattler: pip install 'notebook-agent[conda]'"
# py-rattler has no configuration of its own to fall back on, so it needs a channel when none is configured.
DEFAULT_CHANNEL = "conda-forge"
_SPEC_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


@dataclass(frozen=True)
class CondaManager:
    """A conda prefix with the task's conda specs, then its pip requirements (pip mode's installer) on top."""

    env: Mapping[str, str]
    reporter: BuildReporter
    python: str
    specs: tuple[str, ...] = field(default=())
    channels: tuple[str, ...] = field(default=())  # searched in order, and only these (--override-channels)
    system_site_packages: bool = False
    pip_args: tuple[str, ...] = field(default=())
    pkgs_dir: Path | None = None  # conda's package cache: packages are extracted once and linked from there

    def create_env(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.specs:
            self._install_conda_packages(path)
        else:
            self.reporter.log("conda: the task has no conda packages; only its pip requirements are installed")
        python = _conda_python(path)
        if python.is_file():
            self.reporter.log(f"python: the conda environment's own ({python})")
            return python
        # No python among the conda packages: a virtualenv laid over the same prefix keeps the conda packages' bin/,
        # lib/pythonX.Y/site-packages and data files in the one folder the task runs in.
        self.reporter.log(f"python: no python among the conda packages; a virtualenv of {self.python} over the prefix")
        return venv.create_venv(
            path,
            python=self.python,
            system_site_packages=self.system_site_packages,
            env=self.env,
            reporter=self.reporter,
        )

    def install(self, python: Path, requirements: str, *, cwd: Path) -> None:
        self._pip().install(python, requirements, cwd=cwd)

    def freeze(self, python: Path) -> list[str]:
        return self._pip().freeze(python)

    def cache_key_inputs(self) -> Mapping[str, Any] | None:
        # A conda prefix hard-codes its own path (in scripts and binaries), so it can't be moved into a cache. As in
        # clearml-agent, repeats are fast through the package cache (pkgs_dir) instead.
        self.reporter.log("not cached: a conda prefix hard-codes its own path; packages are linked from the cache")
        return None

    def task_env(self, python: Path) -> dict[str, str]:
        """What the task process needs to see the prefix as its active conda environment."""
        bin_dir = python.parent
        prefix = bin_dir.parent if bin_dir.name in ("bin", "Scripts") else bin_dir
        path = self.env.get("PATH")
        return {
            "CONDA_PREFIX": str(prefix),
            "CONDA_DEFAULT_ENV": str(prefix),
            "PATH": str(prefix / "bin") + (os.pathsep + path if path else ""),
        }

    def _pip(self) -> PipManager:
        # As pip mode: uv resolves without looking at system site packages, so with them on pip installs.
        return PipManager(
            self.env,
            self.reporter,
            self.python,
            self.system_site_packages,
            self.pip_args,
            use_uv=not self.system_site_packages,
        )

    def _install_conda_packages(self, prefix: Path) -> None:
        binary = conda_binary(self.env)
        if binary is not None:
            self._create_with_binary(binary, prefix)
            return
        rattler = _import_rattler()
        if rattler is None:
            raise EnvironmentSetupError(NO_ENGINE)
        self._create_with_rattler(rattler, prefix)

    def _create_with_binary(self, binary: str, prefix: Path) -> None:
        tool = Path(binary).name
        argv = [binary, "create", "-y", "-p", str(prefix)]
        if self.channels:
            argv.append("--override-channels")
            for channel in self.channels:
                argv += ["-c", channel_source(channel)]
        else:
            self.reporter.log(f"conda ({tool}): no conda channels configured; {tool} uses its own channel settings")
        argv += self.specs
        env = dict(self.env)
        if self.pkgs_dir is not None:
            self.pkgs_dir.mkdir(parents=True, exist_ok=True)
            env["CONDA_PKGS_DIRS"] = str(self.pkgs_dir)
        self.reporter.log(f"conda engine: {tool} ({binary})")
        started = time.perf_counter()
        result = run(argv, cwd=prefix.parent, env=env, reporter=self.reporter)
        if result.returncode != 0:
            raise EnvironmentSetupError(
                f"{tool} create failed: {_telling(result.stdout, self.specs)}", result.stdout, logged=True
            )
        count = len(list((prefix / "conda-meta").glob("*.json")))
        seconds = time.perf_counter() - started
        self.reporter.log(f"conda ({tool}): installed {count} packages into {prefix} in {_seconds(seconds)}")

    def _create_with_rattler(self, rattler: ModuleType, prefix: Path) -> None:
        from rattler.platform import Subdir
        from rattler.virtual_package import VirtualPackage

        sources = [channel_source(channel) for channel in self.channels]
        if not sources:
            sources = [DEFAULT_CHANNEL]
            self.reporter.log(f"conda (py-rattler): no conda channels configured; using {DEFAULT_CHANNEL}")
        self.reporter.log(f"conda engine: py-rattler (channels: {mask_text(', '.join(sources))})")
        errors = _rattler_errors()
        started = time.perf_counter()
        try:
            records = run_coroutine(
                lambda: rattler.solve(
                    sources=sources,
                    specs=list(self.specs),
                    platforms=[Subdir.current(), Subdir("noarch")],
                    # Real packages depend on __glibc, __cuda and the like: the solver must know this machine's.
                    virtual_packages=VirtualPackage.detect(),
                    # conda's default: a python package brings pip, so pip requirements can go in after it.
                    add_pip_as_python_dependency=True,
                )
            )
        except errors as exc:
            raise self._solve_error(exc) from exc
        seconds = time.perf_counter() - started
        self.reporter.log(f"conda (py-rattler): solved {len(records)} packages in {_seconds(seconds)}")
        started = time.perf_counter()
        try:
            run_coroutine(
                lambda: rattler.install(records, target_prefix=prefix, cache_dir=self.pkgs_dir, show_progress=False)
            )
        except errors as exc:
            message = mask_text(str(exc))
            raise EnvironmentSetupError(f"conda install failed: {_first_line(message)}", message) from exc
        seconds = time.perf_counter() - started
        self.reporter.log(f"conda: installed {len(records)} packages into {prefix} in {_seconds(seconds)}")

    def _solve_error(self, exc: Exception) -> EnvironmentSetupError:
        message = mask_text(str(exc))
        if type(exc).__name__ != "SolverError":
            return EnvironmentSetupError(f"conda (py-rattler) failed: {_first_line(message)}", message)
        named = [spec for spec in self.specs if _mentions(message, spec)] or list(self.specs)
        return EnvironmentSetupError(f"conda could not solve {', '.join(named)}: {_first_line(message)}", message)


def conda_binary(env: Mapping[str, str]) -> str | None:
    """The first of micromamba, mamba and conda on env's PATH."""
    for name in BINARIES:
        found = shutil.which(name, path=env.get("PATH", os.defpath))
        if found:
            return found
    return None


def channel_source(channel: str) -> str:
    """A channel as conda tools take it: names (`conda-forge`, `pytorch/label/nightly`) and URLs as they are, a
    local folder as a file:// URL."""
    text = channel.strip()
    if "://" in text:
        return text
    if text.startswith(("/", "~", ".")) or os.path.isabs(text):
        return Path(text).expanduser().resolve().as_uri()
    return text


def run_coroutine(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine `make()` to completion from synchronous code, whether or not this thread runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    # A notebook kernel's main thread runs a loop, where asyncio.run refuses: a short-lived thread gets its own.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="notebook-agent-conda") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def _conda_python(prefix: Path) -> Path:
    return prefix / "python.exe" if os.name == "nt" else prefix / "bin" / "python"


def _import_rattler() -> ModuleType | None:
    try:
        import rattler
    except ImportError:
        return None
    return rattler


def _rattler_errors() -> tuple[type[Exception], ...]:
    # py-rattler's errors share no base class; these are all it defines (vars(), not __all__, to skip the
    # deprecated aliases that warn on access). OSError covers an unwritable prefix or package cache.
    from rattler import exceptions

    defined = [value for value in vars(exceptions).values() if isinstance(value, type) and issubclass(value, Exception)]
    return (*defined, OSError)


def _spec_name(spec: str) -> str:
    match = _SPEC_NAME.match(spec.split("::")[-1].strip())
    return match.group(0) if match else spec


def _mentions(text: str, spec: str) -> bool:
    name = re.escape(_spec_name(spec))
    return re.search(rf"(?<![\w.\-]){name}(?![\w.\-])", text, flags=re.IGNORECASE) is not None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no message")


def _telling(output: str, specs: tuple[str, ...]) -> str:
    """The line that says why a conda tool failed (its last error line, else its last line), plus the specs it
    listed as missing (conda prints those as `  - name` under a PackagesNotFoundError)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    why = errors[-1] if errors else (lines[-1] if lines else "no output")
    listed = {line[2:].strip() for line in lines if line.startswith("- ")}
    missing = [spec for spec in specs if spec in listed or _spec_name(spec) in listed]
    if not missing:
        return why
    return f"{why} {', '.join(missing)}" if why.endswith(":") else f"{why} ({', '.join(missing)})"


def _seconds(seconds: float) -> str:
    # Hundredths below ten seconds: a package-cache hit takes a few of them, and "0.0 s" would hide it.
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
