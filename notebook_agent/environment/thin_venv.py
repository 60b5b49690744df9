"""A task's thin venv over a cached entry: its own pyvenv.cfg and site-packages, a .pth, rewritten scripts."""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from notebook_agent.environment.commands import run
from notebook_agent.environment.errors import EnvironmentSetupError
from notebook_agent.environment.reporter import NullReporter

if TYPE_CHECKING:
    from notebook_agent.environment.cache import CacheEntry

PTH_NAME = "_notebook_agent_venv_cache.pth"
# Linux runs `#!` lines up to this length; longer ones (or ones with spaces) go through /bin/sh, as pip's own do.
_SHEBANG_MAX = 127
_SCRIPT_MAX_BYTES = 1 << 20
_HEAD_BYTES = 8192  # enough for a `#!` or exec line naming any path
_SH_EXEC = b"'''exec'"
# Folders of a thin venv outside bin/ and site-packages made real down to this depth (share/jupyter/kernels).
_MIRROR_DEPTH = 3
_MIRROR_BUDGET = 256  # items a thin venv may create that way outside bin/


def site_dirs(python: Path, venv_dir: Path, env: Mapping[str, str]) -> dict[str, str]:
    """purelib and platlib of the venv, relative to it (as the entry's own interpreter reports them)."""
    code = (
        "import json, sys, sysconfig; p = sysconfig.get_paths(); "
        "print(json.dumps({'prefix': sys.prefix, 'purelib': p['purelib'], 'platlib': p['platlib']}))"
    )
    result = run(
        [str(python), "-I", "-c", code], cwd=venv_dir, env=env, reporter=NullReporter(), capture=True, quiet=True
    )
    try:
        paths = json.loads(result.stdout.strip().splitlines()[-1])
        prefix = Path(paths["prefix"])
        return {name: Path(paths[name]).relative_to(prefix).as_posix() for name in ("purelib", "platlib")}
    except (ValueError, IndexError, KeyError, TypeError):
        raise EnvironmentSetupError(
            f"cannot read the new venv's layout: {result.stderr.strip() or 'no output'}"
        ) from None


# --- the thin venv -------------------------------------------------------------------------------------------


def make_thin_venv(entry: CacheEntry, dest: Path) -> Path:
    """Create a task's own venv at `dest` (which must not exist) layered over `entry`; return its python.

    Mirrors the entry's layout: pyvenv.cfg (without virtualenv's `command` line), the interpreter symlinks, data
    dirs (share/, include/, ...) as shallow real folders over symlinks (see `_mirror`), an empty site-packages
    holding a `.pth` that adds the entry's site-packages, and the entry's scripts rewritten to run with this venv's
    python (other bin/ files are symlinked).
    """
    src = entry.venv
    dest = dest.absolute()
    dest.mkdir(parents=True)
    meta = entry.meta
    site_dirs = {str(meta["purelib"]), str(meta["platlib"])}
    bin_name = Path(str(meta["python"])).parts[0]
    # Paths inside the entry as written at build time (the temp folder) and where it is now.
    old_prefixes = [p for p in dict.fromkeys([str(meta["built_prefix"]), str(src)]) if p]
    mapping = _PathMap(old_prefixes, str(src), str(dest))
    others: list[tuple[os.DirEntry[str], Path, str]] = []
    for child in os.scandir(src):
        target = dest / child.name
        if child.name == "pyvenv.cfg" and child.is_file(follow_symlinks=False):
            lines = Path(child.path).read_text(encoding="utf-8").splitlines()
            kept = [line for line in lines if line.split("=", 1)[0].strip() != "command"]
            target.write_text("\n".join(kept) + "\n", encoding="utf-8")
        elif child.name == bin_name and child.is_dir(follow_symlinks=False):
            _thin_bin(Path(child.path), target, mapping)
        else:
            others.append((child, target, child.name))
    _mirror(others, site_dirs, mapping)
    pth_lines: list[str] = []
    seen: set[str] = set()
    for rel in (str(meta["purelib"]), str(meta["platlib"])):
        real = os.path.realpath(src / rel)
        if real not in seen:
            seen.add(real)
            pth_lines.append(f"import site; site.addsitedir({str(src / rel)!r})")
    purelib = dest / str(meta["purelib"])
    purelib.mkdir(parents=True, exist_ok=True)
    (purelib / PTH_NAME).write_text("\n".join(pth_lines) + "\n", encoding="utf-8")
    return dest / str(meta["python"])


@dataclass(frozen=True)
class _PathMap:
    old: list[str]  # the entry's prefix as baked into its files
    entry: str  # the entry's venv now
    thin: str  # the thin venv

    def link_target(self, target: str) -> str:
        # A symlink into the entry itself must keep pointing into the entry (where it is now).
        for old in self.old:
            if target == old or target.startswith(old + os.sep):
                return self.entry + target[len(old) :]
        return target


def _mirror(todo: list[tuple[os.DirEntry[str], Path, str]], site_dirs: set[str], mapping: _PathMap) -> None:
    """Recreate the entry's (src, dest, path relative to the venv) items in the thin venv, breadth first.

    Folders down to _MIRROR_DEPTH become real folders (so what the task installs there, a new jupyter kernel or man
    page, stays in its venv) while _MIRROR_BUDGET lasts; files, links and the folders past that are symlinks into
    the entry, so a hit costs a bounded number of inodes however many data files the entry has. The folders on the
    way to site-packages are always real; site-packages itself is created empty.
    """
    queue = collections.deque(todo)
    budget = _MIRROR_BUDGET
    while queue:
        src, dest, rel = queue.popleft()
        if src.is_symlink():
            os.symlink(mapping.link_target(os.readlink(src.path)), dest)
        elif not src.is_dir(follow_symlinks=False):
            os.symlink(src.path, dest)
        elif rel in site_dirs:
            dest.mkdir()
        else:
            on_site_path = any(site.startswith(rel + "/") for site in site_dirs)
            children = list(os.scandir(src.path)) if on_site_path or rel.count("/") < _MIRROR_DEPTH else None
            if children is not None and (on_site_path or len(children) <= budget):
                dest.mkdir()
                budget -= len(children)
                queue.extend((child, dest / child.name, f"{rel}/{child.name}") for child in children)
            else:
                os.symlink(src.path, dest)


def _thin_bin(src: Path, dest: Path, mapping: _PathMap) -> None:
    dest.mkdir()
    thin_bin = os.path.join(mapping.thin, src.name)
    for child in os.scandir(src):
        target = dest / child.name
        if child.is_symlink():
            os.symlink(mapping.link_target(os.readlink(child.path)), target)
            continue
        if child.is_dir(follow_symlinks=False):
            _mirror([(child, target, child.name)], set(), mapping)
            continue
        rewritten = _rewrite(Path(child.path), child.name, mapping, thin_bin)
        if rewritten is None:
            os.symlink(child.path, target)  # a binary or a data file: the entry's copy serves
            continue
        target.write_bytes(rewritten)
        os.chmod(target, child.stat(follow_symlinks=False).st_mode & 0o7777)


def _rewrite(path: Path, name: str, mapping: _PathMap, thin_bin: str) -> bytes | None:
    """The file's contents for the thin venv, or None when it does not name the entry's own bin/ in its head."""
    activate = name.startswith("activate")
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
            if not (activate or _names_entry_bin(head, mapping, path.parent.name)):
                return None
            if os.fstat(fh.fileno()).st_size > _SCRIPT_MAX_BYTES:
                return None
            data = head + fh.read()
    except OSError:
        return None
    if activate:
        # Activation scripts name the venv as VIRTUAL_ENV: make them name the thin venv.
        for old in mapping.old:
            data = data.replace(old.encode(), mapping.thin.encode())
        return data
    lines = data.split(b"\n", 2)
    first = lines[0][2:].strip()
    new_bin = thin_bin.encode() + b"/"
    for old in mapping.old:
        old_bin = os.path.join(old, path.parent.name).encode() + b"/"
        if first.startswith(old_bin):
            # `#!<entry>/bin/python [args]`: the thin venv's interpreter of the same name.
            executable, _, args = first.partition(b" ")
            return _shebang(new_bin + executable[len(old_bin) :], args.strip()) + b"\n" + b"\n".join(lines[1:])
        exec_line = lines[1] if first == b"/bin/sh" and len(lines) > 2 else b""
        if exec_line.startswith(_SH_EXEC):
            # pip's form for long paths: #!/bin/sh, then '''exec' <entry>/bin/python "$0" "$@" (maybe quoted)
            rest = exec_line[len(_SH_EXEC) :].strip()
            # pip double-quotes the path, uv single-quotes it
            quote = rest[:1] if rest[:1] in (b'"', b"'") else b""
            executable = rest[1 : rest.find(quote, 1)] if quote else rest.split(b" ", 1)[0]
            if executable.startswith(old_bin):
                new = new_bin + executable[len(old_bin) :]
                return b"\n".join([lines[0], _SH_EXEC + b' "' + new + b'" "$0" "$@"', lines[2]])
    return None


def _names_entry_bin(head: bytes, mapping: _PathMap, bin_name: str) -> bool:
    if not head.startswith(b"#!"):
        return False
    start = b"\n".join(head.split(b"\n", 2)[:2])
    return any(os.path.join(old, bin_name).encode() + b"/" in start for old in mapping.old)


def _shebang(executable: bytes, args: bytes = b"") -> bytes:
    line = b"#!" + executable + (b" " + args if args else b"")
    if len(line) <= _SHEBANG_MAX and b" " not in executable:
        return line
    # As pip writes it: sh re-executes the file with the interpreter; Python reads the lines as a string.
    extra = args + b" " if args else b""
    return b"#!/bin/sh\n" + _SH_EXEC + b' "' + executable + b'" ' + extra + b'"$0" "$@"\n' + b"' '''"
