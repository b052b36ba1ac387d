"""RUN's layers without a runtime: an overlayfs upper directory -> tar entries (whiteouts, opaque
directories, setuid, hard links, symlinks, xattrs, FIFOs, devices, clamped mtimes), and a layer ->
an overlayfs layer directory (faithful owners, modes, xattrs, whiteouts as 0/0 devices). Needs root
for devices and trusted.* xattrs."""

from __future__ import annotations

import os
import stat
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockwright.layers.compress import Compression
from dockwright.layers.rootfs import RootFS, extract_layer
from dockwright.layers.tar import TarEntry, write_layer
from dockwright.run.diff import upper_entries
from dockwright.run.snapshots import OPAQUE_XATTR, Snapshots, chain_ids

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (devices, trusted.* xattrs, chown)")

EPOCH = 1_700_000_000
CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service+ep (v2)


def _lower(root: Path) -> Path:
    lower = root / "lower"
    for directory in ("bin", "etc", "var/cache/apt", "data"):
        (lower / directory).mkdir(parents=True)
    (lower / "bin/tool").write_text("tool")
    (lower / "etc/motd").write_text("hi")
    (lower / "var/cache/apt/pkgcache.bin").write_text("cache")
    for directory in ("bin", "etc", "var", "var/cache", "var/cache/apt", "data"):
        os.utime(lower / directory, (1000, 1000))
    return lower


def _upper(root: Path, lower: Path) -> Path:
    """What `rm /etc/motd; rm -rf /var/cache/apt && mkdir /var/cache/apt && touch .../new; ...` leaves."""
    upper = root / "upper"
    (upper / "etc").mkdir(parents=True)
    os.utime(upper / "etc", (5000, EPOCH + 100))
    os.mknod(upper / "etc/motd", stat.S_IFCHR | 0o600, os.makedev(0, 0))  # whiteout
    (upper / "var/cache/apt").mkdir(parents=True)
    os.setxattr(upper / "var/cache/apt", OPAQUE_XATTR, b"y")
    (upper / "var/cache/apt/new").write_text("new")
    for directory in ("var", "var/cache"):  # copied up with the lower's metadata: no entry
        os.utime(upper / directory, (1000, 1000))
    (upper / "bin").mkdir()
    sudo = upper / "bin/sudo"
    sudo.write_text("#!/bin/sh\n")
    os.chown(sudo, 0, 0)
    sudo.chmod(0o4755)
    os.link(sudo, upper / "bin/sudo-again")
    (upper / "bin/ping").write_text("ping")
    os.setxattr(upper / "bin/ping", "security.capability", CAPABILITY)
    os.symlink("/bin/sudo", upper / "bin/su")
    os.mkfifo(upper / "bin/fifo", 0o640)
    os.mknod(upper / "bin/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (upper / "home/app").mkdir(parents=True)
    os.chown(upper / "home/app", 1000, 1000)
    os.utime(upper / "bin/ping", (1, 1000))  # older than the epoch: kept
    return upper


def test_upper_directory_becomes_the_layer_docker_would_write(tmp_path: Path) -> None:
    lower = _lower(tmp_path)
    upper = _upper(tmp_path, lower)

    entries = upper_entries(upper, [lower], EPOCH, OPAQUE_XATTR)
    blob = write_layer(entries, tmp_path / "layer.tar", Compression("none"))

    with tarfile.open(blob.path) as archive:
        members = {m.name: m for m in archive}
    assert list(members) == [
        "bin", "bin/fifo", "bin/null", "bin/ping", "bin/su", "bin/sudo", "bin/sudo-again",
        "etc", "etc/.wh.motd", "home", "home/app",
        "var/cache/apt", "var/cache/apt/.wh..wh..opq", "var/cache/apt/new",
    ]  # no var/ or var/cache/: only copied up, unchanged
    assert members["bin/sudo"].mode & 0o7777 == 0o4755  # setuid made by the command is kept
    assert members["bin/sudo-again"].islnk() and members["bin/sudo-again"].linkname == "bin/sudo"
    assert members["bin/su"].issym() and members["bin/su"].linkname == "/bin/sudo"
    assert members["bin/fifo"].isfifo() and members["bin/fifo"].mode & 0o777 == 0o640
    assert members["bin/null"].ischr() and (members["bin/null"].devmajor, members["bin/null"].devminor) == (1, 3)
    assert members["bin/ping"].pax_headers["SCHILY.xattr.security.capability"].encode(
        "utf-8", "surrogateescape") == CAPABILITY
    assert members["bin/ping"].mtime == 1000  # older than SOURCE_DATE_EPOCH: as it was
    assert members["etc"].mtime == EPOCH and members["bin/sudo"].mtime == EPOCH  # clamped
    assert (members["home/app"].uid, members["home/app"].gid) == (1000, 1000)
    assert not any("overlay" in key for m in members.values() for key in m.pax_headers)
    assert os.stat(upper / "bin/sudo").st_mtime == EPOCH  # clamped in the directory too (a snapshot)


def test_the_layer_applied_to_its_base_gives_the_command_s_file_system(tmp_path: Path) -> None:
    lower = _lower(tmp_path)
    base = write_layer(_tree_entries(lower), tmp_path / "base.tar", Compression("gzip"))
    run = write_layer(upper_entries(_upper(tmp_path, lower), [lower], EPOCH, OPAQUE_XATTR),
                      tmp_path / "run.tar", Compression("gzip"))

    root = RootFS.from_layers([_chunks(base.path), _chunks(run.path)], tmp_path / "merged")

    assert root.open("etc/motd") is None  # whiteout
    assert not (root.root / "var/cache/apt/pkgcache.bin").exists()  # opaque directory
    assert root.open("var/cache/apt/new") == b"new"
    assert root.open("bin/tool") == b"tool"


def test_a_layer_extracts_into_an_overlay_layer_directory(tmp_path: Path) -> None:
    lower = _lower(tmp_path)
    layer = write_layer(upper_entries(_upper(tmp_path, lower), [lower], EPOCH, OPAQUE_XATTR),
                        tmp_path / "run.tar", Compression("gzip"))
    dest = tmp_path / "snapshot"
    dest.mkdir()

    extract_layer(_chunks(layer.path)(), dest, name="run layer", opaque_xattr=OPAQUE_XATTR)

    whiteout = os.lstat(dest / "etc/motd")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert os.getxattr(dest / "var/cache/apt", OPAQUE_XATTR) == b"y"
    assert not (dest / "var/cache/apt/.wh..wh..opq").exists()
    assert os.stat(dest / "bin/sudo").st_mode & 0o7777 == 0o4755
    assert os.stat(dest / "bin/sudo").st_ino == os.stat(dest / "bin/sudo-again").st_ino
    assert os.getxattr(dest / "bin/ping", "security.capability") == CAPABILITY
    assert (os.stat(dest / "home/app").st_uid, os.stat(dest / "home/app").st_gid) == (1000, 1000)
    assert os.stat(dest / "etc").st_mtime == EPOCH and os.stat(dest / "bin/ping").st_mtime == 1000
    assert stat.S_ISFIFO(os.lstat(dest / "bin/fifo").st_mode)


def test_a_hard_link_to_a_lower_layer_s_file_links_across_layer_directories(tmp_path: Path) -> None:
    """A layer's hard link to a file of the layers below is one file with two links in the stacked root (as
    when layers are applied to one directory); a target hidden by a whiteout or an opaque directory of a
    layer in between is no target."""
    bottom, middle, dest = tmp_path / "bottom", tmp_path / "middle", tmp_path / "top"
    for directory in (bottom / "data", bottom / "sub", middle / "data", middle / "sub", dest):
        directory.mkdir(parents=True)
    for name in ("data/a", "data/gone", "sub/x"):
        (bottom / name).write_text(name)
    os.mknod(middle / "data/gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))  # a whiteout
    os.setxattr(middle / "sub", OPAQUE_XATTR, b"y")
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tar:
        for name, target in (("b", "data/a"), ("c", "data/gone"), ("d", "sub/x")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.LNKTYPE, target
            tar.addfile(info)

    extract_layer([archive.read_bytes()], dest, name="links", opaque_xattr=OPAQUE_XATTR, lower_dirs=[middle, bottom])

    assert os.stat(dest / "b").st_ino == os.stat(bottom / "data/a").st_ino
    assert not (dest / "c").exists() and not (dest / "d").exists()


def test_chain_ids_follow_the_oci_image_spec() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    import hashlib

    assert chain_ids([a, b]) == [a, "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()]


def _tree_entries(root: Path) -> list[TarEntry]:
    entries = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            entries.append(TarEntry(rel, "dir", 0o755))
        else:
            entries.append(TarEntry(rel, "file", 0o644, data=path.read_bytes()))
    return entries


def _chunks(path: Path):  # type: ignore[no-untyped-def]
    return lambda: [path.read_bytes()]


def test_stages_on_one_chain_at_once_extract_its_layer_once(tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "etc").mkdir(parents=True)
    (base / "etc/motd").write_text("hello")
    layer = write_layer(_tree_entries(base), tmp_path / "base.tar", Compression("gzip"))
    snapshots = Snapshots(tmp_path / "rootfs")
    opened: list[int] = []
    both = threading.Barrier(2, timeout=30)
    found: list[list[Path]] = []

    def open_chunks() -> Iterator[bytes]:
        opened.append(1)
        time.sleep(0.2)  # a slow download: the other stage asks meanwhile
        yield layer.path.read_bytes()

    def stage() -> None:
        both.wait()
        found.append(snapshots.layer_dirs([(layer.diff_id, open_chunks, "base layer")]))

    threads = [threading.Thread(target=stage) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert found == [[snapshots.path(layer.diff_id)]] * 2 and len(opened) == 1
    assert (snapshots.path(layer.diff_id) / "etc/motd").read_text() == "hello"
    assert sorted(p.name for p in snapshots.root.iterdir()) == [snapshots.path(layer.diff_id).name]  # no temp left


def test_a_layer_directory_an_older_extraction_made_is_not_reused(tmp_path: Path) -> None:
    """A cache from a dockwright that extracted by other rules (e.g. hard links as copies) would make a RUN
    see another tree than a fresh build's: directories are named with the extraction's version."""
    base = tmp_path / "base"
    (base / "etc").mkdir(parents=True)
    (base / "etc/motd").write_text("hello")
    layer = write_layer(_tree_entries(base), tmp_path / "base.tar", Compression("gzip"))
    snapshots = Snapshots(tmp_path / "rootfs")
    older = snapshots.root / layer.diff_id.partition(":")[2]  # version 1's name: the bare chain ID
    (older / "etc").mkdir(parents=True)
    (older / "etc/motd").write_text("extracted by older rules")

    (found,) = snapshots.layer_dirs([(layer.diff_id, _chunks(layer.path), "base layer")])

    assert found != older and (found / "etc/motd").read_text() == "hello"
