"""Pure-Python wheels written by hand with zipfile, so tests install packages with no setuptools and no network."""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from pathlib import Path


def _escape(component: str) -> str:
    # Wheel file and .dist-info names: the PEP 503 normalized name with "-" as "_" (the binary distribution spec).
    return re.sub(r"[-_.]+", "_", component).lower()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(
    dest_dir: Path,
    name: str,
    version: str = "1.0",
    modules: dict[str, str] | None = None,
    requires: list[str] | None = None,
    *,
    entry_points: dict[str, dict[str, str]] | None = None,
) -> Path:
    """Write `{name}-{version}-py3-none-any.whl` into `dest_dir` and return its path.

    `modules` maps archive paths (`"mypkg/__init__.py"`, `"mymod.py"`) to their source; the default is one
    module named after the distribution that sets `VALUE = "<name> <version>"`. `requires` become Requires-Dist.
    `entry_points` maps groups to `{name: "module:function"}`, e.g. `{"console_scripts": {"hi": "hi_mod:main"}}`
    (pip writes a `bin/hi` script for each console script).
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{_escape(name)}-{version.replace('-', '_')}"
    if modules is None:
        modules = {f"{_escape(name)}.py": f"VALUE = {f'{name} {version}'!r}\n"}
    dist_info = f"{stem}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {req}" for req in requires or []]
    files: dict[str, bytes] = {path: text.encode() for path, text in modules.items()}
    files[f"{dist_info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    wheel_meta = "Wheel-Version: 1.0\nGenerator: tests.fakes.wheels\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{dist_info}/WHEEL"] = wheel_meta.encode()
    if entry_points:
        sections = [
            f"[{group}]\n" + "".join(f"{script} = {target}\n" for script, target in targets.items())
            for group, targets in entry_points.items()
        ]
        files[f"{dist_info}/entry_points.txt"] = "\n".join(sections).encode()
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()

    path = dest_dir / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arcname, data in files.items():
            zf.writestr(arcname, data)
    return path
