"""Where the bytes of a blob come from. Every source streams chunks and checks size and digest as they
pass; a mismatch raises when the stream ends, so a consumer writing to a temporary file renames it only
after the iterator is exhausted."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from dockwright.digest import Verifier
from dockwright.errors import ContextError, DigestMismatchError

if TYPE_CHECKING:
    from dockwright.cache import Cache
    from dockwright.registry import RegistryClient

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

    def open(self) -> Iterator[bytes]:
        verifier = Verifier(self.digest, self.size, f"{self.what} {self.path}", content=not self.fresh)
        try:
            with self.path.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    verifier.update(chunk)
                    yield chunk
        except FileNotFoundError:
            raise ContextError(f"{self.what} {self.digest} is missing: {self.path} does not exist") from None
        verifier.finish()


@dataclass(frozen=True)
class RegistryBlob:
    """A blob that lives in a registry repository; can be mounted or streamed without touching disk.

    With a cache, a blob that is read (for an archive output, a cross-registry push, COPY --from) is
    kept there as it streams past, and later reads come from the cache."""

    client: RegistryClient
    repository: str
    digest: str
    size: int
    cache: Cache | None = None

    @property
    def host(self) -> str:
        return self.client.host

    def open(self) -> Iterator[bytes]:
        if self.cache is None:
            yield from self.client.open_blob(self.repository, self.digest, self.size)
            return
        if self.cache.has_blob(self.digest, self.size):
            cached = FileBlob(self.cache.blob_path(self.digest), self.digest, self.size, "cached blob")
            self.cache.touch(cached.path)
            try:
                yield from cached.open()
            except DigestMismatchError as exc:
                self.cache.discard_blob(self.digest)
                raise DigestMismatchError(exc.message, hint="the corrupt cached copy was removed; run the "
                                          "build again") from None
            return
        temp = self.cache.temp_path(".blob")
        try:
            with temp.open("wb") as handle:
                for chunk in self.client.open_blob(self.repository, self.digest, self.size):
                    handle.write(chunk)
                    yield chunk
            self.cache.adopt_blob(temp, self.digest)
        finally:
            temp.unlink(missing_ok=True)
