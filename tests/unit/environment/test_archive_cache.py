"""The archive-backed venv cache: entries kept as one archive each in a store on a slow filesystem (a mounted
Google Drive, here a tmp folder standing in for it), unpacked to a local working copy on use."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from notebook_agent.environment import ListReporter
from notebook_agent.environment.archive_store import ArchiveStore, filesystem_type, use_archive
from notebook_agent.environment.cache import CachedEnvironment, VenvCache
from notebook_agent.environment.managers import PipManager
from tests.fakes.wheels import build_wheel
from tests.unit.environment.conftest import hermetic_env

pytestmark = pytest.mark.slow

REQUIREMENTS = "na-hello==1.0"
WAIT_S = 120  # archiving a tiny venv takes well under a second; this only bounds a hung test


@dataclass(frozen=True)
class Archived:
    """The module's one build: the entry for REQUIREMENTS, built into `local` and archived into `store`."""

    key: str
    local: Path
    store: Path
    log: ListReporter


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """na-hello 1.0 with a `na-hello` console script."""
    folder = tmp_path_factory.mktemp("archive-wheels")
    hello = "GREETING = 'archived hello'\n\ndef main():\n    print('script says', GREETING)\n"
    entry_points = {"console_scripts": {"na-hello": "na_hello:main"}}
    build_wheel(folder, "na-hello", "1.0", {"na_hello.py": hello}, entry_points=entry_points)
    return folder


def provide(
    wheels: Path, local: Path, store: Path | None, dest: Path, requirements: str = REQUIREMENTS
) -> tuple[CachedEnvironment, ListReporter]:
    env = hermetic_env()
    reporter = ListReporter()
    manager = PipManager(env, reporter, sys.executable, pip_args=("--no-index", "--find-links", str(wheels)))
    cache = VenvCache(local, max_entries=5, free_space_threshold_gb=0, archive_root=store)
    inputs = dict(manager.cache_key_inputs())
    dest.parent.mkdir(parents=True, exist_ok=True)  # the task's code folder, where pip runs
    provided = cache.provide(manager, requirements, dest, inputs=inputs, cwd=dest.parent, env=env, reporter=reporter)
    return provided, reporter


@pytest.fixture(scope="module")
def archived(wheels: Path, tmp_path_factory: pytest.TempPathFactory) -> Archived:
    base = tmp_path_factory.mktemp("archived")
    provided, log = provide(wheels, base / "local", base / "drive", base / "work" / "venv")
    provided.lease.close()
    assert VenvCache.wait_for_archives(WAIT_S)
    return Archived(provided.key, base / "local", base / "drive", log)


def output(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=hermetic_env(), capture_output=True, text=True, timeout=60)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_store(archived: Archived, dest: Path) -> ArchiveStore:
    dest.mkdir(parents=True)
    for suffix in (".tar.gz", ".json"):
        shutil.copy2(archived.store / f"{archived.key}{suffix}", dest)
    return ArchiveStore(dest, max_entries=5)


# --- through VenvCache.provide --------------------------------------------------------------------------------


def test_an_entry_survives_the_local_cache_through_its_archive(
    wheels: Path, archived: Archived, tmp_path: Path
) -> None:
    key = archived.key
    assert f"cache miss {key[:12]}: building" in archived.log.lines
    store = ArchiveStore(archived.store, max_entries=5)
    assert store.keys() == [key]
    record = store.record(key)
    assert record is not None and record["key"] == key and "na-hello==1.0" in record["frozen"]
    assert record["sha256"] == sha256(archived.store / f"{key}.tar.gz")
    assert record["archive_size"] == (archived.store / f"{key}.tar.gz").stat().st_size

    # A new VM: the local working copy is gone, the store (Drive) is not.
    shutil.rmtree(archived.local)
    local = tmp_path / "local"
    dest = tmp_path / "work" / "venv"
    provided, log = provide(wheels, local, archived.store, dest)
    assert provided.key == key and provided.hit
    assert any(line.startswith(f"cache hit {key[:12]} (unpacked from archive in ") for line in log.lines), log.lines
    assert not any(line.startswith("$ ") for line in log.lines)  # no virtualenv, no pip
    assert "na-hello==1.0" in provided.frozen
    assert not [p.name for p in local.iterdir() if p.name.startswith(".tmp-")]
    # The interpreter link (absolute, to the base python) came through as a link.
    assert (local / key / "venv" / "bin" / "python").is_symlink()

    script = dest / "bin" / "na-hello"
    assert script.read_text().startswith(f"#!{dest / 'bin' / 'python'}\n")
    run = output([str(script)])
    assert run.returncode == 0, run.stderr
    assert run.stdout == "script says archived hello\n"
    run = output([str(provided.python), "-c", "import na_hello, sys; print(na_hello.GREETING, sys.prefix)"])
    assert run.stdout == f"archived hello {dest}\n", run.stderr
    provided.lease.close()
    assert VenvCache.wait_for_archives(WAIT_S)
    touched = store.record(key)
    assert touched is not None and touched["sha256"] == record["sha256"]  # a hit is not packed again
    assert touched["last_used"] > record["last_used"]  # but counts as a use in the store


def test_a_truncated_archive_is_a_miss_and_stored_again(wheels: Path, archived: Archived, tmp_path: Path) -> None:
    store = copy_store(archived, tmp_path / "drive")
    archive = store.archive_path(archived.key)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])  # what an interrupted Drive sync leaves

    provided, log = provide(wheels, tmp_path / "local", store.root, tmp_path / "work" / "venv")
    short = archived.key[:12]
    assert not provided.hit
    assert any(line.startswith(f"cache {short}: archive damaged (") for line in log.lines), log.lines
    assert f"cache miss {short}: building" in log.lines
    assert output([str(provided.python), "-c", "import na_hello"]).returncode == 0
    provided.lease.close()

    assert VenvCache.wait_for_archives(WAIT_S)
    record = store.record(archived.key)
    assert record is not None and record["sha256"] == sha256(archive)
    assert store.fetch(archived.key, tmp_path / "check")
    assert (tmp_path / "check" / archived.key / "meta.json").is_file()


def test_an_unusable_store_never_fails_a_task(wheels: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's parent should be")
    caplog.set_level(logging.WARNING, logger="notebook_agent.environment")

    provided, log = provide(wheels, tmp_path / "local", blocker / "drive", tmp_path / "work" / "venv", "")
    assert not provided.hit
    assert any("archive store unusable" in line for line in log.lines), log.lines
    assert output([str(provided.python), "-c", "import sys; print(sys.prefix)"]).returncode == 0
    provided.lease.close()
    assert VenvCache.wait_for_archives(WAIT_S)
    assert any("cannot archive" in record.getMessage() for record in caplog.records)
    assert blocker.read_text().startswith("a file")


# --- the store alone ------------------------------------------------------------------------------------------


def make_entry(folder: Path, text: str = "x") -> Path:
    (folder / "venv" / "bin").mkdir(parents=True)
    (folder / "venv" / "bin" / "python").symlink_to(os.path.realpath(sys.executable))
    (folder / "venv" / "data.txt").write_text(text)
    (folder / "meta.json").write_text("{}")
    return folder


def test_a_corrupted_archive_is_refused_and_removed(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path / "drive", max_entries=5)
    key = "c" * 32
    store.store(make_entry(tmp_path / "entry", "y" * 100_000), key, {"key": key})
    archive = store.archive_path(key)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same length, one byte flipped
    archive.write_bytes(bytes(data))

    reporter = ListReporter()
    assert not store.fetch(key, tmp_path / "local", reporter=reporter)
    assert any(line.startswith(f"cache {key[:12]}: archive damaged") for line in reporter.lines)
    assert not archive.exists() and store.record(key) is None
    assert [p.name for p in (tmp_path / "local").iterdir()] == []  # no half-unpacked entry, no temp folder


def test_evict_keeps_the_most_recently_used(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path / "drive", max_entries=2)
    entry = make_entry(tmp_path / "entry")
    a, b, c = "a" * 32, "b" * 32, "c" * 32
    for key in (a, b, c):
        store.store(entry, key, {"key": key})
    store.touch(a)  # now b is the least recently used
    assert store.evict() == [b]
    assert sorted(store.keys()) == [a, c]
    assert not store.archive_path(b).exists() and store.record(b) is None
    assert store.fetch(a, tmp_path / "local")
    assert (tmp_path / "local" / a / "venv" / "data.txt").read_text() == "x"


def unsafe_archive(store: ArchiveStore, key: str, members: list[tuple[str, bytes | None, str]]) -> None:
    """An archive of (name, file data or None, symlink/hardlink target) members, with a valid json."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link.startswith("hard:"):
                info.type, info.linkname = tarfile.LNKTYPE, link[len("hard:") :]
            elif link:
                info.type, info.linkname = tarfile.SYMTYPE, link
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data or b""))
    store.root.mkdir(parents=True, exist_ok=True)
    store.archive_path(key).write_bytes(buffer.getvalue())
    record = {"key": key, "sha256": hashlib.sha256(buffer.getvalue()).hexdigest(), "last_used": 0}
    store.record_path(key).write_text(json.dumps(record))


@pytest.mark.parametrize(
    "members",
    [
        [("meta.json", b"{}", ""), ("/tmp/na-evil-absolute", b"evil", "")],
        [("../na-evil-parent", b"evil", "")],
        [("venv/../../na-evil-nested", b"evil", "")],
        [("venv", None, "{outside}"), ("venv/na-evil-through-link", b"evil", "")],
        [("stolen", None, "hard:../outside/target")],
        [("x", None, "{outside}/target"), ("x", b"evil", "")],
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "through-symlink", "hardlink-out", "over-symlink"],
)
def test_unsafe_members_are_refused(tmp_path: Path, members: list[tuple[str, bytes | None, str]]) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_text("not yours")
    members = [(name, data, link.format(outside=outside)) for name, data, link in members]
    store = ArchiveStore(tmp_path / "drive", max_entries=5)
    key = "d" * 32
    unsafe_archive(store, key, members)
    reporter = ListReporter()
    local = tmp_path / "deep" / "local"

    assert not store.fetch(key, local, reporter=reporter)
    assert any(line.startswith(f"cache {key[:12]}: archive damaged") for line in reporter.lines), reporter.lines
    assert not store.archive_path(key).exists()
    assert sorted(p.name for p in outside.iterdir()) == ["target"]
    assert (outside / "target").read_text() == "not yours"
    assert not Path("/tmp/na-evil-absolute").exists()
    assert list(local.iterdir()) == []


def test_symlinks_anywhere_are_kept(tmp_path: Path) -> None:
    # A venv's bin/python is an absolute link to the base interpreter: kept as it is, not refused.
    store = ArchiveStore(tmp_path / "drive", max_entries=5)
    key = "e" * 32
    unsafe_archive(store, key, [("venv/bin/python", None, sys.executable), ("venv/lib64", None, "lib")])
    assert store.fetch(key, tmp_path / "local")
    venv = tmp_path / "local" / key / "venv"
    assert os.readlink(venv / "bin" / "python") == sys.executable and os.readlink(venv / "lib64") == "lib"


# --- which store a path gets ----------------------------------------------------------------------------------

MOUNTINFO = """\
22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
30 22 8:1 /var/colab /content/local rw,relatime shared:2 - ext4 /dev/sda1 rw
41 22 0:45 / /content/drive rw,nosuid,nodev,relatime shared:5 master:3 - fuse.drive drive rw,user_id=0
42 22 0:46 / /mnt/nfs rw,relatime - nfs4 server:/export rw,vers=4.2
43 22 0:47 / /mnt/my\\040share rw,relatime - cifs //srv/share rw
44 42 8:2 / /mnt/nfs/scratch rw,relatime - ext4 /dev/sdb1 rw
"""


@pytest.mark.parametrize(
    ("path", "fs_type", "archive"),
    [
        ("/content/drive/MyDrive/venvs", "fuse.drive", True),
        ("/mnt/nfs/cache", "nfs4", True),
        ("/mnt/my share/cache", "cifs", True),
        ("/mnt/nfs/scratch/cache", "ext4", False),  # a local disk mounted below the NFS share
        ("/content/local/cache", "ext4", False),
        ("/root/.clearml/venvs-cache", "overlay", False),
    ],
)
def test_store_choice_by_filesystem(path: str, fs_type: str, archive: bool) -> None:
    assert filesystem_type(Path(path), MOUNTINFO) == fs_type
    assert use_archive(Path(path), "auto", MOUNTINFO) is archive
    assert use_archive(Path(path), "archive", MOUNTINFO) is True
    assert use_archive(Path(path), "folder", MOUNTINFO) is False


def test_store_choice_under_colab_drive_and_bad_values() -> None:
    root_only = MOUNTINFO.splitlines()[0] + "\n"
    # Drive not mounted (yet): the path is on the overlay root, but it is Drive's, so it gets archives.
    assert filesystem_type(Path("/content/drive/MyDrive/venvs"), root_only) == "overlay"
    assert use_archive(Path("/content/drive/MyDrive/venvs"), "auto", root_only)
    assert not use_archive(Path("/content/drivestuff"), "auto", root_only)
    assert use_archive(Path("/content/x"), " Archive ", root_only)
    with pytest.raises(ValueError, match=r"agent\.venvs_cache\.store must be one of auto, folder, archive"):
        use_archive(Path("/content/x"), "zip", root_only)
    assert filesystem_type(Path("/anywhere"), "") == ""
    # This machine's own /proc/self/mountinfo; /proc rather than /, which is no mount point inside a chroot.
    assert filesystem_type(Path("/proc/self")) == "proc"
