"""Python bytecode that stays valid in the image.

A timestamp-based .pyc (PEP 552, flags 0) records its source's mtime and size; CPython recompiles it
when they differ from the source's stat. Layers store every file with one mtime (SOURCE_DATE_EPOCH), so
a .pyc that was valid for its source on the host records the host mtime and would be stale in the
image: every start recompiles (and a non-root user cannot write the cache). The writer therefore
rewrites the mtime field of such a .pyc to the mtime the layer gives the source, when the header still
matches the host source (same size, same mtime): that is exactly CPython's check, moved into the image.
Hash-based .pycs (flags 1 or 3) and stale or foreign ones are left as they are. The result depends only
on the inputs (the host files' bytes and stat, the layer mtime), so builds stay reproducible.
"""

from __future__ import annotations

import os

_HEADER = 16  # magic (4), flags (4), source mtime (4), source size (4), little-endian


def source_of(host_path: str) -> str | None:
    """The host source file a .pyc at `host_path` is the bytecode of: NAME.py beside __pycache__ for
    __pycache__/NAME.TAG[.opt-N].pyc, NAME.py beside a legacy NAME.pyc; None for other names."""
    head, _, name = host_path.rpartition("/")
    if not name.endswith(".pyc"):
        return None
    parent, _, folder = head.rpartition("/")
    if folder == "__pycache__":
        return f"{parent}/{name.partition('.')[0]}.py" if parent else None
    return f"{head}/{name[:-1]}" if head else None


def source_stat(host_path: str) -> os.stat_result | None:
    """The stat of the .pyc's host source, or None (no such file, not a .pyc name)."""
    source = source_of(host_path)
    if source is None:
        return None
    try:
        return os.stat(source)
    except OSError:
        return None


def fix_header(data: bytes, host_path: str, mtime: int) -> bytes:
    """`data` (a .pyc's bytes) with its source-mtime field set to `mtime` (as CPython packs it) when it is
    a timestamp-based .pyc whose recorded mtime and size match its host source; else `data` unchanged."""
    if len(data) < _HEADER or data[2:4] != b"\r\n" or data[4:8] != b"\0\0\0\0":
        return data
    st = source_stat(host_path)
    if st is None:
        return data
    recorded_mtime, recorded_size = int.from_bytes(data[8:12], "little"), int.from_bytes(data[12:16], "little")
    if recorded_mtime != int(st.st_mtime) & 0xFFFFFFFF or recorded_size != st.st_size & 0xFFFFFFFF:
        return data  # stale on the host already: CPython would recompile it there too
    return b"".join((data[:8], (mtime & 0xFFFFFFFF).to_bytes(4, "little"), data[12:]))
