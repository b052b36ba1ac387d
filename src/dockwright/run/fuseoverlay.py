"""fuse-overlayfs: the RUN root where the kernel's overlayfs cannot be mounted (in a user namespace before
Linux 5.11, or where a distribution disables it there; a cache on overlayfs itself), or where
DOCKWRIGHT_OVERLAY=fuse asks for it.

It reads the layer directories as the kernel does (0/0 character-device whiteouts, `trusted.overlay.opaque`
or `user.overlay.opaque`), so both share them. What it writes in the upper directory differs, and
`to_overlay_form` makes that the kernel's form before the diff reads it and the snapshots adopt it:
- an opaque directory gets `user.fuseoverlayfs.opaque` (`trusted.overlay.opaque` as root), a
  `.wh..wh..opq` file and a `.wh..opq` whiteout: one `opaque_xattr` is left; every new directory is
  marked so, where the kernel marks only those that replace something of the lowers;
- copied-up files get `user.fuseoverlayfs.origin`: removed;
- a directory copied up because something below it changed gets the copy-up's time as mtime where the
  kernel keeps the lower one: it is set back when nothing was created or removed in it;
- whiteouts are 0/0 character devices, or `.wh.NAME` files where mknod is not allowed (a user namespace
  before Linux 5.8): those stay, and the diff reads them as whiteouts.

The daemon runs in the foreground as a child of the build (its own session: Ctrl-C reaches the build,
which unmounts); after the unmount (umount2: root or the namespace's root owns the mount, no fusermount
is needed) `reap` waits for it to exit, so no process is left behind.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

PROGRAM = "fuse-overlayfs"
OPAQUE_MARKS = ("trusted.overlay.opaque", "user.overlay.opaque", "user.fuseoverlayfs.opaque")
_OPAQUE_FILE = ".wh..wh..opq"
_OPAQUE_WHITEOUT = ".wh..opq"  # fuse-overlayfs whites out the name its .wh..wh..opq file would hide
_OWN_XATTRS = "user.fuseoverlayfs."
_WAIT_SECONDS = 30  # a guard against a daemon that hangs, not a timing

_daemons: dict[str, subprocess.Popen[bytes]] = {}
_lock = threading.Lock()


def available() -> str | None:
    """The fuse-overlayfs program, or None."""
    return shutil.which(PROGRAM)


def mount(lowers: Sequence[Path], upper: Path | None, work: Path | None, target: Path) -> None:
    """Mount `lowers` (top first), with `upper` and `work` unless read-only, on `target`; raises
    DockwrightError with fuse-overlayfs's own message when it cannot."""
    from dockwright.run.isolation import RunUnavailable

    program = available()
    if program is None:
        raise RunUnavailable("RUN needs fuse-overlayfs here, and it is not on PATH",
                             hint="install it (apt-get install fuse-overlayfs, dnf install fuse-overlayfs)")
    options = f"lowerdir={':'.join(map(str, lowers))}"
    if upper is not None and work is not None:
        options += f",upperdir={upper},workdir={work}"
    before = os.stat(target).st_dev
    with tempfile.TemporaryFile() as errors:
        daemon = subprocess.Popen([program, "-f", "-o", options, str(target)], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True)
        deadline = time.monotonic() + _WAIT_SECONDS
        while daemon.poll() is None and os.stat(target).st_dev == before and time.monotonic() < deadline:
            time.sleep(0.002)
        if daemon.poll() is None and os.stat(target).st_dev != before:
            with _lock:
                _daemons[str(target)] = daemon
            return
        _stop(daemon)
        errors.seek(0)
        lines = [line for line in errors.read().decode(errors="replace").splitlines() if "ignored" not in line]
    message = "; ".join(lines) or f"exit status {daemon.returncode}"
    hint = None
    if "/dev/fuse" in message:
        hint = ("fuse-overlayfs needs /dev/fuse readable and writable by the user (udev makes it mode 0666 on most "
                "distributions: chmod 666 /dev/fuse; in a container: --device /dev/fuse)")
    raise RunUnavailable(f"cannot mount the RUN root file system with fuse-overlayfs: {message}", hint=hint)


def reap(target: Path) -> None:
    """After `target` is unmounted: wait for its daemon to exit (killed if it does not)."""
    with _lock:
        daemon = _daemons.pop(str(target), None)
    if daemon is not None:
        _stop(daemon)


def _stop(daemon: subprocess.Popen[bytes]) -> None:
    try:
        daemon.wait(timeout=_WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


def to_overlay_form(upper: Path, lowers: Sequence[Path], opaque_xattr: str) -> None:
    """Rewrite fuse-overlayfs's marks in `upper` (over `lowers`, top first) as the kernel's overlayfs
    writes them (see the module's docstring)."""
    _Normalizer(str(upper), [str(lower) for lower in lowers], opaque_xattr).directory("", in_lowers=True)


class _Normalizer:
    def __init__(self, upper: str, lowers: list[str], opaque_xattr: str) -> None:
        self.upper = upper
        self.lowers = lowers
        self.opaque_xattr = opaque_xattr

    def directory(self, rel: str, in_lowers: bool) -> bool:
        """Normalise directory `rel` of the upper and what is in it; `in_lowers`: the lowers' merge has an
        entry there (else an opaque mark means nothing: fuse-overlayfs marks every new directory).
        Whether it is opaque."""
        path = os.path.join(self.upper, rel)
        st = os.lstat(path)
        names = os.listdir(path)
        marked = self.marked(path, names)
        opaque = marked and in_lowers and bool(rel)
        below = self.lower_names(rel) if in_lowers and not opaque else None  # name -> file type
        created = False  # whether the command created or removed something in it (it changes the mtime)
        for name in names:
            child = os.path.join(path, name)
            child_st = os.lstat(child)
            kind = stat.S_IFMT(child_st.st_mode)
            replaced = False
            if kind == stat.S_IFDIR:
                replaced = self.directory(f"{rel}/{name}" if rel else name, below is not None and name in below)
            else:
                _strip(child)
            if marked and name in (_OPAQUE_FILE, _OPAQUE_WHITEOUT):
                os.unlink(child)
            elif replaced or below is None or below.get(name) != kind or _is_whiteout(child_st):
                created = True
        for mark in OPAQUE_MARKS:
            if _xattr(path, mark) is not None and not (opaque and mark == self.opaque_xattr):
                os.removexattr(path, mark, follow_symlinks=False)
        if opaque:
            os.setxattr(path, self.opaque_xattr, b"y", follow_symlinks=False)
        _strip(path)
        times = (st.st_atime_ns, st.st_mtime_ns)
        lower = self.lower_dir(rel) if rel and below is not None and not created else None
        if lower is not None:  # only copied up: the kernel keeps the lower directory's times
            lower_st = os.lstat(lower)
            times = (lower_st.st_atime_ns, lower_st.st_mtime_ns)
        os.utime(path, ns=times, follow_symlinks=False)
        return opaque

    @staticmethod
    def marked(path: str, names: list[str]) -> bool:
        if _OPAQUE_FILE in names and stat.S_ISREG(os.lstat(os.path.join(path, _OPAQUE_FILE)).st_mode):
            return True
        return any(_xattr(path, mark) == b"y" for mark in OPAQUE_MARKS)

    def lower_dir(self, rel: str) -> str | None:
        """The topmost lower directory at `rel`, or None when the lowers have none there."""
        for lower in self.lowers:
            try:
                st = os.lstat(os.path.join(lower, rel))
            except (FileNotFoundError, NotADirectoryError):
                continue
            return os.path.join(lower, rel) if stat.S_ISDIR(st.st_mode) else None
        return None

    def lower_names(self, rel: str) -> dict[str, int] | None:
        """The names (and file types) the lowers' merge shows in directory `rel`, or None when it is no
        directory there."""
        names: dict[str, int] = {}
        hidden: set[str] = set()
        found = False
        for lower in self.lowers:
            path = os.path.join(lower, rel)
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if not stat.S_ISDIR(st.st_mode):
                break
            found = True
            for name in os.listdir(path):
                if name not in names and name not in hidden:
                    child = os.lstat(os.path.join(path, name))
                    if _is_whiteout(child):
                        hidden.add(name)
                    else:
                        names[name] = stat.S_IFMT(child.st_mode)
            if any(_xattr(path, mark) == b"y" for mark in OPAQUE_MARKS):
                break
        return names if found else None


def _strip(path: str) -> None:
    """Remove fuse-overlayfs's own xattrs (user.fuseoverlayfs.origin on copied-up files)."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        if name.startswith(_OWN_XATTRS):
            os.removexattr(path, name, follow_symlinks=False)


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None
