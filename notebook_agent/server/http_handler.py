"""HTTP face of the embedded server: `/[vX.Y/]service.action` paths, JSON or JSON-lines bodies, the envelope."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import sys
import threading
import uuid
from http import cookies
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from notebook_agent.server import errors, registry
from notebook_agent.server.auth import TOKEN_COOKIE, authenticate
from notebook_agent.server.backend import Backend
from notebook_agent.server.registry import MAX_VERSION, Call

logger = logging.getLogger(__name__)

_PATH = re.compile(r"^/?(?:v(?P<version>\d+\.\d+)/)?(?P<endpoint>[A-Za-z_][\w-]*\.[A-Za-z_]\w*)/?$")
_MAX_BODY = 512 * 1024 * 1024


def _convert(value: str) -> Any:
    """Query-string values as the real server converts them: numbers and true/false."""
    if value.replace(".", "", 1).isdigit():
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
        node[leaf] = value


class ApiServer(ThreadingHTTPServer):
    """A threading HTTP server bound to one Backend."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], backend: Backend) -> None:
        self.backend = backend
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

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

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

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise errors.bad_request(f"request body too large ({length} bytes)")
        return self.rfile.read(length) if length else b""

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
            data = endpoint.handler(call)
            token = data.pop("__set_token_cookie__", None) if isinstance(data, dict) else None
            if token:
                extra_headers["Set-Cookie"] = f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax"
            code, subcode, msg, error_data = 200, 0, "OK", {}
        except errors.ServerError as err:
            data, code, subcode, msg, error_data = {}, err.code, err.subcode, err.msg, err.data
        except (ValueError, TypeError) as exc:
            # A field of the wrong type that a handler could not convert: the caller's input, not a crash.
            logger.debug("bad field value in %s", name, exc_info=True)
            data, code, subcode, error_data = {}, 400, 12, {}
            msg = f"Validation error ({type(exc).__name__}: {exc})"
        except Exception as exc:  # the server keeps serving whatever a handler does
            logger.exception("internal error in %s", name)
            data, code, subcode, error_data = {}, 500, 0, {}
            msg = f"General data error ({type(exc).__name__}: {exc})"
        meta = {
            "id": call_id,
            "trx": trx,
            "endpoint": {
                "name": name,
                "requested_version": version or MAX_VERSION,
                "actual_version": endpoint.min_version if endpoint else None,
            },
            "result_code": code,
            "result_subcode": subcode,
            "result_msg": msg,
            "error_stack": None,
            "error_data": error_data,
        }
        payload = json.dumps({"meta": meta, "data": data if data is not None else {}}, default=str)
        self._send_raw(code, payload.encode(), "application/json; charset=utf-8", extra_headers)

    def _make_call(self, endpoint: registry.Endpoint, version: str | None, raw: bytes, query: str) -> Call:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        batch = None
        data: dict[str, Any] = {}
        if content_type == "application/json-lines":
            batch = []
            for i, line in enumerate(raw.decode("utf-8", "replace").splitlines()):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError as exc:
                    raise errors.bad_request(f"Failed to decode JSON object: {exc} in batch item #{i}") from None
                if not isinstance(item, dict):
                    raise errors.bad_request(f"json lines must contain objects, found: {type(item).__name__}")
                batch.append(item)
        elif raw.strip():
            try:
                parsed = json.loads(raw)
            except ValueError as exc:
                raise errors.bad_request(f"Failed to decode JSON object: {exc}") from None
            if isinstance(parsed, list) and endpoint.name in _BATCH_ENDPOINTS:
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
