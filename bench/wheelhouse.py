"""A local wheelhouse repacked from this interpreter's installed packages, so both agents install the same wheels
offline (`PIP_NO_INDEX=1`, `PIP_FIND_LINKS=<wheelhouse>`) and the network never enters the numbers."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from notebook_agent.environment.agent_wheels import agent_closure, repack

logger = logging.getLogger(__name__)


class MissingPackageError(RuntimeError):
    """A package the bench needs is not installed in the interpreter running it."""


def build_wheelhouse(names: Iterable[str], dest: Path) -> list[Path]:
    """Wheels of `names` and their installed dependencies in `dest` (kept across calls: repack skips existing)."""
    wanted = sorted(set(names))
    closure = agent_closure("\n".join(wanted), names=wanted)
    found = {dist.metadata["Name"].lower().replace("_", "-") for dist in closure}
    missing = [name for name in wanted if name.lower().replace("_", "-") not in found]
    if missing or not closure:
        raise MissingPackageError(f"not installed here, cannot repack: {', '.join(missing or wanted)}")
    wheels = [repack(dist, dest) for dist in closure]
    logger.info("wheelhouse %s: %s", dest, ", ".join(sorted(w.name for w in wheels)))
    return wheels


def offline_pip_env(wheelhouse: Path) -> dict[str, str]:
    """What both agents get: pip reads these natively, and our uv installer maps them to the same flags."""
    return {
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheelhouse),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
