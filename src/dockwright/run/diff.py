"""An overlayfs upper directory -> the tar entries of the layer it is (what a RUN changed).

overlayfs's whiteouts (0/0 character devices; fuse-overlayfs's `.wh.NAME` files where it cannot make
those) become `.wh.NAME` entries and opaque directories (the
`opaque_xattr` set to "y") a `.wh..wh..opq` entry after the directory's own; everything else is kept as
the command left it: owners, modes (setuid too: the command made them, unlike copied host files),
xattrs (security.capability from setcap), hard links within the layer, symlinks, devices and FIFOs.
A directory that is only in the upper directory because something below it changed, with the same
metadata as in the layers below, gets no entry (as BuildKit's overlay differ). Modification times
are clamped to `epoch` (BuildKit's rewrite-timestamp), in the tar and in the directory itself, so the
directory can serve as the layer's snapshot for later steps."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from dockwright.layers.tar import TarEntry

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_NS = 1_000_000_000


def upper_entries(upper: Path, lowers: Sequence[Path], epoch: int, opaque_xattr: str) -> list[TarEntry]:
    """The layer's entries, depth first in name order (the writer writes them as given)."""
    walker = _Walker(str(upper), [str(lower) for lower in lowers], epoch, opaque_xattr)
    walker.walk("")
    return walker.entries


class _Walker:
    def __init__(self, upper: str, lowers: list[str], epoch: int, opaque_xattr: str) -> None:
        self.upper = upper
        self.lowers = lowers
        self.epoch = epoch
        self.opaque_xattr = opaque_xattr
        self.internal = opaque_xattr.rpartition(".")[0] + "."  # trusted.overlay. / user.overlay.
        self.entries: list[TarEntry] = []
        self.links: dict[tuple[int, int], str] = {}

    def walk(self, rel: str) -> None:
        directory = os.path.join(self.upper, rel) if rel else self.upper
        for name in sorted(os.listdir(directory)):
            child = f"{rel}/{name}" if rel else name
            self.visit(child, os.path.join(directory, name))

    def visit(self, rel: str, path: str) -> None:
        st = os.lstat(path)
        mode = st.st_mode
        parent, _, name = rel.rpartition("/")
        if stat.S_ISCHR(mode) and st.st_rdev == 0:  # overlayfs whiteout
            whiteout = f"{parent}/{WHITEOUT}{name}" if parent else WHITEOUT + name
            self.entries.append(TarEntry(whiteout, "file", 0, mtime=self.epoch))
            return
        if stat.S_ISREG(mode) and name.startswith(WHITEOUT) and name != OPAQUE:  # fuse-overlayfs's without mknod
            self.entries.append(TarEntry(rel, "file", 0, mtime=self.epoch))
            return
        if stat.S_ISSOCK(mode):
            return  # tar cannot hold a socket (BuildKit leaves them out too)
        xattrs = self.xattrs(path)
        mtime = self.clamp(path, st)
        common = {"mode": stat.S_IMODE(mode), "uid": st.st_uid, "gid": st.st_gid, "mtime": mtime,
                  "xattrs": tuple(item for item in xattrs if not item[0].startswith(self.internal))}
        if stat.S_ISDIR(mode):
            opaque = self.opaque(rel, xattrs)
            listed = opaque or not self.same_as_lower(rel, st, common["xattrs"])
            if listed:
                self.entries.append(TarEntry(rel, "dir", **common))  # type: ignore[arg-type]
            if opaque:
                self.entries.append(TarEntry(f"{rel}/{OPAQUE}", "file", 0, mtime=self.epoch))
            self.walk(rel)
            if listed and mtime * _NS != st.st_mtime_ns:  # after the children: writing them changes it
                os.utime(path, ns=(mtime * _NS, mtime * _NS), follow_symlinks=False)
            return
        if stat.S_ISREG(mode):
            if st.st_nlink > 1:
                first = self.links.setdefault((st.st_dev, st.st_ino), rel)
                if first != rel:
                    self.entries.append(TarEntry(rel, "hardlink", linkname=first, **common))  # type: ignore[arg-type]
                    return
            self.entries.append(TarEntry(rel, "file", size=st.st_size, source=path, **common))  # type: ignore[arg-type]
        elif stat.S_ISLNK(mode):
            self.entries.append(TarEntry(rel, "symlink", linkname=os.readlink(path), **common))  # type: ignore[arg-type]
        elif stat.S_ISFIFO(mode):
            self.entries.append(TarEntry(rel, "fifo", **common))  # type: ignore[arg-type]
        else:
            kind = "chardev" if stat.S_ISCHR(mode) else "blockdev"
            device = (os.major(st.st_rdev), os.minor(st.st_rdev))
            self.entries.append(TarEntry(rel, kind, device=device, **common))  # type: ignore[arg-type]

    def opaque(self, rel: str, xattrs: list[tuple[str, bytes]]) -> bool:
        """Whether the directory `rel` hides everything below it in the layers below (overlayfs's mark)."""
        return dict(xattrs).get(self.opaque_xattr) == b"y"

    def clamp(self, path: str, st: os.stat_result) -> int:
        """The entry's mtime, clamped to the epoch; a later one is set back in the directory too."""
        if st.st_mtime_ns <= self.epoch * _NS:
            return st.st_mtime_ns // _NS
        if not stat.S_ISDIR(st.st_mode):  # a directory is set after its children, which change it
            os.utime(path, ns=(self.epoch * _NS, self.epoch * _NS), follow_symlinks=False)
        return self.epoch

    @staticmethod
    def xattrs(path: str) -> list[tuple[str, bytes]]:
        try:
            names = os.listxattr(path, follow_symlinks=False)
        except OSError:  # a file system without xattrs
            return []
        found = []
        for name in sorted(names):
            try:
                found.append((name, os.getxattr(path, name, follow_symlinks=False)))
            except OSError:
                continue
        return found

    def same_as_lower(self, rel: str, st: os.stat_result, xattrs: tuple[tuple[str, bytes], ...]) -> bool:
        """Whether the layers below have `rel` as a directory with this metadata (then the directory is
        only in the upper because something below it changed)."""
        for lower in self.lowers:
            path = os.path.join(lower, rel)
            try:
                below = os.lstat(path)
            except FileNotFoundError:
                continue
            except NotADirectoryError:
                return False
            if not stat.S_ISDIR(below.st_mode):
                return False
            mine = tuple(item for item in self.xattrs(path) if not item[0].startswith(self.internal))
            return (below.st_mode, below.st_uid, below.st_gid, below.st_mtime_ns) == \
                (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns) and mine == xattrs
        return False
