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
import re
import sys
from operator import attrgetter
from stat import S_ISDIR, S_ISLNK

_MAGIC = re.compile(r"[*?\[\\]")
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
_name = attrgetter("name")


def tree_root(context: str, source: str) -> str | None:
    """The real directory a COPY of `source` (relative to `context`) reads, when the quick key applies:
    not for wildcards, `..`, a source that is not a real directory, or one reached through a symlink."""
    if _MAGIC.search(source) or ".." in source.split("/"):
        return None
    root = os.path.realpath(context)
    path = os.path.normpath(os.path.join(root, source.lstrip("/")))
    if os.path.realpath(path) != path or not os.path.isdir(path):
        return None
    return path


def tree_key(path: str, settings: str, skip_top: frozenset[str] = frozenset()) -> str:
    """The key for copying the directory `path` (from tree_root) with `settings`, the step's every other
    input. `skip_top`: names directly below the source that the step excludes outright (no effect on the
    layer)."""
    parts = [settings.encode(), b"\n"]
    _walk(path, b"", parts, skip_top)
    return "quick:" + hashlib.sha256(b"".join(parts)).hexdigest()


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
