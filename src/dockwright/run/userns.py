"""Rootless RUN: the build runs again inside a user namespace where the user is root.

A user who is not root cannot mount overlayfs or start containers, but inside a user namespace of
their own they can (kernel 5.11 or newer for overlayfs). `reexec` starts this same command again in a
new user and mount namespace: with newuidmap/newgidmap (package uidmap) and the user's ranges in
/etc/subuid and /etc/subgid, ids 0..N of the image map to the user (0) and their subordinate ids (1..N),
so files owned by any user of the image keep their owners. Without them, only the user's own id is
mapped (to 0): files owned by other ids in a base layer cannot be written with their owner, and a
command's chown to another id fails; dockwright says so and how to fix it.

`start` starts any module so: the CLI's build (`reexec`), and one RUN step of a library build whose
program runs outside a namespace (run/worker.py).

Inside, everything is as for root (`--isolation oci`), except that overlayfs takes `userxattr` and
keeps its whiteout and opaque marks in `user.overlay.*` xattrs (the layer directories in the cache are
kept apart from root's, in `rootfs-user/`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dockwright.model.errors import DockwrightError

log = logging.getLogger("dockwright")

MARK = "DOCKWRIGHT_USERNS"  # set in the re-executed process: "subids" or "single"
_warned: list[bool] = []  # the single-id mapping is said once per process
_CLONE_NEWNS, _CLONE_NEWUSER = 0x00020000, 0x10000000
_MS_REC, _MS_PRIVATE = 0x4000, 1 << 18


def in_user_namespace() -> bool:
    """True when this process runs in a user namespace other than the initial one."""
    try:
        lines = Path("/proc/self/uid_map").read_text().split("\n")
    except OSError:
        return False
    return [line.split() for line in lines if line.strip()] != [["0", "0", "4294967295"]]


def mapped(kind: str, ident: int) -> bool:
    """Whether id `ident` (kind "uid" or "gid") exists in this user namespace."""
    try:
        lines = Path(f"/proc/self/{kind}_map").read_text().splitlines()
    except OSError:
        return True
    return any(int(f[0]) <= ident < int(f[0]) + int(f[2]) for f in (line.split() for line in lines) if len(f) == 3)


def adapt_spec(spec: dict[str, Any]) -> None:
    """What a runtime spec cannot ask for in a user namespace that maps only one id: devpts owned by
    the tty group (gid 5) and supplementary groups that do not exist here."""
    if not mapped("gid", 5):
        for mount in spec["mounts"]:
            if mount["type"] == "devpts":
                mount["options"] = [o for o in mount["options"] if o != "gid=5"]
    user = spec["process"]["user"]
    if "additionalGids" in user:
        user["additionalGids"] = [g for g in user["additionalGids"] if mapped("gid", g)]


def subids(kind: str, user: str, uid: int) -> list[tuple[int, int]]:
    """The (start, count) ranges of `user` in /etc/subuid (`kind` "uid") or /etc/subgid ("gid")."""
    ranges = []
    try:
        text = Path(f"/etc/sub{kind}").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        owner, _, rest = line.strip().partition(":")
        start, _, count = rest.partition(":")
        if owner in (user, str(uid)) and start.isdecimal() and count.isdecimal():
            ranges.append((int(start), int(count)))
    return ranges


def reexec(argv: Sequence[str]) -> int:
    """Run `python -m dockwright ARGV` again in a new user and mount namespace; its exit status. For the
    CLI: Ctrl-C goes to both processes, and this one waits until the build has cleaned up."""
    child = start("dockwright", argv)
    # Ctrl-C reaches the child with the rest of the process group; if this process dies, the child gets
    # SIGTERM (PR_SET_PDEATHSIG): either way the build cleans up before it exits
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            continue


def start(module: str, argv: Sequence[str], pass_fds: Sequence[int] = (), **popen: Any) -> subprocess.Popen[bytes]:
    """Start `python -m MODULE ARGV` as root of a new user and mount namespace (ids mapped as the module's
    docstring says); `pass_fds` and `popen` as for subprocess.Popen."""
    uid, gid = os.getuid(), os.getgid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    uid_ranges, gid_ranges = subids("uid", user, uid), subids("gid", user, uid)
    tools = shutil.which("newuidmap") and shutil.which("newgidmap")
    mode = "subids" if uid_ranges and gid_ranges and tools else "single"
    if mode == "single" and not _warned:
        _warned.append(True)
        missing = "newuidmap/newgidmap (apt-get install uidmap)" if not tools else \
            f"ranges for {user} in /etc/subuid and /etc/subgid (usermod --add-subuids 100000-165535 " \
            f"--add-subgids 100000-165535 {user})"
        log.warning("rootless RUN maps only uid %d (to root): files of other owners in the image cannot keep "
                    "them, and a chown to another id fails; for full ownership: %s", uid, missing)
    read_fd, write_fd = os.pipe()  # the child waits on it until its maps are written
    # the same dockwright and dependencies as this process, also where a program changed sys.path itself
    env = {**os.environ, MARK: mode, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(read_fd), str(uid), str(gid), mode, module, *argv],
        env=env, pass_fds=(read_fd, *pass_fds), start_new_session=False, **popen,
    )  # fmt: skip
    os.close(read_fd)
    try:
        _wait_unshared(child)
        if mode == "subids":
            _map("newuidmap", child.pid, uid, uid_ranges)
            _map("newgidmap", child.pid, gid, gid_ranges)
        os.write(write_fd, b"go")
    except BaseException:
        child.kill()
        child.wait()
        raise
    finally:
        os.close(write_fd)
    return child


def _wait_unshared(child: subprocess.Popen[bytes]) -> None:
    """Wait until the child is in a user namespace of its own (it then waits for its maps)."""
    import time

    own = os.readlink("/proc/self/ns/user")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and child.poll() is None:
        try:
            if os.readlink(f"/proc/{child.pid}/ns/user") != own:
                return
        except OSError:
            pass
        time.sleep(0.002)
    raise DockwrightError("rootless RUN: could not create a user namespace (unshare failed)",
                          hint="check that unprivileged user namespaces are enabled "
                               "(sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0)")


def _map(tool: str, pid: int, own: int, ranges: list[tuple[int, int]]) -> None:
    args = [tool, str(pid), "0", str(own), "1"]
    inside = 1
    for start, count in ranges:
        args += [str(inside), str(start), str(count)]
        inside += count
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DockwrightError(f"rootless RUN: {tool} failed: {proc.stderr.strip()}",
                              hint="check /etc/subuid and /etc/subgid, and that newuidmap/newgidmap are setuid")


def unshare() -> None:
    """unshare(2) a new user and mount namespace (used by the child below)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def private_mounts() -> None:
    """Make every mount private in this mount namespace (nothing propagates back to the host)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


# The child: unshare, wait for the parent's maps (or write the single-id ones itself), become root in the
# namespace, make mounts private and exec the build again. Kept small: it runs before dockwright imports.
_CHILD = """
import os, sys
from dockwright.run.userns import private_mounts, unshare
fd, uid, gid, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
try:
    unshare()
except OSError:
    sys.exit(125)  # the parent says what is missing
if os.read(fd, 2) != b"go":
    sys.exit(125)
os.close(fd)
if mode == "single":
    open("/proc/self/uid_map", "w").write(f"0 {uid} 1")
    open("/proc/self/setgroups", "w").write("deny")
    open("/proc/self/gid_map", "w").write(f"0 {gid} 1")
os.setresgid(0, 0, 0)
os.setresuid(0, 0, 0)
if mode != "single":
    os.setgroups([])
import ctypes, ctypes.util, signal
ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
private_mounts()
os.execv(sys.executable, [sys.executable, "-m", *sys.argv[5:]])
"""
