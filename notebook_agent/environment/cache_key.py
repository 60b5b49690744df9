"""The venv cache key: normalized requirements, the interpreter's identity and what makes a build uncacheable."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Mapping
from typing import Any

from notebook_agent.environment import agent_site
from notebook_agent.environment.commands import run
from notebook_agent.environment.errors import EnvironmentSetupError
from notebook_agent.environment.reporter import NullReporter

# Bumped when the entry layout or the key's meaning changes, so old entries are never taken for new ones.
CACHE_FORMAT = 1

_COMMENT = re.compile(r"(^|\s+)#.*$")
# A requirement's name (and extras) when followed by a specifier, a marker, a URL (`@`) or nothing.
_NAME = re.compile(r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(\[[^\]]*\])?\s*(?=$|[<>=!~;@(,\s])")
_AROUND_PUNCT = re.compile(r" ?([<>=!~,;()\[\]@\"'&|]) ?")
_FILE_OPTIONS = {"-r", "--requirement", "-c", "--constraint", "-e", "--editable"}
_LOCATION_OPTIONS = {"-f", "--find-links", "-i", "--index-url", "--extra-index-url"}
_ARCHIVES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")


# --- the key -------------------------------------------------------------------------------------------------


def normalize_requirements(text: str) -> list[str]:
    """Requirements text as the key sees it: no comments, blank lines or stray whitespace; names lowercased
    (PEP 503); option lines (`-r`, `--extra-index-url`, ...) first in their order, then the requirements sorted."""
    options: list[str] = []
    requirements: list[str] = []
    for line in _logical_lines(text):
        if line.startswith("-"):
            options.append(" ".join(line.split()))
        else:
            requirements.append(_normalize_requirement(line))
    return options + sorted(requirements)


def cache_key(inputs: Mapping[str, Any], requirements: str) -> str:
    """The entry name for `requirements` built with `inputs` (package manager, interpreter identity, platform,
    system-site-packages, pip arguments): 32 hex digits of a sha256."""
    payload = {"format": CACHE_FORMAT, "inputs": inputs, "requirements": normalize_requirements(requirements)}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def local_requirement(text: str) -> str | None:
    """The first line that makes `text` depend on files outside it (`-e .`, `./pkg`, `file:`, a wheel path,
    `-r`/`-c` of another file, `--find-links ./dir`), else None. Such requirements are not cached: what they install
    changes with the checked-out code. Editable installs are among them (they point at a path inside the venv)."""
    for line in _logical_lines(text):
        if line.startswith("-"):
            option, value = _split_option(line)
            if option in _FILE_OPTIONS or (option in _LOCATION_OPTIONS and _is_local_location(value)):
                return line
        elif _is_local_spec(line.split(";", 1)[0].strip()):
            return line
    return None


def _logical_lines(text: str) -> list[str]:
    # As pip reads a requirements file: `\` continues a line, `#` at the start or after whitespace starts a comment.
    lines: list[str] = []
    pending = ""
    for raw in [*text.splitlines(), ""]:
        stripped = raw.rstrip()
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = _COMMENT.sub("", pending + stripped).strip()
        pending = ""
        if line:
            lines.append(line)
    return lines


def _normalize_requirement(line: str) -> str:
    match = _NAME.match(line)
    head, rest = "", line
    if match:
        head = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        if match.group(2):
            extras = sorted(re.sub(r"[-_.]+", "-", e.strip()).lower() for e in match.group(2)[1:-1].split(","))
            head += "[" + ",".join(e for e in extras if e) + "]"
        rest = line[match.end() :]
    return head + _AROUND_PUNCT.sub(r"\1", " ".join(rest.split()))


def _split_option(line: str) -> tuple[str, str]:
    head, _, tail = " ".join(line.split()).partition(" ")
    if head.startswith("--"):
        option, eq, value = head.partition("=")
        return option, (value if eq else tail).strip()
    return head[:2], (head[2:] or tail).strip()


def _is_local_location(value: str) -> bool:
    lowered = value.lower()
    return bool(value) and (lowered.startswith("file:") or "://" not in value)


def _is_local_spec(spec: str) -> bool:
    lowered = spec.lower()
    if lowered.startswith((".", "/", "~")) or "file:" in lowered:
        return True
    if "://" in spec:
        return False  # a URL or VCS requirement: the same for every checkout
    return "/" in spec or "\\" in spec or lowered.endswith(_ARCHIVES)


# --- the interpreter ------------------------------------------------------------------------------------------

_PROBE = (
    "import json, os, sys, sysconfig; print(json.dumps({'executable': os.path.realpath(sys.executable), "
    "'version': sys.version, 'implementation': sys.implementation.name, 'platform': sysconfig.get_platform()}))"
)
_identities: dict[tuple[str, str, int, int], dict[str, str]] = {}
_identities_lock = threading.Lock()


def interpreter_inputs(python: str, system_site_packages: bool, env: Mapping[str, str]) -> dict[str, Any]:
    """The key's part for a venv of interpreter `python`: its identity, whether it sees system site packages and,
    when those mean the agent's own environment, which one (agent_site)."""
    return {
        "python": interpreter_identity(python, env),
        "system_site_packages": system_site_packages,
        **agent_site.cache_key_inputs(python, system_site_packages, env),
    }


def interpreter_identity(python: str, env: Mapping[str, str]) -> dict[str, str]:
    """What the key needs to know of interpreter `python` (a path or a name on env's PATH): its resolved path,
    full version (`sys.version`), implementation and `sysconfig.get_platform()`. Remembered per binary, except for
    wrapper scripts (pyenv shims) whose target can change under the same file."""
    found = shutil.which(python, path=env.get("PATH"))
    if found is None:
        raise EnvironmentSetupError(f"python not found: {python}")
    real = os.path.realpath(found)
    stat = os.stat(real)
    memo = (found, real, stat.st_mtime_ns, stat.st_size)
    cacheable = not _is_script(real)
    if cacheable:
        with _identities_lock:
            if memo in _identities:
                return dict(_identities[memo])
    result = run(
        [found, "-I", "-S", "-c", _PROBE], cwd=None, env=env, reporter=NullReporter(), capture=True, quiet=True
    )
    try:
        identity = {str(k): str(v) for k, v in json.loads(result.stdout.strip().splitlines()[-1]).items()}
    except (ValueError, IndexError, AttributeError):
        raise EnvironmentSetupError(f"cannot run python {python}: {result.stderr.strip() or 'no output'}") from None
    if cacheable:
        with _identities_lock:
            _identities[memo] = dict(identity)
    return identity


def _is_script(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"#!"
    except OSError:
        return False
