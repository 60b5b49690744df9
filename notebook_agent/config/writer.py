"""Write pasted credentials into clearml.conf without ever overwriting a user's file.

A new file is created 0600 (never readable by others, not even for a moment) and moved into place atomically.
An existing file is only appended to (an `agent {}` section, or the `api {}` block when it has no
credentials); credentials already in it are never changed.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyhocon import ConfigTree
from pyhocon.exceptions import ConfigException

from ..masking import mask
from .errors import ConfigError
from .hocon import parse_text, quote
from .loader import config_path, read_text
from .paste import PastedCredentials

_HEADER = (
    "# ClearML configuration, written by notebook-agent; clearml, clearml-agent and notebook-agent read it.\n"
    "# It holds your ClearML credentials: keep it private (it was created readable by you only).\n"
)

AGENT_SECTION = """agent {
    # Read by notebook-agent and clearml-agent. Uncomment a line to change its default.
    # worker_name: "my-notebook"
    # package_manager.type: pip          # pip, conda, poetry or uv
    # venvs_cache.path: "~/.clearml/venvs-cache"
    # vcs_cache.path: "~/.clearml/vcs-cache"
    # git_user: ""
    # git_pass: ""                       # a personal access token works here
    # queue_poll_freq_sec: 0.25
}
"""


@dataclass(frozen=True)
class WriteResult:
    """What write_credentials / ensure_agent_section did; `message` says it in a sentence for the user."""

    path: Path
    created: bool
    added_agent_section: bool
    message: str
    wrote_credentials: bool = False  # False when the file already had credentials (ours or others)


def api_section(creds: PastedCredentials) -> str:
    """The `api {}` block for `creds`, laid out like the web app's, every value quoted."""
    lines = ["api {"]
    lines += [f"    {key}: {quote(getattr(creds, key))}" for key in _HOSTS if getattr(creds, key)]
    lines += [
        "    credentials {",
        f'        "access_key" = {quote(creds.access_key)}',
        f'        "secret_key" = {quote(creds.secret_key)}',
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


_HOSTS = ("api_server", "web_server", "files_server")


def write_api_config(path: Path, creds: PastedCredentials, header: str = "") -> Path:
    """(Re)write a clearml.conf of ours holding only `creds`' api section: 0600 from creation, replaced atomically.

    For files the agent owns (the embedded server's client config, a task's config); a user's clearml.conf goes
    through write_credentials, which never replaces anything.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask can only have removed bits
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            out.write(header + api_section(creds))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_credentials(creds: PastedCredentials, path: Path | str | None = None) -> WriteResult:
    """Store `creds` in clearml.conf (`path`, default config_path()) without replacing anything there."""
    file = Path(path).expanduser() if path is not None else config_path()
    with _os_errors(file):
        return _write_credentials(creds, file)


def _write_credentials(creds: PastedCredentials, file: Path) -> WriteResult:
    text = read_text(file)
    if text is None and _create(file, _HEADER + "\n" + api_section(creds) + "\n" + AGENT_SECTION):
        _check_written(file, creds)
        return WriteResult(file, True, True, f"Wrote {file} with your ClearML credentials.", True)
    text = read_text(file) if text is None else text  # someone else created it meanwhile
    tree = parse_text(text or "", file)

    old_key, old_secret = _get(tree, "api.credentials.access_key"), _get(tree, "api.credentials.secret_key")
    # Either half present counts as "has credentials": those are the user's, never ours to replace.
    add_creds = not (old_key or old_secret)
    addition, notes = "", []
    if add_creds:
        addition += api_section(creds)
        notes.append(f"Added your ClearML credentials to {file}.")
    elif (old_key, old_secret) == (creds.access_key, creds.secret_key):
        notes.append(f"{file} already holds these credentials; left them as they are.")
    else:
        notes.append(
            f"{file} already holds other ClearML credentials (access key {mask(old_key)}); left them "
            "unchanged. To use the new ones, edit that file or set CLEARML_API_ACCESS_KEY and "
            "CLEARML_API_SECRET_KEY."
        )
    has_agent = "agent" in tree
    if not has_agent:
        addition += AGENT_SECTION
        notes.append("Added an agent {} section.")
    if addition:
        if add_creds and not isinstance(tree.get("api", None), (ConfigTree, type(None))):
            raise ConfigError(
                "api is not a section, so credentials cannot be added",
                path=file,
                key="api",
                fix="make it api { ... } (or remove it) and paste the credentials again",
            )
        _append(file, text or "", addition, creds if add_creds else None)
    return WriteResult(file, False, not has_agent, " ".join(notes), add_creds)


def ensure_agent_section(path: Path | str | None = None) -> WriteResult:
    """Append an `agent {}` section to the config file if it has none (creating it, 0600, if missing)."""
    file = Path(path).expanduser() if path is not None else config_path()
    with _os_errors(file):
        return _ensure_agent_section(file)


def _ensure_agent_section(file: Path) -> WriteResult:
    text = read_text(file)
    if text is None and _create(file, _HEADER + "\n" + AGENT_SECTION):
        return WriteResult(file, True, True, f"Wrote {file} with an agent {{}} section.")
    text = read_text(file) if text is None else text
    if "agent" in parse_text(text or "", file):
        return WriteResult(file, False, False, f"{file} already has an agent {{}} section.")
    _append(file, text or "", AGENT_SECTION)
    return WriteResult(file, False, True, f"Added an agent {{}} section to {file}.")


@contextmanager
def _os_errors(file: Path) -> Iterator[None]:
    """Report a file-system failure (no permission, read-only disk) as a ConfigError about `file`."""
    try:
        yield
    except OSError as exc:
        raise ConfigError(
            f"cannot be written ({exc.strerror or type(exc).__name__})",
            path=file,
            fix="check that its folder exists and is writable, or pass another path",
        ) from None


def _get(tree: ConfigTree, key: str) -> str:
    try:
        value = tree.get(key, None)
    except ConfigException:  # a path through a non-section value: api: "x"
        return ""
    return "" if value is None or isinstance(value, ConfigTree) else str(value)


def _create(file: Path, content: str) -> bool:
    """Create `file` holding `content`, mode 0600, atomically; False (and nothing written) if it exists."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{secrets.token_hex(6)}.tmp")
    # O_EXCL + 0o600 at creation: the credentials are never in a file others can read.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may have removed bits we need; it can never have added any
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        try:
            # A hard link fails if the file appeared meanwhile, so a user's file is never replaced.
            os.link(tmp, file)
        except FileExistsError:
            return False
        except OSError:
            # Some filesystems (e.g. FUSE mounts like Google Drive) have no hard links.
            if file.exists():
                return False
            os.replace(tmp, file)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _append(file: Path, text: str, addition: str, creds: PastedCredentials | None = None) -> None:
    """Append `addition` after the file's last byte, first making the file at most 0600 (it holds keys).

    The result is parsed (and, with `creds`, checked) in memory first, so a file is never left half-changed.
    """
    addition = ("\n" if text.endswith("\n") or not text else "\n\n") + addition
    tree = parse_text(text + addition, file)
    if creds is not None:
        _check_tree(tree, creds, file)
    mode = stat.S_IMODE(file.stat().st_mode)
    if mode & ~0o600:
        os.chmod(file, mode & 0o600)
    with open(file, "a", encoding="utf-8", newline="\n") as out:
        out.write(addition)
    if creds is not None:
        _check_written(file, creds)


def _check_written(file: Path, creds: PastedCredentials) -> None:
    """Read the file back and make sure the credentials in effect are the ones we wrote."""
    _check_tree(parse_text(read_text(file) or "", file), creds, file)


def _check_tree(tree: ConfigTree, creds: PastedCredentials, file: Path) -> None:
    values = {key: _get(tree, f"api.{key}") for key in _HOSTS if getattr(creds, key)}
    values["access_key"] = _get(tree, "api.credentials.access_key")
    values["secret_key"] = _get(tree, "api.credentials.secret_key")
    if any(getattr(creds, key) != value for key, value in values.items()):
        raise ConfigError(
            "the credentials read back differ from the ones written",
            path=file,
            fix="open the file and check its api { ... } section",
        )
