"""Typed helpers for the `workers.*` endpoints, and the machine_stats shape the server's schema wants."""

from __future__ import annotations

import logging
from typing import Any

from notebook_agent.api._common import Sender, call

log = logging.getLogger(__name__)

# machine_stats field types in the 2.23 schema: memory, disk and network are *integers* (MB, MB/s, %),
# GPU memory lists hold integers, the rest are lists of numbers. Anything else is dropped.
_INT_FIELDS = frozenset(
    {"memory_used", "memory_free", "disk_free_home", "disk_free_temp", "disk_read", "disk_write"}
    | {"network_rx", "network_tx"}
)
_INT_LIST_FIELDS = frozenset({"gpu_memory_free", "gpu_memory_used"})
_NUMBER_LIST_FIELDS = frozenset({"cpu_usage", "cpu_temperature", "gpu_usage", "gpu_temperature"})


def machine_stats_body(stats: dict[str, Any]) -> dict[str, Any]:
    """Coerce collected stats to the schema's types (round integers, wrap scalars in lists, drop unknowns)."""
    out: dict[str, Any] = {}
    for key, value in stats.items():
        if value is None:
            continue
        if key in _INT_FIELDS:
            out[key] = round(float(value))
        elif key in _INT_LIST_FIELDS or key in _NUMBER_LIST_FIELDS:
            values = value if isinstance(value, (list, tuple)) else [value]
            out[key] = [round(float(v)) if key in _INT_LIST_FIELDS else float(v) for v in values]
        else:
            log.debug("dropping machine stat %r: not in the server schema", key)
    return out


def register(
    session: Sender,
    worker: str,
    queues: list[str] | None = None,
    timeout: int = 600,
    tags: list[str] | None = None,
    system_tags: list[str] | None = None,
) -> None:
    """Register a worker; the server drops it after `timeout` seconds without a register or status_report."""
    call(
        session,
        "workers.register",
        worker=worker,
        queues=queues,
        timeout=int(timeout),
        tags=tags,
        system_tags=system_tags,
    )


def unregister(session: Sender, worker: str) -> None:
    call(session, "workers.unregister", worker=worker)


def status_report(
    session: Sender,
    worker: str,
    timestamp_ms: int,
    task: str | None = None,
    queue: str | None = None,
    queues: list[str] | None = None,
    machine_stats: dict[str, Any] | None = None,
    tags: list[str] | None = None,
) -> None:
    """Report the worker's state. An absent `task`/`queue` clears it on the server; absent `queues` keeps it.

    The schema documents `timestamp` as seconds, but the agent sends epoch milliseconds as an integer, and the
    server stores it as given; we do the same so the Workers page treats us like the agent.
    """
    call(
        session,
        "workers.status_report",
        worker=worker,
        timestamp=int(timestamp_ms),
        task=task,
        queue=queue,
        queues=queues,
        machine_stats=machine_stats_body(machine_stats) if machine_stats else None,
        tags=tags,
    )


def get_all(session: Sender, last_seen: int = 3600) -> list[dict[str, Any]]:
    """Workers active within the last `last_seen` seconds."""
    return list(call(session, "workers.get_all", last_seen=int(last_seen)).get("workers") or [])


def get_runtime_properties(session: Sender, worker: str) -> list[dict[str, Any]]:
    """[{key, value, expiry}] (expiry: seconds left, None or absent: none). Not in the OSS server (NotFoundError
    there): callers treat APIError as unsupported."""
    data = call(session, "workers.get_runtime_properties", worker=worker)
    return list(data.get("runtime_properties") or [])


def set_runtime_properties(session: Sender, worker: str, props: list[dict[str, Any]]) -> None:
    """Set [{key, value, expiry?}] runtime properties: `expiry` in seconds, 0 deletes the property (e.g.
    `{"key": "force", "value": "on", "expiry": 3600}` pulls outside working hours for an hour). Not in the OSS
    server, see get_runtime_properties."""
    call(session, "workers.set_runtime_properties", worker=worker, runtime_properties=props)
