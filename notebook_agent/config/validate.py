"""Type checks for the config keys notebook-agent uses; a bad value is a ConfigError naming file, line, key.

Other keys pass through untouched, as clearml-agent would keep them. Checked values are normalized in the tree
("10" -> 10, "UV" -> "uv", null -> "") so consumers can use them without converting again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyhocon import ConfigTree
from pyhocon.exceptions import ConfigException

from ..masking import is_secret_name
from .env import to_bool
from .errors import ConfigError
from .hocon import find_key_line


class _Bad(Exception):
    """Raised by a check: the value does not fit."""


@dataclass(frozen=True)
class _Rule:
    key: str
    check: Callable[[Any], Any]  # returns the normalized value, or raises _Bad
    expected: str
    example: str  # how a correct line looks


def _section(value: Any) -> Any:
    if value is None:
        return ConfigTree()
    if not isinstance(value, ConfigTree):
        raise _Bad
    return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Bad
    return value.strip()


def _url(value: Any) -> str:
    text = _text(value)
    if text and not text.lower().startswith(("http://", "https://")):
        raise _Bad
    return text


def _bool_or_path(value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    text = _text(value)
    if not text:
        raise _Bad
    try:
        return to_bool(text)
    except ValueError:
        return text  # a CA bundle path, which clearml passes to requests as `verify`


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise _Bad
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise _Bad from None
    if not math.isfinite(number):
        raise _Bad
    return number


def _positive(value: Any) -> float:
    number = _number(value)
    if number <= 0:
        raise _Bad
    return number


def _non_negative(value: Any) -> float:
    number = _number(value)
    if number < 0:
        raise _Bad
    return number


def _count(value: Any) -> int:
    number = _number(value)
    if number < 0 or not number.is_integer():
        raise _Bad
    return int(number)


def _choice(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = _text(value).lower()
        if text not in options:
            raise _Bad
        return text

    return check


def _str_list(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad
    return value


def _credential_list(value: Any) -> list[Any]:
    # agent.git.extra_credentials: [{host: ..., user: ..., pass: ...}, ...]; "username"/"password" also accepted.
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Bad
    for item in value:
        if not isinstance(item, Mapping):
            raise _Bad
        user = item.get("user", None) or item.get("username", None)
        password = item.get("pass", None) or item.get("password", None)
        if not all(isinstance(v, str) and v.strip() for v in (item.get("host", None), user, password)):
            raise _Bad
    return value


_URL = "an http(s) URL (or empty)"
_METHODS = ("get", "post", "put")
_SECONDS = "a number of seconds above 0"
_RULES: tuple[_Rule, ...] = (
    # sections first, so that the keys below them can be read
    _Rule("api", _section, "a section", "api { api_server: ... }"),
    _Rule("api.credentials", _section, "a section", 'credentials { access_key: "...", secret_key: "..." }'),
    _Rule("api.http", _section, "a section", 'http { default_method: "get" }'),
    _Rule("agent", _section, "a section", "agent { worker_name: ... }"),
    _Rule("agent.venvs_cache", _section, "a section", 'venvs_cache { path: "~/.clearml/venvs-cache" }'),
    _Rule("agent.package_manager", _section, "a section", "package_manager { type: pip }"),
    _Rule("api.api_server", _url, _URL, 'api_server: "https://api.clear.ml"'),
    _Rule("api.host", _url, _URL, 'api_server: "https://api.clear.ml"'),
    _Rule("api.web_server", _url, _URL, 'web_server: "https://app.clear.ml"'),
    _Rule("api.files_server", _url, _URL, 'files_server: "https://files.clear.ml"'),
    _Rule("api.credentials.access_key", _text, "a string", 'access_key: "..."'),
    _Rule("api.credentials.secret_key", _text, "a string", 'secret_key: "..."'),
    _Rule("api.auth_token", _text, "a string", 'auth_token: "..."'),
    _Rule("api.verify_certificate", _bool_or_path, "true, false or a CA file", "verify_certificate: true"),
    _Rule("api.http.default_method", _choice(*_METHODS), "get, post or put", "default_method: get"),
    _Rule("agent.worker_id", _text, "a string", 'worker_id: "my-machine:gpu0"'),
    _Rule("agent.worker_name", _text, "a string", 'worker_name: "my-machine"'),
    _Rule("agent.queue_poll_freq_sec", _positive, _SECONDS, "queue_poll_freq_sec: 0.25"),
    _Rule("agent.status_report_freq_sec", _positive, _SECONDS, "status_report_freq_sec: 30"),
    _Rule("agent.worker_registration_timeout_sec", _positive, _SECONDS, "worker_registration_timeout_sec: 600"),
    _Rule("agent.api_retry_total_sec", _positive, _SECONDS, "api_retry_total_sec: 12"),
    _Rule("agent.gpu_min_free_memory_gb", _non_negative, "a number of GiB, 0 or more", "gpu_min_free_memory_gb: 4"),
    _Rule("agent.venvs_cache.max_entries", _count, "a whole number, 0 or more", "max_entries: 10"),
    _Rule("agent.venvs_cache.free_space_threshold_gb", _number, "a number", "free_space_threshold_gb: 2.0"),
    _Rule("agent.venvs_cache.path", _text, "a folder path (empty: no cache)", 'path: "~/.clearml/x"'),
    _Rule(
        "agent.package_manager.type",
        _choice("pip", "conda", "poetry", "uv"),
        "pip, conda, poetry or uv",
        "type: pip",
    ),
    _Rule("agent.venvs_cache.store", _choice("auto", "folder", "archive"), "auto, folder or archive", "store: auto"),
    _Rule("agent.venvs_cache.local_path", _text, "a folder path", 'local_path: "~/.notebook_agent/venvs-local"'),
    _Rule("agent.package_manager.conda_channels", _str_list, "a list of strings", 'conda_channels: ["conda-forge"]'),
    _Rule(
        "agent.package_manager.uv_sync_extra_args",
        _str_list,
        "a list of strings",
        'uv_sync_extra_args: ["--all-extras"]',
    ),
    _Rule("agent.git_fetch_args", _str_list, "a list of strings", 'git_fetch_args: ["--all", "--tags"]'),
    _Rule(
        "agent.git.extra_credentials",
        _credential_list,
        "a list of {host, user, pass} objects, each with all three",
        'extra_credentials: [{host: "gitlab.example.com", user: "me", pass: "token"}]',
    ),
    _Rule("agent.vcs_cache", _section, "a section", 'vcs_cache { enabled: true, path: "~/.clearml/vcs-cache" }'),
    _Rule("agent.vcs_cache.path", _text, "a folder path", 'path: "~/.clearml/vcs-cache"'),
    _Rule("agent.pip_download_cache", _section, "a section", 'pip_download_cache { enabled: true, path: "~/x" }'),
    _Rule("agent.pip_download_cache.path", _text, "a folder path", 'path: "~/.clearml/pip-download-cache"'),
    _Rule("agent.default_docker", _section, "a section", 'default_docker { image: "python:3.11" }'),
    _Rule("agent.default_docker.image", _text, "an image name", 'image: "python:3.11"'),
    _Rule("agent.extra_docker_shell_script", _str_list, "a list of strings", 'extra_docker_shell_script: ["ls"]'),
    _Rule("agent.uptime", _str_list, "a list of strings", 'uptime: ["17-20 SUN,TUE"]'),
    _Rule("agent.downtime", _str_list, "a list of strings", 'downtime: ["0-6 SAT,SUN"]'),
    _Rule("agent.notebook", _section, "a section", "notebook { shutdown: abort }"),
    _Rule("agent.notebook.shutdown", _choice("abort", "drain"), "abort or drain", "shutdown: drain"),
    _Rule("agent.notebook.drain_timeout_sec", _positive, _SECONDS, "drain_timeout_sec: 60"),
    _Rule("agent.log_spool", _section, "a section", "log_spool { max_bytes: 268435456 }"),
    _Rule(
        "agent.log_spool.max_bytes",
        lambda value: _count(_positive(value)),
        "a whole number of bytes above 0",
        "max_bytes: 268435456",
    ),
)


def validate_tree(
    tree: ConfigTree,
    *,
    text: str = "",
    path: Path | str | None = None,
    sources: Mapping[str, str] | None = None,
) -> None:
    """Check and normalize the keys we use in `tree` (defaults merged with the file `path` holding `text`).

    `sources` maps keys that environment variables set to the variable's name, so that the error names it.
    """
    for rule in _RULES:
        try:
            value = tree.get(rule.key)
        except (ConfigException, KeyError):
            continue  # absent (only keys without a default, e.g. api.host)
        try:
            normalized = rule.check(value)
        except _Bad:
            got = f"expected {rule.expected}, got {_describe(value, rule.key)}"
            var = (sources or {}).get(rule.key)
            if var:
                raise ConfigError(
                    f"bad environment variable value (it sets {rule.key}): {got}",
                    key=var,
                    fix=f"set {var} to {rule.expected}, or unset it",
                ) from None
            raise ConfigError(
                got,
                path=path,
                line=find_key_line(text, rule.key) if text else None,
                key=rule.key,
                fix=f"set {rule.key} to {rule.expected}, e.g. {rule.example}",
            ) from None
        if normalized is not value:
            tree.put(rule.key, normalized)


def _describe(value: Any, key: str) -> str:
    """What the value is, without showing a secret."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, ConfigTree):
        return "a section { ... }"
    if isinstance(value, list):
        return "a list"
    kind = "the string" if isinstance(value, str) else "the number"
    if is_secret_name(key):
        return kind.replace("the ", "a ")
    shown = repr(value) if isinstance(value, str) else str(value)
    return f"{kind} {shown[:40]}"
