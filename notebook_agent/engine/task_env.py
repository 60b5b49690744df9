"""The environment of a task process: the variables clearml-agent sets, so the task's SDK attaches to its task."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyhocon import ConfigTree

from notebook_agent.config import ApiConfig, PastedCredentials
from notebook_agent.config.writer import write_api_config

# Variables of the kernel that must not leak into a task (the CLEARML_* ones it needs are set below).
_DROP_PREFIXES = ("JPY_",)
# The SDK's "main process" marker, `<pid>:<task id>`. clearml-agent execs the task in place of its own process, so
# the pid it names is the task's own and the SDK acts as the task's main process (its full exit path, the results
# page line). Left unset, the SDK names itself so; one inherited from a notebook that ran Task.init, or naming the
# agent's pid, would make the task a "subprocess" of another task.
_DROP = {"CLEARML_PROC_MASTER_ID", "TRAINS_PROC_MASTER_ID"}


def _keep(key: str, value: str) -> bool:
    if key.startswith(_DROP_PREFIXES) or key in _DROP:
        return False
    # A kernel sets MPLBACKEND=module://matplotlib_inline..., which a plain process cannot import.
    return not (key == "MPLBACKEND" and value.startswith("module://"))


# Of the api section, what ApiConfig holds (with the environment's overrides applied): written from it, not the tree.
_API_OWN = ("api_server", "web_server", "files_server", "host", "credentials")


def task_config_sections(tree: ConfigTree) -> dict[str, Any]:
    """What a task's SDK reads of the agent's clearml.conf besides the server and the keys, as clearml-agent's temp
    config carries it: every section but `agent` (sdk: storage credentials, default output_uri, development
    settings; api: verify_certificate, http). The agent's own section, git and docker credentials among it, stays
    with the agent: the SDK reads none of it."""
    sections = {str(k): v for k, v in tree.as_plain_ordered_dict().items() if k != "agent"}
    api = {k: v for k, v in dict(sections.pop("api", None) or {}).items() if k not in _API_OWN}
    if api:
        sections["api"] = api
    return sections


def write_task_config(path: Path, api: ApiConfig, sections: Mapping[str, Any] | None = None) -> Path:
    """A 0600 clearml.conf for the task's SDK: `sections` (see task_config_sections), then the api section of
    `api`, which HOCON merges over them."""
    creds = api.credentials
    # JSON is HOCON: each section as one JSON object, its keys quoted (a dotted key stays one key).
    header = "".join(f"{json.dumps(key)}: {json.dumps(value)}\n" for key, value in (sections or {}).items())
    return write_api_config(
        path,
        PastedCredentials(
            api_server=api.api_server,
            web_server=api.web_server,
            files_server=api.files_server,
            access_key=creds.access_key if creds else "",
            secret_key=creds.secret_key if creds else "",
        ),
        header=header,
    )


def task_environment(
    base: Mapping[str, str],
    *,
    task_id: str,
    worker_id: str,
    api: ApiConfig,
    config_file: Path,
    visible_devices: str | None = None,
) -> dict[str, str]:
    """A fresh mapping for the child (the agent's os.environ is never changed).

    `visible_devices`: None leaves CUDA_VISIBLE_DEVICES as it is, "" hides every GPU (--cpu-only), "0,1" shows
    those (--gpus).
    """
    env = {k: v for k, v in base.items() if _keep(k, v)}
    values = {
        "TASK_ID": task_id,
        "WORKER_ID": worker_id,
        "CONFIG_FILE": str(config_file),
        "API_HOST": api.api_server,
        "WEB_HOST": api.web_server,
        "FILES_HOST": api.files_server,
        "OFFLINE_MODE": "0",
        "LOG_LEVEL": "INFO",
        # The agent ships the task's console itself; the SDK inside must not send it a second time.
        "LOG_TASK_TO_BACKEND": "0",
    }
    if api.credentials:
        values["API_ACCESS_KEY"] = api.credentials.access_key
        values["API_SECRET_KEY"] = api.credentials.secret_key
    for key, value in values.items():
        env[f"CLEARML_{key}"] = value
        env[f"TRAINS_{key}"] = value
    if visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible_devices
        env["NVIDIA_VISIBLE_DEVICES"] = visible_devices or "none"
    env["PYTHONUNBUFFERED"] = "1"
    return env
