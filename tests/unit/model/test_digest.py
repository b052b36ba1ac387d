"""Digest strings are parsed strictly before they reach a path or a URL; streams are verified."""

from __future__ import annotations

import hashlib

import pytest

from dockwright.model.digest import Verifier, check_digest, digest_bytes, is_digest, verify_bytes
from dockwright.model.errors import DigestMismatchError, ImageFormatError

HEX = "0123456789abcdef" * 4


@pytest.mark.parametrize("value", [f"sha256:{HEX}", "sha512:" + HEX * 2])
def test_well_formed_digests(value: str) -> None:
    assert is_digest(value)
    assert check_digest(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "sha256:",
        "sha256:xyz",
        f"sha256:{HEX[:-1]}",
        f"sha256:{HEX}0",
        f"sha256:{HEX.upper()}",
        f"SHA256:{HEX}",
        f"sha384:{HEX}",
        f"sha512:{HEX}",  # sha512 needs 128 hex digits
        f"sha256:{HEX}\n",  # must not slip through to a path or URL
        f"sha256:{HEX}/../x",
        f" sha256:{HEX}",
        f"sha256:{HEX[:32]}/{HEX[33:]}",
        HEX,
    ],
)
def test_malformed_digests_are_rejected(value: str) -> None:
    assert not is_digest(value)
    with pytest.raises(ImageFormatError) as info:
        check_digest(value, "manifest of example/app")
    assert "manifest of example/app" in str(info.value)


@pytest.mark.parametrize("value", [None, 42, ["sha256:" + HEX], {"digest": HEX}])
def test_non_strings_are_rejected(value: object) -> None:
    with pytest.raises(ImageFormatError):
        check_digest(value)


def test_digest_bytes_is_sha256_of_the_content() -> None:
    assert digest_bytes(b"hello") == "sha256:" + hashlib.sha256(b"hello").hexdigest()


def test_verify_accepts_matching_content_in_chunks() -> None:
    data = b"x" * 1000
    verifier = Verifier(digest_bytes(data), len(data), "blob")
    for i in range(0, len(data), 7):
        verifier.update(data[i : i + 7])
    verifier.finish()
    assert verify_bytes(data, digest_bytes(data), None, "blob") == data


def test_wrong_content_names_both_digests() -> None:
    expected = digest_bytes(b"right")
    with pytest.raises(DigestMismatchError) as info:
        verify_bytes(b"wrong", expected, 5, "layer of example/app")
    message = str(info.value)
    assert expected in message and digest_bytes(b"wrong") in message and "layer of example/app" in message


def test_too_many_bytes_fail_as_soon_as_they_arrive() -> None:
    verifier = Verifier(digest_bytes(b"abc"), 3, "blob")
    verifier.update(b"abc")
    with pytest.raises(DigestMismatchError, match="more than the 3 bytes"):
        verifier.update(b"d")


def test_too_few_bytes_fail_at_the_end() -> None:
    verifier = Verifier(digest_bytes(b"abc"), 3, "blob")
    verifier.update(b"ab")
    with pytest.raises(DigestMismatchError, match="got 2 bytes"):
        verifier.finish()


def test_sha512_content() -> None:
    data = b"payload"
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    assert verify_bytes(data, digest, len(data), "blob") == data
    with pytest.raises(DigestMismatchError):
        verify_bytes(b"other!!", digest, 7, "blob")


def test_verifier_rejects_a_malformed_expected_digest() -> None:
    with pytest.raises(ImageFormatError):
        Verifier("sha256:nothex", 1, "blob")
