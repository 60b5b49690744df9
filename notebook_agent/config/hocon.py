"""HOCON helpers: parse text (ConfigError on bad syntax), quote a string, find the line of a key.

pyhocon reports syntax errors as pyparsing exceptions; here they become ConfigErrors with the file, the line
and a short excerpt of that line (with any secret on it hidden).
"""

from __future__ import annotations

import re
from pathlib import Path

from pyhocon import ConfigFactory, ConfigTree
from pyhocon.exceptions import ConfigException, ConfigSubstitutionException
from pyparsing import ParseBaseException

from ..masking import is_secret_name, mask_url
from .errors import ConfigError

_SYNTAX_FIX = (
    'check the brackets and quotes near this line; values holding spaces, "#" or "//" need double quotes, '
    "and every { needs its }"
)

# The escapes pyhocon decodes inside a double-quoted string (it does not decode \uXXXX, so other characters
# are written as they are).
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(value: str) -> str:
    """`value` as a double-quoted HOCON string that pyhocon reads back unchanged."""
    return '"' + "".join(_ESCAPES.get(c, c) for c in value) + '"'


def parse_text(text: str, path: Path | str | None = None) -> ConfigTree:
    """Parse HOCON `text` read from `path` (which anchors relative includes); ConfigError when invalid."""
    basedir = str(Path(path).parent) if path is not None else None
    try:
        tree = ConfigFactory.parse_string(text, basedir=basedir)
    except ParseBaseException as exc:
        # exc.msg is pyparsing's "Expected ..." without the "found <text>" part, which could be a secret.
        raise _syntax_error(text, path, exc.lineno, exc.col, exc.loc, exc.msg) from None
    except ConfigSubstitutionException as exc:
        found = re.search(r"\(line: (\d+)", str(exc))
        variable = re.search(r"\$\{\??([^}]+)\}", str(exc))
        name = variable.group(0) if variable else "a ${...} substitution"
        raise ConfigError(
            f"cannot resolve {name}",
            path=path,
            line=int(found.group(1)) if found else None,
            fix="define the referenced key in this file, or write ${?NAME} to make it optional",
        ) from None
    except OSError as exc:  # include required("...") of a file that is not there
        raise ConfigError(
            f"cannot read the included file {exc.filename}", path=path, fix="fix or remove the include line"
        ) from None
    except ConfigException as exc:
        # Other pyhocon errors (conflicting types...): their text may quote values, so name the type only.
        raise ConfigError(f"pyhocon could not read the file ({type(exc).__name__})", path=path) from None
    if not isinstance(tree, ConfigTree):  # a file that is a bare list: [1, 2]
        raise ConfigError("expected key: value settings, found a list", path=path, fix="use api { } sections")
    return tree


def _syntax_error(text: str, path: Path | str | None, lineno: int, col: int, loc: int, message: str) -> ConfigError:
    lines = text.splitlines()
    at_end = not text[loc:].strip()
    if lines and lineno > len(lines):  # "found end of text": the last line lacks a } or ]
        lineno, col = len(lines), 0
    source_line = lines[lineno - 1] if 0 < lineno <= len(lines) else ""
    excerpt = _excerpt(source_line)
    problem = f"HOCON syntax error: {message}, found {_found(text, loc, source_line, at_end)}"
    if excerpt:
        problem += f" in: {excerpt}"
    return ConfigError(problem, path=path, line=lineno, column=col or None, fix=_SYNTAX_FIX)


def _found(text: str, loc: int, line: str, at_end: bool) -> str:
    """The token where parsing stopped, quoted; hidden when its line may hold a secret."""
    if at_end:
        return "the end of the file"
    rest = text[loc:].lstrip(" \t")  # not past the line: the next line may hold a secret
    if rest.startswith(("\n", "\r")):
        return "the end of the line"
    token = re.match(r"\S{1,20}", rest)
    if token is None or is_secret_name(line) or is_secret_name(token.group()):
        return "a token on a line that may hold a secret (not shown)"
    return repr(mask_url(token.group()))


def _excerpt(line: str, limit: int = 80) -> str:
    """The offending line, trimmed, with the value hidden when the line may hold a secret."""
    line = mask_url(line.strip())
    if is_secret_name(line):
        key = re.match(r'\s*("?[\w.\-]+"?\s*[:=]?)', line)
        line = f"{key.group(1).rstrip()} ****" if key else "(hidden: the line may hold a secret)"
    return line if len(line) <= limit else line[: limit - 3] + "..."


# -- where is a key? ---------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r'(?P<quoted>"(?:[^"\\]|\\.)*")|(?P<open>[{\[])|(?P<close>[}\]])|(?P<sep>[:=,])|(?P<word>[^\s"{}\[\]:=,#]+)'
)


def find_key_line(text: str, key: str) -> int | None:
    """The 1-based line where dotted `key` (e.g. "agent.venvs_cache.path") is last set in `text`, if found.

    A light scanner that tracks `name {` nesting and dotted names; the last match wins, as in HOCON. It is
    best-effort: keys inside lists, includes or multi-line strings are not found.
    """
    found: int | None = None
    stack: list[tuple[str, str | None]] = []  # ("{", name) for objects, ("[", None) for lists
    for lineno, raw in enumerate(text.splitlines(), start=1):
        expect_key = not stack or stack[-1][0] == "{"
        pending: str | None = None  # a name that may be a key
        opened_by: str | None = None  # the key whose ":" we just saw; a following "{" opens its object
        for tok in _TOKEN.finditer(_strip_comment(raw)):
            kind, value = tok.lastgroup, tok.group()
            if kind in ("quoted", "word"):
                if expect_key and pending is None:
                    pending = value.strip('"')
                else:
                    opened_by = None  # a value
                expect_key = False
            elif kind == "sep" and value == ",":
                pending, opened_by, expect_key = None, None, bool(not stack or stack[-1][0] == "{")
            elif kind == "sep":
                if pending is not None and _full_key(stack, pending) == key:
                    found = lineno
                opened_by, pending = pending, None
            elif value == "{":
                name = pending if pending is not None else opened_by
                if pending is not None and _full_key(stack, pending) == key:
                    found = lineno
                stack.append(("{", name))
                pending, opened_by, expect_key = None, None, True
            elif value == "[":
                stack.append(("[", None))
                pending, opened_by, expect_key = None, None, False
            else:  # } or ]
                if stack:
                    stack.pop()
                pending, opened_by = None, None
                expect_key = not stack or stack[-1][0] == "{"
    return found


def _full_key(stack: list[tuple[str, str | None]], name: str) -> str | None:
    if any(kind == "[" for kind, _ in stack):
        return None  # inside a list: no dotted path reaches it
    return ".".join([n for _, n in stack if n] + [name])


def _strip_comment(line: str) -> str:
    """Cut a # or // comment (outside quotes; // only at the start or after a space, so URLs survive)."""
    in_quotes = False
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and in_quotes:
            i += 2
            continue
        if c == '"':
            in_quotes = not in_quotes
        elif not in_quotes and (c == "#" or (line.startswith("//", i) and (i == 0 or line[i - 1].isspace()))):
            return line[:i]
        i += 1
    return line
