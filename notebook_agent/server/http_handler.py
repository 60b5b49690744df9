"""HTTP face of the embedded server: `/[vX.Y/]service.action` paths, JSON or JSON-lines bodies, the envelope."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import sys
import threading
import time
import uuid
from http import cookies
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from notebook_agent.server import errors, idempotency, registry, schema
from notebook_agent.server.auth import TOKEN_COOKIE, authenticate
from notebook_agent.server.backend import Backend
from notebook_agent.server.body import decode_json, decode_json_lines
from notebook_agent.server.registry import MAX_VERSION, Call
from notebook_agent.server.request_fields import request_schema

logger = logging.getLogger(__name__)

_PATH = re.compile(r"^/?(?:v(?P<version>\d+\.\d+)/)?(?P<endpoint>[A-Za-z_][\w-]*\.[A-Za-z_]\w*)/?$")
# One machine's server: the biggest real body is a batch of log lines (the clients send ~100 KiB at most).
DEFAULT_MAX_BODY = 32 * 1024 * 1024
# A client that announced a body and stalls sending it holds a thread: give up on it after this long.
DEFAULT_BODY_TIMEOUT = 30.0
# After refusing a body unread, read and drop what the client still sends for this long before closing, so that
# it reads our answer instead of a connection reset (the lingering close of nginx and Apache).
_LINGER_SEC = 1.0


def _convert(value: str) -> Any:
    """Query-string values as the real server converts them: numbers and true/false."""
    if value.isascii() and value.replace(".", "", 1).isdigit():
        return float(value) if "." in value else int(value)
    if value in ("true", "True", "TRUE"):
        return True
    if value in ("false", "False", "FALSE"):
        return False
    return value


def _merge_query(body: dict, query: str) -> None:
    grouped: dict[str, list[str]] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        grouped.setdefault(key, []).append(value)
    for key, values in grouped.items():
        value = [_convert(v) for v in values] if len(values) > 1 or key.endswith("[]") else _convert(values[0])
        *parents, leaf = key.rstrip("[]").split(".")
        node = body
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise errors.bad_request(f"query parameter {key!r} conflicts with the value of {part!r}")
        node[leaf] = value


class ApiServer(ThreadingHTTPServer):
    """A threading HTTP server bound to one Backend."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        backend: Backend,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
    ) -> None:
        self.backend = backend
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.idempotency = idempotency.IdempotencyCache()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, ApiRequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-answer (an agent stopping, a timed-out poll) is routine, not a traceback on
        # the host's stderr (a notebook cell, the CLI): note it in the debug log; anything else is logged fully.
        kind = sys.exc_info()[0]
        if kind is not None and issubclass(kind, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
            logger.debug("client %s disconnected mid-request", client_address)
            return
        logger.exception("embedded server: error while answering %s", client_address)

    def track(self, connection: socket.socket, alive: bool) -> None:
        with self._connections_lock:
            (self._connections.add if alive else self._connections.discard)(connection)

    def server_close(self) -> None:
        """Close the listening socket and every kept-alive connection, so no handler outlives the store."""
        super().server_close()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class ApiRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, each kept-alive call would stall ~40 ms.
    disable_nagle_algorithm = True
    server: ApiServer
    server_version = "clearml"

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    _linger = False  # set when a request body was refused unread

    def finish(self) -> None:
        try:
            super().finish()
            if self._linger:
                self._drain()
        finally:
            self.server.track(self.connection, False)

    def _drain(self) -> None:
        """Drop what the client still sends for a while, so that closing does not reset the connection (and
        discard our answer) while its body is still arriving."""
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + _LINGER_SEC
            while (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not self.connection.recv(65536):
                    return

    def handle_expect_100(self) -> bool:
        # A client that waits for "100 Continue" gets the 413 at once instead of sending a body we refuse.
        length = self.headers.get("Content-Length") or ""
        if length.isdigit() and int(length) > self.server.max_body:
            return True
        return super().handle_expect_100()

    def log_message(self, format: str, *args: Any) -> None:
        # The request line never carries a secret (credentials travel in headers), but keep it quiet.
        logger.debug("%s %s", self.address_string(), format % args)

    def do_OPTIONS(self) -> None:
        self._send_raw(200, b"", "text/plain")

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _send_raw(self, status: int, payload: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _refuse_body(self, error: errors.ServerError) -> errors.ServerError:
        """An error after which the rest of the request cannot be found in the stream: answer, then close."""
        self.close_connection = True
        self._linger = True
        return error

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            raise self._refuse_body(
                errors.ServerError(411, 0, "Length required (send the body with a Content-Length, not chunked)")
            )
        lengths = set(self.headers.get_all("Content-Length") or [])
        if not lengths:
            return b""
        text = lengths.pop().strip()
        if lengths or not text.isascii() or not text.isdigit():
            raise self._refuse_body(errors.bad_request(f"invalid Content-Length header {text!r}"))
        length = int(text)
        if length > self.server.max_body:
            raise self._refuse_body(
                errors.ServerError(
                    413, 0, f"Request body too large ({length} bytes, the limit is {self.server.max_body})"
                )
            )
        if not length:
            return b""
        self.connection.settimeout(self.server.body_timeout)
        try:
            raw = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            raise errors.ServerError(
                408, 0, f"Request timeout (body not received within {self.server.body_timeout:g} s)"
            ) from None
        finally:
            with contextlib.suppress(OSError):
                self.connection.settimeout(None)
        if len(raw) < length:
            self.close_connection = True
            raise errors.bad_request(f"truncated request body: got {len(raw)} of {length} bytes")
        return raw

    def _handle(self) -> None:
        call_id = uuid.uuid4().hex
        trx = self.headers.get("X-ClearML-Trx") or self.headers.get("X-Trains-Trx") or call_id
        split = urlsplit(self.path)
        match = _PATH.match(split.path)
        name = match["endpoint"] if match else ""
        version = match["version"] if match else None
        extra_headers: dict[str, str] = {}
        endpoint: registry.Endpoint | None = None
        try:
            raw = self._read_body()
            if self.headers.get("Content-Encoding"):
                self._send_raw(415, b"Content encoding is not supported", "text/plain")
                return
            if not match:
                raise errors.bad_request(f"Invalid request path {split.path!r}")
            endpoint = registry.resolve(name, version)
            call = self._make_call(endpoint, version, raw, split.query)
            schema.validate(request_schema(endpoint.name), call.data)
            # A retry of a call whose reply was lost gets the first answer instead of acting twice (see
            # server/idempotency.py); only for callers who authenticated, each with their own keys (a login
            # is never replayed: its token travels in a header the cache does not keep).
            replayable = call.identity is not None and not endpoint.name.startswith("auth.")
            key = self.headers.get(idempotency.HEADER) if replayable else None
            caller = f"{call.company}/{call.user}" if key else ""
            bound = endpoint
            code, subcode, msg, error_data, data = self.server.idempotency.run(
                caller, key, endpoint.name, lambda: _act(bound, call, name)
            )
            extra_headers.update(call.response_headers)
        except Exception as exc:
            data = {}
            code, subcode, msg, error_data = _failure(exc, name)
        meta = _meta(call_id, trx, name, version, endpoint.min_version if endpoint else None, code, subcode, msg)
        meta["error_data"] = error_data
        payload = json.dumps({"meta": meta, "data": data if data is not None else {}}, default=str)
        self._send_raw(code, payload.encode(), "application/json; charset=utf-8", extra_headers)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The refusals of http.server itself (a malformed request line or header, an unknown method, a header
        too long) as envelopes too, so that a client always reads the same shape."""
        self.close_connection = True
        short = self.responses.get(code, ("Error", ""))[0]
        call_id = uuid.uuid4().hex
        meta = _meta(call_id, call_id, "", None, None, code, 0, f"{short} ({message})" if message else short)
        payload = json.dumps({"meta": meta, "data": {}}).encode()
        with contextlib.suppress(OSError):
            self._send_raw(code, payload, "application/json; charset=utf-8")

    def _make_call(self, endpoint: registry.Endpoint, version: str | None, raw: bytes, query: str) -> Call:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        batch = None
        data: dict[str, Any] = {}
        if content_type == "application/json-lines":
            batch = decode_json_lines(raw)
        elif raw.strip():
            parsed = decode_json(raw)
            if isinstance(parsed, list) and endpoint.name in _BATCH_ENDPOINTS:
                for i, item in enumerate(parsed):
                    if not isinstance(item, dict):
                        raise errors.bad_request(f"batch item #{i} must be a JSON object, found {type(item).__name__}")
                batch = parsed
            elif not isinstance(parsed, dict):
                raise errors.bad_request(f"request body must be a JSON object, found {type(parsed).__name__}")
            else:
                data = parsed
        if query:
            _merge_query(data, query)
        data.pop("method", None)  # the SDK serializes Request.method into every body
        jar = cookies.SimpleCookie(self.headers.get("Cookie") or "")
        cookie_values = {k: m.value for k, m in jar.items()}
        call = Call(
            endpoint=endpoint.name,
            version=version or MAX_VERSION,
            data=data,
            batch=batch,
            backend=self.server.backend,
            worker=self.headers.get("X-ClearML-Worker") or self.headers.get("X-Trains-Worker"),
            remote_addr=self.headers.get("X-Real-IP")
            or (self.headers.get("X-Forwarded-For") or "").split(",")[0].strip()
            or self.client_address[0],
            headers=dict(self.headers.items()),
            cookies=cookie_values,
        )
        if endpoint.authorize:
            call.identity = authenticate(
                self.server.backend, self.headers.get("Authorization"), cookie_values.get(TOKEN_COOKIE)
            )
        return call


_BATCH_ENDPOINTS = {"events.add_batch", "tasks.update_batch"}


def _act(endpoint: registry.Endpoint, call: Call, name: str) -> idempotency.Answer:
    """Run the handler: (code, subcode, msg, error_data, data) whatever it does."""
    try:
        return 200, 0, "OK", {}, endpoint.handler(call)
    except Exception as exc:
        return (*_failure(exc, name), {})


def _failure(exc: Exception, name: str) -> tuple[int, int, str, dict]:
    """(code, subcode, msg, error_data) of a call that raised `exc`: the caller's mistake, or our own (500)."""
    if isinstance(exc, errors.ServerError):
        return exc.code, exc.subcode, exc.msg, exc.data
    if isinstance(exc, (ValueError, TypeError, OverflowError)):
        # A field of the wrong type that a handler could not convert, or a number too big for SQLite or datetime:
        # the caller's input, not a crash (and the call's transaction was rolled back).
        logger.debug("bad field value in %s", name, exc_info=True)
        return 400, 12, f"Validation error ({type(exc).__name__}: {exc})", {}
    logger.error("internal error in %s", name, exc_info=exc)  # the server keeps serving whatever a handler does
    return 500, 0, f"General data error ({type(exc).__name__}: {exc})", {}


def _meta(
    call_id: str,
    trx: str,
    name: str,
    version: str | None,
    actual: str | None,
    code: int,
    subcode: int,
    msg: str,
) -> dict[str, Any]:
    """The envelope's `meta`, as the real server writes it (service_repo/apicall.py get_response)."""
    return {
        "id": call_id,
        "trx": trx,
        "endpoint": {"name": name, "requested_version": version or MAX_VERSION, "actual_version": actual},
        "result_code": code,
        "result_subcode": subcode,
        "result_msg": msg,
        "error_stack": None,
        "error_data": {},
    }
