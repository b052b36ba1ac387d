"""Digest strings: strict parsing (before a digest reaches a path or a URL) and hashing helpers."""

from __future__ import annotations

import hashlib
import re

from dockwright.model.errors import DigestMismatchError, ImageFormatError

_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"(sha256|sha512):([a-f0-9]+)")


def is_digest(value: str) -> bool:
    match = _DIGEST_RE.fullmatch(value)  # not match(): "$" would accept a trailing newline
    return bool(match) and len(match.group(2)) == _HEX_LENGTH[match.group(1)]


def check_digest(value: object, where: str = "document") -> str:
    """Return `value` if it is a well-formed sha256/sha512 digest, else raise ImageFormatError."""
    if not isinstance(value, str) or not is_digest(value):
        raise ImageFormatError(f"invalid digest {str(value)[:100]!r} in {where}")
    return value


def digest_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Verifier:
    """Incremental check of a byte stream against an expected digest and size. `content=False` checks
    the size only: for bytes whose digest was computed as they were written, by this process."""

    def __init__(self, digest: str, size: int | None, what: str, *, content: bool = True) -> None:
        algorithm, _, self.expected_hex = check_digest(digest, what).partition(":")
        self.digest = digest
        self.size = size
        self.what = what
        self._hash = hashlib.new(algorithm) if content else None
        self.received = 0

    def update(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.size is not None and self.received > self.size:
            raise DigestMismatchError(
                f"{self.what}: more than the {self.size} bytes its descriptor declares for {self.digest}",
            )
        if self._hash is not None:
            self._hash.update(chunk)

    def finish(self) -> None:
        if self.size is not None and self.received != self.size:
            raise DigestMismatchError(
                f"{self.what}: got {self.received} bytes, descriptor declares {self.size} for {self.digest}",
            )
        if self._hash is not None and self._hash.hexdigest() != self.expected_hex:
            raise DigestMismatchError(
                f"{self.what}: content digest is {self._hash.name}:{self._hash.hexdigest()}, "
                f"expected {self.digest}",
                hint="the source is corrupt or was tampered with; nothing was written",
            )


def verify_bytes(data: bytes, digest: str, size: int | None, what: str) -> bytes:
    verifier = Verifier(digest, size, what)
    verifier.update(data)
    verifier.finish()
    return data
