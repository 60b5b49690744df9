"""Offline-friendly `clearml`: when a task requires clearml and the agent's own environment already has a version
that fits, that installed copy (and its installed dependencies) is repacked into local wheels and installed from
them, so the task's venv gets clearml without a download (Colab without the index, air-gapped hosts)."""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import importlib.metadata as metadata
import io
import json
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import sys_tags
from packaging.utils import canonicalize_name

from notebook_agent.environment.commands import run
from notebook_agent.environment.managers import PackageManager
from notebook_agent.environment.reporter import BuildReporter, NullReporter

logger = logging.getLogger(__name__)

# Distributions a task gets from the agent's own environment when it asks for them.
AGENT_PACKAGES = ("clearml",)
# Files an installer writes into .dist-info that do not belong in a wheel.
_INSTALLER_FILES = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}
_OPTION = re.compile(r"^\s*-")


def agent_closure(requirements: str, names: Iterable[str] = AGENT_PACKAGES) -> list[metadata.Distribution]:
    """The installed distributions (in this interpreter) that satisfy the requirements naming one of `names`,
    with their installed dependencies; empty when none is named or an installed version does not fit."""
    wanted = {canonicalize_name(n) for n in names}
    roots: list[Requirement] = []
    for line in requirements.splitlines():
        text = line.split(" #", 1)[0].strip()
        if not text or text.startswith("#") or _OPTION.match(text):
            continue
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) in wanted and not req.url:
            roots.append(req)
    found: dict[str, metadata.Distribution] = {}
    pending = list(roots)
    while pending:
        req = pending.pop()
        name = canonicalize_name(req.name)
        if name in found or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            if req in roots:
                return []
            continue  # a dependency the agent lacks: the installer fetches it as usual
        if not req.specifier.contains(dist.version, prereleases=True):
            if req in roots:
                return []
            continue
        found[name] = dist
        for dep in dist.requires or []:
            with contextlib.suppress(InvalidRequirement):
                pending.append(Requirement(dep))
    return list(found.values())


def repack(dist: metadata.Distribution, dest: Path) -> Path:
    """A wheel of an installed distribution, made from the files its RECORD lists (scripts outside
    site-packages are left out: installers recreate console scripts from entry_points.txt)."""
    root = Path(str(dist.locate_file("")))
    info = _dist_info(dist)
    tag = _wheel_tag(dist)
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"]).lower()
    wheel = dest / f"{name}-{dist.version}-{tag}.whl"
    if wheel.exists():
        return wheel
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{wheel.name}.", dir=dest)
    os.close(fd)
    try:
        records: list[tuple[str, str, str]] = []
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            for file in dist.files or []:
                relative = file.as_posix()
                if relative.startswith("../") or "__pycache__" in relative or relative.endswith(".pyc"):
                    continue
                if relative.startswith(f"{info}/") and relative.split("/", 1)[1] in _INSTALLER_FILES:
                    continue
                path = root / relative
                if not path.is_file():
                    continue
                data = path.read_bytes()
                archive.writestr(_zip_info(relative, path), data)
                records.append((relative, _hash(data), str(len(data))))
            record_name = f"{info}/RECORD"
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerows([*records, (record_name, "", "")])
            archive.writestr(record_name, buffer.getvalue())
        os.replace(tmp, wheel)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return wheel


@dataclass(frozen=True)
class AgentPackagesFirst:
    """A PackageManager that first installs what the task needs of the agent's own packages from local wheels
    (no index), then the task's requirements as usual (already satisfied ones are not downloaded again). The cache
    key is the wrapped manager's: the environment is the same, only where clearml came from differs."""

    manager: PackageManager
    wheelhouse: Path
    reporter: BuildReporter

    def create_env(self, path: Path) -> Path:
        return self.manager.create_env(path)

    def install(self, python: Path, requirements: str, *, cwd: Path) -> None:
        closure = agent_closure(requirements)
        if closure and getattr(self.manager, "system_site_packages", False):
            seen = _visible_fits(python, requirements, getattr(self.manager, "env", {}))
            if seen:
                # The venv sees a fitting clearml (the agent's environment or the base Python's): nothing to add.
                self.reporter.log(f"agent packages: {seen} already visible through system site packages")
                closure = []
        if closure:
            try:
                wheels = [repack(dist, self.wheelhouse) for dist in closure]
            except OSError as exc:
                self.reporter.log(f"agent packages: cannot repack ({exc}); installing from the index")
                wheels = []
            if wheels:
                pins = "".join(f"{d.metadata['Name']}=={d.version}\n" for d in closure)
                names = ", ".join(f"{d.metadata['Name']} {d.version}" for d in closure[:3])
                more = f" and {len(closure) - 3} more" if len(closure) > 3 else ""
                self.reporter.log(
                    f"agent packages: installing {names}{more} from the agent's environment (no download)"
                )
                try:
                    self.manager.install(python, f"--no-index\n--find-links {self.wheelhouse}\n{pins}", cwd=cwd)
                except Exception as exc:
                    self.reporter.log(f"agent packages: local install failed ({exc}); installing from the index")
        self.manager.install(python, requirements, cwd=cwd)

    def freeze(self, python: Path) -> list[str]:
        return self.manager.freeze(python)

    def cache_key_inputs(self) -> Mapping[str, Any] | None:
        return self.manager.cache_key_inputs()

    def __getattr__(self, name: str) -> Any:
        # Extras of the wrapped manager (conda's task_env) stay visible.
        if name.startswith("__") or name == "manager":
            raise AttributeError(name)
        return getattr(self.manager, name)


def _visible_fits(python: Path, requirements: str, env: Mapping[str, str]) -> str:
    """`name version, ...` when the venv's interpreter already sees an installed version of every agent package
    the requirements name that fits them; "" otherwise."""
    agent_names = {canonicalize_name(n) for n in AGENT_PACKAGES}
    wanted: dict[str, Requirement] = {}
    for line in requirements.splitlines():
        with contextlib.suppress(InvalidRequirement):
            req = Requirement(line.split(" #", 1)[0].strip())
            if canonicalize_name(req.name) in agent_names:
                wanted[req.name] = req
    if not wanted:
        return ""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "found = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try: found[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(found))"
    )
    result = run(
        [str(python), "-c", code, *wanted],
        cwd=python.parent,
        env=env,
        reporter=NullReporter(),
        capture=True,
        quiet=True,
    )
    try:
        found = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return ""
    if any(
        name not in found or not req.specifier.contains(found[name], prereleases=True) for name, req in wanted.items()
    ):
        return ""
    return ", ".join(f"{name} {found[name]}" for name in wanted)


def _dist_info(dist: metadata.Distribution) -> str:
    for file in dist.files or []:
        parts = file.as_posix().split("/")
        if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA":
            return parts[0]
    raise OSError(f"{dist.metadata['Name']} has no .dist-info in its RECORD")


def _wheel_tag(dist: metadata.Distribution) -> str:
    """The distribution's first wheel tag this interpreter accepts (py2-none-any beside py3-none-any: the latter)."""
    tags = [
        line.split(":", 1)[1].strip()
        for line in (dist.read_text("WHEEL") or "").splitlines()
        if line.split(":", 1)[0].strip() == "Tag"
    ]
    supported = {str(tag) for tag in sys_tags()}
    return next((tag for tag in tags if tag in supported), tags[0] if tags else "py3-none-any")


def _zip_info(name: str, path: Path) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = (os.stat(path).st_mode & 0o777 | 0o100000) << 16  # keep executable bits
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
