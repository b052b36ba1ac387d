"""One RUN in a container: the overlay root (lower: the stage's layer directories; upper and work:
fresh directories), the bundle, the runtime process with its output streamed line by line, and the
clean-up that always happens (runtime delete, unmount, temporary directories), also on Ctrl-C.

Usage: `with Sandbox(isolation, snapshots, lowers) as box: box.read(...); box.run(...); box.finish()`,
then diff `box.upper` (and adopt it as a snapshot, or let the context remove it)."""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType

from dockwright.layers.copy import resolve_in_root
from dockwright.model.errors import DockwrightError
from dockwright.parallel import POLL_SECONDS, check_cancelled
from dockwright.run.isolation import Isolation
from dockwright.run.snapshots import Snapshots, remove_tree
from dockwright.run.spec import MOUNT_POINTS, Process, hosts_file, runtime_spec

log = logging.getLogger("dockwright")
TAIL_LINES = 10


class RunFailed(DockwrightError):
    """The command exited non-zero: the message has its exit code, `details` the last lines of its output."""

    def __init__(self, message: str, exit_code: int, tail: Sequence[str]) -> None:
        super().__init__(f"{message}: exit code {exit_code}")
        self.details = tuple(tail)
        self.command_exit_code = exit_code


class Sandbox:
    def __init__(self, isolation: Isolation, snapshots: Snapshots, lowers: list[Path]) -> None:
        self.isolation = isolation
        self.lowers = lowers
        self.snapshots = snapshots
        self.temp = snapshots.temp_dir()  # upper and work on the snapshots' file system: upper can be adopted
        self.upper = self.temp / "upper"
        self.bundle = self.temp / "bundle"
        self.merged = self.bundle / "rootfs"
        self.links: Path | None = None
        self.mounted = False
        self.container: str | None = None
        self._before: dict[str, os.stat_result | None] = {}

    def __enter__(self) -> Sandbox:
        try:
            for directory in (self.upper, self.temp / "work", self.merged):
                directory.mkdir(parents=True)
            os.chmod(self.upper, 0o755)
            # short names for the lower directories: the mount options must fit in one page
            self.links = Path(tempfile.mkdtemp(prefix="dw-"))
            lowers = []
            for index, lower in enumerate(self.lowers):
                (self.links / str(index)).symlink_to(lower)
                lowers.append(self.links / str(index))
            if not lowers:  # FROM scratch: overlayfs needs a lower directory
                (self.links / "empty").mkdir()
                lowers.append(self.links / "empty")
            self.isolation.mount_root(lowers, self.upper, self.temp / "work", self.merged)
            self.mounted = True
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def read(self, path: str) -> bytes | None:
        """A small file of the root file system (symlinks resolved inside it), or None."""
        from dockwright.layers.rootfs import RootFS

        return RootFS(self.merged).open(path)

    def run(self, process: Process, label: str, files: Sequence[tuple[str, bytes]] = (),
            output: Callable[[str], None] | None = None, cancel: threading.Event | None = None,
            mask: Callable[[str], str] | None = None) -> None:
        """Run `process`; raises RunFailed (message `label: exit code N`, the output's last lines its details), or
        Cancelled when `cancel` is set meanwhile (the container is killed at once). `mask` rewrites each
        output line before anything sees it (secret values)."""
        stubs = [*MOUNT_POINTS, *(m["destination"].strip("/") for m in process.mounts)]
        self._before = {stub: _lstat(resolve_in_root(str(self.merged), stub)) for stub in _with_parents(stubs)}
        if files:
            process.mounts.append(self._pipes(files))
        hosts = self.temp / "hosts"
        hosts.write_bytes(hosts_file())
        spec = runtime_spec(str(self.merged), process, str(hosts))
        if self.isolation.name == "rootless":
            from dockwright.run.userns import adapt_spec

            adapt_spec(spec)
        (self.bundle / "config.json").write_text(json.dumps(spec))
        self.container = f"dockwright-{uuid.uuid4().hex[:16]}"
        with open(os.devnull, "rb") as devnull:
            proc = subprocess.Popen([*self._runtime(), "run", "--bundle", str(self.bundle), self.container],
                                    stdin=devnull, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=False)
        ended = threading.Event()
        if cancel is not None:
            threading.Thread(target=self._watch, args=(cancel, ended), name="dockwright-run-cancel",
                             daemon=True).start()
        try:
            assert proc.stdout is not None
            tail = relay(proc.stdout, output, mask)
            code = proc.wait()
        except BaseException:  # Ctrl-C, SIGTERM: the container goes at once
            self._kill()
            proc.kill()
            proc.wait()
            raise
        finally:
            ended.set()
            if proc.stdout is not None:
                proc.stdout.close()
        check_cancelled(cancel)
        if code != 0:
            raise RunFailed(label, code, tail)

    def _watch(self, cancel: threading.Event, ended: threading.Event) -> None:
        while not ended.wait(POLL_SECONDS):
            if cancel.is_set():
                self._kill()
                return

    def _pipes(self, files: Sequence[tuple[str, bytes]]) -> dict[str, object]:
        """Heredoc scripts, executable, read-only at /dev/pipes/NAME (as BuildKit mounts them)."""
        pipes = self.temp / "pipes"
        pipes.mkdir()
        for name, data in files:
            (pipes / name).write_bytes(data)
            (pipes / name).chmod(0o755)
        return {"destination": "/dev/pipes", "type": "bind", "source": str(pipes), "options": ["rbind", "ro"]}

    def finish(self) -> None:
        """After a successful run: remove the container, unmount, and take the runtime's mount-point stubs
        (empty files and directories that were not there before) out of the upper directory, with their
        parent directories' times as they were. The upper directory is then in the kernel overlay's form."""
        self._delete()
        self._unmount()
        self.isolation.settle(self.upper, self.lowers)
        for stub in sorted(self._before, key=lambda s: s.count("/"), reverse=True):
            if self._before[stub] is not None:
                continue
            path = self.upper / stub
            st = _lstat(str(path))
            if st is None or not _is_empty_stub(path, st):
                continue
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
            parent, _, _ = stub.rpartition("/")
            before = self._before.get(parent) if parent else None
            parent_path = self.upper / parent if parent else None
            if before is not None and parent_path is not None and parent_path.is_dir():
                os.utime(parent_path, ns=(before.st_atime_ns, before.st_mtime_ns), follow_symlinks=False)

    def close(self) -> None:
        """Undo everything, whatever happened; safe to call twice."""
        with contextlib.suppress(Exception):
            self._kill()
        errors: list[BaseException] = []
        for step in (self._delete, self._unmount):
            try:
                step()
            except Exception as exc:  # the rest must still be undone
                errors.append(exc)
        if self.links is not None:
            remove_tree(self.links)
            self.links = None
        if not self.mounted:
            remove_tree(self.temp)
        if errors:
            raise errors[0]

    def _runtime(self) -> list[str]:
        """The runtime's command with its global options: in a user namespace its state cannot live in
        root's /run/runc, so it is kept in this RUN's temporary directory."""
        if self.isolation.name == "rootless":
            return [self.isolation.runtime, "--root", str(self.temp / "state")]
        return [self.isolation.runtime]

    def _kill(self) -> None:
        if self.container is not None:
            subprocess.run([*self._runtime(), "kill", self.container, "KILL"], capture_output=True,
                           check=False)

    def _delete(self) -> None:
        if self.container is not None:
            subprocess.run([*self._runtime(), "delete", "--force", self.container], capture_output=True,
                           check=False)
            self.container = None

    def _unmount(self) -> None:
        if self.mounted:
            self.isolation.unmount(self.merged)
            self.mounted = False


def relay(stream: Iterable[bytes], output: Callable[[str], None] | None,
          mask: Callable[[str], str] | None) -> list[str]:
    """Hand each line of a command's output to `output` (`mask` applied first) until it ends; its last lines."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    for raw in stream:
        # what a terminal would show of a line redrawn with \r (progress counters)
        line = raw.decode("utf-8", "replace").rstrip("\r\n").rpartition("\r")[2]
        line = mask(line) if mask is not None else line
        tail.append(line)
        if output is not None:
            output(line)
    return list(tail)


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _with_parents(paths: Sequence[str]) -> list[str]:
    found: dict[str, None] = {}
    for path in paths:
        parts = path.split("/")
        for end in range(1, len(parts) + 1):
            found["/".join(parts[:end])] = None
    return list(found)


def _is_empty_stub(path: Path, st: os.stat_result) -> bool:
    import stat

    if stat.S_ISDIR(st.st_mode):
        return not any(path.iterdir())
    return stat.S_ISREG(st.st_mode) and st.st_size == 0
