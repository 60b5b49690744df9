"""The embedded ClearML-compatible server: lifecycle, data directory and the clearml.conf clients read."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from notebook_agent.config import PastedCredentials
from notebook_agent.config.writer import write_api_config
from notebook_agent.server import services  # noqa: F401  (registers the endpoints)
from notebook_agent.server.backend import Backend, KeyPair
from notebook_agent.server.http_handler import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY, ApiServer
from notebook_agent.server.store import Store

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path("~/.notebook_agent/server")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class EmbeddedServer:
    """A persistent, authenticated ClearML-API server for one machine, startable in-process on a free port.

    `start()` binds and serves from a daemon thread; `stop()` closes it. Nothing runs at construction.
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        access_key: str | None = None,
        secret_key: str | None = None,
        clock=time.time,
        max_body: int = DEFAULT_MAX_BODY,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
    ) -> None:
        """`max_body`: the largest request body accepted, in bytes (bigger ones get 413 unread);
        `body_timeout`: seconds a client may take to send an announced body (then 408)."""
        if bool(access_key) != bool(secret_key):
            raise ValueError("give both access_key and secret_key, or neither (a pair is then generated)")
        self.data_dir = Path(data_dir or DEFAULT_DATA_DIR).expanduser()
        self.host = host
        self.port = port
        self._given_keys = (access_key, secret_key)
        self._clock = clock
        self.max_body = max_body
        self.body_timeout = body_timeout
        self._store: Store | None = None
        self._http: ApiServer | None = None
        self._thread: threading.Thread | None = None
        self.backend: Backend | None = None
        self.credentials: KeyPair | None = None

    # lifecycle
    def start(self) -> EmbeddedServer:
        if self._http is not None:
            return self
        if self.host not in LOOPBACK:
            logger.warning(
                "the embedded server listens on %s: anyone who can reach it and holds the key can run code "
                "through an agent polling it",
                self.host,
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        self._store = Store(self.data_dir / "server.db")
        self.backend = Backend(self._store, clock=self._clock)
        self.credentials = self.backend.ensure_credentials(*self._given_keys)
        self.backend.ensure_default_queue()
        self._http = ApiServer(
            (self.host, self.port), self.backend, max_body=self.max_body, body_timeout=self.body_timeout
        )
        self.port = self._http.server_address[1]
        self.write_client_config()
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="notebook-agent-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._http is None:
            return
        assert self.backend is not None
        self.backend.shutdown()  # ends pending long polls
        self._http.shutdown()
        self._http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        assert self._store is not None
        self._store.close()
        self._http = self._thread = self._store = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Block the calling thread until interrupted (the CLI's foreground mode)."""
        self.start()
        assert self._thread is not None
        try:
            while self._thread.is_alive():
                self._thread.join(timeout=0.5)
        finally:
            self.stop()

    # addresses
    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "clearml.conf"

    def client_env(self) -> dict[str, str]:
        """The CLEARML_* variables that point a client (SDK, clearml-agent, ours) at this server."""
        assert self.credentials is not None, "start() the server first"
        return {
            "CLEARML_API_HOST": self.url,
            "CLEARML_WEB_HOST": self.url,
            "CLEARML_FILES_HOST": self.url,
            "CLEARML_API_ACCESS_KEY": self.credentials.access_key,
            "CLEARML_API_SECRET_KEY": self.credentials.secret_key,
            "CLEARML_CONFIG_FILE": str(self.config_file),
        }

    def write_client_config(self) -> Path:
        """Write DATA_DIR/clearml.conf (0600) with the `api` section a client needs."""
        assert self.credentials is not None
        creds = PastedCredentials(
            api_server=self.url,
            web_server=self.url,
            files_server=self.url,
            access_key=self.credentials.access_key,
            secret_key=self.credentials.secret_key,
        )
        header = "# Written by notebook-agent's embedded server; rewritten at every start.\n"
        return write_api_config(self.config_file, creds, header)

    def __repr__(self) -> str:
        state = "running" if self._http else "stopped"
        return f"EmbeddedServer({self.url if self._http else self.data_dir}, {state})"
