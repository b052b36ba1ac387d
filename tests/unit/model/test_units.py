"""The one size parser (--keep-storage, DOCKWRIGHT_CACHE_MAX), sizes for people, and plurals."""

from __future__ import annotations

import pytest

from dockwright.model.errors import UsageError
from dockwright.model.units import human_size, parse_size, plural


@pytest.mark.parametrize(("text", "size"), [("0", 0), ("512", 512), ("5MB", 5_000_000), ("5mb", 5_000_000),
                                            ("10GiB", 10 * 2**30), ("1.5G", 3 * 2**29), ("2 kB", 2000),
                                            (" 7KiB ", 7168), ("1TB", 10**12), (".5M", 2**19)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text, "--keep-storage") == size


@pytest.mark.parametrize("text", ["", "MB", "-1", "inf", "nan", "1e9", "5 XB", "1.2.3G", "ten"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UsageError, match=r"^--keep-storage .*: expected a size such as 500MB or 2GiB"):
        parse_size(text, "--keep-storage")


def test_human_size_and_plural() -> None:
    assert [human_size(n) for n in (0, 1023, 1024, 1536 * 1024, 10 * 2**30, 3 * 2**40)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 MiB", "10.0 GiB", "3.0 TiB"]
    assert [plural(n, "layer") for n in (0, 1, 2)] == ["0 layers", "1 layer", "2 layers"]
    assert plural(1, "entry", "entries") == "1 entry" and plural(3, "entry", "entries") == "3 entries"
