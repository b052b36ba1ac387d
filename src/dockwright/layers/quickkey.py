"""A cheap cache key for a COPY of one context directory, checked before the full collection.

The full path (context.collect_copy: ignore rules, symlink checks, one TarEntry per file, then the
fingerprint) costs ~10 us per file in Python; a rebuild that changed nothing in node_modules should not
pay it for 15,000 files. This key hashes the raw metadata of everything below the source directory
(a superset of what the layer holds: ignored files count too) together with every setting of the step.
Equal keys mean equal inputs, so the layer cached under the key is the layer collect+write would make.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from operator import attrgetter
from stat import S_ISDIR, S_ISLNK

from dockwright.layers.dockerignore import has_wildcards

_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
_name = attrgetter("name")
# While the walk runs, a thread that an answer from the registry woke waits at most this long for the GIL
# (CPython's default is 5 ms: on a loopback registry, ~5 ms more per request)
_SWITCH_INTERVAL = 0.0005
_interval_lock = threading.Lock()
_walks_running = 0  # background walks in this process (two builds in two threads may overlap)
_interval_before = 0.0  # the switch interval when the first of them began


def tree_root(context: str, source: str) -> str | None:
    """The real directory a COPY of `source` (relative to `context`) reads, when the quick key applies:
    not for wildcards, `..`, a source that is not a real directory, or one reached through a symlink."""
    if has_wildcards(source) or ".." in source.split("/"):
        return None
    root = os.path.realpath(context)
    path = os.path.normpath(os.path.join(root, source.lstrip("/")))
    if os.path.realpath(path) != path or not os.path.isdir(path):
        return None
    return path


def key_of(settings: str, digest: bytes) -> str:
    """The key for copying a directory (from tree_root) whose tree_digest is `digest`, with `settings`,
    the step's every other input."""
    return "quick:" + hashlib.sha256(settings.encode() + b"\n" + digest).hexdigest()


def tree_digest(path: str, skip_top: frozenset[str] = frozenset()) -> bytes:
    """sha256 of the raw metadata of everything below `path`: the walk. `skip_top`: names directly below
    it that the step excludes outright (no effect on the layer)."""
    parts: list[bytes] = []
    _walk(path, b"", parts, skip_top)
    return hashlib.sha256(b"".join(parts)).digest()


class BackgroundWalks:
    """tree_digest of the build's source directories, made on a thread of their own from the start of a
    build while it waits for the registry (base image manifests and configs): a thread waiting on a socket
    leaves the GIL to the walk. Once the build asks for a digest it is busy itself, and the walks not yet
    begun are left to it: two threads of Python only slow each other down."""

    def __init__(self, trees: Iterable[tuple[str, frozenset[str]]]) -> None:
        self._futures: dict[tuple[str, frozenset[str]], Future[bytes]] = {tree: Future() for tree in trees}
        if self._futures:  # a daemon: a build that fails early does not wait for the walk to end
            threading.Thread(target=self._run, name="dockwright-walk", daemon=True).start()

    def digest(self, path: str, skip_top: frozenset[str]) -> bytes:
        for future in self._futures.values():
            future.cancel()  # the ones not begun
        future = self._futures.get((path, skip_top))
        return tree_digest(path, skip_top) if future is None or future.cancelled() else future.result()

    def _run(self) -> None:
        with short_switch_interval():
            for (path, skip_top), future in self._futures.items():
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(tree_digest(path, skip_top))
                except Exception as exc:  # raised where the digest is asked for, as a walk in place would
                    future.set_exception(exc)


@contextmanager
def short_switch_interval() -> Iterator[None]:
    """The interpreter's switch interval at _SWITCH_INTERVAL while background walks run, then as it was.
    It is process-wide, so overlapping walks (builds in several threads) share one change: the first to
    begin saves the interval, the last to end restores it."""
    global _walks_running, _interval_before
    with _interval_lock:
        if _walks_running == 0:
            _interval_before = sys.getswitchinterval()
            sys.setswitchinterval(_SWITCH_INTERVAL)
        _walks_running += 1
    try:
        yield
    finally:
        with _interval_lock:
            _walks_running -= 1
            if _walks_running == 0:
                sys.setswitchinterval(_interval_before)


def _walk(directory: str, prefix: bytes, parts: list[bytes], skip: frozenset[str]) -> None:
    with os.scandir(directory) as it:
        children = sorted(it, key=_name)
    for child in children:
        if child.name in skip:
            continue
        st = child.stat(follow_symlinks=False)
        name = prefix + child.name.encode(_FS_ENCODING, _FS_ERRORS)  # os.fsencode, without its Python wrapper
        mode = st.st_mode
        link = os.readlink(child.path).encode(_FS_ENCODING, _FS_ERRORS) if S_ISLNK(mode) else b""
        parts.append(b"%s\0%o\0%d\0%d\0%d\0%d\0%d\0%d\0%s\n" % (
            name, mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, st.st_nlink, link))
        if S_ISDIR(mode):
            _walk(child.path, name + b"/", parts, frozenset())
