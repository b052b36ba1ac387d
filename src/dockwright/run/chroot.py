"""--isolation chroot: a RUN where no container can start (a CI pod that runs as root but unprivileged:
no CAP_SYS_ADMIN, so no mount and no namespace, but Docker's default capabilities CAP_SYS_CHROOT,
CAP_MKNOD, CAP_CHOWN, CAP_FOWNER, CAP_SETUID and CAP_SETGID).

Each RUN gets a root file system of its own: a copy (`cp -a`) of a whole tree kept in the cache by chain ID
(CACHE/rootfs-chroot; extracted once, faithfully: owners, modes, xattrs, hard links), with any layers above
it extracted on top; after a successful RUN that copy becomes the tree of the new chain, so the next RUN
starts from it. A copy, not hard links or an overlay: the command writes in place, and nothing it does can
reach the cache (the layer directories the oci path shares would also need CAP_SYS_ADMIN for their
trusted.* opaque marks). The run places what a container would mount there — /dev with the
usual nodes (mknod), /proc and /sys as empty directories (mounted by the command's process when it has
CAP_SYS_ADMIN), /etc/hosts and /etc/resolv.conf as the oci path gives them, heredoc scripts at
/dev/pipes, RUN mounts — takes the snapshot of the tree's metadata (treediff.py), runs the command in a
chroot as its user (chrootexec.py), takes back what it placed (originals back, parents' times kept) and
diffs the tree. No namespaces: the command sees the host's processes and network (`--network=none` cannot
be honoured and is an error) and the pod's hostname; as root it runs with the pod's capabilities, and
chroot is no security boundary for it. When it ends, every process left in its session or its root is
killed (as a container's end would), so nothing runs on and nothing holds its output open.

RUN mounts (ChrootMounts): cache directories are moved into the tree and back (renamed: one RUN at a time
uses a cache, `sharing=shared` waits as `locked`); binds from a stage or image are extracted, from the
context copied (a read-only bind is not enforced: writes are discarded all the same); secrets are copied
in as files and removed; tmpfs is an empty directory (no size limit)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from dockwright.layers.tar import TarEntry
from dockwright.model.errors import DockwrightError
from dockwright.model.image import BaseImage, Layer
from dockwright.parallel import POLL_SECONDS, check_cancelled
from dockwright.plan import RunMount
from dockwright.run.isolation import RunUnavailable
from dockwright.run.mounts import Mounts, OpenLayer
from dockwright.run.snapshots import Snapshots, chain_ids, remove_tree
from dockwright.run.spec import Process, additional_gids, home, hosts_file

if TYPE_CHECKING:
    from dockwright.run.treediff import TreeState

log = logging.getLogger("dockwright")

_CAPS = {"CAP_CHOWN": 0, "CAP_FOWNER": 3, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SYS_CHROOT": 18, "CAP_MKNOD": 27}
CAP_SYS_ADMIN = 21
_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))
_DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
              ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))
_HINT = "run dockwright as root in a container with Docker's default capabilities, or use --isolation oci"


def capabilities() -> int:
    """This process's effective capability set (a bit mask)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check() -> None:
    """Raise RunUnavailable when chroot isolation cannot work here."""
    from dockwright.run.userns import in_user_namespace

    if os.geteuid() != 0 or in_user_namespace():
        raise RunUnavailable("--isolation chroot needs root outside a user namespace (to chroot, make /dev's "
                             "nodes and set owners)", hint="run as root, or use --isolation rootless")
    caps = capabilities()
    missing = [name for name, bit in _CAPS.items() if not caps & (1 << bit)]
    if missing:
        raise RunUnavailable(f"--isolation chroot needs the capabilities {', '.join(missing)}, which this process "
                             "lacks", hint=_HINT)
    if not caps & (1 << CAP_SYS_ADMIN):
        log.info("--isolation chroot without CAP_SYS_ADMIN: RUN commands get no /proc and no /sys")


class ChrootBox:
    """One RUN under chroot isolation: `with ChrootBox(...) as box: box.read(...); box.run(...); box.finish();
    box.entries(epoch)` (the entries' files are read from the tree: write the layer inside the block)."""

    def __init__(self, trees: Snapshots, image: BaseImage, open_layer: OpenLayer) -> None:
        self.trees = trees  # whole root file systems by chain ID
        self.image = image
        self.open_layer = open_layer
        self.temp = trees.temp_dir()
        self.root = self.temp / "root"
        self.placed = _Placed(self.root, self.temp / "aside")
        self.before: TreeState | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.ended = False  # its processes are all gone (its session id may be reused: kill nothing more)

    def __enter__(self) -> ChrootBox:
        try:
            self._materialise()
        except BaseException:
            self.close()
            raise
        return self

    def _materialise(self) -> None:
        """The root file system: a copy of the cached tree of the longest prefix of the image's layer chain that
        has one (the whole chain's extracted and kept first when none has), the layers above it extracted on top."""
        layers = self.image.layers
        chains = chain_ids([layer.diff_id for layer in layers])
        have = next((count for count in range(len(chains), 0, -1) if self.trees.path(chains[count - 1]).is_dir()), 0)
        if have == 0 and layers:
            fresh = self.trees.temp_dir()
            try:
                _extract(layers, fresh / "root", self.image.name, self.open_layer)
                self.trees.adopt(fresh / "root", chains[-1])
            finally:
                remove_tree(fresh)
            have = len(layers)
        if have:
            tree = self.trees.path(chains[have - 1])
            with contextlib.suppress(OSError):
                os.utime(tree)  # recently used (for pruning)
            _copy(str(tree), str(self.root))
        _extract(layers[have:], self.root, self.image.name, self.open_layer)
        os.chmod(self.root, 0o755)

    def keep(self, diff_ids: Sequence[str]) -> None:
        """After the layer is written: keep the tree (now the root file system of `diff_ids`, the image's and the
        new layer's) in the cache for the next RUN on that chain, unless one is there."""
        if diff_ids and self.before is not None and not self.placed.items:
            chain = chain_ids(diff_ids)[-1]
            if not self.trees.path(chain).exists():
                self.trees.adopt(self.root, chain)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def read(self, path: str) -> bytes | None:
        """A small file of the root file system (symlinks resolved inside it), or None."""
        from dockwright.layers.rootfs import RootFS

        return RootFS(self.root).open(path)

    def run(self, process: Process, label: str, files: Sequence[tuple[str, bytes]] = (),
            output: Callable[[str], None] | None = None, cancel: threading.Event | None = None,
            mask: Callable[[str], str] | None = None) -> None:
        """As Sandbox.run: raises RunFailed (`label: exit code N` and the last lines) or Cancelled."""
        from dockwright.run.container import RunFailed, relay
        from dockwright.run.treediff import snapshot, wait_past

        if process.network == "none":
            raise RunUnavailable(f"{label}: --network=none needs a network namespace, which --isolation chroot "
                                 "cannot make", hint="drop --network=none, or use --isolation oci")
        self._place(process, files)
        self.before = snapshot(self.root, self.placed.paths)
        for made in self.placed.made:
            self.before.forget(made)
        wait_past(self.temp, self.before.latest_ctime_ns)
        env = list(process.env)
        if not any(item.startswith("HOME=") for item in env):  # as runc: the user's home
            env.append(f"HOME={home(process.user.uid, self.read('etc/passwd'))}")
        orders = {"root": str(self.root), "cwd": process.cwd, "uid": process.user.uid, "gid": process.user.gid,
                  "groups": additional_gids(process.user),  # as the oci path gives them (BuildKit's)
                  "args": list(process.args), "env": env,
                  "mount": bool(capabilities() & (1 << CAP_SYS_ADMIN))}
        read_end, write_end = os.pipe()
        try:
            with open(os.devnull, "rb") as devnull:
                self.proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", str(Path(__file__).with_name("chrootexec.py")), str(read_end)],
                    stdin=devnull, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                    pass_fds=(read_end,), cwd="/", env={})
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(json.dumps(orders).encode())
        proc = self.proc
        watcher = threading.Thread(target=self._watch, args=(proc, cancel), name="dockwright-chroot", daemon=True)
        watcher.start()
        try:
            assert proc.stdout is not None
            tail = relay(proc.stdout, output, mask)
            code = proc.wait()
        except BaseException:  # Ctrl-C, SIGTERM: the command goes at once
            self._kill()
            raise
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
        watcher.join()
        check_cancelled(cancel)
        if code != 0:
            raise RunFailed(label, 128 - code if code < 0 else code, tail)

    def finish(self) -> None:
        """After a successful run: take back what the run placed (the tree is then the command's alone)."""
        self.placed.take_back()

    def entries(self, epoch: int) -> list[TarEntry]:
        """The layer: what the command changed."""
        from dockwright.run.treediff import changed_entries

        assert self.before is not None
        return changed_entries(self.root, self.before, epoch)

    def close(self) -> None:
        """Kill what is left, give back moved directories, remove the tree; safe to call twice."""
        self._kill()
        try:
            self.placed.take_back()
        finally:
            remove_tree(self.temp)

    # ------------------------------------------------------------------ the command's processes

    def _watch(self, proc: subprocess.Popen[bytes], cancel: threading.Event | None) -> None:
        """Kill everything on cancel; when the command ends, what it left running (which would hold its output
        open, and keep running in the pod)."""
        while True:
            try:
                proc.wait(POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.is_set():
                    self._kill()
        self._kill()

    def _kill(self) -> None:
        """SIGKILL every process of the command's session or with its root in the tree, until none is left."""
        if self.proc is None or self.ended:
            return
        session = self.proc.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(session, signal.SIGKILL)
        for _ in range(100):
            found = [pid for pid in _processes() if _belongs(pid, session, str(self.root))]
            if not found:
                break
            for pid in found:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        else:
            log.warning("processes of a RUN command would not end (session %d)", session)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.ended = not any(_belongs(pid, session, str(self.root)) for pid in _processes())

    # ------------------------------------------------------------------ what a container would mount

    def _place(self, process: Process, files: Sequence[tuple[str, bytes]]) -> None:
        self.placed.put("dev", lambda path: _make_dev(path, files))
        for name in ("proc", "sys"):
            self.placed.put(name, lambda path: os.mkdir(path, 0o755))
        hosts = hosts_file()
        self.placed.put("etc/hosts", lambda path: _write(path, hosts, 0o644))
        if os.path.exists("/etc/resolv.conf"):
            resolv = Path("/etc/resolv.conf").read_bytes()
            self.placed.put("etc/resolv.conf", lambda path: _write(path, resolv, 0o644))
        for mount in process.mounts:
            target, source = mount["destination"].strip("/"), mount.get("source", "")
            if mount["type"] == "tmpfs":
                self.placed.put(target, lambda path: (os.mkdir(path), os.chmod(path, 0o1777)))
            elif mount["type"] == "move":
                self.placed.put(target, lambda path, s=source: _move_in(s, path),
                                give_back=lambda path, s=source: os.rename(path, s))
            else:
                self.placed.put(target, lambda path, s=source: _copy(s, path))


class ChrootMounts(Mounts):
    """RUN mounts without mount(2): `oci` lists {"destination", "type": move|copy|bind|tmpfs, "source"} for
    ChrootBox to place. Stage and image sources are extracted (no overlay of layer directories)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._movable: list[Path] = []

    def _cache(self, mount: RunMount) -> Path:
        import dataclasses

        if mount.sharing == "shared":  # moved into one RUN's tree, it cannot be in two at once
            mount = dataclasses.replace(mount, sharing="locked")
        directory = super()._cache(mount)
        self._movable.append(directory)
        return directory

    def _image_root(self, image: BaseImage, readonly: bool) -> Path:
        root = self._temp("mnt-") / "root"
        _extract(image.layers, root, image.name, self.open_layer)
        self._movable.append(root)  # a copy of its own: moved in, and its changes dropped with it
        return root

    def _overlay(self, lowers: list[Path], readonly: bool) -> Path:
        return lowers[0]  # only a read-write bind of the context comes here: it is copied in anyway

    def _bind(self, target: str, source: Path, readonly: bool) -> None:
        movable = any(source == root or root in source.parents for root in self._movable)
        self.oci.append({"destination": target, "type": "move" if movable else "copy", "source": str(source)})


class _Placed:
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


def _extract(layers: Sequence[Layer], root: Path, name: str | None, open_layer: OpenLayer) -> None:
    """`layers` applied one after the other to `root` (made when missing), faithfully."""
    from dockwright.layers.rootfs import RootFS

    RootFS.from_layers([open_layer(layer) for layer in layers], root, faithful=True,
                       names=[layer.descriptor.digest for layer in layers], where=name or "the image")


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


def _write(path: str, data: bytes, mode: int) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode), "wb") as file:
        file.write(data)
    os.chmod(path, mode)


def _copy(source: str, path: str) -> None:
    """A copy with owners, modes, times, xattrs and hard links (cp -a: coreutils' or busybox's)."""
    done = subprocess.run(["cp", "-a", source, path], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DockwrightError(f"RUN --mount under --isolation chroot: cannot copy {source}: {done.stderr.strip()}")


def _move_in(source: str, path: str) -> None:
    try:
        os.rename(source, path)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        raise DockwrightError(f"RUN --mount under --isolation chroot moves {source} into the root file system, "
                              "which is on another file system", hint="keep --cache-dir (and TMPDIR with --no-cache) "
                              "on one file system") from None


def _make_dev(path: str, files: Sequence[tuple[str, bytes]]) -> None:
    """/dev as a container has it: the usual nodes, /dev/shm, /dev/pts, the fd links, heredoc scripts in /dev/pipes."""
    os.mkdir(path, 0o755)
    for name, major, minor in _DEVICES:
        node = os.path.join(path, name)
        try:
            os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        except PermissionError:
            raise RunUnavailable("--isolation chroot cannot make /dev/null for the command (mknod: no CAP_MKNOD, "
                                 "or a device cgroup forbids it)", hint=_HINT) from None
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
            _write(os.path.join(pipes, name), data, 0o755)


def _processes() -> Iterable[int]:
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit():
                yield int(name)


def _belongs(pid: int, session: int, root: str) -> bool:
    """Whether process `pid` (not a zombie) is in `session` or has its root at or below `root`."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    if not fields or fields[0] == "Z":
        return False
    if int(fields[3]) == session:
        return True
    try:
        where = os.readlink(f"/proc/{pid}/root")
    except OSError:
        return False
    return where == root or where.startswith(root + "/")
