"""What a command changed in a plain directory tree (--isolation chroot, where no overlayfs records it):
a snapshot of the tree's metadata before the command, compared with the tree after it, as the tar entries
of a layer in the form diff.py gives for an overlay upper directory.

An entry is unchanged when its inode, ctime, mtime, mode, owner and size are (a symlink cannot change in
place: a new target is a new inode; any write, chmod, chown, link or xattr change moves the ctime). New and
changed entries are listed as the command left them, removed ones become `.wh.NAME` whiteouts, and a
directory that was replaced (its inode changed: removed and made again, or made where a file was) is listed
whole after an opaque marker, as overlayfs marks it (when the file system gives the new directory the old
one's inode number, its old entries become whiteouts instead: the same file tree). A directory that is still
the same one is listed only when its own metadata changed (diff.py's rule for an overlay's copied-up
directories). Paths in `ignored` (what the run placed: /dev, /proc, /etc/hosts, mount targets) are neither
recorded nor listed.

The ctime check needs the file system's clock to have moved past every recorded ctime before the command
starts (timestamps are coarse: a write in the same tick would look unchanged): `wait_past` waits for that."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from dockwright.layers.tar import TarEntry
from dockwright.run.diff import WHITEOUT, _Walker
from dockwright.run.snapshots import OPAQUE_XATTR


class Meta(NamedTuple):
    ino: int
    ctime_ns: int
    mtime_ns: int
    mode: int
    uid: int
    gid: int
    size: int


def _meta(st: os.stat_result) -> Meta:
    return Meta(st.st_ino, st.st_ctime_ns, st.st_mtime_ns, st.st_mode, st.st_uid, st.st_gid, st.st_size)


@dataclass
class TreeState:
    """The metadata of every entry below a root (relative paths), each directory's names, directories' xattrs."""

    entries: dict[str, Meta] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=dict)
    dir_xattrs: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    ignored: frozenset[str] = frozenset()
    latest_ctime_ns: int = 0

    def forget(self, rel: str) -> None:
        """Treat `rel` (and what is below it) as not there before: the run made it (a mount target's parent)."""
        parent, _, name = rel.rpartition("/")
        self.children.get(parent, set()).discard(name)
        for path in [p for p in self.entries if p == rel or p.startswith(rel + "/")]:
            del self.entries[path]


def snapshot(root: Path, ignored: Collection[str] = ()) -> TreeState:
    """The metadata of the tree below `root`, leaving out the relative paths `ignored` and what is below them."""
    state = TreeState(ignored=frozenset(ignored))
    pending = [""]
    while pending:
        rel = pending.pop()
        names = set()
        with os.scandir(os.path.join(root, rel) if rel else root) as found:
            for item in found:
                child = f"{rel}/{item.name}" if rel else item.name
                if child in state.ignored:
                    continue
                names.add(item.name)
                st = item.stat(follow_symlinks=False)
                state.entries[child] = _meta(st)
                state.latest_ctime_ns = max(state.latest_ctime_ns, st.st_ctime_ns)
                if stat.S_ISDIR(st.st_mode):
                    state.dir_xattrs[child] = _Walker.xattrs(item.path)
                    pending.append(child)
        state.children[rel] = names
    return state


def wait_past(directory: Path, ctime_ns: int) -> None:
    """Return once a file changed now in `directory`'s file system gets a ctime later than `ctime_ns`."""
    probe = directory / ".clock"
    probe.touch()
    try:
        while os.stat(probe).st_ctime_ns <= ctime_ns:
            time.sleep(0.001)
            os.utime(probe)
    finally:
        probe.unlink()


def changed_entries(root: Path, before: TreeState, epoch: int) -> list[TarEntry]:
    """The layer of what changed below `root` since `before`, depth first in name order, mtimes clamped to
    `epoch` (in the tree too, as diff.py does)."""
    walker = _Changes(str(root), before, epoch)
    walker.walk("")
    return walker.entries


class _Changes(_Walker):
    def __init__(self, root: str, before: TreeState, epoch: int) -> None:
        super().__init__(root, [], epoch, OPAQUE_XATTR)
        self.before = before
        self.fresh: set[str] = set()  # directories the command made (or made again): nothing below was there
        self.replaced: set[str] = set()  # of those, the ones where something else was before (opaque)

    def walk(self, rel: str) -> None:
        directory = os.path.join(self.upper, rel) if rel else self.upper
        names = set(os.listdir(directory))
        fresh = rel in self.fresh
        gone = set() if fresh else self.before.children.get(rel, set()) - names
        for name in sorted(names | gone):
            child = f"{rel}/{name}" if rel else name
            if child in self.before.ignored:
                continue
            if name in gone:
                self.entries.append(TarEntry(f"{rel}/{WHITEOUT}{name}" if rel else WHITEOUT + name, "file", 0,
                                             mtime=self.epoch))
                continue
            path = os.path.join(directory, name)
            st = os.lstat(path)
            was = None if fresh else self.before.entries.get(child)
            if stat.S_ISDIR(st.st_mode):
                if was is None or not stat.S_ISDIR(was.mode) or was.ino != st.st_ino:
                    self.fresh.add(child)
                    if was is not None:
                        self.replaced.add(child)
                self.visit(child, path)  # lists it or not (same_as_lower), then walks it
            elif was != _meta(st):
                self.visit(child, path)

    def opaque(self, rel: str, xattrs: list[tuple[str, bytes]]) -> bool:
        return rel in self.replaced

    def same_as_lower(self, rel: str, st: os.stat_result, xattrs: tuple[tuple[str, bytes], ...]) -> bool:
        if rel in self.fresh:
            return False
        was = self.before.entries[rel]
        if (was.mode, was.uid, was.gid, was.mtime_ns) != (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns):
            return False
        if was.ctime_ns == st.st_ctime_ns:
            return True
        internal = self.internal
        return tuple(item for item in self.before.dir_xattrs.get(rel, []) if not item[0].startswith(internal)) \
            == xattrs

