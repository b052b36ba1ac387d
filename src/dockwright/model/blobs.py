"""Where the bytes of a blob come from. Every source streams chunks and checks size and digest as they
pass; a mismatch raises when the stream ends, so a consumer writing to a temporary file renames it only
after the iterator is exhausted."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dockwright.model.digest import Verifier
from dockwright.model.errors import ContextError

CHUNK = 1024 * 1024


class BlobSource(Protocol):
    digest: str
    size: int

    def open(self) -> Iterator[bytes]:
        """Yield the blob's bytes, verified against digest and size."""
        ...


@dataclass(frozen=True)
class BytesBlob:
    """A small document we made (config, manifest): already correct by construction."""

    data: bytes
    digest: str

    @property
    def size(self) -> int:
        return len(self.data)

    def open(self) -> Iterator[bytes]:
        yield self.data


@dataclass(frozen=True)
class FileBlob:
    """A blob on local disk: a layer we wrote, a cached blob, a blob in an OCI layout or archive."""

    path: Path
    digest: str
    size: int
    what: str = "blob"
    # Written by this build, its digest computed from the bytes as they were written: streamed out with
    # a size check only (a 500 MB layer is not hashed a second time on its way to the registry)
    fresh: bool = False
    offset: int | None = None  # the blob is `size` bytes at this offset (a member of an uncompressed tar)

    def open(self) -> Iterator[bytes]:
        verifier = Verifier(self.digest, self.size, f"{self.what} {self.path}", content=not self.fresh)
        try:
            with self.path.open("rb") as handle:
                remaining = -1 if self.offset is None else self.size
                handle.seek(self.offset or 0)
                while remaining and (chunk := handle.read(CHUNK if remaining < 0 else min(CHUNK, remaining))):
                    remaining -= len(chunk) if remaining > 0 else 0
                    verifier.update(chunk)
                    yield chunk
        except FileNotFoundError:
            raise ContextError(f"{self.what} {self.digest} is missing: {self.path} does not exist") from None
        verifier.finish()


