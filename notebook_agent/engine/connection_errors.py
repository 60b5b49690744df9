"""Say why the agent could not talk to the ClearML server: wrong credentials or an unreachable host, with the fix.

The messages name the server (its URL masked) and the access key (masked), never the secret key.
"""

from __future__ import annotations

from notebook_agent.api import APIError
from notebook_agent.api.errors import TransportError, UnauthorizedError, short_cause
from notebook_agent.config import Config
from notebook_agent.masking import mask, mask_url

# How long the agent's API session retries a call before giving up (seconds); agent.api_retry_total_sec sets it.
RETRY_KEY = "agent.api_retry_total_sec"
# Short enough that an interactive start with a wrong or unreachable server says so in seconds, long enough to ride
# out a server restart; a running worker outlives longer outages anyway (its loop retries after each give-up).
DEFAULT_RETRY_SEC = 12.0


def retry_budget(config: Config) -> float:
    """The configured retry budget of the CLI's API calls, in seconds."""
    return float(config.get(RETRY_KEY, DEFAULT_RETRY_SEC) or DEFAULT_RETRY_SEC)


def explain_api_error(err: APIError, config: Config | None) -> str:
    """One message for an API error met while connecting: what failed, with what, and how to fix it."""
    server = mask_url(config.api.api_server) if config is not None else "the configured server"
    where = str(config.path) if config is not None and config.path is not None else "clearml.conf"
    if isinstance(err, TransportError):
        budget = f" (gave up after {retry_budget(config):g} s of retries; {RETRY_KEY} sets how long)" if config else ""
        return (
            f"cannot reach the ClearML server at {server}: {short_cause(err.cause)}{budget}\n"
            f"  Fix: check api.api_server in {where} (or CLEARML_API_HOST) and that the server is running"
        )
    if isinstance(err, UnauthorizedError):
        creds = config.api.credentials if config is not None else None
        key = f"the access key {mask(creds.access_key)}" if creds is not None else "the credentials"
        return (
            f"the ClearML server at {server} refused {key} ({err.message})\n"
            f"  Fix: check api.credentials access_key and secret_key in {where} (or CLEARML_API_ACCESS_KEY and "
            "CLEARML_API_SECRET_KEY), or create new credentials in the web app: Settings > Workspace"
        )
    return f"the ClearML server at {server} answered {err}"
