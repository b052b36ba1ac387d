"""Sizes as people write and read them: one parser for every SIZE the command line or the environment takes,
one formatter for every size a message shows."""

from __future__ import annotations

import re

from dockwright.model.errors import UsageError

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40,
          "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([A-Z]*)")


def parse_size(text: str, what: str) -> int:
    """Bytes in `text`: a number with an optional unit, kB/MB/GB/TB (powers of 1000) or KiB/MiB/GiB/TiB
    and K/M/G/T (powers of 1024), case-insensitive. `what` names the setting in the error."""
    match = _SIZE.fullmatch(text.strip().upper())
    if match is None or match.group(2) not in _UNITS:
        raise UsageError(f"{what} {text!r}: expected a size such as 500MB or 2GiB")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def human_size(size: float) -> str:
    """`size` bytes in binary units: "512 B", "3.4 MiB", "10.0 GiB"."""
    if size < 1024:
        return f"{size:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024:
            return f"{size:.1f} {unit}"
    return f"{size / 1024:.1f} TiB"


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """"1 layer", "2 layers", "0 entries": a count with its noun in the right number."""
    return f"{count} {singular if count == 1 else plural_form or singular + 's'}"
