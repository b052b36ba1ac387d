"""The process that becomes a RUN command under --isolation chroot. chroot.py starts it as a script
(`python -I -S chrootexec.py`, in a session of its own) rather than with a preexec_fn, which is unsafe in a
threaded program; it imports nothing of dockwright. Its orders come as JSON on a pipe whose descriptor
argv names (never in argv itself, which any user can read: the environment may hold a secret).

With CAP_SYS_ADMIN it first takes a mount namespace of its own and mounts /proc and a read-only /sys in the
root (gone with the namespace when the command's processes end: nothing to unmount, nothing to leak);
without it the command has neither. Then: chroot, the working directory (made when missing, as runc
does), RLIMIT_NOFILE raised to its hard limit, supplementary groups, gid, uid, umask 022, default
SIGPIPE/SIGXFSZ (Python ignores them, and an exec keeps that), exec through the command's PATH."""

import ctypes
import errno
import json
import os
import resource
import signal
import sys

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18


def _mount_kernel_files(root: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)

    def mount(source: str, target: str, kind: str, flags: int) -> None:
        if libc.mount(source.encode(), target.encode(), kind.encode(), flags, None) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"mount {target}: {os.strerror(code)}")

    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    mount("none", "/", "", MS_REC | MS_PRIVATE)  # nothing of what follows reaches the host's mounts
    mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("/sys", f"{root}/sys", "", MS_BIND | MS_REC)
    mount("none", f"{root}/sys", "", MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def main() -> None:
    with os.fdopen(int(sys.argv[1]), "rb") as orders:
        spec = json.load(orders)
    args, env = spec["args"], dict(item.partition("=")[::2] for item in spec["env"])
    if spec["mount"]:
        try:
            _mount_kernel_files(spec["root"])
        except OSError as exc:
            sys.stderr.write(f"dockwright: no /proc and /sys for this command: {exc.strerror}\n")
    os.chroot(spec["root"])
    os.chdir("/")
    os.makedirs(spec["cwd"], 0o755, exist_ok=True)
    os.chdir(spec["cwd"])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.setgroups(spec["groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    os.umask(0o022)
    for name in ("SIGPIPE", "SIGXFSZ"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    sys.stdout.flush()
    try:
        os.execvpe(args[0], args, env)
    except OSError as exc:
        sys.stderr.write(f"{args[0]}: {exc.strerror}\n")
        sys.stderr.flush()
        os._exit(127 if exc.errno == errno.ENOENT else 126)


if __name__ == "__main__":
    main()
