"""Venv cache entries kept as one archive each, for a cache folder on a slow network filesystem.

Colab users point the cache at their Google Drive so it outlives the VM, but Drive (a FUSE mount that syncs in the
background) is slow per file and loses or truncates files under many small writes: a venv's thousands of files
there make every hit crawl and leave half-synced entries. So on such filesystems an entry is stored as one archive
with a checksum, written once and replaced atomically, and unpacked to local disk when a task needs it.

Layout of the store (`agent.venvs_cache.path` on Drive; the local working copy is `agent.venvs_cache.local_path`):

    <key>.tar.gz                  the entry folder (meta.json and venv/), symlinks kept as symlinks
    <key>.json                    the entry's meta.json, plus archived (time), archive_size, sha256 and last_used
    .<key>.tar.gz.tmp-<random>    an archive being written, os.replace()d to <key>.tar.gz when complete

The json is written after its archive and removed before it, so a reader that finds the json finds the archive.
No locks here: flock is unreliable on FUSE and network mounts, and atomic renames are all the store needs.

Compression: gzip level 1, the fastest level that still shrinks a venv to about a third. Measured on a 93 MB venv
of 3,700 files (pip, numpy, requests, pygments, ...), best of three on a busy 2-core machine: level 1 packs in 1.0 s
to 31.5 MB, level 6 in 2.4 s to 27.4 MB, level 9 in 7.3 s to 27.1 MB, bzip2 in 4.8 s to 25.7 MB, xz -1 in 5.1 s
to 21.5 MB; an uncompressed tar takes 0.4 s but is 98.6 MB to move over Drive. Unpacking takes 1-2 s at every gzip
level (creating the files dominates; bzip2 3.6 s). Packing runs in the background, on Colab's two CPUs beside
the task itself, so its cost matters more than the last few MB.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import hashlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

from notebook_agent.environment.reporter import BuildReporter, NullReporter

logger = logging.getLogger(__name__)

__all__ = ["ARCHIVER", "ArchiveStore", "BackgroundArchiver", "DamagedArchiveError", "filesystem_type", "use_archive"]

COMPRESS_LEVEL = 1
STORE_CHOICES = ("auto", "folder", "archive")
_KEY = re.compile(r"^[0-9a-f]{32}$")
_SUFFIX = ".tar.gz"
_CHUNK = 1 << 20
# A crashed store leaves `.<key>.tar.gz.tmp-*`, `.<key>.json.tmp-*` or an archive whose json was never written;
# a live one finishes within minutes, so only leftovers this old are removed.
_LEFTOVER_AGE_S = 24 * 3600
# Filesystem types whose files live across a network or behind a FUSE daemon (fuse.* matches by prefix).
_NETWORK_FS = frozenset(
    ("fuse", "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "sshfs", "davfs", "gcsfuse", "afs", "ceph", "glusterfs")
)
_COLAB_DRIVE = Path("/content/drive")
# tarfile's extraction filters (Python >= 3.10.12 / 3.11.4 / 3.12): "tar" also drops setuid and group/other write
# bits; older interpreters rely on the checks in `_checked` alone.
_TAR_FILTER: dict[str, Any] = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}


class DamagedArchiveError(Exception):
    """An archive that must not be unpacked: a checksum mismatch, a member outside the entry or a special file."""


# --- which store a cache path gets ----------------------------------------------------------------------------


def filesystem_type(path: Path, mountinfo: str | None = None) -> str:
    """The type (`ext4`, `overlay`, `fuse.drive`, `nfs4`, ...) of the mount holding `path`: the longest mount point
    above it in /proc/self/mountinfo (or in `mountinfo` text). "" when it can't be told."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
    target = os.path.realpath(os.path.expanduser(str(path)))
    best, best_len = "", -1
    for line in mountinfo.splitlines():
        # "<id> <parent> <maj:min> <root> <mount point> <options> [optional fields...] - <type> <source> <super>"
        fields = line.split()
        if "-" not in fields or len(fields) < 5:
            continue
        after = fields[fields.index("-") + 1 :]
        if not after:
            continue
        mount_point = _unescape(fields[4])
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) > best_len:  # a later mount on the same point shadows earlier ones
            best, best_len = after[0], len(mount_point)
    return best


def use_archive(path: Path, store: str = "auto", mountinfo: str | None = None) -> bool:
    """Whether the cache at `path` keeps one archive per entry (`agent.venvs_cache.store`): "archive" yes, "folder"
    no, "auto" when `path` is on a network or FUSE filesystem or under Colab's Drive mount point."""
    choice = str(store).strip().lower()
    if choice not in STORE_CHOICES:
        raise ValueError(f"agent.venvs_cache.store must be one of {', '.join(STORE_CHOICES)}, not {store!r}")
    if choice != "auto":
        return choice == "archive"
    absolute = Path(os.path.abspath(os.path.expanduser(str(path))))
    if absolute == _COLAB_DRIVE or _COLAB_DRIVE in absolute.parents:
        return True  # also before drive.mount() has run, when the path is still on the local disk
    fs_type = filesystem_type(absolute, mountinfo)
    return fs_type in _NETWORK_FS or fs_type.startswith("fuse.")


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash in paths as \040, \011, \012 and \134.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


# --- the store ------------------------------------------------------------------------------------------------


class ArchiveStore:
    """A folder of entry archives (see the module docstring): fetch one into a local cache, store one, record
    uses and drop the least recently used. Safe across threads and agents sharing the folder (atomic renames).

    Methods that read or write the store raise OSError when it is unusable (Drive unmounted, full); `fetch` alone
    catches them, because a miss there only costs a build."""

    def __init__(self, root: Path, *, max_entries: int) -> None:
        self.root = Path(root).expanduser().absolute()
        self.max_entries = max(1, int(max_entries))

    def archive_path(self, key: str) -> Path:
        return self.root / f"{_checked_key(key)}{_SUFFIX}"

    def record_path(self, key: str) -> Path:
        return self.root / f"{_checked_key(key)}.json"

    def record(self, key: str) -> dict[str, Any] | None:
        """The json of `key`, or None when there is none (or it is unreadable)."""
        try:
            data = json.loads(self.record_path(key).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def has(self, key: str) -> bool:
        """Whether `key` is stored (its json and archive are there; the checksum is checked only by `fetch`)."""
        return self.record(key) is not None and self.archive_path(key).is_file()

    def keys(self) -> list[str]:
        """The stored keys, least recently used first."""
        return [key for key, _used in self._by_use()]

    def fetch(self, key: str, dest_root: Path, *, reporter: BuildReporter | None = None) -> bool:
        """Unpack `key` to `dest_root/<key>` (built in `dest_root/.tmp-<random>/`, renamed when complete and its
        sha256 verified); True when `dest_root/<key>` is there now. False on a miss, an unusable store (logged) or a
        damaged archive, which is also removed from the store so the next build stores a good one."""
        reporter = reporter or NullReporter()
        short = key[:12]
        try:
            record = self._record_or_damage(key)
        except DamagedArchiveError as exc:
            self._report_damage(key, exc, reporter)
            return False
        except OSError as exc:
            self._report_unusable(short, exc, reporter)
            return False
        if record is None:
            return False
        tmp: Path | None = None
        try:
            dest_root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest_root))
            self._unpack(key, str(record["sha256"]), tmp)
            try:
                os.rename(tmp, dest_root / key)
            except OSError as exc:
                # Another agent unpacked or built the same entry first: theirs serves.
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            return True
        except FileNotFoundError as exc:
            # Evicted by another agent since its json was read, or lost by Drive: a miss, and no json left
            # pointing at nothing (it would count towards max_entries and hide the key from the next store).
            logger.debug("venv archive %s vanished while fetched: %s", short, exc)
            if not self.archive_path(key).exists():
                with contextlib.suppress(OSError):
                    os.unlink(self.record_path(key))
            return False
        except (DamagedArchiveError, tarfile.TarError, EOFError, zlib.error) as exc:
            self._report_damage(key, exc, reporter)
            return False
        except OSError as exc:
            self._report_unusable(short, exc, reporter)
            return False
        finally:
            if tmp is not None and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def store(self, entry_path: Path, key: str, meta: Mapping[str, Any]) -> dict[str, Any]:
        """Pack the entry folder `entry_path` as `key` (replacing an archive already there); returns its json."""
        archive = self.archive_path(key)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{archive.name}.tmp-{secrets.token_hex(4)}"
        try:
            with open(tmp, "wb") as raw:
                writer = _HashingWriter(raw)
                # mtime=0 in the gzip header; tar keeps the files' own times.
                with (
                    gzip.GzipFile(fileobj=writer, mode="wb", compresslevel=COMPRESS_LEVEL, mtime=0) as gz,
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
                ):
                    for child in sorted(os.scandir(entry_path), key=lambda c: c.name):
                        tar.add(child.path, arcname=child.name)  # symlinks stay symlinks (no dereference)
                raw.flush()
                with contextlib.suppress(OSError):
                    os.fsync(raw.fileno())  # Drive uploads what is on disk; don't let it see a short file
            now = time.time()
            record = {
                **meta,
                "archived": now,
                "archive_size": writer.size,
                "sha256": writer.hexdigest(),
                "last_used": now,
            }
            # The old json goes first: a reader must never pair it with the new archive (checksum mismatch).
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.record_path(key))
            os.replace(tmp, archive)
            _write_json(self.record_path(key), record)
            return record
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def touch(self, key: str) -> None:
        """Record a use of `key` now (the store's least-recently-used order); a key not stored is left alone."""
        record = self.record(key)
        if record is not None:
            _write_json(self.record_path(key), {**record, "last_used": time.time()})

    def evict(self) -> list[str]:
        """Remove the least recently used archives beyond max_entries, and what crashed stores left; returns the
        evicted keys."""
        self._clear_leftovers()
        stored = self._by_use()
        removed: list[str] = []
        for key, _used in stored[: max(0, len(stored) - self.max_entries)]:
            self.discard(key)
            removed.append(key)
            logger.info("venv archive store: evicted %s", key[:12])
        return removed

    def discard(self, key: str) -> None:
        """Remove `key` from the store (json first, so nobody pairs it with a missing archive)."""
        for path in (self.record_path(key), self.archive_path(key)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _by_use(self) -> list[tuple[str, float]]:
        found: list[tuple[str, float]] = []
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for child in os.scandir(self.root):
                key = child.name[: -len(".json")] if child.name.endswith(".json") else ""
                if _KEY.match(key):
                    record = self.record(key)
                    used = record.get("last_used", 0.0) if record is not None else 0.0
                    found.append((key, float(used) if isinstance(used, (int, float)) else 0.0))
        return sorted(found, key=lambda item: (item[1], item[0]))

    def _record_or_damage(self, key: str) -> dict[str, Any] | None:
        try:
            text = self.record_path(key).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            record = json.loads(text)
        except ValueError:
            raise DamagedArchiveError("its json is not valid") from None
        if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
            raise DamagedArchiveError("its json has no sha256")
        return record

    def _unpack(self, key: str, sha256: str, tmp: Path) -> None:
        """Extract the archive into `tmp` in one read of it (Drive reads are the slow part), hashing as it goes;
        the caller renames `tmp` only after this returns, so a mismatch found at the end exposes nothing."""
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the entry from other users of a shared cache
        # Held while unpacking, as a build holds it: a cache clearing leftovers keeps a .tmp-* whose lock is taken.
        marker = io.FileIO(os.open(tmp / ".building", os.O_RDWR | os.O_CREAT, 0o644), "r+")
        try:
            fcntl.flock(marker.fileno(), fcntl.LOCK_EX)
            with open(self.archive_path(key), "rb") as raw:
                reader = _HashingReader(raw)
                with tarfile.open(fileobj=reader, mode="r|gz") as tar:
                    tar.extractall(tmp, members=_checked(tar, tmp), numeric_owner=True, **_TAR_FILTER)
                reader.drain()
            if reader.hexdigest() != sha256:
                raise DamagedArchiveError("sha256 mismatch")
            os.unlink(tmp / ".building")
        finally:
            marker.close()

    def _report_damage(self, key: str, exc: BaseException, reporter: BuildReporter) -> None:
        why = str(exc) or type(exc).__name__
        reporter.log(f"cache {key[:12]}: archive damaged ({why}); removed it from the store")
        logger.warning("venv archive %s in %s damaged (%s); removing it", key[:12], self.root, why)
        try:
            self.discard(key)
        except OSError as err:
            logger.warning("venv archive store %s: cannot remove %s: %s", self.root, key[:12], err)

    def _report_unusable(self, short: str, exc: OSError, reporter: BuildReporter) -> None:
        reporter.log(f"cache {short}: archive store unusable ({exc}); going on without it")
        logger.warning("venv archive store %s unusable: %s", self.root, exc)

    def _clear_leftovers(self) -> None:
        now = time.time()
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for child in os.scandir(self.root):
                name = child.name
                partial = name.startswith(".") and (f"{_SUFFIX}.tmp-" in name or ".json.tmp-" in name)
                orphan = name.endswith(_SUFFIX) and _KEY.match(name[: -len(_SUFFIX)]) is not None
                if orphan:
                    orphan = not os.path.exists(self.record_path(name[: -len(_SUFFIX)]))
                if partial or orphan:
                    with contextlib.suppress(OSError):
                        if now - child.stat(follow_symlinks=False).st_mtime > _LEFTOVER_AGE_S:
                            os.unlink(child.path)


# --- archiving in the background -----------------------------------------------------------------------------


class Lease(Protocol):
    """What keeps an entry from being evicted while it is packed (the cache's CacheLease)."""

    def close(self) -> None: ...


class BackgroundArchiver:
    """Stores entries from daemon threads, one per job, so a task never waits for Drive (nor an agent's exit for
    a slow upload: an interrupted one leaves only a temp file that a later `evict` removes). One per process
    (`ARCHIVER`), so shutdown can `wait` for the jobs of every cache; a key already being stored is not packed
    twice. No thread exists until the first `submit`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._jobs: set[tuple[Path, str]] = set()

    def submit(self, store: ArchiveStore, entry_path: Path, key: str, meta: Mapping[str, Any], lease: Lease) -> bool:
        """Store `entry_path` as `key` unless the store has it (then only `touch` it), then `evict`; `lease` is
        closed when done. False when that key is already being stored here, or no thread could be started."""
        job = (store.root, key)
        with self._lock:
            busy = job in self._jobs
            self._jobs.add(job)
        if busy:
            lease.close()
            return False
        thread = threading.Thread(
            target=self._run, args=(store, entry_path, key, meta, lease), name=f"venv-archive-{key[:12]}", daemon=True
        )
        with self._lock:
            self._threads.add(thread)
        try:
            thread.start()
        except RuntimeError as exc:  # out of threads: not worth failing a task for
            self._done(job, thread, lease)
            logger.warning("venv cache %s: not archived: %s", key[:12], exc)
            return False
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for every job, at most `timeout` seconds (None: no limit); True when none is left running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                pending = list(self._threads)  # each job removes its thread as its last step
            if not pending:
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            pending[0].join(remaining)

    def _run(self, store: ArchiveStore, entry_path: Path, key: str, meta: Mapping[str, Any], lease: Lease) -> None:
        try:
            if store.has(key):
                store.touch(key)
                return
            started = time.perf_counter()
            record = store.store(entry_path, key, meta)
            seconds = time.perf_counter() - started
            size_mb = record["archive_size"] / 1e6
            logger.info("venv cache %s: archived to %s (%.1f MB in %.1f s)", key[:12], store.root, size_mb, seconds)
            store.evict()
        except OSError as exc:
            # Drive unmounted, full or read-only: the local entry serves this VM, only the next one builds again.
            logger.warning("venv cache %s: cannot archive to %s: %s", key[:12], store.root, exc)
        except Exception:
            # A bug here must not surface as a thread traceback in the user's notebook; the task is unaffected.
            logger.exception("venv cache %s: archiving to %s failed", key[:12], store.root)
        finally:
            self._done((store.root, key), threading.current_thread(), lease)

    def _done(self, job: tuple[Path, str], thread: threading.Thread, lease: Lease) -> None:
        lease.close()
        with self._lock:
            self._jobs.discard(job)
            self._threads.discard(thread)


ARCHIVER = BackgroundArchiver()


# --- helpers --------------------------------------------------------------------------------------------------


def _checked_key(key: str) -> str:
    # Keys become file names in a shared folder: nothing but the cache's own 32 hex digits.
    if not _KEY.match(key):
        raise ValueError(f"not a venv cache key: {key!r}")
    return key


def _checked(tar: tarfile.TarFile, dest: Path) -> Iterator[tarfile.TarInfo]:
    """The archive's members, each refused (DamagedArchiveError) unless it lands inside `dest`: no absolute names,
    no `..`, nothing written through a symlink out of `dest`, no hard link to outside it, no devices or fifos.
    Symlinks may point anywhere (a venv's bin/python names the base interpreter), but nothing is extracted
    through them. Files get the unpacking user as owner. Lazy, so each check sees what was extracted before it."""
    root = os.path.realpath(dest)
    for member in tar:
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise DamagedArchiveError(f"special file {member.name!r}")
        # tarfile's "tar" filter resolves each member's path itself; doing it twice costs a third of an unpack.
        # A symlink member replaces what is at its name; anything else is written through what is there.
        _inside(root, member.name, leaf=not member.issym(), resolve=not _TAR_FILTER)
        if member.islnk():  # hard link targets the filter does not check
            _inside(root, member.linkname, leaf=True, resolve=True)
        member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
        yield member


def _inside(root: str, name: str, *, leaf: bool, resolve: bool) -> None:
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or os.path.isabs(name) or ".." in pure.parts:
        raise DamagedArchiveError(f"member {name!r} outside the entry")
    if not resolve:
        return
    # Where it is written, with the symlinks extracted so far resolved (the leaf too unless it gets replaced),
    # must still be inside the destination.
    resolved = os.path.realpath(os.path.join(root, name if leaf else os.path.dirname(name)))
    if resolved != root and not resolved.startswith(root + os.sep):
        raise DamagedArchiveError(f"member {name!r} outside the entry (through a symlink)")


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.parent / f".{path.name}.tmp-{secrets.token_hex(4)}"
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


class _HashingWriter(io.RawIOBase):
    """Counts and hashes what goes to `raw`, so storing reads the archive back from Drive zero times."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._sha.update(view)
        self.size += view.nbytes
        self._raw.write(view)
        return view.nbytes

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class _HashingReader(io.RawIOBase):
    """Hashes what is read from `raw`; `drain` reads the rest (the tar's end padding) so the hash covers it all."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._sha.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def hexdigest(self) -> str:
        return self._sha.hexdigest()
