"""The OCI runtime spec (a bundle's config.json) for a RUN step, and the USER it runs as.

What the command gets is what `docker buildx build` gives a RUN: Docker's default capabilities, no
terminal, stdin from /dev/null (the caller's job), /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys
read-only, the host's /etc/hosts and /etc/resolv.conf read-only, the host's network unless
`--network=none` (then a network namespace with only loopback), and the usual masked and read-only
/proc and /sys paths. Extra mounts (RUN --mount) are given as OCI mount objects. The hostname is
BuildKit's, `buildkitsandbox` (a command that records it builds the same everywhere), resolvable through
the hosts file (`hosts_file`: the host's with that name added)."""

from __future__ import annotations

import os
import resource
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dockwright.model.errors import DockwrightError

# Docker's default capability set for containers (and BuildKit's for RUN)
CAPABILITIES = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE")
MASKED_PATHS = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
# where the runtime mounts something over the root file system: the stubs it creates for them when
# missing are not the command's doing (BuildKit removes them from the layer)
MOUNT_POINTS = ("proc", "dev", "sys", "etc/hosts", "etc/resolv.conf")
HOSTNAME = "buildkitsandbox"


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


@dataclass
class Process:
    args: Sequence[str]
    env: Sequence[str]
    cwd: str
    user: User
    network: str = "default"  # default | host | none
    mounts: list[dict[str, Any]] = field(default_factory=list)  # extra OCI mounts, after the standard ones


def hosts_file() -> bytes:
    """The host's /etc/hosts, with the sandbox's hostname on the loopback address."""
    try:
        with open("/etc/hosts", "rb") as file:
            hosts = file.read()
    except OSError:
        hosts = b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    return hosts.rstrip(b"\n") + f"\n127.0.0.1\t{HOSTNAME}\n".encode()


def runtime_spec(rootfs: str, process: Process, hosts: str) -> dict[str, Any]:
    """config.json for a bundle whose root file system is `rootfs` (an absolute path); `hosts`: the path
    of the hosts file the command sees."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    namespaces = [{"type": kind} for kind in ("pid", "ipc", "uts", "mount")]
    if process.network == "none":
        namespaces.append({"type": "network"})  # the runtime brings up nothing but loopback
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": process.user.uid, "gid": process.user.gid, "umask": 0o022,
                     "additionalGids": additional_gids(process.user)},
            "args": list(process.args),
            "env": list(process.env),
            "cwd": process.cwd,
            "capabilities": {kind: list(CAPABILITIES) for kind in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": hard, "soft": hard}],
            "noNewPrivileges": False,
        },
        "root": {"path": rootfs, "readonly": False},
        "hostname": HOSTNAME,
        "mounts": [*_standard_mounts(process.network, hosts), *process.mounts],
        "linux": {
            "namespaces": namespaces,
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        },
    }


def _standard_mounts(network: str, hosts: str) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    ]
    if network == "none":
        mounts.append({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                       "options": ["nosuid", "noexec", "nodev", "ro"]})
    else:  # sysfs cannot be mounted anew outside a network namespace of one's own: the host's, read-only
        mounts.append({"destination": "/sys", "type": "bind", "source": "/sys",
                       "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    for name, source in (("hosts", hosts), ("resolv.conf", "/etc/resolv.conf")):
        if os.path.exists(source):
            mounts.append({"destination": f"/etc/{name}", "type": "bind", "source": source,
                           "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]})
    return mounts


def additional_gids(user: User) -> list[int]:
    """The process's supplementary groups as BuildKit gives them: the primary group first, then the
    user's groups from /etc/group (executor/oci/user.go: WithUIDGID's ensureAdditionalGids, as
    containerd does), so `id` shows `groups=GID,...` as under Docker."""
    return list(user.groups) if user.gid in user.groups else [user.gid, *user.groups]


def resolve_user(spec: str, passwd: bytes | None, group: bytes | None, where: str) -> User:
    """USER as BuildKit resolves it (executor/oci/user.go GetUser): `uid:gid` numbers (or `root`) as they
    are; otherwise the user (a name or a uid) is looked up in /etc/passwd (a uid without an entry: gid 0),
    the group (a name or gid) in /etc/group; without a group, the supplementary groups are those listing
    the user as a member (moby/sys/user GetExecUser)."""
    spec = spec or "0"
    user_part, _, group_part = spec.partition(":")
    fast_uid, fast_gid = _fast_id(user_part), _fast_id(group_part)
    if fast_uid is not None and fast_gid is not None:
        return User(fast_uid, fast_gid)
    has_group = bool(group_part)  # `app:` names no group; `:staff` is root's entry with that group
    user_part = user_part or "0"
    uid, gid, name = -1, 0, None
    for fields in _table(passwd):
        if len(fields) >= 4 and user_part in (fields[0], fields[2]) and fields[2].isdecimal() \
                and fields[3].isdecimal():
            uid, gid, name = int(fields[2]), int(fields[3]), fields[0]
            break
    if uid < 0:
        if not user_part.isdecimal():
            raise DockwrightError(f"USER {spec}: no user {user_part!r} in /etc/passwd of {where}",
                                  hint="create the user in an earlier RUN (useradd/adduser), or use a numeric uid")
        uid = int(user_part)
    groups = [fields for fields in _table(group) if len(fields) >= 3 and fields[2].isdecimal()]
    if has_group:
        found = [int(f[2]) for f in groups if group_part in (f[0], f[2])]
        if not found and not group_part.isdecimal():
            raise DockwrightError(f"USER {spec}: no group {group_part!r} in /etc/group of {where}",
                                  hint="create the group in an earlier RUN, or use a numeric gid")
        return User(uid, found[0] if found else int(group_part))
    members = tuple(int(f[2]) for f in groups if name is not None and len(f) >= 4 and name in f[3].split(","))
    return User(uid, gid, members)


def _fast_id(text: str) -> int | None:
    """BuildKit's parseUID: a number, or `root` (0), without reading /etc/passwd."""
    return 0 if text == "root" else int(text) if text.isdecimal() else None


def home(uid: int, passwd: bytes | None) -> str:
    """The home directory of `uid` in /etc/passwd, else "/": runc's HOME for a command whose environment has none."""
    for fields in _table(passwd):
        if len(fields) >= 6 and fields[2] == str(uid) and fields[5]:
            return fields[5]
    return "/"


def _table(data: bytes | None) -> list[list[str]]:
    if not data:
        return []
    return [line.split(":") for line in data.decode("utf-8", "replace").splitlines()
            if line and not line.startswith("#")]
