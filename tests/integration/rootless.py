"""An unprivileged user for rootless tests, and `dockwright` run as that user.

The session makes a user of its own (`useradd`; the name holds the pytest process id, so concurrent
sessions never share one), which gets subordinate ids in /etc/subuid and /etc/subgid as any user made
by useradd does here (SUB_UID_* in /etc/login.defs), and removes it at the end (`userdel --remove`
also drops its subordinate ids). Commands run as it through `setpriv` with a clean environment.

That user cannot read root's files: the interpreter running the tests may live under /root (pyenv),
so dockwright runs under a Python the user can execute (this one if it can, else the system's
python3 of the same version) with dockwright's dependencies, at the versions installed here, in a
world-readable directory under /var/cache/dockwright-tests (made once per set of versions). Test files
the user must read or write go in `workdir()`: a directory of its own under /tmp.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import struct
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import pytest
from images import sh

_SHARED_CACHE = Path("/var/cache/dockwright-tests")
_TIMEOUT = 900  # a guard against hangs, not an assertion


@dataclass
class Unprivileged:
    """The test user: `name`, `uid`, `gid`, `home`; `python` and `pythonpath` run dockwright as it."""

    name: str
    uid: int
    gid: int
    home: Path
    python: str
    pythonpath: str
    _dirs: list[Path] = field(default_factory=list)

    def subids(self, kind: str) -> list[tuple[int, int]]:
        """The user's (start, count) ranges in /etc/subuid (`kind` "uid") or /etc/subgid ("gid")."""
        ranges = []
        for line in Path(f"/etc/sub{kind}").read_text().splitlines():
            owner, _, rest = line.partition(":")
            if owner in (self.name, str(self.uid)) and rest:
                start, _, count = rest.partition(":")
                ranges.append((int(start), int(count)))
        return ranges

    def workdir(self) -> Path:
        """A fresh directory under /tmp owned by the user (removed at the end of the session)."""
        path = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        os.chown(path, self.uid, self.gid)
        self._dirs.append(path)
        return path

    def give(self, path: Path) -> Path:
        """Make `path` (a tree made by root inside `workdir()`) the user's."""
        for item in [path, *path.rglob("*")]:
            os.lchown(item, self.uid, self.gid)
        return path

    @contextlib.contextmanager
    def fuse_device(self) -> Iterator[None]:
        """Let the user open /dev/fuse meanwhile (an ACL entry of its own, as setfacl -m u:USER:rw adds).
        udev makes /dev/fuse mode 0666 on most distributions; without udev (this machine) it is 0600."""
        fuse = "/dev/fuse"
        if os.stat(fuse).st_mode & 0o006 == 0o006:
            yield
            return
        before = _acl(fuse)
        _set_acl(fuse, [*(e for e in before if e[0] != _ACL_MASK), (_ACL_USER, 6, self.uid), (_ACL_MASK, 6, _ACL_ANY)])
        try:
            yield
        finally:
            _set_acl(fuse, [*(e for e in _acl(fuse) if e[0] != _ACL_USER or e[2] != self.uid)])

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {
            "HOME": str(self.home), "USER": self.name, "LOGNAME": self.name,
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": self.pythonpath, "LANG": "C.UTF-8", **(extra or {}),
        }  # fmt: skip

    def command(self, *args: str | Path) -> list[str]:
        """`args` as a command line that runs as the user (its groups, no capabilities)."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--",
                *(str(a) for a in args)]  # fmt: skip

    def run(self, *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `args` as the user with a clean environment (`env` added) in `cwd` (default: its home)."""
        proc = subprocess.run(
            self.command(*args), env=self.env(env), cwd=cwd or self.home, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=_TIMEOUT, check=False,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(
                f"as {self.name}: {' '.join(map(str, args))} exited with {proc.returncode}\n"
                f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
            )
        return proc

    def dockwright(self, *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None,
                   check: bool = True) -> subprocess.CompletedProcess[str]:
        """`python -m dockwright ARGS` as the user, from this checkout."""
        return self.run(self.python, "-m", "dockwright", *args, env=env, cwd=cwd, check=check)


def unprivileged_user(src: Path) -> Iterator[Unprivileged]:
    """Create the session's user (skip unless root), yield it, remove it and its directories."""
    if os.geteuid() != 0:
        pytest.skip("making a test user needs root (this session is not root: every build here is rootless)")
    name = f"dwt{os.getpid()}"
    sh("useradd", "--create-home", "--shell", "/bin/sh", "--comment", "dockwright rootless tests", name)
    entry = pwd.getpwnam(name)
    user = Unprivileged(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir), "", "")
    try:
        for kind in ("uid", "gid"):
            if not user.subids(kind):  # useradd allocates them where login.defs says so; else do it here
                start = _free_subid_start(kind)
                sh("usermod", f"--add-sub{kind}s", f"{start}-{start + 65535}", name)
        user.python, deps = _python_for(user)
        user.pythonpath = os.pathsep.join([str(src), str(deps)])
        yield user
    finally:
        for path in user._dirs:
            shutil.rmtree(path, ignore_errors=True)
        proc = subprocess.run(["userdel", "--remove", name], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            left = subprocess.run(["ps", "-o", "pid,args", "-u", name], capture_output=True, text=True).stdout
            raise AssertionError(f"userdel {name} failed (processes left behind?): {proc.stderr}\n{left}")


def _free_subid_start(kind: str) -> int:
    ends = [100000]
    for line in Path(f"/etc/sub{kind}").read_text().splitlines():
        parts = line.split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            ends.append(int(parts[1]) + int(parts[2]))
    return max(ends)


def _python_for(user: Unprivileged) -> tuple[str, Path]:
    """An interpreter the user can run (this one, or the system's of the same version) and a directory
    with dockwright's dependencies for it."""
    minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, shutil.which(minor, path="/usr/bin:/bin") or ""):
        if candidate and _runs_as(user, candidate):
            return candidate, _dependencies()
    pytest.skip(f"no {minor} the test user can run (this one is {sys.executable})")


def _runs_as(user: Unprivileged, python: str) -> bool:
    # the interpreter must also be able to start itself again (a path below /root may run yet not be reachable)
    probe = (f"import os, sys; sys.exit(sys.version_info[:2] != {tuple(sys.version_info[:2])}"
             " or not os.access(sys.executable, os.X_OK))")
    return user.run(python, "-c", probe, check=False).returncode == 0


def _dependencies() -> Path:
    """dockwright's dependencies at the versions installed here, in a directory anyone can read."""
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    pins = sorted(f"{_name(req)}=={version(_name(req))}" for req in pyproject["project"]["dependencies"])
    key = hashlib.sha256(f"{sys.version_info[:2]} {pins}".encode()).hexdigest()[:16]
    target = _SHARED_CACHE / f"pydeps-{key}"
    if not (target / ".complete").exists():
        partial = Path(tempfile.mkdtemp(prefix="pydeps-", dir=_mkdir_shared()))
        sh(sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--only-binary=:all:", "--target", partial, *pins)  # fmt: skip
        (partial / ".complete").touch()
        partial.chmod(0o755)
        try:
            partial.rename(target)
        except OSError:  # another session got there first
            shutil.rmtree(partial, ignore_errors=True)
    return target


def _mkdir_shared() -> Path:
    _SHARED_CACHE.mkdir(parents=True, exist_ok=True)
    _SHARED_CACHE.chmod(0o755)
    return _SHARED_CACHE


def _name(requirement: str) -> str:
    for stop in "<>=!~[; ":
        requirement = requirement.split(stop, 1)[0]
    return requirement


# POSIX ACLs in the system.posix_acl_access xattr (what setfacl writes): a version, then (tag, perm, id) entries
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_MASK, _ACL_OTHER, _ACL_ANY = 0x01, 0x02, 0x04, 0x10, 0x20, 0xFFFFFFFF


def _acl(path: str) -> list[tuple[int, int, int]]:
    try:
        data = os.getxattr(path, "system.posix_acl_access")
    except OSError:
        mode = os.stat(path).st_mode
        return [(_ACL_USER_OBJ, mode >> 6 & 7, _ACL_ANY), (_ACL_GROUP_OBJ, mode >> 3 & 7, _ACL_ANY),
                (_ACL_OTHER, mode & 7, _ACL_ANY)]
    return [struct.unpack_from("<HHI", data, 4 + 8 * i) for i in range((len(data) - 4) // 8)]


def _set_acl(path: str, entries: list[tuple[int, int, int]]) -> None:
    if not any(tag in (_ACL_USER, 0x08) for tag, _, _ in entries):  # only the mode's entries: no ACL
        os.removexattr(path, "system.posix_acl_access")
        bits = {tag: perm for tag, perm, _ in entries}
        os.chmod(path, bits[_ACL_USER_OBJ] << 6 | bits[_ACL_GROUP_OBJ] << 3 | bits[_ACL_OTHER])
        return
    if not any(tag == _ACL_MASK for tag, _, _ in entries):
        entries = [*entries, (_ACL_MASK, 6, _ACL_ANY)]
    os.setxattr(path, "system.posix_acl_access",
                struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in sorted(entries)))
