"""The fault-injection harness: a TCP proxy that drops, delays, resets, blackholes or cuts replies between an agent
and the embedded server; stopping and starting that server in place; process helpers; a deadline poll.

A fault is switched on and off at any moment from the test thread; the proxy's pump threads read the mode on every
chunk, so a switch takes effect on connections already open as well as on new ones.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import psutil

from notebook_agent.server import EmbeddedServer

CHUNK = 64 * 1024
HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"PATCH ", b"OPTIONS ")


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy (which is returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate!r}")
        time.sleep(interval)


class Fault(enum.Enum):
    PASS = "pass"  # forward everything
    DELAY = "delay"  # forward every chunk `delay` seconds late
    DROP = "drop"  # close every connection (a clean FIN): the server went away
    RESET = "reset"  # reset every connection (RST): a middlebox or a crashed host
    BLACKHOLE = "blackhole"  # accept and swallow, never answer: a network that lost the route


def _reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER on, timeout 0)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        # Wakes a pump blocked in recv() on this socket (sending nothing), so that close() really releases it
        # and the kernel answers the peer with the RST.
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    """One client connection and its upstream connection, with the path of the last request seen on it."""

    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client = client
        self.upstream = upstream
        self.last_path = b""
        self.closed = threading.Event()

    def end(self, reset: bool) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            if sock is not None:
                (_reset if reset else _close)(sock)


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of `target_port`. Point the agent at `url`, then switch faults on and off.

    `cut_next_responses(n, path)` lets the next `n` requests whose path contains `path` reach the server, swallows
    the server's reply and resets the client's connection: the server acted, the client never heard. That is the
    fault that doubles a blindly re-sent batch.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.fault = Fault.PASS
        self.delay_sec = 0.0
        self._cut_path = b""
        self._cut_left = 0
        self.cut_count = 0  # replies swallowed so far
        self.connections = 0  # connections accepted so far
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        _close(self._listener)
        self._end_links(reset=False)
        self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # switching faults -------------------------------------------------------------------------------------------
    def set(self, fault: Fault, delay_sec: float = 0.0) -> None:
        """Switch to `fault`; DROP and RESET also end the connections open now."""
        with self._lock:
            self.fault, self.delay_sec = fault, delay_sec
        if fault in (Fault.DROP, Fault.RESET):
            self._end_links(reset=fault is Fault.RESET)

    def heal(self) -> None:
        self.set(Fault.PASS)

    @contextlib.contextmanager
    def faulty(self, fault: Fault, delay_sec: float = 0.0) -> Iterator[FaultProxy]:
        """`fault` for the duration of the block, then PASS again."""
        self.set(fault, delay_sec)
        try:
            yield self
        finally:
            self.heal()

    def cut_next_responses(self, count: int = 1, path: str = "") -> None:
        with self._lock:
            self._cut_left, self._cut_path = count, path.encode()

    @property
    def cuts_pending(self) -> int:
        with self._lock:
            return self._cut_left

    # the pumps ------------------------------------------------------------------------------------------------
    def _end_links(self, reset: bool) -> None:
        with self._lock:
            links = list(self._links)
        for link in links:
            link.end(reset)

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                fault = self.fault
            if fault is Fault.DROP:
                _close(client)
                continue
            if fault is Fault.RESET:
                _reset(client)
                continue
            upstream = None
            if fault is not Fault.BLACKHOLE:
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                    upstream.settimeout(None)
                except OSError:
                    _reset(client)  # the server is down: the client sees a refused/reset connection
                    continue
            link = _Link(client, upstream)
            with self._lock:
                self._links.add(link)
            for direction in ("up", "down"):
                threading.Thread(target=self._pump, args=(link, direction), daemon=True).start()

    def _pump(self, link: _Link, direction: str) -> None:
        source = link.client if direction == "up" else link.upstream
        try:
            while not link.closed.is_set():
                if source is None:  # blackholed from the start: swallow what the client sends
                    data = link.client.recv(CHUNK)
                    if not data:
                        break
                    continue
                try:
                    data = source.recv(CHUNK)
                except OSError:
                    break
                if not data:
                    break
                with self._lock:
                    fault, delay = self.fault, self.delay_sec
                if fault is Fault.BLACKHOLE:
                    continue
                if fault in (Fault.DROP, Fault.RESET):
                    break
                if direction == "up" and data.startswith(HTTP_METHODS):
                    link.last_path = data.split(b" ", 2)[1]
                if direction == "down" and self._take_cut(link.last_path):
                    link.end(reset=True)
                    return
                if fault is Fault.DELAY and delay > 0:
                    time.sleep(delay)
                target = link.upstream if direction == "up" else link.client
                assert target is not None
                target.sendall(data)
        except OSError:
            pass
        finally:
            link.end(reset=False)
            with self._lock:
                self._links.discard(link)

    def _take_cut(self, path: bytes) -> bool:
        with self._lock:
            if self._cut_left <= 0 or self._cut_path not in path:
                return False
            self._cut_left -= 1
            self.cut_count += 1
            return True


class ServerControl:
    """Stop and start a running EmbeddedServer in place: same data directory, port and keys, like a restart."""

    def __init__(self, server: EmbeddedServer) -> None:
        self.server = server
        self.port = server.port

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.port = self.port
        self.server.start()

    def restart(self) -> None:
        self.stop()
        self.start()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """The server is down for the duration of the block."""
        self.stop()
        try:
            yield
        finally:
            self.start()


# processes --------------------------------------------------------------------------------------------------------
def alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        proc = psutil.Process(pid)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def any_alive(pids: Iterable[int]) -> list[int]:
    return [pid for pid in pids if alive(pid)]


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


# the server's view ------------------------------------------------------------------------------------------------
def task_log_lines(raw: Any, task_id: str) -> list[str]:
    """Every console line of a task on the server, oldest first (events split on their newlines)."""
    lines: list[str] = []
    query: dict[str, Any] = {"task": task_id, "batch_size": 5000, "navigate_earlier": False, "order": "asc"}
    seen = 0
    while True:
        page = raw.ok("events.get_task_log", query)
        events = page["events"]
        for event in events:
            lines.extend(str(event.get("msg", "")).split("\n"))
        seen += len(events)
        if not events or seen >= int(page.get("total") or 0):
            return lines
        query["from_timestamp"] = events[-1]["timestamp"]


def task_status(raw: Any, task_id: str) -> str:
    return str(raw.ok("tasks.get_by_id", {"task": task_id})["task"]["status"])
