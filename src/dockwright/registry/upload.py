"""Pieces of the blob upload protocol: the body checked against its declared size, cut into chunks for
registries that want them, and the registry's Range header read back to see what it kept."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from dockwright.model.errors import DigestMismatchError, RegistryError
from dockwright.registry.transport import Op


def counted(chunks: Iterable[bytes], size: int, op: Op) -> Iterator[bytes]:
    """`chunks`, checked to add up to `size` bytes (a mismatch is the caller's bug: no retry)."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > size:
            break
        yield chunk
    if total != size:
        raise DigestMismatchError(f"{op.action} {op.digest}: the data to upload is not the declared {size} bytes")


class RangeStalled(RegistryError):
    """A PATCH answered with a Range that does not cover what it sent: the registry dropped bytes."""

    def __init__(self, op: Op, start: int, end: int, answered: str) -> None:
        self.detail = (f"the registry did not keep bytes {start}-{end} of the blob: after that PATCH its "
                       f"Range header said {answered!r}")
        super().__init__(f"{op.action}: {self.detail}", registry=op.registry, repository=op.repository,
                         digest=op.digest)


def range_end(value: str | None) -> int | None:
    """The last byte offset a registry's upload Range header ("0-N", or "bytes=0-N") says it holds."""
    match = re.fullmatch(r"\s*(?:bytes=)?0-(\d+)\s*", value or "")
    return int(match.group(1)) if match else None


def rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)
