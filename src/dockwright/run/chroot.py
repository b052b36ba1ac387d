"""--isolation chroot: a RUN where no container can start (a CI pod that runs as root but unprivileged:
no CAP_SYS_ADMIN, so no mount and no namespace, but Docker's default capabilities CAP_SYS_CHROOT,
CAP_MKNOD, CAP_CHOWN, CAP_FOWNER, CAP_SETUID and CAP_SETGID).

Each RUN gets a root file system of its own, with any layers above the tree it starts from extracted on
top: the tree a RUN before it left in the cache for its chain (CACHE/rootfs-chroot/left-CHAIN: taken by
a rename, by one RUN only, never copied; what no RUN takes goes at the build's end, RunSteps.close), else a
copy (`cp -a`) of the whole tree of a base kept by chain ID (extracted once, faithfully: owners, modes,
xattrs, hard links). A copy, not hard links or an overlay: the command writes in place, and nothing it does
can reach a kept tree (the layer directories the oci path shares would also need CAP_SYS_ADMIN for their
trusted.* opaque marks). The run places what a container would mount there — /dev with the
usual nodes (mknod), /proc and /sys as empty directories (mounted by the command's process when it has
CAP_SYS_ADMIN), /etc/hosts and /etc/resolv.conf as the oci path gives them, heredoc scripts at
/dev/pipes, RUN mounts (chrootfiles.py) — takes the snapshot of the tree's metadata (treediff.py), runs
the command in a chroot as its user (chrootexec.py), takes back what it placed (originals back, parents'
times kept) and diffs the tree. No namespaces: the command sees the host's processes and network
(`--network=none` cannot be honoured and is an error) and the pod's hostname; as root it runs with the
pod's capabilities, and chroot is no security boundary for it. When it ends, every process left in its
session or its root is killed (as a container's end would), so nothing runs on and nothing holds its output
open.

RUN mounts (ChrootMounts): cache directories are moved into the tree and back (renamed: one RUN at a time
uses a cache, `sharing=shared` waits as `locked`); binds from a stage or image are extracted, from the
context copied (a read-only bind is not enforced: writes are discarded all the same); secrets are copied
in as files and removed; tmpfs is an empty directory (no size limit)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from dockwright.cache import SIZE_PREFIX
from dockwright.layers.tar import TarEntry
from dockwright.model.image import BaseImage, Layer
from dockwright.parallel import POLL_SECONDS, check_cancelled
from dockwright.plan import RunMount
from dockwright.run.chrootfiles import HINT, Placed, copy_in, make_dev, move_in, write_file
from dockwright.run.isolation import CAP_SYS_ADMIN, RunUnavailable, capabilities
from dockwright.run.mounts import Mounts, OpenLayer
from dockwright.run.snapshots import Snapshots, chain_ids, dir_name, remove_tree
from dockwright.run.spec import Process, additional_gids, home, hosts_file

if TYPE_CHECKING:
    from dockwright.run.treediff import TreeState

log = logging.getLogger("dockwright")
LEFT = "left-"  # a tree a RUN left in the cache for the next RUN on its chain to take (once; never copied)

_CAPS = {"CAP_CHOWN": 0, "CAP_FOWNER": 3, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SYS_CHROOT": 18, "CAP_MKNOD": 27}
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
                             "lacks", hint=HINT)
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
        self.placed = Placed(self.root, self.temp / "aside")
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
        """The root file system from the tree of the longest prefix of the image's layer chain that the cache has,
        with the layers above it extracted on top: a tree a RUN left (taken: renamed, no copy), or a copy of a
        base's tree (the whole chain's is extracted and kept first when there is none)."""
        layers = self.image.layers
        chains = chain_ids([layer.diff_id for layer in layers])
        have = 0
        for count in range(len(chains), 0, -1):
            if _take(self.trees.root / (LEFT + dir_name(chains[count - 1])), self.root):
                have = count
                break
            tree = self.trees.path(chains[count - 1])
            if tree.is_dir():
                with contextlib.suppress(OSError):
                    os.utime(tree)  # recently used (for pruning)
                copy_in(str(tree), str(self.root))
                have = count
                break
        if have == 0 and layers:
            fresh = self.trees.temp_dir()
            try:
                _extract(layers, fresh / "root", self.image.name, self.open_layer)
                self.trees.adopt(fresh / "root", chains[-1])
            finally:
                remove_tree(fresh)
            copy_in(str(self.trees.path(chains[-1])), str(self.root))
            have = len(layers)
        _extract(layers[have:], self.root, self.image.name, self.open_layer)
        os.chmod(self.root, 0o755)

    def keep(self, diff_ids: Sequence[str]) -> Path | None:
        """After the layer is written: leave the tree (now the root file system of `diff_ids`, the image's and the
        new layer's, if any) in the cache for one later RUN on that chain to take; where it is, or None."""
        if not diff_ids or self.before is None or self.placed.items:
            return None
        left = self.trees.root / (LEFT + dir_name(chain_ids(diff_ids)[-1]))
        os.chmod(self.root, 0o755)
        try:
            os.rename(self.root, left)
        except OSError:  # one is there already
            return None
        return left

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
        self.placed.put("dev", lambda path: make_dev(path, files))
        for name in ("proc", "sys"):
            self.placed.put(name, lambda path: os.mkdir(path, 0o755))
        hosts = hosts_file()
        self.placed.put("etc/hosts", lambda path: write_file(path, hosts, 0o644))
        if os.path.exists("/etc/resolv.conf"):
            resolv = Path("/etc/resolv.conf").read_bytes()
            self.placed.put("etc/resolv.conf", lambda path: write_file(path, resolv, 0o644))
        for mount in process.mounts:
            target, source = mount["destination"].strip("/"), mount.get("source", "")
            if mount["type"] == "tmpfs":
                self.placed.put(target, lambda path: (os.mkdir(path), os.chmod(path, 0o1777)))
            elif mount["type"] == "move":
                self.placed.put(target, lambda path, s=source: move_in(s, path),
                                give_back=lambda path, s=source: os.rename(path, s))
            else:
                self.placed.put(target, lambda path, s=source: copy_in(s, path))


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


def discard(trees: Snapshots, left: Sequence[Path]) -> None:
    """Remove the trees RUNs of a build left (keep) that no later RUN took (renamed first: none is taken meanwhile)."""
    for path in left:
        temp = trees.temp_dir()
        if _take(path, temp / "root"):
            remove_tree(temp)
        else:
            temp.rmdir()


def _take(path: Path, to: Path) -> bool:
    """Rename `path` (a tree one RUN may take) to `to`; False when it is not there (or another took it)."""
    try:
        os.rename(path, to)
    except (FileNotFoundError, NotADirectoryError):
        return False
    path.with_name(SIZE_PREFIX + path.name).unlink(missing_ok=True)  # the cache's memo of its size, if any
    return True


def _extract(layers: Sequence[Layer], root: Path, name: str | None, open_layer: OpenLayer) -> None:
    """`layers` applied one after the other to `root` (made when missing), faithfully."""
    from dockwright.layers.rootfs import RootFS

    RootFS.from_layers([open_layer(layer) for layer in layers], root, faithful=True,
                       names=[layer.descriptor.digest for layer in layers], where=name or "the image")


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
