"""The virtualenv cache: a task's environment is built once per key and then only read (never chmod'ed: nothing
writes to it by design), and each task runs in a thin venv of its own layered over it.

Layout of the cache directory (`agent.venvs_cache.path`):

    <key>/venv         a complete venv (create + install), never run directly and never written after its build
    <key>/meta.json    key inputs, created, last_used, size, the frozen list and the venv's layout
    <key>.lock         flock: shared while a task builds or runs from the entry, exclusive (non-blocking) to evict it
    .tmp-<random>/     a build in progress, rename()d to <key> when complete; its `.building` file is flocked by the
                       builder, so a build whose agent died can be told from a live one and removed
    .trash-<random>/   an evicted entry being deleted (renamed there first, so nobody ever sees half an entry)

A task's thin venv (`work_dir/venv`) has its own pyvenv.cfg, interpreter symlinks and an empty site-packages with a
`.pth` that adds the entry's site-packages after it: cached packages import, packages the task installs land in its
own venv (pip will not uninstall outside the active environment), and two tasks never share a writable environment.
The entry's console scripts are rewritten into the thin venv's bin/ with its python in the shebang. Making one
costs a few hundred small file operations, not a copy of the environment.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from notebook_agent.environment.commands import mask_text, run
from notebook_agent.environment.errors import EnvironmentSetupError
from notebook_agent.environment.reporter import BuildReporter, NullReporter

if TYPE_CHECKING:
    from notebook_agent.environment.managers import PackageManager

logger = logging.getLogger(__name__)

# Bumped when the entry layout or the key's meaning changes, so old entries are never taken for new ones.
CACHE_FORMAT = 1
PTH_NAME = "_notebook_agent_venv_cache.pth"
_KEY = re.compile(r"^[0-9a-f]{32}$")
_GIB = 1024**3
# A `.tmp-*` folder without its `.building` lock file is the moment between a build's end and its rename, or an
# agent that died before it took the lock; only the latter gets this old.
_ORPHAN_AGE_S = 24 * 3600
# Linux runs `#!` lines up to this length; longer ones (or ones with spaces) go through /bin/sh, as pip's own do.
_SHEBANG_MAX = 127
_SCRIPT_MAX_BYTES = 1 << 20
_HEAD_BYTES = 8192  # enough for a `#!` or exec line naming any path
_SH_EXEC = b"'''exec'"
# Folders of a thin venv outside bin/ and site-packages made real down to this depth (share/jupyter/kernels).
_MIRROR_DEPTH = 3
_MIRROR_BUDGET = 256  # items a thin venv may create that way outside bin/

_COMMENT = re.compile(r"(^|\s+)#.*$")
# A requirement's name (and extras) when followed by a specifier, a marker, a URL (`@`) or nothing.
_NAME = re.compile(r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(\[[^\]]*\])?\s*(?=$|[<>=!~;@(,\s])")
_AROUND_PUNCT = re.compile(r" ?([<>=!~,;()\[\]@\"'&|]) ?")
_FILE_OPTIONS = {"-r", "--requirement", "-c", "--constraint", "-e", "--editable"}
_LOCATION_OPTIONS = {"-f", "--find-links", "-i", "--index-url", "--extra-index-url"}
_ARCHIVES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")


# --- the key -------------------------------------------------------------------------------------------------


def normalize_requirements(text: str) -> list[str]:
    """Requirements text as the key sees it: no comments, blank lines or stray whitespace; names lowercased
    (PEP 503); option lines (`-r`, `--extra-index-url`, ...) first in their order, then the requirements sorted."""
    options: list[str] = []
    requirements: list[str] = []
    for line in _logical_lines(text):
        if line.startswith("-"):
            options.append(" ".join(line.split()))
        else:
            requirements.append(_normalize_requirement(line))
    return options + sorted(requirements)


def cache_key(inputs: Mapping[str, Any], requirements: str) -> str:
    """The entry name for `requirements` built with `inputs` (package manager, interpreter identity, platform,
    system-site-packages, pip arguments): 32 hex digits of a sha256."""
    payload = {"format": CACHE_FORMAT, "inputs": inputs, "requirements": normalize_requirements(requirements)}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def local_requirement(text: str) -> str | None:
    """The first line that makes `text` depend on files outside it (`-e .`, `./pkg`, `file:`, a wheel path,
    `-r`/`-c` of another file, `--find-links ./dir`), else None. Such requirements are not cached: what they install
    changes with the checked-out code. Editable installs are among them (they point at a path inside the venv)."""
    for line in _logical_lines(text):
        if line.startswith("-"):
            option, value = _split_option(line)
            if option in _FILE_OPTIONS or (option in _LOCATION_OPTIONS and _is_local_location(value)):
                return line
        elif _is_local_spec(line.split(";", 1)[0].strip()):
            return line
    return None


def _logical_lines(text: str) -> list[str]:
    # As pip reads a requirements file: `\` continues a line, `#` at the start or after whitespace starts a comment.
    lines: list[str] = []
    pending = ""
    for raw in [*text.splitlines(), ""]:
        stripped = raw.rstrip()
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = _COMMENT.sub("", pending + stripped).strip()
        pending = ""
        if line:
            lines.append(line)
    return lines


def _normalize_requirement(line: str) -> str:
    match = _NAME.match(line)
    head, rest = "", line
    if match:
        head = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        if match.group(2):
            extras = sorted(re.sub(r"[-_.]+", "-", e.strip()).lower() for e in match.group(2)[1:-1].split(","))
            head += "[" + ",".join(e for e in extras if e) + "]"
        rest = line[match.end() :]
    return head + _AROUND_PUNCT.sub(r"\1", " ".join(rest.split()))


def _split_option(line: str) -> tuple[str, str]:
    head, _, tail = " ".join(line.split()).partition(" ")
    if head.startswith("--"):
        option, eq, value = head.partition("=")
        return option, (value if eq else tail).strip()
    return head[:2], (head[2:] or tail).strip()


def _is_local_location(value: str) -> bool:
    lowered = value.lower()
    return bool(value) and (lowered.startswith("file:") or "://" not in value)


def _is_local_spec(spec: str) -> bool:
    lowered = spec.lower()
    if lowered.startswith((".", "/", "~")) or "file:" in lowered:
        return True
    if "://" in spec:
        return False  # a URL or VCS requirement: the same for every checkout
    return "/" in spec or "\\" in spec or lowered.endswith(_ARCHIVES)


# --- the interpreter ------------------------------------------------------------------------------------------

_PROBE = (
    "import json, os, sys, sysconfig; print(json.dumps({'executable': os.path.realpath(sys.executable), "
    "'version': sys.version, 'implementation': sys.implementation.name, 'platform': sysconfig.get_platform()}))"
)
_identities: dict[tuple[str, str, int, int], dict[str, str]] = {}
_identities_lock = threading.Lock()


def interpreter_identity(python: str, env: Mapping[str, str]) -> dict[str, str]:
    """What the key needs to know of interpreter `python` (a path or a name on env's PATH): its resolved path,
    full version (`sys.version`), implementation and `sysconfig.get_platform()`. Remembered per binary, except for
    wrapper scripts (pyenv shims) whose target can change under the same file."""
    found = shutil.which(python, path=env.get("PATH"))
    if found is None:
        raise EnvironmentSetupError(f"python not found: {python}")
    real = os.path.realpath(found)
    stat = os.stat(real)
    memo = (found, real, stat.st_mtime_ns, stat.st_size)
    cacheable = not _is_script(real)
    if cacheable:
        with _identities_lock:
            if memo in _identities:
                return dict(_identities[memo])
    result = run(
        [found, "-I", "-S", "-c", _PROBE], cwd=None, env=env, reporter=NullReporter(), capture=True, quiet=True
    )
    try:
        identity = {str(k): str(v) for k, v in json.loads(result.stdout.strip().splitlines()[-1]).items()}
    except (ValueError, IndexError, AttributeError):
        raise EnvironmentSetupError(f"cannot run python {python}: {result.stderr.strip() or 'no output'}") from None
    if cacheable:
        with _identities_lock:
            _identities[memo] = dict(identity)
    return identity


def _is_script(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"#!"
    except OSError:
        return False


# --- entries, leases and locks -------------------------------------------------------------------------------


class CacheLease:
    """A shared lock on one cache entry: while it is held the entry is not evicted. `close()` when the task that
    runs from the entry has ended (also a context manager; closing twice is fine)."""

    def __init__(self, key: str, handle: io.FileIO) -> None:
        self.key = key
        self._handle: io.FileIO | None = handle

    @property
    def held(self) -> bool:
        return self._handle is not None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor drops the flock
            self._handle = None

    release = close

    def __enter__(self) -> CacheLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CacheLease({self.key[:12]}, {'held' if self.held else 'released'})"


@dataclass(frozen=True)
class CacheEntry:
    """One complete cached environment and its meta.json."""

    key: str
    path: Path  # CACHE/<key>
    meta: Mapping[str, Any]

    @property
    def venv(self) -> Path:
        return self.path / "venv"

    @property
    def frozen(self) -> list[str]:
        return [str(line) for line in self.meta.get("frozen", [])]

    @property
    def last_used(self) -> float:
        return float(self.meta.get("last_used", 0.0))


@dataclass(frozen=True)
class CachedEnvironment:
    """What `VenvCache.provide` made: the thin venv's python, the entry's frozen list, the lease to release."""

    python: Path
    frozen: list[str]
    lease: CacheLease
    hit: bool
    key: str


def _lock(path: Path, mode: int, *, blocking: bool = True) -> io.FileIO | None:
    """flock `path` (created if missing) and return its open file, or None when non-blocking and taken. Lock files
    are unlinked by evictions, so a lock on a file no longer at `path` is dropped and taken again."""
    while True:
        handle = io.FileIO(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "r+")
        try:
            fcntl.flock(handle.fileno(), mode | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return None
        except BaseException:
            handle.close()
            raise
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(handle.fileno())
        if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
            return handle
        handle.close()


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _tree_size(path: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


class VenvCache:
    """The cache directory: look up, build, lease and evict entries. Safe across threads and across agents that
    share the directory (flock); see the module docstring for the layout."""

    def __init__(self, root: Path, *, max_entries: int = 10, free_space_threshold_gb: float = 2.0) -> None:
        self.root = Path(root).expanduser().absolute()
        self.max_entries = max(1, int(max_entries))
        self.free_space_threshold_gb = float(free_space_threshold_gb)

    def entry_path(self, key: str) -> Path:
        return self.root / key

    def acquire(self, key: str) -> CacheLease:
        """A shared lease on `key` (waits only while an eviction of that key is renaming it away)."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = _lock(self.root / f"{key}.lock", fcntl.LOCK_SH)
        assert handle is not None
        return CacheLease(key, handle)

    def lookup(self, key: str) -> CacheEntry | None:
        """The complete entry for `key`, or None; hold a lease while using it."""
        path = self.entry_path(key)
        try:
            meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        required = ("frozen", "python", "purelib", "platlib", "built_prefix")
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT or any(k not in meta for k in required):
            return None
        return CacheEntry(key, path, meta)

    def entries(self) -> list[CacheEntry]:
        """Every entry folder, least recently used first (a damaged one counts as used when last modified)."""
        found: list[CacheEntry] = []
        with contextlib.suppress(FileNotFoundError):
            for child in os.scandir(self.root):
                if _KEY.match(child.name) and child.is_dir(follow_symlinks=False):
                    entry = self.lookup(child.name)
                    if entry is None:
                        with contextlib.suppress(OSError):
                            entry = CacheEntry(child.name, Path(child.path), {"last_used": child.stat().st_mtime})
                    if entry is not None:
                        found.append(entry)
        return sorted(found, key=lambda e: (e.last_used, e.key))

    def touch(self, entry: CacheEntry) -> CacheEntry:
        """Record a use now (least-recently-used order); needs the caller's lease. A cache that is not writable
        here (another user's) only loses the ordering."""
        meta = {**entry.meta, "last_used": time.time()}
        try:
            _write_json(entry.path / "meta.json", meta)
        except OSError as exc:
            logger.debug("venv cache: cannot record the use of %s: %s", entry.key[:12], exc)
        return CacheEntry(entry.key, entry.path, meta)

    def build(
        self,
        key: str,
        manager: PackageManager,
        requirements: str,
        *,
        inputs: Mapping[str, Any],
        cwd: Path,
        env: Mapping[str, str],
        reporter: BuildReporter,
    ) -> CacheEntry:
        """Build the entry for `key` in a temp folder and rename it into place; if another build of the same key
        got there first, discard this one and return that. Needs the caller's lease on `key`."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        marker = _lock(tmp / ".building", fcntl.LOCK_EX)
        try:
            os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the entry from other users of a shared cache
            venv_dir = tmp / "venv"
            reporter.step("venv", 0.25)
            python = manager.create_env(venv_dir)
            reporter.step("requirements", 0.4)
            manager.install(python, requirements, cwd=cwd)
            reporter.step("freeze", 0.9)
            frozen = manager.freeze(python)
            now = time.time()
            meta: dict[str, Any] = {
                "format": CACHE_FORMAT,
                "key": key,
                "inputs": json.loads(mask_text(json.dumps(inputs, default=str))),
                "requirements": [mask_text(line) for line in normalize_requirements(requirements)],
                "created": now,
                "last_used": now,
                "frozen": frozen,
                "python": python.relative_to(venv_dir).as_posix(),
                "built_prefix": str(venv_dir),
                **_site_dirs(python, venv_dir, env),
            }
            meta["size"] = _tree_size(tmp)
            _write_json(tmp / "meta.json", meta)
            os.unlink(tmp / ".building")
            final = self.entry_path(key)
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                winner = self.lookup(key)
                if winner is None:
                    raise
                reporter.log(f"cache {key[:12]}: another build of this environment finished first; using it")
                return winner
            entry = self.lookup(key)
            if entry is None:
                raise OSError(f"cache entry {final} unreadable right after its build")
            return entry
        finally:
            if marker is not None:
                marker.close()
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def evict(self, *, protect: Iterable[str] = ()) -> list[str]:
        """Remove least recently used entries while there are more than max_entries or the cache's filesystem has
        less free space than the threshold. Entries in use (leased) and those in `protect` stay. Also clears what
        crashed builds and evictions left behind. Returns the evicted keys."""
        self._clear_leftovers()
        keep = set(protect)
        entries = self.entries()
        count = len(entries)
        removed: list[str] = []
        for entry in entries:
            if count <= self.max_entries and not self._low_on_space():
                break
            if entry.key in keep:
                continue
            if self._remove(entry.key):
                removed.append(entry.key)
                count -= 1
        return removed

    def provide(
        self,
        manager: PackageManager,
        requirements: str,
        dest: Path,
        *,
        inputs: Mapping[str, Any],
        cwd: Path,
        env: Mapping[str, str],
        reporter: BuildReporter,
        started: float | None = None,
    ) -> CachedEnvironment:
        """A thin venv at `dest` over the entry for (inputs, requirements), building the entry on a miss.

        The returned lease must be closed when the task has finished with the environment. `started` (a
        `time.perf_counter()` value) is when the step began, for the time logged; default now.
        """
        started = time.perf_counter() if started is None else started
        key = cache_key(inputs, requirements)
        short = key[:12]
        reporter.step("cache", 0.2)
        lease = self.acquire(key)
        try:
            entry = self.lookup(key)
            if entry is None and self.entry_path(key).exists():
                # Damaged (or from a foreign tool): remove it unless someone uses it, then look again.
                lease.close()
                self._remove(key)
                lease = self.acquire(key)
                entry = self.lookup(key)
                if entry is None and self.entry_path(key).exists():
                    raise OSError(f"cache entry {short} is damaged (no valid meta.json) and in use")
            hit = entry is not None
            if entry is None:
                reporter.log(f"cache miss {short}: building")
                logger.info("venv cache miss %s: building", short)
                entry = self.build(key, manager, requirements, inputs=inputs, cwd=cwd, env=env, reporter=reporter)
            python = make_thin_venv(entry, dest)
            self.touch(entry)
            elapsed = time.perf_counter() - started
            if hit:
                reporter.log(f"cache hit {short}: environment ready in {elapsed:.3f} s")
                logger.info("venv cache hit %s: environment ready in %.3f s", short, elapsed)
            else:
                reporter.log(f"cache {short}: built and ready in {elapsed:.1f} s")
                logger.info("venv cache %s: built and ready in %.1f s", short, elapsed)
                evicted = self.evict(protect={key})
                if evicted:
                    reporter.log(f"cache: evicted {', '.join(k[:12] for k in evicted)}")
            return CachedEnvironment(python, entry.frozen, lease, hit, key)
        except BaseException:
            lease.close()
            raise

    def _low_on_space(self) -> bool:
        if self.free_space_threshold_gb <= 0:
            return False
        try:
            return shutil.disk_usage(self.root).free < self.free_space_threshold_gb * _GIB
        except OSError:
            return False

    def _remove(self, key: str) -> bool:
        lock_path = self.root / f"{key}.lock"
        handle = _lock(lock_path, fcntl.LOCK_EX, blocking=False)
        if handle is None:
            return False  # in use
        trash = self.root / f".trash-{key}-{secrets.token_hex(4)}"
        try:
            try:
                os.rename(self.entry_path(key), trash)
            except FileNotFoundError:
                return False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)
        finally:
            handle.close()
        shutil.rmtree(trash, ignore_errors=True)
        logger.info("venv cache: evicted %s", key[:12])
        return True

    def _clear_leftovers(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            for child in os.scandir(self.root):
                trash = child.name.startswith(".trash-")
                abandoned = child.name.startswith(".tmp-") and self._abandoned(Path(child.path))
                if trash or abandoned:
                    shutil.rmtree(child.path, ignore_errors=True)
                elif child.name.endswith(".lock") and _KEY.match(child.name[: -len(".lock")]):
                    self._drop_lock_file(child.name[: -len(".lock")])

    def _drop_lock_file(self, key: str) -> None:
        # The lock file of a key whose build failed (no entry): unlinked under its exclusive lock, as evictions do.
        if self.entry_path(key).exists():
            return
        lock_path = self.root / f"{key}.lock"
        with contextlib.suppress(OSError):
            handle = _lock(lock_path, fcntl.LOCK_EX, blocking=False)
            if handle is not None:
                with handle:
                    if not self.entry_path(key).exists():
                        os.unlink(lock_path)

    @staticmethod
    def _abandoned(tmp: Path) -> bool:
        try:
            handle = io.FileIO(os.open(tmp / ".building", os.O_RDWR), "r+")
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                return tmp.is_dir() and time.time() - tmp.stat().st_mtime > _ORPHAN_AGE_S
            return False
        except OSError:
            return False
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # its builder is alive
            return True


def _site_dirs(python: Path, venv_dir: Path, env: Mapping[str, str]) -> dict[str, str]:
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
            executable = rest[1 : rest.find(b'"', 1)] if rest.startswith(b'"') else rest.split(b" ", 1)[0]
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
