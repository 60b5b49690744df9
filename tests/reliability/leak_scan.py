"""The secret-leak scan of the fault matrix: while a test runs, collect every text a user, a log file or another
process could read, and at the end fail if any piece of a known fake secret is in one of them.

Scanned (`where` names in a finding):
- `log <logger>`: every logging record of any logger at DEBUG (the root logger is lowered to DEBUG for the test):
  the message with its args, the exception and stack text;
- `event <Type>`: every event published on any EventBus (its repr and every field as str);
- `APIError`: the message of every APIError created (the client's errors, raised or not);
- `stdout` / `stderr`: the test process's output (capfd, so children writing to inherited fds too);
- `argv`: the arguments of every process started: subprocess.Popen's args, and the command lines of the test
  process's children, recursively, sampled by psutil every ~50 ms;
- `server <dir> event of task <id>` / `server <dir> <kind> <id> <field>`: every task log event and every stored
  document (task fields, workers, queues, projects) of each embedded server started during the test and of every
  server.db under the test's tmp_path (servers run in subprocesses), read at the end; their key pairs and token
  secrets join the secrets;
- `text <name>`: whatever the test hands to `add_text` (reprs of Session, Config, KeyPair, Agent, widgets...).

Not scanned, because they hold secrets by design: clearml.conf files (the writer's, the embedded server's, the one
a task's work dir gets), the environment of task processes and of git (GIT_ASKPASS reads the password from it),
the embedded server's key store and token secret (its `settings` table), the Authorization headers on the wire,
the notebook form's Password field (and the access key's own input field), and the test's own variables.
`allow(pattern)` exempts more places for one test (e.g. a task's `script.repository` that the test itself set to a
URL with a password).

What counts as a leak: any `piece` (8) consecutive characters of a secret, password or token (16 for hex-only
secrets such as the server's token secret, so random ids cannot match by chance; the signature of a JWT, whose
header and claims are not secret); for an access key also its first `prefix` characters, i.e. more than mask()
shows.
"""

from __future__ import annotations

import base64
import bisect
import dataclasses
import fnmatch
import json
import logging
import os
import sqlite3
import string
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

from notebook_agent.api import session as session_module
from notebook_agent.api.errors import APIError
from notebook_agent.engine.events import EventBus
from notebook_agent.masking import mask
from notebook_agent.server import EmbeddedServer
from notebook_agent.server import auth as server_auth
from notebook_agent.server.services import system as system_service

SAMPLE_SEC = 0.05
MAX_FINDINGS = 20
_HEX = frozenset(string.hexdigits)


@dataclasses.dataclass(frozen=True)
class Secret:
    label: str
    value: str
    pieces: frozenset[str]


@dataclasses.dataclass(frozen=True)
class Leak:
    secret: str  # the label
    where: str
    snippet: str  # the context, every known secret in it masked

    def __str__(self) -> str:
        return f"{self.secret} in {self.where}: {self.snippet!r}"


def pieces_of(value: str, piece: int = 8, prefix: int = 0) -> set[str]:
    """Every run of `piece` characters of `value` (the whole value when shorter), plus its first `prefix`."""
    found = {value[i : i + piece] for i in range(max(1, len(value) - piece + 1))}
    if prefix:
        found.add(value[:prefix])
    return found


def basic_auth(access_key: str, secret_key: str) -> str:
    """The base64 of an `Authorization: Basic` header, itself a secret (it decodes to the pair)."""
    return base64.b64encode(f"{access_key}:{secret_key}".encode()).decode()


class LeakScan:
    """Collects texts while started, and finds the registered secrets in them. Scans nest: an inner one (the
    self-check) wraps the hooks of the outer one and is stopped first."""

    def __init__(self, sample_sec: float = SAMPLE_SEC) -> None:
        self.sample_sec = sample_sec
        self._secrets: dict[str, Secret] = {}
        self._allowed: list[str] = []
        self._texts: list[tuple[str, str]] = []
        self._argv: set[str] = set()
        self._databases: dict[Path, str] = {}  # server.db -> the name findings give its server
        self._lock = threading.Lock()
        self._stack: ExitStack | None = None
        self._capture: Any = None

    # what to look for ---------------------------------------------------------------------------------------
    def register(self, value: str | None, label: str = "registered secret", *, piece: int = 8, prefix: int = 0) -> None:
        """Look for `value` (and its URL-encoded form) in everything collected."""
        if not value:
            return
        if all(c in _HEX for c in value):
            piece = max(piece, 16)
        found = pieces_of(value, piece, prefix)
        encoded = quote(value, safe="")
        if encoded != value:
            found |= pieces_of(encoded, piece)
        with self._lock:
            known = self._secrets.get(value)
            self._secrets[value] = Secret(known.label if known else label, value, frozenset(found))

    def register_token(self, token: str | None, label: str = "JWT") -> None:
        """A JWT: its signature is the secret part (every token of a server shares the header)."""
        if token:
            self.register(token.rsplit(".", 1)[-1], label)

    def allow(self, pattern: str) -> None:
        """Exempt the places whose `where` matches the fnmatch `pattern` (say why at the call)."""
        self._allowed.append(pattern)

    def add_text(self, where: str, text: object) -> None:
        """Scan `text` too (a repr, a widget's value, a file's content) under the name `where`."""
        self._texts.append((where, str(text)))

    @property
    def secrets(self) -> list[Secret]:
        return list(self._secrets.values())

    # collecting ---------------------------------------------------------------------------------------------
    def start(self, capture: Any = None) -> LeakScan:
        """Install the hooks; `capture` is a pytest capture fixture (capfd) read at stop()."""
        stack = ExitStack()
        self._stack, self._capture = stack, capture
        stack.callback(self._install_logging())
        for owner, name, wrap in self._wrappers():
            original = owner.__dict__[name]
            setattr(owner, name, wrap(original))
            stack.callback(setattr, owner, name, original)
        if capture is not None:
            read = capture.readouterr

            def readouterr() -> Any:
                result = read()
                self._add_output(result)
                return result

            capture.readouterr = readouterr
            stack.callback(setattr, capture, "readouterr", read)
        done = threading.Event()
        sampler = threading.Thread(target=self._sample, args=(done,), name="leak-scan-argv", daemon=True)
        sampler.start()
        stack.callback(sampler.join, 5)
        stack.callback(done.set)
        return self

    def stop(self) -> None:
        """Remove the hooks; read the captured output (and write it back for pytest's report) and the servers."""
        if self._stack is None:
            return
        capture = self._capture
        self._stack.close()
        self._stack = None
        if capture is not None:
            result = capture.readouterr()
            self._add_output(result)
            out, err = (_text(part) for part in result)
            # Written back so that pytest still shows the test's output when the test fails.
            print(out, end="")
            print(err, end="", file=sys.stderr)
        for db, name in list(self._databases.items()):
            self._read_database(db, name)

    @contextmanager
    def running(self, capture: Any = None) -> Iterator[LeakScan]:
        self.start(capture)
        try:
            yield self
        finally:
            self.stop()

    def _install_logging(self) -> Callable[[], None]:
        handler = _Collector(self._texts)
        root = logging.getLogger()
        level, disabled = root.level, logging.root.manager.disable
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        logging.disable(logging.NOTSET)

        def undo() -> None:
            root.removeHandler(handler)
            root.setLevel(level)
            logging.disable(disabled)

        return undo

    def _wrappers(self) -> list[tuple[type | Any, str, Callable[[Any], Any]]]:
        scan = self

        def publish(original: Any) -> Any:
            def wrapper(bus: EventBus, event: Any) -> None:
                scan._add_event(event)
                original(bus, event)

            return wrapper

        def api_error(original: Any) -> Any:
            def wrapper(error: APIError, *args: Any, **kwargs: Any) -> None:
                original(error, *args, **kwargs)
                scan.add_text("APIError", f"{error} {error.data!r}")

            return wrapper

        def popen(original: Any) -> Any:
            def wrapper(proc: subprocess.Popen, args: Any, *rest: Any, **kwargs: Any) -> None:
                scan._argv.add(args if isinstance(args, str) else " ".join(map(os.fsdecode, args)))
                original(proc, args, *rest, **kwargs)

            return wrapper

        def set_token(original: Any) -> Any:
            def wrapper(session: Any, token: str) -> None:
                scan.register_token(token, "JWT the client got")
                original(session, token)

            return wrapper

        def issue_token(original: Any) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> str:
                token = original(*args, **kwargs)
                scan.register_token(token, "JWT the server issued")
                return token

            return wrapper

        def server_start(original: Any) -> Any:
            def wrapper(server: EmbeddedServer) -> EmbeddedServer:
                result = original(server)
                scan.add_server(server)
                return result

            return wrapper

        return [
            (EventBus, "publish", publish),
            (APIError, "__init__", api_error),
            (subprocess.Popen, "__init__", popen),
            (session_module.Session, "_set_token", set_token),
            (system_service, "issue_token", issue_token),  # imported there by name
            (server_auth, "issue_token", issue_token),
            (EmbeddedServer, "start", server_start),
        ]

    def _add_event(self, event: Any) -> None:
        parts = [repr(event)]
        if dataclasses.is_dataclass(event):
            parts += [str(getattr(event, f.name)) for f in dataclasses.fields(event)]
        self._texts.append((f"event {type(event).__name__}", "\n".join(parts)))

    def _add_output(self, result: Any) -> None:
        out, err = (_text(part) for part in result)
        if out:
            self._texts.append(("stdout", out))
        if err:
            self._texts.append(("stderr", err))

    def add_server(self, server: EmbeddedServer) -> None:
        """Read `server`'s stored events and documents at stop(), and look for its keys and token secret (servers
        started while the scan runs are added by themselves)."""
        self.add_database(server.data_dir / "server.db")
        if server.credentials is not None:
            self.register(server.credentials.secret_key, "server's secret key")
            self.register(server.credentials.access_key, "server's access key")
        if server.backend is not None:
            self.register(server.backend.token_secret, "server's token secret")

    def _sample(self, done: threading.Event) -> None:
        me = psutil.Process()
        seen: set[tuple[int, float, tuple[str, ...]]] = set()
        while True:
            last = done.is_set()  # stop() asked: one more sample, then leave
            try:
                children = me.children(recursive=True)
            except psutil.Error:
                children = []
            for child in children:
                try:
                    key = (child.pid, child.create_time(), tuple(child.cmdline()))
                except psutil.Error:  # gone, or a zombie
                    continue
                if key not in seen:
                    seen.add(key)
                    self._argv.add(" ".join(key[2]))
            if last:
                return
            done.wait(self.sample_sec)

    def add_database(self, db: Path) -> None:
        """Read an embedded server's SQLite file at stop() (one a server in a subprocess wrote, say): its key
        pairs and token secret become secrets, its task log events and documents texts."""
        self._databases.setdefault(db, f"server {db.parent.name}")

    def add_databases_under(self, root: Path, depth: int = 3) -> None:
        """add_database() for every server.db up to `depth` folders below `root` (not deeper: venvs live there)."""
        for level in range(depth):
            for db in root.glob("/".join(["*"] * level + ["server.db"])):
                self.add_database(db)

    def _read_database(self, db: Path, name: str) -> None:
        if not db.exists():
            return
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            settings = dict(
                conn.execute("SELECT key, value FROM settings WHERE key IN ('credentials', 'token_secret')")
            )
            for pair in json.loads(settings.get("credentials") or "[]"):
                self.register(pair.get("secret_key"), "server's secret key")
                self.register(pair.get("access_key"), "server's access key")
            self.register(settings.get("token_secret"), "server's token secret")
            for task, doc in conn.execute("SELECT task, doc FROM events"):
                self._texts.append((f"{name} event of task {task}", _event_text(doc)))
            for kind, id_, doc in conn.execute("SELECT kind, id, doc FROM docs"):
                for path, value in _leaves(json.loads(doc)):
                    self._texts.append((f"{name} {kind} {id_} {path}", value))
        except sqlite3.Error:  # a file that is no server's database (yet): nothing of ours to read
            pass
        finally:
            conn.close()

    # finding ------------------------------------------------------------------------------------------------
    def texts(self) -> list[tuple[str, str]]:
        """Everything collected so far as (where, text), the argv last."""
        return [*self._texts, *(("argv", argv) for argv in sorted(self._argv.copy()))]  # copy: the sampler adds

    def findings(self) -> list[Leak]:
        """Every (secret, place) where a piece of a registered secret was seen, outside the allowed places."""
        first: dict[str, str] = {}
        for where, text in self.texts():
            if text and not any(fnmatch.fnmatchcase(where, p) for p in self._allowed):
                first.setdefault(text, where)
        items = list(first.items())
        starts, offset = [], 0
        for text, _ in items:
            starts.append(offset)
            offset += len(text) + 1
        corpus = "\x00".join(text for text, _ in items)
        leaks: dict[tuple[str, str], Leak] = {}
        for secret in self.secrets:
            for piece in secret.pieces:
                at = corpus.find(piece)
                while at != -1:
                    index = bisect.bisect_right(starts, at) - 1
                    text, where = items[index]
                    key = (secret.label, where)
                    if key not in leaks:
                        leaks[key] = Leak(secret.label, where, self._snippet(text, at - starts[index], piece))
                    at = corpus.find(piece, starts[index] + len(text) + 1)
        return sorted(leaks.values(), key=lambda leak: (leak.where, leak.secret))

    def report(self) -> str:
        leaks = self.findings()
        if not leaks:
            return ""
        lines = [f"{len(leaks)} secret leak(s) found (a piece of a fake secret; snippets masked):"]
        lines += [f"  - {leak}" for leak in leaks[:MAX_FINDINGS]]
        if len(leaks) > MAX_FINDINGS:
            lines.append(f"  ... and {len(leaks) - MAX_FINDINGS} more")
        return "\n".join(lines)

    def _snippet(self, text: str, at: int, piece: str) -> str:
        start, end = max(0, at - 60), min(len(text), at + len(piece) + 60)
        return self.masked(text[start:end])

    def masked(self, text: str) -> str:
        """`text` with every run of known secret pieces replaced by `<label: mask()>`."""
        owner: list[str | None] = [None] * len(text)
        for secret in self.secrets:
            for piece in secret.pieces:
                at = text.find(piece)
                while at != -1:
                    owner[at : at + len(piece)] = [secret.label] * len(piece)
                    at = text.find(piece, at + 1)
        out, i = [], 0
        while i < len(text):
            label = owner[i]
            j = i + 1
            while j < len(text) and owner[j] == label:
                j += 1
            out.append(text[i:j] if label is None else f"<{label}: {mask(text[i:j])}>")
            i = j
        return "".join(out)


class _Collector(logging.Handler):
    """Keeps the text of every record as it is emitted (args formatted now: they may change later)."""

    def __init__(self, texts: list[tuple[str, str]]) -> None:
        super().__init__(logging.DEBUG)
        self._texts = texts
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            parts = [record.getMessage()]
        except Exception:  # a bad format string: keep its parts
            parts = [str(record.msg), repr(record.args)]
        if record.exc_info:
            parts.append(self._formatter.formatException(record.exc_info))
        elif record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(record.stack_info)
        self._texts.append((f"log {record.name}", "\n".join(parts)))


def _text(part: str | bytes) -> str:
    return part.decode("utf-8", "replace") if isinstance(part, bytes) else part


def _event_text(doc: str) -> str:
    """A stored event's JSON with its strings unescaped, so a secret split by an escape is still found."""
    try:
        return "\n".join(value for _, value in _leaves(json.loads(doc)))
    except ValueError:
        return doc


def _leaves(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, text) of every scalar in a JSON document; keys count too (a secret can be a key)."""
    if isinstance(node, dict):
        for key, value in node.items():
            child = f"{path}.{key}" if path else str(key)
            yield child, str(key)
            yield from _leaves(value, child)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, f"{path}[{i}]")
    elif node is not None:
        yield path or ".", str(node)
