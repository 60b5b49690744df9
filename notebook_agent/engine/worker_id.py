"""Worker ids as clearml-agent makes them, and a per-machine slot lease so agents on one host never collide."""

from __future__ import annotations

import fcntl
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from notebook_agent.engine.gpus import worker_id_suffix

MAX_SLOTS = 1024


def worker_name(configured: str = "") -> str:
    """`agent.worker_name` / CLEARML_WORKER_NAME, else the host name (platform.node(), as clearml-agent)."""
    return configured.strip() or platform.node() or "localhost"


def gpu_suffix(gpus: str | None, cpu_only: bool, dynamic: bool = False) -> str | None:
    """The part clearml-agent appends for GPU or CPU-only workers: `gpu0,1` (`gpu0.1` for MIG slice 0:1, as
    `:` separates worker id parts), `dgpu0-7` for a dynamic daemon's pool, `cpu`, or None for a plain one.
    `gpus` is a comma list of ids (engine.gpus.parse_gpus gives them)."""
    if cpu_only:
        return "cpu"
    if gpus:
        return worker_id_suffix([g for g in re.sub(r"\s+", "", gpus).split(",") if g], dynamic=dynamic)
    return None


@dataclass
class SlotLease:
    """An exclusive lock on `<name>:<kind>:<slot>` held for the life of a worker (released on close/exit)."""

    worker_id: str
    _handle: IO[str] | None = None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _try_lock(path: Path) -> IO[str] | None:
    handle = path.open("a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def lease_worker_id(
    lock_dir: Path,
    *,
    explicit_id: str = "",
    name: str = "",
    gpus: str | None = None,
    cpu_only: bool = False,
    dynamic_gpus: bool = False,
) -> SlotLease:
    """The worker id for a daemon, with the lock that keeps another agent on this host from taking it.

    Explicit ids (`agent.worker_id`, CLEARML_WORKER_ID) are used as given, and locked too: a second agent
    with the same explicit id is refused instead of silently sharing it (clearml-agent#207). Otherwise the
    id is `<name>:<slot>`, `<name>:cpu:<slot>`, `<name>:gpu<devs>` or, for a dynamic daemon, `<name>:dgpu<devs>`
    (plus `:<slot>` when that GPU set is already taken on this host), taking the first free slot.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    base = worker_name(name)
    suffix = gpu_suffix(gpus, cpu_only, dynamic_gpus)
    if explicit_id:
        candidates = [explicit_id]
    elif suffix and suffix.startswith(("gpu", "dgpu")):
        candidates = [f"{base}:{suffix}"] + [f"{base}:{suffix}:{n}" for n in range(1, MAX_SLOTS)]
    else:
        prefix = f"{base}:{suffix}:" if suffix else f"{base}:"
        candidates = [f"{prefix}{n}" for n in range(MAX_SLOTS)]
    for candidate in candidates:
        handle = _try_lock(lock_dir / (re.sub(r"[^\w.,:-]", "_", candidate).replace(":", "__") + ".lock"))
        if handle is not None:
            return SlotLease(candidate, handle)
    raise RuntimeError(
        f"worker id {candidates[0]!r} is already used by another agent on this host; "
        "set a different agent.worker_id (CLEARML_WORKER_ID) or stop the other agent"
    )


def standalone_worker_id(name: str = "") -> str:
    """`execute` mode's id: `<name>:<pid>`, never registered."""
    return f"{worker_name(name)}:{os.getpid()}"
