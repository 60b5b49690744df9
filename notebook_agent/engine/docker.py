"""Docker mode: the `docker run` command clearml-agent 3.0.3 builds for a task, built here as a pure function.

Nothing here runs a process or writes a file; `docker_launch` does (the container's clearml.conf, the agent wheel,
the host cache folders) and hands these functions the paths.

The argument list follows clearml-agent's `Worker._get_docker_cmd` (commands/worker.py) in order::

    docker run -t [--gpus all | --gpus '"device=0,1"']
        <agent.extra_docker_arguments> [-v $SSH_AUTH_SOCK:$SSH_AUTH_SOCK -e SSH_AUTH_SOCK=...] <task arguments>
        -l clearml-worker-id=W -l clearml-parent-worker-id=W
        -e CLEARML_WORKER_ID=W -e CLEARML_DOCKER_IMAGE=IMAGE -e CLEARML_TASK_ID=T [-e CLEARML_WORKER_TAGS=...]
        [-v ~/.git-credentials:/root/.ssh_ro.git/.git-credentials ...]
        --name N -v <conf>:/tmp/clearml.conf -e CLEARML_CONFIG_FILE=/tmp/clearml.conf [-v ~/.ssh:/root/.ssh_ro:ro]
        [-v <apt cache>] [-v <pip cache>] [-v <pip download cache>] [-v <sdk cache>] [-v <vcs cache>]
        [-v <venvs cache>] -v <wheel>:/tmp/<wheel>:ro --rm
        IMAGE bash -c "<bootstrap> ; <setup script> ; NVIDIA_VISIBLE_DEVICES=all $LOCAL_PYTHON -u -m notebook_agent
        execute --disable-monitoring --id T"

Where we deviate, and why:

- The agent in the container is ours, installed from a wheel of this very agent mounted at /tmp (clearml-agent's
  FORCE_LOCAL_CLEARML_AGENT_WHEEL path; there is no notebook-agent on PyPI). The install is skipped when the image
  already has this version (an image made by `build --docker`). So `--force-current-version` changes nothing: the
  container always runs the host agent's version.
- The bootstrap installs only what that agent needs (git, python3-pip) and no OpenCV libraries. It does not delete
  EXTERNALLY-MANAGED: it sets PIP_BREAK_SYSTEM_PACKAGES for that one install instead. Our agent needs Python 3.10
  or newer in the image.
- The config is not copied to ~/default_clearml.conf: the mount holds the credentials, and an image committed by
  `build --docker` would otherwise keep them.
- ~/.ssh is mounted read-only instead of being copied to a temp folder first: the host copy cannot be changed from
  the container, and no copy of the keys is left in /tmp.
- The container always gets a `--name`, so that an abort can `docker stop` it (clearml-agent looks it up in
  `docker ps` by its command line): with `-t`, a signal to the docker client does not reach the container.
- When the API server is on the loopback interface (the embedded server), `--network host` is added unless the
  arguments choose a network: the container's own localhost has no server.
- Venv cache entries are kept per image (a `docker-<hash>` subfolder of agent.venvs_cache.path): clearml-agent
  puts the image into its cache key, and an environment made over one image's system packages is wrong in another.
- `--gpus all` on the daemon is resolved to the GPU ids by the worker, so the container gets `--gpus "device=0,..."`
  (the same GPUs). With neither --gpus nor --cpu-only, `--gpus all` is passed as clearml-agent does, which fails on
  a host without the NVIDIA container runtime: use --cpu-only there.
- Not supported: agent.docker_internal_mounts, docker_init_bash_script, docker_preprocess_bash_script, a configurable
  forbidden_docker_args (always `--entrypoint`), port mappings, templates, vaults, podman, ROCm, Kubernetes, services.

Secrets: like clearml-agent, the API credentials (or token) and git credentials reach the container only through the
mounted 0600 clearml.conf, never the command line. clearml-agent puts an auth token there (`-e
CLEARML_AUTH_TOKEN=<token>`); here any variable with a secret-looking name goes as a bare `-e NAME`, its value in the
docker client's environment (`docker_client_env`), so it never shows in the process list.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from notebook_agent import __version__
from notebook_agent.config import Config
from notebook_agent.masking import is_secret_name

# Container-side paths: clearml-agent's constants and agent.docker_internal_mounts defaults.
CONF_IN_CONTAINER = "/tmp/clearml.conf"
SSH_RO = "/root/.ssh_ro"
SSH = "/root/.ssh"
GIT_RO = SSH_RO + ".git"
APT_CACHE = "/var/cache/apt/archives"
PIP_CACHE = "/root/.cache/pip"
PIP_DOWNLOAD_CACHE = "/root/.clearml/pip-download-cache"
SDK_CACHE = "/clearml_agent_cache"
VCS_CACHE = "/root/.clearml/vcs-cache"
VENVS_CACHE = "/root/.clearml/venvs-cache"
# Where `build --docker` keeps the task's environment inside the image: our default agent.venvs_cache.path, so that
# the image's `notebook-agent execute` finds it.
IN_IMAGE_VENVS_CACHE = "~/.notebook_agent/venvs-cache"
WORKER_LABEL = "clearml-worker-id={}"
PARENT_WORKER_LABEL = "clearml-parent-worker-id={}"
DEFAULT_IMAGE = "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu20.04"
# clearml-agent lets these switches of agent.extra_docker_arguments win over the same ones in a task's arguments.
PROTECTED_SWITCHES = ("privileged", "security-opt", "network", "ipc")
# ... and strips these from both (agent.forbidden_docker_args): they would replace the agent's start-up script.
FORBIDDEN_SWITCHES = ("entrypoint",)
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class DockerSettings:
    """How this agent runs tasks in containers: the default image and arguments, and what it mounts."""

    image: str = DEFAULT_IMAGE
    arguments: tuple[str, ...] = ()
    extra_arguments: tuple[str, ...] = ()  # agent.extra_docker_arguments: always, before the task's own
    force_pull: bool = False  # agent.docker_force_pull: `docker pull` the image before each task
    task_override: bool = True  # a task's container.image wins (off: agent.disable_task_docker_override)
    ssh_dir: Path | None = None  # the host's ~/.ssh, mounted read-only; None with SSH_AUTH_SOCK or disabled
    ssh_auth_sock: str = ""  # the host's SSH_AUTH_SOCK, mounted at the same path
    git_credential_files: tuple[Path, ...] = ()  # ~/.git-credentials, ~/.gitconfig when present
    apt_cache: Path | None = None
    pip_cache: Path | None = None
    pip_download_cache: Path | None = None
    sdk_cache: Path | None = None
    vcs_cache: Path | None = None
    venvs_cache: Path | None = None
    extra_shell_script: tuple[str, ...] = ()  # agent.extra_docker_shell_script: run before the agent
    worker_tags: tuple[str, ...] = ()
    docker: str = "docker"
    force_current_version: bool = False  # accepted for clearml-agent compatibility; always the case here
    # The agent's whole configuration as plain data (it holds secrets: out of repr and comparisons).
    config: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Container:
    """The image a task runs in, its arguments, its setup script, and whether they came from the task."""

    image: str
    arguments: tuple[str, ...]
    setup_script: str
    from_task: bool


# --- settings ------------------------------------------------------------------------------------------------


def docker_settings(
    config: Config,
    cli: Sequence[str] = (),
    *,
    env: Mapping[str, str],
    home: Path | None = None,
    force_current_version: bool = False,
) -> DockerSettings:
    """DockerSettings from the configuration and `--docker [IMAGE [ARGS...]]` (`cli`), as clearml-agent's
    get_docker_config_cmd: an image on the command line wins over agent.default_docker.image (CLEARML_DOCKER_IMAGE is
    already merged into it); `--docker IMAGE` alone keeps agent.default_docker.arguments."""
    home = home or Path(env.get("HOME") or Path.home())
    image, arguments = _default_image(config, cli)

    def path(key: str, default: str = "", enabled: bool = True) -> Path | None:
        value = str(config.get(key, default) or "").strip()
        if not value or not enabled:
            return None
        return Path(home / value[2:] if value.startswith("~/") else value)

    sock = env.get("SSH_AUTH_SOCK", "").strip()
    no_ssh = bool(config.agent("disable_ssh_mount", False)) or env.get("CLEARML_AGENT_DISABLE_SSH_MOUNT", "") in (
        "1",
        "true",
        "yes",
    )
    ssh_dir = home / ".ssh"
    return DockerSettings(
        image=image,
        arguments=arguments,
        extra_arguments=_arguments(config.agent("extra_docker_arguments", [])),
        force_pull=bool(config.agent("docker_force_pull", False)),
        task_override=not bool(config.agent("disable_task_docker_override", False)),
        ssh_dir=ssh_dir if not sock and not no_ssh and ssh_dir.is_dir() else None,
        ssh_auth_sock=sock,
        git_credential_files=tuple(p for p in (home / ".git-credentials", home / ".gitconfig") if p.is_file()),
        apt_cache=path("agent.docker_apt_cache", "~/.clearml/apt-cache"),
        pip_cache=path("agent.docker_pip_cache", "~/.clearml/pip-cache"),
        pip_download_cache=path(
            "agent.pip_download_cache.path", enabled=bool(config.agent("pip_download_cache.enabled", True))
        ),
        sdk_cache=path("sdk.storage.cache.default_base_dir", "~/.clearml/cache"),
        vcs_cache=path("agent.vcs_cache.path", enabled=bool(config.agent("vcs_cache.enabled", True))),
        venvs_cache=path("agent.venvs_cache.path"),
        extra_shell_script=_arguments(config.agent("extra_docker_shell_script", []), split=False),
        worker_tags=_arguments(config.agent("worker_tags", []), split=False),
        force_current_version=force_current_version,
        config=config.tree.as_plain_ordered_dict(),
    )


def _default_image(config: Config, cli: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    configured = str(config.agent("default_docker.image", "") or "").strip() or DEFAULT_IMAGE
    words = shlex.split(cli[0]) if cli else shlex.split(configured)
    if len(words) > 1:  # "image --ipc=host" in one string
        return words[0], tuple(words[1:])
    if len(cli) > 1:
        return words[0], tuple(cli[1:])
    return words[0], _arguments(config.agent("default_docker.arguments", []))


def _arguments(value: object, split: bool = True) -> tuple[str, ...]:
    """A HOCON list as strings; one string is split like a shell would (clearml-agent keeps it as one argument,
    which breaks `"-e A=1"`)."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(shlex.split(value)) if split else (value,)
    return tuple(str(item) for item in value)  # type: ignore[union-attr]


# --- the task's container ------------------------------------------------------------------------------------


def task_container(task: Mapping[str, Any], settings: DockerSettings) -> Container:
    """The container a task runs in: its container.image/arguments (execution.docker_cmd for tasks made before
    the container field), else the agent's default image and arguments. A task image comes with the task's
    arguments only, never the default ones (clearml-agent's run_one_task)."""
    container = task.get("container") or {}
    image = str(container.get("image") or "").strip()
    raw_arguments: Any = container.get("arguments") or ()
    if not image:
        words = shlex.split(str((task.get("execution") or {}).get("docker_cmd") or ""))
        if words:
            image, raw_arguments = words[0], words[1:]
    setup = str(container.get("setup_shell_script") or "")
    if image and settings.task_override:
        arguments = shlex.split(raw_arguments) if isinstance(raw_arguments, str) else [str(a) for a in raw_arguments]
        return Container(image, tuple(arguments), setup, True)
    return Container(settings.image, settings.arguments, setup, False)


# --- argument pieces -----------------------------------------------------------------------------------------


def gpu_arguments(gpus: str | None, env: Mapping[str, str]) -> tuple[list[str], str]:
    """(the `--gpus` arguments, NVIDIA_VISIBLE_DEVICES for the agent inside) for the agent's GPUs.

    `gpus` is the runner's visible_devices: None (no --gpus/--cpu-only: the agent's own NVIDIA_VISIBLE_DEVICES
    decides, as in clearml-agent), "" (--cpu-only) or a device list such as "0,1". Unset or "all" gives
    `--gpus all`; "none"/"" gives no --gpus; a list gives `--gpus "device=0,1"` with the quotes, which docker's
    CSV parsing needs to keep the comma inside one field ("." becomes ":" for MIG devices).
    """
    devices = gpus if gpus is not None else env.get("NVIDIA_VISIBLE_DEVICES")
    if devices is None or devices.strip().lower() == "all":
        return ["--gpus", "all"], "all"
    devices = devices.strip()
    if devices.lower() in ("", "none"):
        return [], "none"
    return ["--gpus", '"device={}"'.format(devices.replace(".", ":"))], "all"


def merge_arguments(extra: Sequence[str], task: Sequence[str]) -> list[str]:
    """The agent's extra arguments, then the task's without the protected switches the agent already sets, both
    without the forbidden ones (clearml-agent's DockerArgsSanitizer.merge_docker_args, extra preceding task)."""
    extra = drop_switches(extra, FORBIDDEN_SWITCHES)
    taken = {s for s in _switches(extra) if s in PROTECTED_SWITCHES}
    return [a for a in extra if a] + [a for a in drop_switches(task, (*FORBIDDEN_SWITCHES, *taken)) if a]


def drop_switches(args: Sequence[str], names: Sequence[str]) -> list[str]:
    """`args` without the switches `names` (`--name value`, `--name=value` or a bare `--name`)."""
    kept: list[str] = []
    skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
            if not arg.startswith("-"):
                continue  # the dropped switch's value
        if arg.startswith("-") and arg.lstrip("-").split("=", 1)[0] in names:
            skip_value = "=" not in arg
            continue
        kept.append(arg)
    return kept


def _switches(args: Sequence[str]) -> list[str]:
    return [a.lstrip("-").split("=", 1)[0] for a in args if a.startswith("-")]


def env_arguments(env: Mapping[str, str]) -> list[str]:
    """`-e NAME=value` per variable, but a bare `-e NAME` for secret-looking names: docker then takes the value from
    its own environment (see docker_client_env), and it stays out of the process list."""
    args: list[str] = []
    for name, value in env.items():
        args += ["-e", name if is_secret_name(name) else f"{name}={value}"]
    return args


def docker_client_env(base: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """The docker client's environment: `base` plus the values of the secret variables passed as bare `-e NAME`."""
    return {**base, **{name: value for name, value in env.items() if is_secret_name(name)}}


def cache_mounts(settings: DockerSettings, image: str, *, build: bool = False) -> list[tuple[Path, str]]:
    """(host folder, container folder) of each cache, in clearml-agent's order. A `build` keeps the venv cache in
    the image (IN_IMAGE_VENVS_CACHE), so it is not mounted."""
    venvs = None if build or settings.venvs_cache is None else settings.venvs_cache / image_folder(image)
    pairs = (
        (settings.apt_cache, APT_CACHE),
        (settings.pip_cache, PIP_CACHE),
        (settings.pip_download_cache, PIP_DOWNLOAD_CACHE),
        (settings.sdk_cache, SDK_CACHE),
        (settings.vcs_cache, VCS_CACHE),
        (venvs, VENVS_CACHE),
    )
    return [(host, inside) for host, inside in pairs if host is not None]


def image_folder(image: str) -> str:
    """The venv cache subfolder of one image."""
    return "docker-" + hashlib.sha256(image.encode()).hexdigest()[:12]


def container_name(worker_id: str, task_id: str, prefix: str = "notebook-agent") -> str:
    """A container name docker accepts ([a-zA-Z0-9][a-zA-Z0-9_.-]*), unique per worker and task."""
    safe = "".join(c if c.isalnum() or c in "_.-" else "-" for c in worker_id)
    return f"{prefix}.{safe}.{task_id}"


def _loopback(url: str) -> bool:
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    return host in _LOOPBACK or host.startswith("127.")


# --- the command inside ----------------------------------------------------------------------------------------


def agent_install(wheel_in_container: str, version: str = __version__) -> str:
    """Install this agent from the mounted wheel unless the image has this version already."""
    check = f'import notebook_agent as a, sys; sys.exit(a.__version__ != "{version}")'
    return (
        f"$LOCAL_PYTHON -c '{check}' 2>/dev/null || "
        f"PIP_BREAK_SYSTEM_PACKAGES=1 $LOCAL_PYTHON -m pip install -q {shlex.quote(wheel_in_container)}"
    )


def container_script(
    agent_command: str,
    *,
    wheel_in_container: str,
    ssh: bool,
    git_credentials: bool,
    setup_script: str = "",
    extra_shell_script: Sequence[str] = (),
) -> str:
    """The `bash -c` text: clearml-agent's bootstrap (find or install git and a python with pip), our agent's
    install, the agent's extra shell script, the task's setup script, then `agent_command`, joined by " ; " with
    the agent command last (a stand-in docker can find it there)."""
    lines = [
        "echo 'Binary::apt::APT::Keep-Downloaded-Packages \"true\";' > /etc/apt/apt.conf.d/docker-clean",
        "export DEBIAN_FRONTEND=noninteractive",
        f"cp -Rf {SSH_RO} -T {SSH}" if ssh else "",
        f"cp -Rf {GIT_RO} -T ~/" if git_credentials else "",
        '[ ! -z $(which git 2> /dev/null || command -v git) ] || export CLEARML_APT_INSTALL="$CLEARML_APT_INSTALL git"',
        "declare LOCAL_PYTHON",
        # our agent needs Python 3.10+, so the search stops there (clearml-agent goes down to 3.5)
        "[ ! -z $LOCAL_PYTHON ] || for i in {20..10}; do (which python3.$i 2> /dev/null || command -v python3.$i)"
        " && python3.$i -m pip --version && export LOCAL_PYTHON=$(which python3.$i 2> /dev/null"
        " || command -v python3.$i) && break ; done",
        '[ ! -z $LOCAL_PYTHON ] || export CLEARML_APT_INSTALL="$CLEARML_APT_INSTALL python3-pip"',
        '[ -z "$CLEARML_APT_INSTALL" ] || (apt-get update -y ; apt-get install -y $CLEARML_APT_INSTALL)'
        " || (dnf install -y $CLEARML_APT_INSTALL)",
        "[ ! -z $LOCAL_PYTHON ] || export LOCAL_PYTHON=python3",
        agent_install(wheel_in_container),
        *extra_shell_script,
        *(line.strip() for line in setup_script.splitlines() if line.strip() and not line.lstrip().startswith("#")),
        agent_command,
    ]
    return " ; ".join(line for line in lines if line)


def execute_command(task_id: str, nvidia_visible: str) -> str:
    """The agent inside a task's container: build the environment and run the task, its output on stdout (the
    agent outside ships it and reports the status), like clearml-agent's `execute --disable-monitoring`."""
    agent = "$LOCAL_PYTHON -u -m notebook_agent execute --disable-monitoring"
    return f"NVIDIA_VISIBLE_DEVICES={nvidia_visible} {agent} --id {task_id}"


def build_command(task_id: str) -> str:
    """The agent inside a `build --docker` container: the task's environment into the image (see build_cmd)."""
    return f"$LOCAL_PYTHON -u -m notebook_agent build --id {task_id} --in-image"


# --- the whole command ---------------------------------------------------------------------------------------


def docker_run_command(
    task: Mapping[str, Any],
    settings: DockerSettings,
    *,
    worker_id: str,
    gpus: str | None,
    env: Mapping[str, str],
    inner_command: str | None,
    conf_file: Path,
    wheel: Path,
    name: str,
    api_server: str = "",
    host_env: Mapping[str, str] | None = None,
    build: bool = False,
) -> list[str]:
    """The `docker run` argv for `task` (see the module docstring for the layout and the deviations).

    `env`: extra variables for the container (after clearml-agent's own -e list; secret-looking names go as bare
    `-e NAME`, see docker_client_env). `inner_command`: the agent command in the container, default
    execute_command(...). `conf_file`/`wheel`: host files mounted at /tmp. `host_env`: the agent's environment,
    only read for NVIDIA_VISIBLE_DEVICES. `build`: the container is committed afterwards, so no `--rm` and no venv
    cache mount.
    """
    container = task_container(task, settings)
    task_id = str(task.get("id") or "")
    gpu_args, nvidia_visible = gpu_arguments(gpus, host_env or {})
    extra = list(settings.extra_arguments)
    if settings.ssh_auth_sock:
        sock = settings.ssh_auth_sock
        extra += ["-v", f"{sock}:{sock}", "-e", f"SSH_AUTH_SOCK={sock}"]
    merged = merge_arguments(extra, container.arguments)
    if _loopback(api_server) and not any(s in ("network", "net") for s in _switches(merged)):
        merged += ["--network", "host"]
    wheel_in_container = f"/tmp/{wheel.name}"
    argv = [settings.docker, "run", "-t", *gpu_args, *merged]
    argv += ["-l", WORKER_LABEL.format(worker_id), "-l", PARENT_WORKER_LABEL.format(worker_id)]
    argv += ["-e", f"CLEARML_WORKER_ID={worker_id}", "-e", f"CLEARML_DOCKER_IMAGE={container.image}"]
    if task_id:
        argv += ["-e", f"CLEARML_TASK_ID={task_id}"]
    if settings.worker_tags:
        argv += ["-e", "CLEARML_WORKER_TAGS=" + " ".join(shlex.quote(t) for t in settings.worker_tags)]
    argv += env_arguments(env)
    for file in settings.git_credential_files:
        argv += ["-v", f"{file}:{GIT_RO}/{file.name}"]
    argv += ["--name", name, "-v", f"{conf_file}:{CONF_IN_CONTAINER}", "-e", f"CLEARML_CONFIG_FILE={CONF_IN_CONTAINER}"]
    if settings.ssh_dir is not None:
        argv += ["-v", f"{settings.ssh_dir}:{SSH_RO}:ro"]
    for host, inside in cache_mounts(settings, container.image, build=build):
        argv += ["-v", f"{host}:{inside}"]
    argv += ["-v", f"{wheel}:{wheel_in_container}:ro"]
    if not build:
        argv.append("--rm")
    script = container_script(
        inner_command or execute_command(task_id, nvidia_visible),
        wheel_in_container=wheel_in_container,
        ssh=settings.ssh_dir is not None,
        git_credentials=bool(settings.git_credential_files),
        setup_script=container.setup_script,
        extra_shell_script=settings.extra_shell_script,
    )
    return [*argv, container.image, "bash", "-c", script]


def container_config(settings: DockerSettings, *, build: bool = False) -> dict[str, Any]:
    """The agent's configuration as the agent inside the container must see it (clearml-agent's temp config in
    get_docker_config_cmd): caches at their mount points, no host interpreter or CUDA version, and the image's own
    packages visible to the task's venv (system_site_packages, as clearml-agent forces in docker)."""
    tree = copy.deepcopy(dict(settings.config))
    agent = tree.setdefault("agent", {})
    agent["python_binary"] = ""
    agent["cuda_version"] = ""
    agent["cudnn_version"] = ""
    agent["worker_id"] = ""  # CLEARML_WORKER_ID says it
    agent.setdefault("package_manager", {})["system_site_packages"] = True
    if settings.vcs_cache is not None:
        agent.setdefault("vcs_cache", {})["path"] = VCS_CACHE
    if settings.pip_download_cache is not None:
        agent.setdefault("pip_download_cache", {})["path"] = PIP_DOWNLOAD_CACHE
    venvs = agent.setdefault("venvs_cache", {})
    if build:
        venvs.update(path=IN_IMAGE_VENVS_CACHE, store="folder")
    elif settings.venvs_cache is not None:
        venvs["path"] = VENVS_CACHE
    if settings.sdk_cache is not None:
        tree.setdefault("sdk", {}).setdefault("storage", {}).setdefault("cache", {})["default_base_dir"] = SDK_CACHE
    return tree


def container_config_text(settings: DockerSettings, *, build: bool = False) -> str:
    """container_config as clearml.conf text (JSON is valid HOCON)."""
    return json.dumps(container_config(settings, build=build), indent=2) + "\n"


# --- other docker commands -----------------------------------------------------------------------------------


def pull_command(settings: DockerSettings, image: str) -> list[str]:
    return [settings.docker, "pull", image]


def stop_command(settings: DockerSettings, name: str, grace_sec: float) -> list[str]:
    """Stop a container: SIGTERM, then SIGKILL after the grace period (clearml-agent uses `-t 1`)."""
    return [settings.docker, "stop", "-t", str(max(1, round(grace_sec))), name]


def commit_command(
    settings: DockerSettings, name: str, target: str, task_id: str, entry_point: str | None
) -> list[str]:
    """`docker commit` of a build container into `target`, its ENTRYPOINT running the task (`reuse_task`), a clone
    of it (`clone_task`), or nothing (clearml-agent's _build_docker)."""
    if entry_point in ("reuse_task", "clone_task"):
        command = ["notebook-agent", "execute", "--id", task_id] + (["--clone"] if entry_point == "clone_task" else [])
        change = "ENTRYPOINT " + json.dumps(command)
    else:
        change = "ENTRYPOINT []"
    return [settings.docker, "commit", f"--change={change}", name, target]


def remove_command(settings: DockerSettings, name: str) -> list[str]:
    return [settings.docker, "rm", "-f", name]
