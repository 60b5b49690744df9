"""Docker mode's side effects: the files a container mounts, the host cache folders, and the `build --docker` run.

The commands themselves are built by the pure functions of `engine.docker`; this module writes what they mount
(the container's 0600 clearml.conf, a wheel of this agent) and runs the short docker commands (pull, stop,
commit, rm) through `environment.commands.run`. The task's own `docker run` is started by the runner as its task
process, so it is supervised like any task (log, abort, status).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata as metadata
import io
import logging
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import notebook_agent
from notebook_agent.engine import docker
from notebook_agent.engine.docker import Container, DockerSettings
from notebook_agent.environment.commands import run as run_command
from notebook_agent.environment.reporter import BuildReporter, NullReporter

logger = logging.getLogger(__name__)

DIST_NAME = "notebook-agent"
_WHEEL = "Wheel-Version: 1.0\nGenerator: notebook-agent\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
_ENTRY_POINTS = "[console_scripts]\nnotebook-agent = notebook_agent.cli.main:main\n"
STOP_EXTRA_SEC = 30.0  # how long `docker stop` may take beyond its grace period


@dataclass(frozen=True)
class DockerLaunch:
    """One container to start: its `docker run` argv, the docker client's environment, and how to stop it."""

    argv: list[str]
    env: dict[str, str] = field(repr=False)  # the agent's environment (and secret -e values): out of repr
    container: Container
    name: str
    pull: list[str] | None  # `docker pull IMAGE` first (agent.docker_force_pull), else None
    stop: list[str]

    def stop_container(self, timeout: float) -> None:
        """`docker stop` the container (an error, e.g. a container already gone with --rm, is only logged)."""
        done = run_command(self.stop, cwd=None, env=self.env, reporter=NullReporter(), timeout=timeout, quiet=True)
        if done.returncode != 0:
            logger.debug("docker stop %s: exit %s: %s", self.name, done.returncode, done.stdout.strip()[-300:])


def prepare_launch(
    task: Mapping[str, Any],
    settings: DockerSettings,
    *,
    work_dir: Path,
    worker_id: str,
    gpus: str | None,
    api_server: str,
    base_env: Mapping[str, str],
    grace_sec: float = 10.0,
    env: Mapping[str, str] | None = None,
    build: bool = False,
    inner_command: str | None = None,
    name: str | None = None,
) -> DockerLaunch:
    """Write the container's files into `work_dir`, create the host cache folders, and return the launch."""
    work_dir.mkdir(parents=True, exist_ok=True)
    container = docker.task_container(task, settings)
    conf = write_private(work_dir / "container.clearml.conf", docker.container_config_text(settings, build=build))
    wheel = agent_wheel(work_dir)
    for host, _ in docker.cache_mounts(settings, container.image, build=build):
        host.mkdir(parents=True, exist_ok=True)
    name = name or docker.container_name(worker_id, str(task.get("id") or ""))
    extra_env = dict(env or {})
    argv = docker.docker_run_command(
        task,
        settings,
        worker_id=worker_id,
        gpus=gpus,
        env=extra_env,
        inner_command=inner_command,
        conf_file=conf,
        wheel=wheel,
        name=name,
        api_server=api_server,
        host_env=base_env,
        build=build,
    )
    return DockerLaunch(
        argv=argv,
        env=docker.docker_client_env(base_env, extra_env),
        container=container,
        name=name,
        pull=docker.pull_command(settings, container.image) if settings.force_pull else None,
        stop=docker.stop_command(settings, name, grace_sec),
    )


def build_image(
    task: Mapping[str, Any],
    settings: DockerSettings,
    *,
    target: str,
    entry_point: str | None,
    work_dir: Path,
    worker_id: str,
    gpus: str | None,
    api_server: str,
    base_env: Mapping[str, str],
    reporter: BuildReporter,
) -> int:
    """`build --docker`: run the agent's build in the task's container, then commit the container to `target`.

    clearml-agent starts the container with `--rm` and a trailing `bash` to keep it alive, polls the mounted
    config for a `build.done=true` line, finds the container in `docker ps`, commits and stops it. Here the
    container is named and left to exit (no `--rm`): its exit code says whether the build worked, and a stopped
    container commits just the same. Then `docker rm`. Returns 0 or the failing command's exit code.
    """
    task_id = str(task["id"])
    launch = prepare_launch(
        task,
        settings,
        work_dir=work_dir,
        worker_id=worker_id,
        gpus=gpus,
        api_server=api_server,
        base_env=base_env,
        build=True,
        inner_command=docker.build_command(task_id),
        name=docker.container_name(worker_id, task_id, prefix="notebook-agent-build"),
    )
    reporter.log(f"Building task {task_id} inside docker image {launch.container.image}")
    if launch.pull is not None:
        pulled = run_command(launch.pull, cwd=work_dir, env=launch.env, reporter=reporter)
        if pulled.returncode != 0:
            return pulled.returncode
    built = run_command(launch.argv, cwd=work_dir, env=launch.env, reporter=reporter)
    try:
        if built.returncode != 0:
            reporter.log(f"build failed in the container (exit code {built.returncode}); no image committed")
            return built.returncode
        commit = docker.commit_command(settings, launch.name, target, task_id, entry_point)
        committed = run_command(commit, cwd=work_dir, env=launch.env, reporter=reporter)
        if committed.returncode == 0:
            reporter.log(f"committed the container to {target}")
        return committed.returncode
    finally:
        run_command(docker.remove_command(settings, launch.name), cwd=work_dir, env=launch.env, reporter=reporter)


def write_private(path: Path, text: str) -> Path:
    """`text` into a new file readable by its owner only (0600 from creation: it holds credentials)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return path


def agent_wheel(dest: Path) -> Path:
    """A wheel of this agent, made from the package's own files (an editable install has no files to repack), with
    the installed distribution's metadata when there is one (its Requires-Dist pulls the dependencies)."""
    version = notebook_agent.__version__
    wheel = dest / f"notebook_agent-{version}-py3-none-any.whl"
    package = Path(notebook_agent.__file__).parent
    info = f"notebook_agent-{version}.dist-info"
    files: list[tuple[str, bytes]] = []
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.append((f"notebook_agent/{path.relative_to(package).as_posix()}", path.read_bytes()))
    files.append((f"{info}/METADATA", _metadata(version).encode()))
    files.append((f"{info}/WHEEL", _WHEEL.encode()))
    files.append((f"{info}/entry_points.txt", _ENTRY_POINTS.encode()))
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    writer.writerows([(name, _hash(data), str(len(data))) for name, data in files])
    writer.writerow((f"{info}/RECORD", "", ""))
    dest.mkdir(parents=True, exist_ok=True)
    tmp = wheel.with_name(f".{wheel.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, data in files:
            archive.writestr(_zip_info(name), data)
        archive.writestr(_zip_info(f"{info}/RECORD"), record.getvalue())
    os.replace(tmp, wheel)
    return wheel


def _metadata(version: str) -> str:
    try:
        installed = metadata.distribution(DIST_NAME)
    except metadata.PackageNotFoundError:
        installed = None
    if installed is not None and installed.version == version:
        text = installed.read_text("METADATA")
        if text:
            return text
    return f"Metadata-Version: 2.1\nName: {DIST_NAME}\nVersion: {version}\n"


def _hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # fixed times: the same files, the same wheel
    info.external_attr = 0o100644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info
