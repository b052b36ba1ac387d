"""Which directories an image has, from its layers' tar headers: what WORKDIR and COPY need to know so
that they never write an entry for a directory that already exists (Docker never changes one).

A layer's index (its directories, symbolic links, whiteouts and opaque markers, and the text of
/etc/passwd and /etc/group, for USER and --chown names) is read once per layer digest by streaming the
blob, and kept in the cache: later builds need not read the layer again. Other regular files are not
indexed: their parents are directories."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dockwright.layers import chroot

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
VERSION = 2
ACCOUNT_FILES = ("etc/passwd", "etc/group")
_MAX_ACCOUNT_FILE = 1 << 20


@dataclass
class LayerIndex:
    """One layer's directory-shaped entries (in-image paths, relative, without "/" at either end)."""

    dirs: set[str] = field(default_factory=set)  # explicit entries and the parents of every entry
    links: dict[str, str] = field(default_factory=dict)  # symlink -> target
    whiteouts: list[str] = field(default_factory=list)  # paths this layer deletes from lower layers
    opaque: list[str] = field(default_factory=list)  # directories whose lower-layer contents it hides
    accounts: dict[str, str] = field(default_factory=dict)  # etc/passwd, etc/group -> their text

    @classmethod
    def read(cls, chunks: Iterable[bytes], name: str) -> LayerIndex:
        """Index a layer blob (gzip, zstd or plain tar) from its chunks; contents are skipped."""
        from dockwright.layers.rootfs import clean_member_name, iter_layer

        index = cls()
        for member, content in iter_layer(chunks, name):
            path = clean_member_name(member.name, name)
            if not path:
                continue
            parent, _, base = path.rpartition("/")
            index._add_parents(parent)
            if base == _OPAQUE:
                index.opaque.append(parent)
            elif base.startswith(_WHITEOUT):
                index.whiteouts.append(f"{parent}/{base[len(_WHITEOUT):]}" if parent else base[len(_WHITEOUT):])
            elif member.isdir():
                index.dirs.add(path)
            elif member.issym():
                index.links[path] = member.linkname
            elif path in ACCOUNT_FILES and content is not None and member.size <= _MAX_ACCOUNT_FILE:
                index.accounts[path] = content.read().decode("utf-8", "replace")
        return index

    def _add_parents(self, parent: str) -> None:
        while parent and parent not in self.dirs:
            self.dirs.add(parent)
            parent = parent.rpartition("/")[0]

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, "dirs": sorted(self.dirs), "links": self.links, "whiteouts": self.whiteouts,
                "opaque": self.opaque, "accounts": self.accounts}

    @classmethod
    def from_json(cls, data: Any) -> LayerIndex | None:
        """The index stored by to_json, or None when `data` is not one (another version, damaged)."""
        try:
            if data["version"] != VERSION:
                return None
            return cls(set(data["dirs"]), dict(data["links"]), list(data["whiteouts"]), list(data["opaque"]),
                       dict(data["accounts"]))
        except (KeyError, TypeError, ValueError):
            return None


class ImageDirs:
    """The merged view of layer indexes, bottom layer first: which directories exist (and the image's
    /etc/passwd and /etc/group)."""

    def __init__(self) -> None:
        self.dirs: set[str] = set()
        self.links: dict[str, str] = {}
        self.accounts: dict[str, str] = {}

    def apply(self, layer: LayerIndex) -> None:
        for path in layer.whiteouts:
            self._remove(path, itself=True)
        for path in layer.opaque:
            self._remove(path, itself=False)
        for path, target in layer.links.items():
            self._remove(path, itself=True)  # a symlink replaces a directory and what was below it
            self.links[path] = target
        for path in layer.dirs:
            self.links.pop(path, None)
        self.dirs |= layer.dirs
        self.accounts.update(layer.accounts)

    def _remove(self, path: str, *, itself: bool) -> None:
        if itself:
            self.links.pop(path, None)
        below = path + "/" if path else ""
        self.accounts = {p: text for p, text in self.accounts.items()
                         if not p.startswith(below) and (not itself or p != path)}
        if path in self.dirs or not path:
            self.dirs = {d for d in self.dirs if not d.startswith(below) and (not itself or d != path)}
            self.links = {p: t for p, t in self.links.items() if not p.startswith(below)}

    def missing(self, path: str) -> list[str]:
        """The directories to create, parents first, for absolute or relative `path` to exist as a
        directory; [] when it does. Symlinks resolve as in a chroot (a missing directory below
        /var/run is made below /run); ".." stops at the root; a symlink loop is a ContextError."""
        return _made(*chroot.walk(posixpath.normpath("/" + path), self.links.get, self.dirs.__contains__))


def _made(existing: list[str], rest: list[str]) -> list[str]:
    """The paths mkdir -p makes below `existing` for the components `rest` (with "." and "..")."""
    made: list[str] = []
    current = list(existing)
    for part in rest:
        if part in ("", "."):
            continue
        if part == "..":
            if current:
                current.pop()
            continue
        current.append(part)
        path = "/".join(current)
        if path not in made:
            made.append(path)
    return made

