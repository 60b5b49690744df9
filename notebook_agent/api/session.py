"""An authenticated HTTP session to a ClearML API server: login, token refresh, retries, envelope parsing."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import requests
from requests.auth import AuthBase
from urllib3.exceptions import ConnectTimeoutError

from notebook_agent import __version__
from notebook_agent.api.errors import APIError, TransportError, UnauthorizedError, error_for, short_cause
from notebook_agent.masking import mask, mask_url

log = logging.getLogger(__name__)

# The SDK retries 429/502/503/509; 504 is what proxies answer when the server is slow, so it is retried too.
RETRY_STATUSES = frozenset({429, 502, 503, 504, 509})
RETRY_EXCEPTIONS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
# Statuses a proxy answers when the server did not answer in time: the server may have acted on the request.
AMBIGUOUS_STATUSES = frozenset({502, 503, 504})
BACKOFF_START = 0.2
BACKOFF_CAP = 5.0
CONNECT_FLOOR_SEC = 3.0  # the shortest connect timeout: a far server on a slow link still connects within it
IDEMPOTENCY_HEADER = "Idempotency-Key"  # the IETF httpapi draft's name; see server/idempotency.py
REFRESH_MARGIN = 60.0  # seconds before `exp` at which the token is renewed, like the real clients
DEFAULT_API_VERSION = "2.1"  # what the agent assumes when the token carries no api_version claim


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in str(version).split(".") if p.isdigit())


def _never_sent(exc: BaseException) -> bool:
    """True when `exc` surely came before the request reached the server (refused, unresolvable, connect timeout):
    re-sending it cannot make the server act twice. Anything after the connection was made is ambiguous."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if not isinstance(exc, requests.ConnectionError) or isinstance(exc, requests.exceptions.ReadTimeout):
        return False
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    # urllib3's NewConnectionError (refused, DNS) is a ConnectTimeoutError too: both fail before a byte is sent.
    return isinstance(reason, ConnectTimeoutError)


class _Bearer(AuthBase):
    """`Authorization: Bearer <token>`; no header at all when there is no token yet."""

    def __init__(self, token: str | None) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"
        return request


class Session:
    """A ClearML API session. Thread-safe enough for one agent: logins are serialized by a lock.

    Retries: connection errors, timeouts and HTTP 429/502/503/504/509 are retried with exponential backoff
    until `retry_total_seconds` have passed (a last attempt may add up to `timeout` once connected; a connect
    waits at most what is left of the budget, or CONNECT_FLOOR_SEC). Like the real SDK this
    also re-sends calls that are not idempotent (e.g. `queues.get_next_task`) after a read timeout or a 5xx
    from a proxy, when the server may already have acted on the first one.
    """

    def __init__(
        self,
        api_server: str,
        access_key: str | None,
        secret_key: str | None,
        *,
        auth_token: str | None = None,
        worker: str | None = None,
        client: str = f"notebook-agent-{__version__}",
        verify: bool | str = True,
        retry_total_seconds: float = 60.0,
        timeout: float = 30.0,
        http: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = api_server.rstrip("/")
        self.access_key = access_key
        self._secret_key = secret_key
        self.worker = worker
        self.client = client
        self.verify = verify
        self.retry_total_seconds = retry_total_seconds
        self.timeout = timeout
        self._owns_http = http is None  # only close what we created
        self._http = http if http is not None else requests.Session()
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.RLock()
        self._token: str | None = None
        self._claims: dict[str, Any] = {}
        if auth_token:
            self._set_token(auth_token)

    @classmethod
    def from_config(cls, api_config: Any, **kwargs: Any) -> Session:
        """Build from the config package's api section (duck-typed); `kwargs` override the other options."""
        creds = getattr(api_config, "credentials", None)
        return cls(
            api_config.api_server,
            getattr(creds, "access_key", None),
            getattr(creds, "secret_key", None),
            auth_token=getattr(api_config, "auth_token", None),
            verify=getattr(api_config, "verify_certificate", True),
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"Session(api_server={mask_url(self.base_url)!r}, access_key={mask(self.access_key)!r})"

    # -- auth -------------------------------------------------------------------------------------------

    @property
    def api_version(self) -> str:
        """The server's API level from the token's `api_version` claim (logs in if needed)."""
        self._ensure_token()
        version = self._claims.get("api_version")
        if version:
            return str(version)
        # The clients' fallback: production servers without the claim speak at least 2.2.
        return "2.2" if self._claims.get("env") == "prod" else DEFAULT_API_VERSION

    @property
    def server_version(self) -> str | None:
        """The server's version from the token's `server_version` claim (logs in if needed)."""
        self._ensure_token()
        value = self._claims.get("server_version")
        return str(value) if value is not None else None

    def claim(self, name: str, default: Any = None) -> Any:
        """A claim of the server's token (logs in if needed); servers add their own, e.g. feature flags."""
        self._ensure_token()
        return self._claims.get(name, default)

    @property
    def feature_set(self) -> str:
        self._ensure_token()
        return str(self._claims.get("feature_set") or "basic")

    def api_at_least(self, version: str) -> bool:
        return _version_tuple(self.api_version) >= _version_tuple(version)

    def _has_keys(self) -> bool:
        return bool(self.access_key and self._secret_key)

    def login(self) -> None:
        """Get a fresh token: `auth.login` with HTTP Basic auth, or else a refresh with the Bearer token."""
        with self._lock:
            if self._has_keys():
                auth: Any = (self.access_key, self._secret_key)
            elif self._token:
                auth = None  # auth.login also accepts a Bearer token and returns a renewed one
            else:
                message = "no credentials: set access_key/secret_key or auth_token"
                raise UnauthorizedError(401, 20, message, "auth.login")
            login_headers = self._headers("application/json")
            data = self._call("auth.login", f"{self.base_url}/auth.login", b"{}", login_headers, auth)
            token = data.get("token")
            if not isinstance(token, str) or not token:
                raise APIError(200, 0, "auth.login returned no token", "auth.login")
            self._set_token(token)
            log.debug("logged in to %s as %s", mask_url(self.base_url), mask(self.access_key))

    def _set_token(self, token: str) -> None:
        self._token = token
        try:
            # The clients never verify the signature: the claims only tell the API level and the expiry.
            self._claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            log.debug("the auth token is not a JWT; assuming API %s and no expiry", DEFAULT_API_VERSION)
            self._claims = {}

    def _token_expiring(self) -> bool:
        exp = self._claims.get("exp")
        return isinstance(exp, (int, float)) and exp - self._clock() < REFRESH_MARGIN

    def _ensure_token(self) -> None:
        with self._lock:
            if self._token is None:
                self.login()
            elif self._token_expiring() and (self._has_keys() or not self._expired()):
                # Renew ahead of `exp`. An expired token without keys cannot renew itself: let the 401 show.
                self.login()

    def _expired(self) -> bool:
        exp = self._claims.get("exp")
        return isinstance(exp, (int, float)) and exp <= self._clock()

    # -- calls ------------------------------------------------------------------------------------------

    def send(
        self,
        endpoint: str,
        data: dict[str, Any] | None = None,
        *,
        version: str | None = None,
        lines: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        retry_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Call `service.action` and return the envelope's `data` ({} when null). Raises APIError.

        `headers` are added to the request (e.g. the embedded server's long-poll extension). `retry_seconds`
        limits this call's re-sends after transport failures (0: one attempt; None: `retry_total_seconds`), for
        callers that must not re-send blindly what the server may already have acted on (events.add_batch); a
        TransportError then says whether the request may have been delivered.
        """
        if data is not None and lines is not None:
            raise ValueError("pass either data or lines, not both")
        if lines is not None:
            # json-lines is how the server takes batches (events.add_batch): one object per line.
            body = "\n".join(json.dumps(line) for line in lines).encode()
            content_type = "application/json-lines"
        else:
            body = json.dumps(data or {}).encode()
            content_type = "application/json"
        url = f"{self.base_url}/v{version}/{endpoint}" if version else f"{self.base_url}/{endpoint}"
        # One key per logical call, the same on every re-send: a server that knows the header (ours) answers a
        # re-send of a call it already ran with the first answer instead of acting twice; others ignore it.
        request_headers = {**self._headers(content_type), IDEMPOTENCY_HEADER: uuid.uuid4().hex, **(headers or {})}
        if self._has_keys() or self._token:
            self._ensure_token()
        try:
            return self._call(endpoint, url, body, request_headers, None, retry_seconds)
        except UnauthorizedError:
            # The token may have been revoked, may have expired while the server was down, or the server restarted
            # with a new secret: re-login once. A 401 means the server did not act, so the re-send doubles nothing.
            if not self._has_keys():
                raise
            log.info("%s answered 401; logging in again and retrying once", endpoint)
            self.login()
            return self._call(endpoint, url, body, request_headers, None, retry_seconds)

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Content-Type": content_type, "X-ClearML-Client": self.client}
        if self.worker:
            headers["X-ClearML-Worker"] = self.worker
        return headers

    def _call(
        self,
        endpoint: str,
        url: str,
        body: bytes,
        headers: dict[str, str],
        auth: Any,
        retry_seconds: float | None = None,
    ) -> dict[str, Any]:
        response = self._post_with_retries(endpoint, url, body, headers, auth, retry_seconds)
        return self._parse(endpoint, url, response)

    def _post_with_retries(
        self,
        endpoint: str,
        url: str,
        body: bytes,
        headers: dict[str, str],
        auth: Any,
        retry_seconds: float | None = None,
    ) -> requests.Response:
        budget = self.retry_total_seconds if retry_seconds is None else retry_seconds
        deadline = self._clock() + budget
        delay = BACKOFF_START
        failures = 0
        while True:
            status: int | None = None
            maybe_delivered = True
            # An address that never answers the connect (a wrong host, a firewall) gets no more than the budget left,
            # so it is reported within the budget; the read timeout stays whole (a long poll waits on purpose).
            connect_timeout = min(self.timeout, max(deadline - self._clock(), CONNECT_FLOOR_SEC))
            try:
                # POST with a JSON body: the server ignores the method, and POST bodies survive proxies.
                response = self._http.post(
                    url,
                    data=body,
                    headers=headers,
                    # Always pass auth: it keeps requests from adding ~/.netrc credentials over our header.
                    auth=auth if auth is not None else _Bearer(self._token),
                    timeout=(connect_timeout, self.timeout),
                    verify=self.verify,
                )
            except RETRY_EXCEPTIONS as exc:
                cause = self._redact(f"{type(exc).__name__}: {exc}")
                maybe_delivered = not _never_sent(exc)
            else:
                log.debug("%s -> HTTP %s", mask_url(url), response.status_code)
                if response.status_code not in RETRY_STATUSES:
                    if failures:
                        log.info("%s answered after %d failed attempts", endpoint, failures)
                    return response
                status = response.status_code
                cause = f"HTTP {status} {response.reason or ''}".strip()
                maybe_delivered = status in AMBIGUOUS_STATUSES
                response.close()
            if self._clock() + delay > deadline:
                raise TransportError(
                    endpoint,
                    f"{mask_url(url)}: {cause}",
                    status=status,
                    url=mask_url(url),
                    maybe_delivered=maybe_delivered,
                )
            # One line per call, not one per attempt: a refused connection would otherwise print one every few s.
            failures += 1
            if failures == 1:
                log.warning("%s failed (%s); retrying for up to %g s", endpoint, short_cause(cause), budget)
            log.debug("%s failed (%s); retrying in %.1fs", endpoint, cause, delay)
            self._sleep(delay)
            delay = min(delay * 2, BACKOFF_CAP)

    def _parse(self, endpoint: str, url: str, response: requests.Response) -> dict[str, Any]:
        try:
            envelope = response.json()
            meta = envelope["meta"]
            code = int(meta["result_code"])
        except (ValueError, KeyError, TypeError):
            # Not an API envelope: typically an HTML page from a proxy, or a wrong api_server URL.
            snippet = " ".join(response.text[:120].split())
            message = (
                f"HTTP {response.status_code} from {mask_url(url)} is not a ClearML API response "
                f"(check api_server): {self._redact(snippet)!r}"
            )
            raise error_for(response.status_code, 0, message, endpoint) from None
        if not 200 <= code < 300:
            raise error_for(
                code,
                int(meta.get("result_subcode") or 0),
                self._redact(str(meta.get("result_msg") or "")),
                endpoint,
                meta.get("error_data") or {},
            )
        data = envelope.get("data")
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise APIError(code, 0, f"unexpected data of type {type(data).__name__}", endpoint)
        return data

    def _redact(self, text: str) -> str:
        """Remove the secret key and the token from text that may end up in a log line or an exception."""
        for secret in (self._secret_key, self._token):
            if secret:
                text = text.replace(secret, mask(secret))
        return text

    # -- lifecycle --------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
