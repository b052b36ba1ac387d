"""Reading layers back: whiteouts, hostile archives, passwd lookups, COPY --from."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from dockwright.layers.compress import Compression
from dockwright.layers.copy import CopySettings
from dockwright.layers.rootfs import RootFS, iter_layer, resolve_chown
from dockwright.layers.tar import TarEntry, write_layer
from dockwright.model.errors import DockwrightError, ImageFormatError

PASSWD = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:2000::/home/app:/bin/sh\n"
GROUP = b"root:x:0:\nstaff:x:50:\napp:x:2000:\n"


def layer(tmp_path: Path, entries: list[TarEntry], algorithm: str = "gzip") -> Callable[[], Iterable[bytes]]:
    blob = write_layer(entries, tmp_path / f"layer-{len(list(tmp_path.iterdir()))}", Compression(algorithm))
    data = blob.path.read_bytes()
    return lambda: (data[i : i + 1000] for i in range(0, len(data), 1000))  # small chunks on purpose


def raw_tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> Callable[[], Iterable[bytes]]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    data = gzip.compress(buffer.getvalue())
    return lambda: [data]


def d(path: str, mode: int = 0o755) -> TarEntry:
    return TarEntry(path, "dir", mode)


def f(path: str, data: bytes, mode: int = 0o644) -> TarEntry:
    return TarEntry(path, "file", mode, data=data)


@pytest.mark.parametrize("algorithm", ["gzip", "zstd", "none"])
def test_iter_layer_detects_the_compression(tmp_path: Path, algorithm: str) -> None:
    chunks = layer(tmp_path, [d("etc"), f("etc/hostname", b"box\n")], algorithm)
    got = [(m.name, c.read() if c else None) for m, c in iter_layer(chunks())]
    assert got == [("etc", None), ("etc/hostname", b"box\n")]


def test_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    lower = layer(tmp_path, [d("etc"), f("etc/passwd", PASSWD), f("etc/old", b"old"), d("var"),
                             d("var/cache"), f("var/cache/a", b"a"), d("var/cache/sub"), f("var/cache/sub/b", b"b")])
    upper = layer(tmp_path, [d("etc"), f("etc/.wh.old", b""), d("var"), d("var/cache"),
                             f("var/cache/new", b"n"), f("var/cache/.wh..wh..opq", b"")])
    root = RootFS.from_layers([lower, upper], tmp_path / "root")
    assert root.open("etc/old") is None
    assert root.open("etc/passwd") == PASSWD
    assert sorted(os.listdir(tmp_path / "root" / "var" / "cache")) == ["new"]  # opq came after "new"
    assert not list((tmp_path / "root").rglob(".wh.*"))


def test_parent_escapes_are_rejected(tmp_path: Path) -> None:
    evil = raw_tar([(tarfile.TarInfo("../escaped"), b"x")])
    with pytest.raises(ImageFormatError, match=r"layer 1 of the image: entry '\.\./escaped' points outside"):
        RootFS.from_layers([evil], tmp_path / "root")
    assert not (tmp_path / "escaped").exists()


def test_never_writes_through_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    link = tarfile.TarInfo("etc")
    link.type, link.linkname = tarfile.SYMTYPE, str(outside)
    evil = raw_tar([(link, b""), (tarfile.TarInfo("etc/passwd"), b"pwned")])
    root = RootFS.from_layers([evil], tmp_path / "root")
    assert list(outside.iterdir()) == []
    assert os.readlink(tmp_path / "root" / "etc") == str(outside)  # kept as a link, not followed
    assert root.open("etc/passwd") is None  # resolves inside the root, where nothing is


def test_hard_link_outside_is_rejected(tmp_path: Path) -> None:
    hard = tarfile.TarInfo("stolen")
    hard.type, hard.linkname = tarfile.LNKTYPE, "../../etc/passwd"
    with pytest.raises(ImageFormatError, match="outside"):
        RootFS.from_layers([raw_tar([(hard, b"")])], tmp_path / "root")


def test_devices_are_skipped(tmp_path: Path) -> None:
    dev = tarfile.TarInfo("dev/null")
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    RootFS.from_layers([raw_tar([(dev, b""), (tarfile.TarInfo("ok"), b"ok")])], tmp_path / "root")
    assert not (tmp_path / "root" / "dev" / "null").exists()
    assert (tmp_path / "root" / "ok").read_bytes() == b"ok"


def test_decompression_bomb_is_capped(tmp_path: Path) -> None:
    bomb = layer(tmp_path, [f("zeros", bytes(4 * 1024 * 1024))])
    with pytest.raises(ImageFormatError, match="expands to more than 1000000 bytes"):
        RootFS.from_layers([bomb], tmp_path / "root", max_bytes=1_000_000)


def test_truncated_and_corrupt_layers(tmp_path: Path) -> None:
    data = b"".join(layer(tmp_path, [f("a", os.urandom(100_000))])())
    with pytest.raises(ImageFormatError, match="ends early"):
        list(iter_layer([data[:-100]]))
    with pytest.raises(ImageFormatError, match="corrupt"):
        list(iter_layer([data[:20] + b"\xff" * 5000 + data[5020:]]))


def test_user_and_group_lookups(tmp_path: Path) -> None:
    root = RootFS.from_layers([layer(tmp_path, [d("etc"), f("etc/passwd", PASSWD), f("etc/group", GROUP)])],
                              tmp_path / "root")
    assert root.lookup_user("app") == (1000, 2000)
    assert root.lookup_user("1234") == (1234, 1234)
    assert root.lookup_group("staff") == 50
    with pytest.raises(DockwrightError, match="user 'nobody' not found in /etc/passwd"):
        root.lookup_user("nobody")
    assert resolve_chown("app", root) == (1000, 2000)
    assert resolve_chown("app:staff", root) == (1000, 50)
    assert resolve_chown("app:7", root) == (1000, 7)
    assert resolve_chown("5:staff", root) == (5, 50)


def test_resolve_chown_without_an_image() -> None:
    assert resolve_chown("1000", None) == (1000, 1000)
    assert resolve_chown("1000:0", None) == (1000, 0)
    with pytest.raises(DockwrightError, match="must contain /etc/passwd"):
        resolve_chown("app", None)
    with pytest.raises(DockwrightError, match="invalid --chown"):
        resolve_chown("1000:", None)


def test_copy_from_keeps_modes_resets_owner_and_resolves_links_in_the_root(tmp_path: Path) -> None:
    entries = [d("usr"), d("usr/bin"), TarEntry("usr/bin/tool", "file", 0o4755, 33, 33, data=b"bin"),
               TarEntry("bin", "symlink", 0o777, linkname="/usr/bin"),
               TarEntry("usr/bin/abs", "symlink", 0o777, linkname="/usr/bin/tool")]
    root = RootFS.from_layers([layer(tmp_path, entries)], tmp_path / "root", where="stage build")
    got = {e.path: e for e in root.collect(["/bin/tool", "/usr/bin/abs"], "/out/", CopySettings())}
    assert (got["out/tool"].mode, got["out/tool"].uid, got["out/tool"].gid) == (0o4755, 0, 0)
    assert Path(got["out/abs"].source).read_bytes() == b"bin"  # absolute link resolved in the root
    tree = {e.path: e for e in root.collect(["/usr"], "/copy", CopySettings(uid=7, gid=8))}
    assert (tree["copy/bin/abs"].kind, tree["copy/bin/abs"].linkname) == ("symlink", "/usr/bin/tool")
    assert (tree["copy/bin/tool"].uid, tree["copy/bin/tool"].gid) == (7, 8)
    with pytest.raises(DockwrightError, match="not found in stage build"):
        root.collect(["/missing"], "/out/", CopySettings())
