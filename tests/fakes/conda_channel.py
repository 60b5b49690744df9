"""Conda packages and a local channel written by hand, so conda mode is tested offline with no conda package online."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
from pathlib import Path

# 2023-11-14: a fixed build time, so two builds of a package are byte-identical.
_TIMESTAMP_MS = 1_700_000_000_000


def build_conda_package(
    channel: Path,
    name: str,
    version: str,
    files: dict[str, str | bytes],
    depends: list[str] | None = None,
    subdir: str = "noarch",
    build: str = "0",
) -> Path:
    """Write `channel/subdir/NAME-VERSION-BUILD.tar.bz2` and return its path.

    `files` maps prefix-relative paths (`bin/tool`, `share/x/data.txt`) to their content; files under `bin/` are
    executable. A noarch package is `noarch: generic` (its files land in the prefix as they are).
    """
    payload = {path: data.encode() if isinstance(data, str) else data for path, data in files.items()}
    index: dict[str, object] = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "depends": list(depends or []),
        "subdir": subdir,
        "license": "MIT",
        "timestamp": _TIMESTAMP_MS,
    }
    if subdir == "noarch":
        index["noarch"] = "generic"
    paths = {
        "paths_version": 1,
        "paths": [
            {
                "_path": path,
                "path_type": "hardlink",
                "sha256": hashlib.sha256(data).hexdigest(),
                "size_in_bytes": len(data),
            }
            for path, data in payload.items()
        ],
    }
    members = {
        "info/index.json": json.dumps(index, indent=2).encode(),
        "info/paths.json": json.dumps(paths, indent=2).encode(),
        "info/files": "".join(path + "\n" for path in payload).encode(),
        **payload,
    }
    target = channel / subdir / f"{name}-{version}-{build}.tar.bz2"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:bz2") as archive:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mode = 0o755 if member.startswith("bin/") else 0o644
            info.mtime = _TIMESTAMP_MS // 1000
            archive.addfile(info, io.BytesIO(data))
    return target


def index_channel(channel: Path) -> None:
    """Write the channel's repodata.json for every subdir (py-rattler's `index_fs`, as `conda index` would)."""
    from rattler.index import index_fs

    asyncio.run(index_fs(channel))
