"""Writing files so that a reader never sees half of one: a temporary name in the same directory, renamed
into place when complete, removed on any failure. `atomic_write` does it in one call; a `StagedFile` is
written by its caller and renamed on `commit` (outputs that must all succeed or none appear)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from dockwright.model.errors import DockwrightError


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


class StagedFile:
    """A file output written under a temporary name beside its destination and renamed into place on commit."""

    def __init__(self, dest: Path) -> None:
        self.dest = Path(dest).absolute()
        self.temp = self.dest.with_name(f".{self.dest.name}.tmp-{os.getpid()}-{id(self):x}")

    def commit(self) -> None:
        try:
            os.replace(self.temp, self.dest)
        except OSError as exc:
            self.discard()
            raise DockwrightError(f"cannot write {self.dest}: {exc.strerror}") from None

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.temp.unlink()
