"""What a --isolation chroot run puts over the root file system for the command, and takes back after it:
what a container runtime would mount there (/dev and its nodes, /etc/hosts, RUN mounts ...). What was at
such a path is moved aside and comes back; missing parent directories are made and removed again when the
command left them empty; the parents keep the modification times the command gave them, so the diff of the
tree (treediff.py) sees only what the command did."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from dockwright.model.errors import DockwrightError
from dockwright.run.isolation import RunUnavailable
from dockwright.run.snapshots import remove_tree

log = logging.getLogger("dockwright")

_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))
_DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
              ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))
HINT = "run dockwright as root in a container with Docker's default capabilities, or use --isolation oci"


class Placed:
    """Paths placed over the tree for one run: what was there is moved aside and comes back after it;
    missing parent directories are made (and removed again when the command left them empty); the parents'
    modification times are kept as the command left them."""

    def __init__(self, root: Path, aside: Path) -> None:
        self.root = root
        self.aside = aside
        self.items: list[tuple[str, Path | None, Callable[[str], object] | None]] = []
        self.made: list[str] = []  # parent directories made for them (relative)
        self.paths: list[str] = []  # where they are (relative, symlinks in their parents resolved)

    def put(self, target: str, make: Callable[[str], object],
            give_back: Callable[[str], object] | None = None) -> None:
        from dockwright.layers.copy import resolve_in_root

        parent_rel, _, name = target.rpartition("/")
        parent = resolve_in_root(str(self.root), parent_rel)
        rel_parent = os.path.relpath(parent, self.root)
        rel_parent = "" if rel_parent == "." else rel_parent
        missing = []
        probe = parent
        while not os.path.lexists(probe):
            missing.append(os.path.relpath(probe, self.root))
            probe = os.path.dirname(probe)
        os.makedirs(parent, 0o755, exist_ok=True)
        self.made.extend(reversed(missing))
        rel = f"{rel_parent}/{name}" if rel_parent else name
        path = os.path.join(parent, name)
        original = None
        if os.path.lexists(path):
            self.aside.mkdir(exist_ok=True)
            original = self.aside / str(len(self.items))
            os.rename(path, original)
        self.items.append((rel, original, give_back))
        self.paths.append(rel)
        make(path)

    def take_back(self) -> None:
        """Undo every placement (last first); safe to call twice."""
        if not self.items and not self.made:
            return
        parents = {os.path.dirname(rel) for rel, _, _ in self.items} | {os.path.dirname(m) for m in self.made}
        times = {p: os.lstat(self._host(p)) for p in parents if _is_real_dir(self.root, p)}
        errors: list[BaseException] = []
        while self.items:
            rel, original, give_back = self.items.pop()
            if not _is_real_dir(self.root, os.path.dirname(rel)):  # the command replaced a parent: leave it
                log.warning("RUN replaced a parent of /%s: left as the command made it", rel)
                continue
            path = self._host(rel)
            try:
                if give_back is not None and os.path.lexists(path):
                    give_back(path)
                _remove(path)
                if original is not None:
                    os.rename(original, path)
            except OSError as exc:
                errors.append(exc)
        for made in reversed(self.made):
            with contextlib.suppress(OSError):  # not empty: the command wrote there, it stays
                os.rmdir(self._host(made))
        self.made.clear()
        for parent, st in times.items():
            if _is_real_dir(self.root, parent):
                os.utime(self._host(parent), ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        if errors:
            raise DockwrightError(f"cannot restore the root file system after RUN: {errors[0]}")

    def _host(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else str(self.root)


def _is_real_dir(root: Path, rel: str) -> bool:
    """Whether `rel` and every directory above it below `root` is a directory, not a symlink."""
    path = str(root)
    for part in [p for p in rel.split("/") if p]:
        path = os.path.join(path, part)
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return False
        except OSError:
            return False
    return True


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        remove_tree(Path(path))
    elif os.path.lexists(path):
        os.unlink(path)


def write_file(path: str, data: bytes, mode: int) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode), "wb") as file:
        file.write(data)
    os.chmod(path, mode)


def copy_in(source: str, path: str) -> None:
    """A copy with owners, modes, times, xattrs and hard links (cp -a: coreutils' or busybox's)."""
    done = subprocess.run(["cp", "-a", source, path], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DockwrightError(f"--isolation chroot: cannot copy {source}: {done.stderr.strip()}")


def move_in(source: str, path: str) -> None:
    try:
        os.rename(source, path)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        raise DockwrightError(f"RUN --mount under --isolation chroot moves {source} into the root file system, "
                              "which is on another file system", hint="keep --cache-dir (and TMPDIR with --no-cache) "
                              "on one file system") from None


def make_dev(path: str, files: Sequence[tuple[str, bytes]]) -> None:
    """/dev as a container has it: the usual nodes, /dev/shm, /dev/pts, the fd links, heredoc scripts in /dev/pipes."""
    os.mkdir(path, 0o755)
    for name, major, minor in _DEVICES:
        node = os.path.join(path, name)
        try:
            os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        except PermissionError:
            raise RunUnavailable("--isolation chroot cannot make /dev/null for the command (mknod: no CAP_MKNOD, "
                                 "or a device cgroup forbids it)", hint=HINT) from None
        os.chmod(node, 0o666)
    try:
        os.close(os.open(os.path.join(path, "null"), os.O_WRONLY))
    except PermissionError:
        raise RunUnavailable("--isolation chroot: the cache directory's file system is mounted nodev, where /dev/null "
                             "cannot work", hint="point --cache-dir at a file system without nodev") from None
    for name, target in _DEV_LINKS:
        os.symlink(target, os.path.join(path, name))
    for name, mode in (("shm", 0o1777), ("pts", 0o755)):
        os.mkdir(os.path.join(path, name))
        os.chmod(os.path.join(path, name), mode)
    if files:
        pipes = os.path.join(path, "pipes")
        os.mkdir(pipes, 0o755)
        for name, data in files:
            write_file(os.path.join(pipes, name), data, 0o755)
