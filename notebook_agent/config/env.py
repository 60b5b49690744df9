"""The environment variables that override clearml.conf, and the config key each one sets.

Names and types mirror clearml-agent 3.0.3 (definitions.py ENVIRONMENT_CONFIG and the ENV_* entries there
and in backend_api/session/defs.py). Each entry lists its names in priority order: CLEARML_* first, then
the old TRAINS_* name, then a bare name where clearml-agent accepts one (CUDA_VERSION). clearml-agent
reads no ALG_* name for any of these keys, so none appear here.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pyhocon import ConfigTree

from ..masking import is_secret_name
from .errors import ConfigError

_TRUE = ("y", "yes", "t", "true", "on", "1")
_FALSE = ("n", "no", "f", "false", "off", "0")


def to_bool(text: str) -> bool:
    """clearml-agent's strtobool: y/yes/t/true/on/1 and n/no/f/false/off/0, any case; ValueError otherwise."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(text)


def _to_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


_CONVERT: dict[type, Callable[[str], Any]] = {
    str: lambda s: s.strip(),  # clearml-agent strips text values
    bool: to_bool,
    int: lambda s: int(s.strip()),
    float: _to_float,
    list: shlex.split,  # clearml-agent splits list variables like a shell command line
}

_EXPECTED = {
    str: "text",
    bool: "true or false (1/0, yes/no, on/off)",
    int: "a whole number",
    float: "a number",
    list: "a shell-quoted list of words",
}
_EXAMPLE = {bool: "1", int: "10", float: "0.5", list: "'--ipc=host' '-e A=1'", str: "a value"}


@dataclass(frozen=True)
class EnvVar:
    """Environment variable names (first one set wins) that set config `key` to a value of `type`.

    `when_true` makes a flag: a true value sets `key` to `when_true` and a false one leaves it alone
    (CLEARML_AGENT_FORCE_UV=1 means package_manager.type: uv). `choices` limits a str value (any case).
    """

    names: tuple[str, ...]
    key: str
    type: type = str
    when_true: str | None = None
    choices: tuple[str, ...] = ()


def _v(
    key: str,
    *names: str,
    type: type = str,
    when_true: str | None = None,
    choices: tuple[str, ...] = (),
) -> EnvVar:
    return EnvVar(names, key, type, when_true, choices)


ENV_VARS: tuple[EnvVar, ...] = (
    # server and credentials (backend_api/session/defs.py)
    _v("api.api_server", "CLEARML_API_HOST", "TRAINS_API_HOST"),
    _v("api.web_server", "CLEARML_WEB_HOST", "TRAINS_WEB_HOST"),
    _v("api.files_server", "CLEARML_FILES_HOST", "TRAINS_FILES_HOST"),
    _v("api.credentials.access_key", "CLEARML_API_ACCESS_KEY", "TRAINS_API_ACCESS_KEY"),
    _v("api.credentials.secret_key", "CLEARML_API_SECRET_KEY", "TRAINS_API_SECRET_KEY"),
    _v("api.auth_token", "CLEARML_AUTH_TOKEN"),
    _v("api.verify_certificate", "CLEARML_API_HOST_VERIFY_CERT", "TRAINS_API_HOST_VERIFY_CERT", type=bool),
    # clearml-agent accepts GET, POST or PUT (any case); behind a GCP load balancer use POST/PUT.
    _v("api.http.default_method", "CLEARML_API_DEFAULT_REQ_METHOD", choices=("get", "post", "put")),
    # identity
    _v("agent.worker_id", "CLEARML_WORKER_ID", "TRAINS_WORKER_ID"),
    _v("agent.worker_name", "CLEARML_WORKER_NAME", "TRAINS_WORKER_NAME"),
    _v("agent.worker_tags", "CLEARML_WORKER_TAGS", type=list),
    # git
    _v("agent.git_user", "CLEARML_AGENT_GIT_USER", "TRAINS_AGENT_GIT_USER"),
    _v("agent.git_pass", "CLEARML_AGENT_GIT_PASS", "TRAINS_AGENT_GIT_PASS"),
    _v("agent.git_host", "CLEARML_AGENT_GIT_HOST", "TRAINS_AGENT_GIT_HOST"),
    # daemon loop (clearml-agent: 5 s and 30 s when unset; our defaults are in defaults.py)
    _v("agent.queue_poll_freq_sec", "CLEARML_AGENT_QUEUE_POLL_FREQ_SEC", type=float),
    _v("agent.status_report_freq_sec", "CLEARML_AGENT_STATUS_REPORT_FREQ_SEC", type=float),
    _v("agent.crash_on_exception", "CLEARML_AGENT_CRASH_ON_EXCEPTION", type=bool),
    _v("agent.abort_callback_cmd", "CLEARML_AGENT_ABORT_CALLBACK_CMD"),
    _v("agent.propagate_exitcode", "CLEARML_AGENT_PROPAGATE_EXITCODE", type=bool),
    _v("agent.temp_stdout_file_dir", "CLEARML_AGENT_TEMP_STDOUT_FILE_DIR"),
    # environment setup; FORCE_UV comes after FORCE_POETRY so it wins when both are set
    _v("agent.venvs_cache.path", "CLEARML_AGENT_VENV_CACHE_PATH"),
    _v("agent.package_manager.type", "CLEARML_AGENT_FORCE_POETRY", type=bool, when_true="poetry"),
    _v("agent.package_manager.type", "CLEARML_AGENT_FORCE_UV", type=bool, when_true="uv"),
    # "1"/"true", or the python binary to run tasks with instead of a new venv (so text, not bool)
    _v("agent.skip_pip_venv_install", "CLEARML_AGENT_SKIP_PIP_VENV_INSTALL"),
    _v("agent.skip_python_env_install", "CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL", type=bool),
    _v("agent.extra_python_path", "CLEARML_AGENT_EXTRA_PYTHON_PATH", "TRAINS_AGENT_EXTRA_PYTHON_PATH"),
    _v("agent.exec_user", "CLEARML_AGENT_EXEC_USER", "TRAINS_AGENT_EXEC_USER"),
    _v("agent.force_task_init", "CLEARML_AGENT_FORCE_TASK_INIT", type=bool),
    _v("agent.custom_build_script", "CLEARML_AGENT_CUSTOM_BUILD_SCRIPT"),
    # hardware
    _v("agent.cuda_version", "CLEARML_CUDA_VERSION", "TRAINS_CUDA_VERSION", "CUDA_VERSION"),
    _v("agent.cudnn_version", "CLEARML_CUDNN_VERSION", "TRAINS_CUDNN_VERSION", "CUDNN_VERSION"),
    _v("agent.cpu_only", "CLEARML_CPU_ONLY", "TRAINS_CPU_ONLY", "CPU_ONLY", type=bool),
    # docker: the image for a task without one (CLEARML_AGENT_DEFAULT_BASE_DOCKER is what the
    # agent-services container of clearml-server passes as --docker)
    _v(
        "agent.default_docker.image",
        "CLEARML_DOCKER_IMAGE",
        "TRAINS_DOCKER_IMAGE",
        "CLEARML_AGENT_DEFAULT_BASE_DOCKER",
        "TRAINS_AGENT_DEFAULT_BASE_DOCKER",
    ),
    _v("agent.extra_docker_arguments", "CLEARML_AGENT_EXTRA_DOCKER_ARGS", type=list),
)

# The config file's location (clearml's ENVIRONMENT_SDK_PARAMS["config_file"]); read by loader.config_path.
CONFIG_FILE_VARS = ("CLEARML_CONFIG_FILE", "TRAINS_CONFIG_FILE")


def lookup(entry: EnvVar, env: Mapping[str, str]) -> tuple[str, Any] | None:
    """(name, converted value) of the first of `entry.names` set to a non-blank value, or None.

    Blank values count as unset, as in clearml-agent. A value of the wrong type raises ConfigError naming the
    variable and the expected type (the value is quoted only when the name does not look secret).
    """
    for name in entry.names:
        raw = env.get(name)
        if raw is None or not raw.strip():
            continue
        try:
            value = _CONVERT[entry.type](raw)
        except ValueError:
            raise _bad_value(name, entry.key, raw, _EXPECTED[entry.type], _EXAMPLE[entry.type]) from None
        if entry.choices:
            value = value.lower()
            if value not in entry.choices:
                raise _bad_value(name, entry.key, raw, f"one of {', '.join(entry.choices)}", entry.choices[0])
        return name, value
    return None


def apply_env(tree: ConfigTree, env: Mapping[str, str]) -> dict[str, str]:
    """Put every set variable's value into `tree`; returns {config key: variable name} of what it set."""
    applied: dict[str, str] = {}
    for entry in ENV_VARS:
        found = lookup(entry, env)
        if found is None:
            continue
        name, value = found
        if entry.when_true is not None:
            if not value:
                continue
            value = entry.when_true
        tree.put(entry.key, value)
        applied[entry.key] = name
    return applied


def _bad_value(name: str, key: str, raw: str, expected: str, example: str) -> ConfigError:
    got = "" if is_secret_name(name) else f", got {raw.strip()[:40]!r}"
    return ConfigError(
        f"bad environment variable value (it sets {key}): expected {expected}{got}",
        key=name,
        fix=f"set {name} to {expected}, e.g. {name}={example}, or unset it",
    )
