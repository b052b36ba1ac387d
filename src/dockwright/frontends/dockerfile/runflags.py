"""RUN's flags as BuildKit reads them: `--mount=type=...,k=v,...` and `--network=...`.

Values are expanded by the caller (ARG/ENV); this module only splits and checks them, with BuildKit's
defaults: type bind, bind read-only, cache read-write with id = target, secret target
/run/secrets/ID (id = the target's base name when only a target is given)."""

from __future__ import annotations

import csv
import posixpath
import re
from collections.abc import Callable

from dockwright.plan import RunMount

NETWORKS = ("default", "none", "host")
_TYPES = ("bind", "cache", "secret", "tmpfs", "ssh")
_BOOLEANS = ("readonly", "ro", "readwrite", "rw", "required")
_SIZE = re.compile(r"^(\d+)\s*([kmgt]?)i?b?$", re.IGNORECASE)


class MountError(ValueError):
    """A --mount value BuildKit would reject; the message says why."""


def split_mount(text: str) -> list[tuple[str, str | None]]:
    """`type=cache,target=/x,ro` -> [("type", "cache"), ("target", "/x"), ("ro", None)] (CSV, as BuildKit)."""
    try:
        (fields,) = list(csv.reader([text]))
    except (csv.Error, ValueError):
        raise MountError(f"cannot read {text!r} as comma-separated key=value fields") from None
    pairs: list[tuple[str, str | None]] = []
    for field in fields:
        key, eq, value = field.partition("=")
        pairs.append((key.strip().lower(), value if eq else None))
    return pairs


def parse_mount(pairs: list[tuple[str, str | None]],
                resolve_from: Callable[[str], tuple[int | None, str | None, str | None]]) -> RunMount:
    """A RunMount from split, expanded fields. `resolve_from` maps a `from=` value to (stage index, image,
    named context directory)."""
    values: dict[str, str] = {}
    flags: dict[str, bool] = {}
    for key, value in pairs:
        if key in _BOOLEANS:
            if value is not None and value.lower() not in ("true", "false", "1", "0"):
                raise MountError(f"invalid value for {key}: {value!r} (expected true or false)")
            flags[key] = value is None or value.lower() in ("true", "1")
        elif value is None:
            raise MountError(f"invalid field {key!r}: expected key=value")
        elif key in ("type", "from", "id", "sharing", "mode", "uid", "gid", "env", "size"):
            values[key] = value
        elif key in ("source", "src"):
            values["source"] = value
        elif key in ("target", "dst", "destination"):
            values["target"] = value
        else:
            raise MountError(f"unexpected key {key!r} in a --mount")
    kind = values.get("type", "bind").lower()
    if kind not in _TYPES:
        raise MountError(f"unsupported mount type {kind!r} (bind, cache, secret, tmpfs)")
    if kind == "ssh":
        raise MountError("type=ssh is not supported by dockwright yet; clone with a token passed as "
                         "--mount=type=secret, or fetch the private sources in CI before the build")
    target = values.get("target", "")
    ident = values.get("id", "")
    if kind == "secret":
        if not ident and target:
            ident = posixpath.basename(target)
        if not ident:
            raise MountError("a secret mount needs id= (or a target)")
        if not target and "env" not in values:
            target = f"/run/secrets/{ident}"
    if not target and kind != "secret":
        raise MountError("a mount needs target= (where the command sees it)")
    readonly = kind == "bind"
    if flags.get("readonly") or flags.get("ro"):
        readonly = True
    if flags.get("readwrite") or flags.get("rw"):
        readonly = False
    sharing = values.get("sharing", "shared").lower()
    if sharing not in ("shared", "private", "locked"):
        raise MountError(f"invalid sharing {sharing!r} (shared, private or locked)")
    from_stage = from_image = from_context = None
    if "from" in values:
        if kind not in ("bind", "cache"):
            raise MountError(f"from= is only for bind and cache mounts, not {kind}")
        from_stage, from_image, from_context = resolve_from(values["from"])
    return RunMount(type=kind, target=posixpath.normpath(target) if target else "", source=values.get("source", ""),
                    from_stage=from_stage, from_image=from_image, from_context=from_context, readonly=readonly,
                    id=ident if kind == "secret" else values.get("id", target if kind == "cache" else ""),
                    sharing=sharing, mode=_octal(values.get("mode")), uid=_number("uid", values.get("uid")),
                    gid=_number("gid", values.get("gid")), required=flags.get("required", False),
                    env=values.get("env", ""), size=_size(values.get("size")))


def _octal(text: str | None) -> int | None:
    if text is None:
        return None
    if not re.fullmatch(r"0?[0-7]{1,4}", text):
        raise MountError(f"invalid mode {text!r} (an octal number such as 0755)")
    return int(text, 8)


def _number(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdecimal():
        raise MountError(f"invalid {name} {text!r} (a number)")
    return int(text)


def _size(text: str | None) -> int:
    if text is None:
        return 0
    match = _SIZE.match(text.strip())
    if not match:
        raise MountError(f"invalid size {text!r} (e.g. 64m)")
    unit = match.group(2).lower()
    return int(match.group(1)) * (1024 ** ("kmgt".index(unit) + 1) if unit else 1)
