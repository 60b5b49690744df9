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

With an archive store (`archive_root`: the configured path on a network or FUSE filesystem, e.g. a mounted Google
Drive; see archive_store.py), the folder above is a local working copy (`agent.venvs_cache.local_path`) and every
entry is also kept in the store as one archive:

    <archive_root>/<key>.tar.gz    the entry folder, packed after its build by a background thread
    <archive_root>/<key>.json      its meta.json, checksum and last use (the store's own LRU and max_entries)

A local miss unpacks the archive into the working copy (under the key's lease) before it builds; a build is
archived without delaying its task. The store failing (unmounted, full, damaged archives) only costs a build.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from notebook_agent.environment.archive_store import ARCHIVER, ArchiveStore
from notebook_agent.environment.cache_key import CACHE_FORMAT, cache_key, normalize_requirements
from notebook_agent.environment.commands import mask_text
from notebook_agent.environment.reporter import BuildReporter
from notebook_agent.environment.thin_venv import make_thin_venv, site_dirs

if TYPE_CHECKING:
    from notebook_agent.environment.managers import PackageManager

logger = logging.getLogger(__name__)

__all__ = ["CacheEntry", "CacheLease", "CachedEnvironment", "VenvCache"]

_KEY = re.compile(r"^[0-9a-f]{32}$")
_GIB = 1024**3
# A `.tmp-*` folder without its `.building` lock file is the moment between a build's end and its rename, or an
# agent that died before it took the lock; only the latter gets this old.
_ORPHAN_AGE_S = 24 * 3600


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

    def __init__(
        self,
        root: Path,
        *,
        max_entries: int = 10,
        free_space_threshold_gb: float = 2.0,
        archive_root: Path | None = None,
    ) -> None:
        self.root = Path(root).expanduser().absolute()
        self.max_entries = max(1, int(max_entries))
        self.free_space_threshold_gb = float(free_space_threshold_gb)
        # With a store, `root` is the local working copy and the store keeps its own max_entries archives.
        self.archive = ArchiveStore(archive_root, max_entries=self.max_entries) if archive_root is not None else None

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
                **site_dirs(python, venv_dir, env),
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
            entry, lease = self._valid_entry(key, lease)
            hit = entry is not None
            unpacked: float | None = None
            if entry is None and self.archive is not None:
                unpack_started = time.perf_counter()
                if self.archive.fetch(key, self.root, reporter=reporter):
                    entry, lease = self._valid_entry(key, lease)
                    unpacked = time.perf_counter() - unpack_started if entry is not None else None
            if entry is not None:
                reporter.step("cache", 0.2, detail="hit" if unpacked is None else "hit (from the archive)")
            else:
                reporter.step("cache", 0.2, detail="miss: building")
                reporter.log(f"cache miss {short}: building")
                logger.info("venv cache miss %s: building", short)
                entry = self.build(key, manager, requirements, inputs=inputs, cwd=cwd, env=env, reporter=reporter)
            python = make_thin_venv(entry, dest)
            entry = self.touch(entry)
            elapsed = time.perf_counter() - started
            if unpacked is not None:
                reporter.log(f"cache hit {short} (unpacked from archive in {unpacked:.1f} s): ready in {elapsed:.1f} s")
                logger.info("venv cache hit %s: unpacked from archive in %.1f s", short, unpacked)
            elif hit:
                reporter.log(f"cache hit {short}: environment ready in {elapsed:.3f} s")
                logger.info("venv cache hit %s: environment ready in %.3f s", short, elapsed)
            else:
                reporter.log(f"cache {short}: built and ready in {elapsed:.1f} s")
                logger.info("venv cache %s: built and ready in %.1f s", short, elapsed)
            if not hit:  # a new local entry, built or unpacked
                evicted = self.evict(protect={key})
                if evicted:
                    reporter.log(f"cache: evicted {', '.join(k[:12] for k in evicted)}")
            self._sync_archive(entry)
            return CachedEnvironment(python, entry.frozen, lease, hit or unpacked is not None, key)
        except BaseException:
            lease.close()
            raise

    @staticmethod
    def wait_for_archives(timeout: float | None = None) -> bool:
        """Wait until the archiving threads of every VenvCache in this process have ended, at most `timeout`
        seconds (None: no limit); True when none is left running."""
        return ARCHIVER.wait(timeout)

    def _valid_entry(self, key: str, lease: CacheLease) -> tuple[CacheEntry | None, CacheLease]:
        """The entry for `key` (None when there is none) and the caller's lease, taken again if a damaged folder
        had to be removed (that needs the key unleased)."""
        entry = self.lookup(key)
        if entry is None and self.entry_path(key).exists():
            # Damaged (or from a foreign tool): remove it unless someone uses it, then look again.
            lease.close()
            self._remove(key)
            lease = self.acquire(key)
            entry = self.lookup(key)
            if entry is None and self.entry_path(key).exists():
                lease.close()
                raise OSError(f"cache entry {key[:12]} is damaged (no valid meta.json) and in use")
        return entry, lease

    def _sync_archive(self, entry: CacheEntry) -> None:
        """Archive `entry` when the store lacks it, else record its use there, in the background (the task does
        not wait). The job holds its own lease, so the local entry is not evicted while it is packed."""
        if self.archive is None:
            return
        try:
            lease = self.acquire(entry.key)
        except OSError as exc:
            logger.warning("venv cache %s: not archived: %s", entry.key[:12], exc)
            return
        ARCHIVER.submit(self.archive, entry.path, entry.key, entry.meta, lease)

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
