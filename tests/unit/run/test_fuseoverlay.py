"""fuse-overlayfs's upper directory made the kernel overlay's: what the diff and the layer snapshots read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dockwright.model.errors import UsageError
from dockwright.run.fuseoverlay import to_overlay_form
from dockwright.run.isolation import choose

MARK = "user.overlay.opaque"  # the rootless form
OLD = 1_600_000_000 * 1_000_000_000


def _dir(path: Path, mtime: int = OLD) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.utime(path, ns=(mtime, mtime))
    return path


def test_fuse_overlayfs_marks_become_the_kernels(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for rel in ("usr/bin", "srv/data", "etc"):
        (lower / rel).mkdir(parents=True)
    (lower / "usr/bin/tool").write_text("old")
    (lower / "srv/data/old").write_text("old")
    (lower / "etc/passwd").write_text("root")
    for rel in ("usr/bin", "usr", "srv/data", "srv", "etc"):
        _dir(lower / rel)
    # what fuse-overlayfs left: tool changed in place (parents copied up with new times), /srv/data
    # replaced (opaque: xattr, .wh..wh..opq file, .wh..opq whiteout), /new made (marked opaque too),
    # a whiteout, and its origin xattr on a copied-up file
    (upper / "usr/bin").mkdir(parents=True)
    (upper / "usr/bin/tool").write_text("new")
    os.setxattr(upper / "usr/bin/tool", "user.fuseoverlayfs.origin", b"usr/bin/tool\0")
    (upper / "srv/data").mkdir(parents=True)
    (upper / "srv/data/.wh..wh..opq").touch()
    os.mknod(upper / "srv/data/.wh..opq", stat.S_IFCHR | 0o600, 0)
    os.setxattr(upper / "srv/data", "user.fuseoverlayfs.opaque", b"y")
    (upper / "new").mkdir()
    (upper / "new/.wh..wh..opq").touch()
    os.setxattr(upper / "new", "user.fuseoverlayfs.opaque", b"y")
    (upper / "etc").mkdir()
    os.mknod(upper / "etc/passwd", stat.S_IFCHR | 0o600, 0)

    to_overlay_form(upper, [lower], MARK)

    assert sorted(os.listdir(upper / "srv/data")) == []
    assert os.getxattr(upper / "srv/data", MARK) == b"y"
    assert os.listxattr(upper / "new") == [] and os.listdir(upper / "new") == []  # nothing below to hide
    assert os.listxattr(upper / "usr/bin/tool") == []
    # only copied up: the lower's times (as the kernel keeps them); something created or removed: its own
    assert os.stat(upper / "usr").st_mtime_ns == OLD and os.stat(upper / "usr/bin").st_mtime_ns == OLD
    assert os.stat(upper / "srv").st_mtime_ns != OLD and os.stat(upper / "etc").st_mtime_ns != OLD


def test_an_unknown_overlay_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKWRIGHT_OVERLAY", "fusion")
    monkeypatch.setattr("dockwright.run.isolation._find_runtime", lambda runtime: "/bin/true")
    with pytest.raises(UsageError, match="DOCKWRIGHT_OVERLAY=fusion: unknown"):
        choose("oci")


def test_whiteout_files_of_fuse_overlayfs_without_mknod_are_whiteouts(tmp_path: Path) -> None:
    """Where mknod of a whiteout is refused (a user namespace before Linux 5.8) fuse-overlayfs writes
    `.wh.NAME` files: the layer has the same whiteout entry as for a 0/0 device."""
    from dockwright.run.diff import upper_entries

    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/.wh.motd").touch(mode=0o700)
    os.mknod(upper / "etc/issue", stat.S_IFCHR | 0o600, 0)
    entries = {entry.path: entry for entry in upper_entries(upper, [], 1_700_000_000, MARK)}
    assert entries["etc/.wh.motd"] == entries["etc/.wh.issue"]._replace(path="etc/.wh.motd")
