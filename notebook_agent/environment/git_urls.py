"""Repository URL rewrites of clearml-agent: ssh to https when git credentials are set, or https to ssh on demand."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

# git@host:group/repo.git  or  ssh://git@host[:port]/group/repo.git
_SCP = re.compile(r"^(?P<user>[\w.-]+)@(?P<host>[\w.-]+):(?!\d+/)(?P<path>.+)$")


def _ssh_parts(url: str) -> tuple[str, str] | None:
    """(host, path) of an ssh URL in either spelling; None for anything else."""
    scp = _SCP.match(url)
    if scp:
        return scp["host"], scp["path"].lstrip("/")
    parts = urlsplit(url)
    if parts.scheme == "ssh" and parts.hostname:
        return parts.hostname, parts.path.lstrip("/")
    return None


def ssh_to_https(url: str) -> str:
    """`git@host:group/repo.git` -> `https://host/group/repo.git` (so user/password credentials apply)."""
    parts = _ssh_parts(url)
    return f"https://{parts[0]}/{parts[1]}" if parts else url


def https_to_ssh(url: str, *, user: str = "git", port: int | None = None) -> str:
    """`https://host/group/repo.git` -> `git@host:group/repo.git` (or `ssh://user@host:port/...` with a port)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return url
    path = parts.path.lstrip("/")
    if port:
        return f"ssh://{user}@{parts.hostname}:{port}/{path}"
    return f"{user}@{parts.hostname}:{path}"


def rewrite(
    url: str,
    *,
    has_credentials: bool,
    translate_ssh: bool = True,
    force_ssh: bool = False,
    ssh_user: str = "git",
    ssh_port: int | None = None,
) -> str:
    """The URL to clone, by clearml-agent's rules: force_git_ssh_protocol wins; else with git user/password set,
    ssh URLs become https (translate_ssh) so the credentials can be used."""
    if force_ssh:
        return https_to_ssh(url, user=ssh_user or "git", port=ssh_port)
    if has_credentials and translate_ssh:
        return ssh_to_https(url)
    return url


def repository_host(url: str) -> str:
    """The host a repository URL points at (either ssh spelling or a URL), lower case; "" for local paths."""
    parts = _ssh_parts(url)
    if parts:
        return parts[0].lower()
    return (urlsplit(url).hostname or "").lower()


def credentials_for(
    url: str,
    *,
    user: str,
    password: str,
    host: str = "",
    extra: Sequence[Mapping[str, str]] = (),
) -> tuple[str, str]:
    """The git user and password for `url`, as clearml-agent picks them: an `agent.git.extra_credentials` entry
    whose host matches wins; else agent.git_user/git_pass unless agent.git_host names another host; else none."""
    target = repository_host(url)
    for entry in extra:
        e_user = entry.get("user") or entry.get("username") or ""
        e_pass = entry.get("pass") or entry.get("password") or ""
        e_host = (entry.get("host") or "").strip().lower().split(":")[0]
        if e_user and e_pass and e_host and e_host == target:
            return e_user, e_pass
    if host and host.strip().lower().split(":")[0] != target:
        return "", ""
    return (user, password) if user and password else ("", "")
