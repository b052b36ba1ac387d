"""Writing files so that a reader never sees half of one: a temporary name in the same directory, renamed
into place when complete, removed on any failure."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def atomic_write(path: Path, chunks: Iterable[bytes], mode: int | None = None, *, durable: bool = False) -> None:
    """Write `chunks` to `path` atomically (parents created; mode 0600 unless given). `durable`: on disk
    before the rename (fsync), for a file whose loss costs the user (credentials). Raises OSError;
    leaves nothing on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise


def atomic_write_text(path: Path, text: str, mode: int | None = None, *, durable: bool = False) -> None:
    atomic_write(path, [text.encode()], mode, durable=durable)
