"""Read ClearML credentials from what a user pastes: the web app's api { ... } block or its %env lines.

The web app's "Create new credentials" dialog shows both forms (LOCAL PYTHON and JUPYTER NOTEBOOK tabs);
people also paste a whole clearml.conf, the block without `api {`, or `export`/`os.environ[...]` lines.
A small tolerant scanner is used instead of pyhocon: a partial copy (a missing `}`) still works, and an
unquoted secret holding "#" or "$" is not cut short or taken for a substitution.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from ..masking import mask
from .errors import ConfigError
from .model import derive_server_urls

_DIALOG = "Settings > Workspace > Create new credentials"
_WHAT_TO_PASTE = f"paste the api {{ ... }} block from {_DIALOG}, or the %env CLEARML_* lines"

_REQUIRED = ("access_key", "secret_key", "api_server")
_SECRET = ("access_key", "secret_key")


@dataclass(frozen=True)
class PastedCredentials:
    """Server addresses (no trailing slash) and the key pair read from a paste."""

    api_server: str
    web_server: str
    files_server: str
    access_key: str
    secret_key: str

    def __repr__(self) -> str:
        return (
            f"PastedCredentials(api_server={self.api_server!r}, web_server={self.web_server!r}, "
            f"files_server={self.files_server!r}, access_key={mask(self.access_key)!r}, "
            f"secret_key={mask(self.secret_key, keep=0)!r})"
        )

    __str__ = __repr__


# -- environment-variable lines -----------------------------------------------------------------------------

_ENV_NAMES = {
    "API_HOST": "api_server",
    "WEB_HOST": "web_server",
    "FILES_HOST": "files_server",
    "API_ACCESS_KEY": "access_key",
    "API_SECRET_KEY": "secret_key",
}
_NAME = r"(?P<name>(?:CLEARML|TRAINS)_(?:API_HOST|WEB_HOST|FILES_HOST|API_ACCESS_KEY|API_SECRET_KEY))"
_ENV_LINES = (
    # IPython: %env NAME=VALUE, %env NAME VALUE, %set_env NAME=VALUE (the value is taken literally)
    (re.compile(rf"^%(?:set_)?env\s+{_NAME}(?:\s*=\s*|\s+)(?P<value>.*)$"), "literal"),
    # Python: os.environ["NAME"] = "VALUE"  /  os.environ.setdefault("NAME", "VALUE")
    (re.compile(rf"^os\.environ\[\s*(?P<q>['\"]){_NAME}(?P=q)\s*\]\s*=\s*(?P<value>.+?);?$"), "python"),
    (
        re.compile(rf"^os\.environ\.setdefault\(\s*(?P<q>['\"]){_NAME}(?P=q)\s*,\s*(?P<value>.+?)\s*\);?$"),
        "python",
    ),
    # shell: export NAME=VALUE, NAME=VALUE, !export NAME=VALUE, set NAME=VALUE (Windows)
    (re.compile(rf"^!?\s*(?:export\s+|set\s+)?{_NAME}\s*=\s*(?P<value>.*?);?$"), "shell"),
)


def _env_value(raw: str, style: str) -> str:
    raw = raw.strip()
    if style == "python":
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return ""
        return value if isinstance(value, str) else ""
    if style == "shell" and len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1] if raw[0] == "'" else re.sub(r"\\(.)", r"\1", raw[1:-1])
    if style == "shell":
        return raw.split(" #", 1)[0].strip()
    return raw


def _from_env_lines(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        for pattern, style in _ENV_LINES:
            match = pattern.match(line)
            if match:
                field = _ENV_NAMES[match.group("name").split("_", 1)[1]]
                value = _env_value(match.group("value"), style)
                if value:
                    found[field] = value
                break
    return found


# -- the api { ... } block ----------------------------------------------------------------------------------

_QUOTED = r'"(?:[^"\\\n]|\\.)*"'
_BLOCK_FIELD = re.compile(
    rf"""(?<![\w])(?P<q>"?)(?P<key>api_server|web_server|files_server|access_key|secret_key)(?P=q)
        \s*[:=]\s*
        (?P<value>{_QUOTED}|'[^'\n]*'|[^\s,}}\]"']+)""",
    re.VERBOSE,
)
_HOCON_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}


def _strip_comment_lines(text: str) -> str:
    # Whole-line comments only: a full clearml.conf has commented-out alternatives ("# api_server: ...").
    # Inline comments need no care, as an unquoted value ends at the first space.
    return "\n".join("" if line.lstrip().startswith(("#", "//")) else line for line in text.splitlines())


def _block_value(raw: str) -> str:
    if raw.startswith('"'):
        return re.sub(r"\\(.)", lambda m: _HOCON_ESCAPES.get(m.group(1), m.group(1)), raw[1:-1])
    if raw.startswith("'"):
        return raw[1:-1]
    return raw


def _from_block(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for match in _BLOCK_FIELD.finditer(_strip_comment_lines(text)):
        # Not the old "host" name of api_server: sdk.aws.s3.credentials entries have a "host" too.
        value = _block_value(match.group("value"))
        if value and not value.startswith("${"):  # a substitution is not a value we can use
            found[match.group("key")] = value  # the last one wins, as in HOCON
    return found


# -- public -------------------------------------------------------------------------------------------------


def _host(value: str) -> str:
    value = value.strip().rstrip("/")
    if value and "://" not in value:
        # clearml-init's rule: a host with a port is plain http, one without is https.
        value = ("http://" if ":" in value else "https://") + value
    return value


def parse_pasted(text: str) -> PastedCredentials:
    """Read the servers and key pair from pasted text; ConfigError naming what is missing otherwise.

    Hosts lose their trailing slash; a missing web/files host is derived from the api host as clearml does.
    The error never repeats the pasted text.
    """
    found = _from_block(text)
    found.update(_from_env_lines(text))  # the %env form wins if someone pasted both
    missing = [f for f in _REQUIRED if not found.get(f, "").strip()]
    if missing:
        problem = f"the pasted text has no {', '.join(missing)}"
        if len(missing) == len(_REQUIRED):
            problem = "found no ClearML credentials: " + problem
        raise ConfigError(
            problem,
            key=("api.credentials." if missing[0] in _SECRET else "api.") + missing[0],
            fix=_WHAT_TO_PASTE,
        )
    api_server = _host(found["api_server"])
    if any(c.isspace() for c in api_server):
        raise ConfigError("the pasted api_server is not a URL", key="api.api_server", fix=_WHAT_TO_PASTE)
    web, files = derive_server_urls(
        api_server, _host(found.get("web_server", "")), _host(found.get("files_server", ""))
    )
    return PastedCredentials(
        api_server=api_server,
        web_server=web,
        files_server=files,
        access_key=found["access_key"].strip(),
        secret_key=found["secret_key"].strip(),
    )
