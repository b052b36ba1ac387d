"""How RUN steps run: the `--isolation` choice, the OCI runtime, the root file system's mount, and
running a foreign architecture's binaries. The one place that decides; everything it cannot do ends
in one error line saying what is missing and what to install.

Isolations (buildah's names):
- `oci` (default): an OCI runtime (runc or crun from PATH, or --runtime PATH) runs the command in
  namespaces of its own, on an overlayfs root; needs root (or CAP_SYS_ADMIN) and overlayfs.
- `rootless` (automatic when not root): the same inside a user namespace where the user is root (the
  CLI starts the build again in one: run/userns.py); overlayfs with `userxattr` (kernel 5.11+), its
  marks in user.overlay.* xattrs.
- `chroot`: no runtime, no overlay, no namespace (run/chroot.py): for CI pods that run as root but
  unprivileged (no CAP_SYS_ADMIN: GitLab's Kubernetes executor, most hosted runners' pods), where no
  container can start. It needs Docker's default capabilities and isolates nothing but the file system.
Where the kernel's overlayfs cannot be mounted (EPERM, EACCES or EINVAL), the root is mounted with
fuse-overlayfs instead (run/fuseoverlay.py), from then on for the whole build; DOCKWRIGHT_OVERLAY=fuse
asks for it from the start, DOCKWRIGHT_OVERLAY=kernel forbids it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

from dockwright.model.errors import DockwrightError, UsageError
from dockwright.model.platform import Platform
from dockwright.run.snapshots import OPAQUE_XATTR

log = logging.getLogger("dockwright")

ISOLATIONS = ("oci", "rootless", "chroot")
OVERLAY_ENV = "DOCKWRIGHT_OVERLAY"  # "kernel", "fuse", or unset: the kernel's, else fuse-overlayfs
OVERLAYS = ("kernel", "fuse")
USER_OPAQUE_XATTR = "user.overlay.opaque"
RUNTIMES = ("runc", "crun")
CAP_SYS_ADMIN = 21
_OVERLAY_PARAMETERS = Path("/sys/module/overlay/parameters")
_BINFMT = Path("/proc/sys/fs/binfmt_misc")
_QEMU_NAMES = {"amd64": "x86_64", "arm64": "aarch64", "arm": "arm", "386": "i386", "ppc64le": "ppc64le",
               "s390x": "s390x", "riscv64": "riscv64", "mips64le": "mips64el"}


def capabilities() -> int:
    """This process's effective capability set (a bit mask of CAP_* numbers)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


class RunUnavailable(DockwrightError):
    """Nothing here can run the command: the message says what is missing, the hint what to install."""


@dataclass
class Isolation:
    name: str
    runtime: str  # absolute path of the OCI runtime
    opaque_xattr: str = OPAQUE_XATTR
    overlay_options: str = ""  # extra overlayfs mount options
    overlay: str = "kernel"  # "fuse" once the kernel's cannot be mounted (or when asked for)
    fallback: bool = True  # whether a kernel overlay that cannot be mounted falls back to fuse-overlayfs
    _switch: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def mount_root(self, lowers: list[Path], upper: Path, work: Path, target: Path) -> None:
        """Mount the overlay (lowers top first) on `target`."""
        if self.overlay == "kernel":
            options = f"lowerdir={':'.join(map(str, lowers))},upperdir={upper},workdir={work}{self.overlay_options}"
            if len(options) >= 4096:
                raise DockwrightError(f"too many layers for one overlay mount ({len(lowers)})",
                                      hint="squash the base image, or merge RUN steps")
            code = _mount("overlay", target, "overlay", options)
            if code == 0:
                return
            self._fall_back(code, target)
        from dockwright.run import fuseoverlay

        fuseoverlay.mount(lowers, upper, work, target)

    def mount_lowers(self, lowers: list[Path], target: Path) -> None:
        """A read-only overlay of `lowers` (top first, at least two) on `target` (RUN --mount sources)."""
        if self.overlay == "kernel":
            code = _mount("overlay", target, "overlay", f"lowerdir={':'.join(map(str, lowers))}")
            if code == 0:
                return
            self._fall_back(code, target)
        from dockwright.run import fuseoverlay

        fuseoverlay.mount(lowers, None, None, target)

    def unmount(self, target: Path) -> None:
        _umount(target)
        if self.overlay == "fuse":
            from dockwright.run import fuseoverlay

            fuseoverlay.reap(target)

    def settle(self, upper: Path, lowers: list[Path]) -> None:
        """After the unmount: `upper` in the kernel overlay's form (what fuse-overlayfs writes differs)."""
        if self.overlay == "fuse":
            from dockwright.run.fuseoverlay import to_overlay_form

            to_overlay_form(upper, lowers, self.opaque_xattr)

    def _fall_back(self, code: int, target: Path) -> None:
        """Switch to fuse-overlayfs after the kernel's overlay failed with `code`, or raise the kernel's
        error saying what would help."""
        from dockwright.run import fuseoverlay

        error = _mount_error(code, target)
        usable = self.fallback and code in (errno.EPERM, errno.EACCES, errno.EINVAL)
        if usable and fuseoverlay.available():
            with self._switch:
                if self.overlay == "kernel":
                    self.overlay = "fuse"
                    log.info("overlayfs cannot be mounted here (%s): RUN uses fuse-overlayfs", os.strerror(code))
            return
        if self.name == "rootless" and (error.hint is None or error.hint.startswith("run as root")):
            error.hint = ("rootless RUN needs overlayfs in a user namespace (Linux 5.11 or newer, not disabled by "
                          "the distribution) or fuse-overlayfs (apt-get install fuse-overlayfs); otherwise run "
                          "dockwright as root")
        elif usable and error.hint is not None:
            error.hint += "; or install fuse-overlayfs (apt-get install fuse-overlayfs)"
        raise error


def choose(name: str = "oci", runtime: str | None = None) -> Isolation:
    """The isolation for this build; raises RunUnavailable naming what is missing."""
    if name not in ISOLATIONS:
        raise UsageError(f"--isolation {name!r}: unknown", hint=f"use one of: {', '.join(ISOLATIONS)}")
    if name == "chroot":
        from dockwright.run.chroot import check

        check()
        return Isolation("chroot", "")  # no runtime
    from dockwright.run.userns import in_user_namespace

    if name == "oci" and os.geteuid() == 0 and not in_user_namespace() and not capabilities() & (1 << CAP_SYS_ADMIN):
        raise RunUnavailable("RUN with --isolation oci needs CAP_SYS_ADMIN (to mount its root file system and make the "
                             "container's namespaces), which this process lacks: an unprivileged container",
                             hint="use --isolation chroot (no runtime and no namespace: see the README), or run in a "
                                  "privileged container")
    path = _find_runtime(runtime)

    if os.geteuid() != 0:
        raise RunUnavailable(f"RUN needs root or a user namespace to mount its root file system (dockwright "
                             f"runs as uid {os.geteuid()}, outside one)",
                             hint="run the dockwright command (it enters a user namespace for RUN by itself), "
                                  "or run as root")
    overlay = os.environ.get(OVERLAY_ENV) or ""
    if overlay and overlay not in OVERLAYS:
        raise UsageError(f"{OVERLAY_ENV}={overlay}: unknown", hint=f"use one of: {', '.join(OVERLAYS)}")
    if overlay == "fuse":
        log.info("RUN uses fuse-overlayfs (%s=fuse)", OVERLAY_ENV)
    elif not _overlay_supported():
        from dockwright.run import fuseoverlay

        if overlay != "kernel" and fuseoverlay.available():
            log.info("this kernel has no overlayfs: RUN uses fuse-overlayfs")
            overlay = "fuse"
        else:
            raise RunUnavailable("RUN needs the overlay file system, which this kernel does not offer",
                                 hint="load it with `modprobe overlay` (or run on a kernel with CONFIG_OVERLAY_FS), "
                                      "or install fuse-overlayfs")
    kind, fallback = "fuse" if overlay == "fuse" else "kernel", overlay != "kernel"
    if name == "rootless" or in_user_namespace():
        # with userxattr overlayfs creates no redirects (redirect_dir=off there is refused as "follow")
        options = _overlay_options().replace(",redirect_dir=off", "")
        return Isolation("rootless", path, opaque_xattr=USER_OPAQUE_XATTR, overlay_options=",userxattr" + options,
                         overlay=kind, fallback=fallback)
    return Isolation(name, path, overlay_options=_overlay_options(), overlay=kind, fallback=fallback)


def _find_runtime(runtime: str | None) -> str:
    if runtime:
        found = shutil.which(runtime)
        if found is None:
            raise RunUnavailable(f"--runtime {runtime}: no such executable")
        return os.path.abspath(found)
    for name in RUNTIMES:
        found = shutil.which(name)
        if found:
            return found
    raise RunUnavailable("RUN needs an OCI runtime, and neither runc nor crun is on PATH",
                         hint="install one (apt-get install runc, dnf install crun, apk add runc), "
                              "or pass --runtime PATH")


@functools.cache
def _overlay_supported() -> bool:
    try:
        return "overlay" in Path("/proc/filesystems").read_text().split()
    except OSError:
        return False


@functools.cache
def _overlay_options() -> str:
    """Keep the upper directory self-contained: no redirects to renamed lower directories and no
    metadata-only copy-ups (their data would stay in a lower layer, out of the diff). Only options the
    kernel knows are given (an unknown option fails the mount)."""
    known = set(os.listdir(_OVERLAY_PARAMETERS)) if _OVERLAY_PARAMETERS.is_dir() else set()
    return "".join(f",{name}=off" for name in ("redirect_dir", "metacopy", "index") if name in known)


def check_platform(platform: Platform) -> str | None:
    """None when the host runs `platform`'s binaries natively; else the qemu-user interpreter that
    binfmt_misc hands them to. Raises RunUnavailable when neither: never run a foreign binary blind."""
    host = Platform.host()
    if platform.os != "linux":
        raise RunUnavailable(f"RUN for {platform}: only Linux images can run commands")
    if platform.architecture == host.architecture:  # variants (amd64 v2/v3, arm64 v8) run natively
        return None
    qemu = _QEMU_NAMES.get(platform.architecture, platform.architecture)
    entry = _BINFMT / f"qemu-{qemu}"
    try:
        lines = entry.read_text().splitlines()
    except OSError:
        lines = []
    if "enabled" in lines:
        interpreter = next((line.split(None, 1)[1] for line in lines if line.startswith("interpreter ")), str(entry))
        return interpreter
    raise RunUnavailable(f"RUN for {platform} on this {host} machine needs qemu-user emulation, and "
                         f"binfmt_misc has no enabled qemu-{qemu} entry",
                         hint="install qemu-user-static and binfmt-support (apt-get install qemu-user-static "
                              "binfmt-support), or build on a matching machine")


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _mount(source: str, target: Path, fstype: str, options: str) -> int:
    """mount(2); 0, or the errno."""
    if _libc().mount(source.encode(), os.fsencode(target), fstype.encode(), 0, options.encode()) != 0:
        return ctypes.get_errno()
    return 0


def _mount_error(code: int, target: Path) -> RunUnavailable:
    hint = ("run as root; in a container (CI pod) it also needs privileges to mount (e.g. a privileged "
            "pod)" if code in (errno.EPERM, errno.EACCES) else None)
    if code == errno.EINVAL and filesystem_of(target) == "overlay":
        hint = ("dockwright's cache is on overlayfs (a container's own file system), which cannot hold an "
                "overlay's upper directory: point --cache-dir (with --no-cache: TMPDIR) at a volume (ext4, xfs "
                "or tmpfs)")
    return RunUnavailable(f"cannot mount the overlay root file system for RUN: {os.strerror(code)}", hint=hint)


def filesystem_of(path: Path) -> str | None:
    """The type of the file system `path` is on (from /proc/self/mounts: the longest mount point above it)."""
    best, kind = "", None
    real = os.path.realpath(path)
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def _umount(target: Path) -> None:
    mnt_detach = 2
    if _libc().umount2(os.fsencode(target), 0) != 0:
        code = ctypes.get_errno()
        if code == errno.EINVAL:  # not mounted
            return
        if _libc().umount2(os.fsencode(target), mnt_detach) != 0:
            raise DockwrightError(f"cannot unmount {target}: {os.strerror(ctypes.get_errno())}")
