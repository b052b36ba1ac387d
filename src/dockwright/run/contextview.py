"""A context directory as a RUN mount reads it in BuildKit: without what its .dockerignore excludes.

BuildKit's build context, and a named context directory, is a local source with the ignore patterns as
exclude patterns (frontend/dockerui/config.go and namedcontext.go: llb.ExcludePatterns), and that source
is what `RUN --mount=type=bind` binds and a cache mount's `from=` copies. When the patterns exclude
nothing at or below the mounted source, the directory itself is used; otherwise a view of it: the kept
directories made again, files hard-linked into it (copied where linking fails, across file systems),
symlinks made again. Its cache key part is a digest of the kept entries' metadata."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from dockwright.layers.dockerignore import IgnoreMatcher


def filters(ignore: IgnoreMatcher | None, source: str) -> bool:
    """Do the patterns exclude anything at or below the context-relative `source` ("" = the root)?"""
    return ignore is not None and (ignore.matches(source) or ignore.may_match_below(source))


def kept(root: Path, source: str, ignore: IgnoreMatcher) -> Iterator[tuple[str, os.stat_result]]:
    """The entries below `root/source` the patterns keep, as (path relative to the source, lstat), parents
    first. An excluded directory is entered only when an exception (`!pattern`) may keep something below
    it, and is kept only as the parent of something kept."""
    base = root / source if source else root
    emitted: set[str] = set()
    Parents = tuple[tuple[str, os.stat_result], ...]  # excluded directories above, kept once a child is
    stack: list[tuple[str, tuple[bool, ...] | None, Parents]] = [("", ignore.state(source, None) if source else None,
                                                                  ())]
    while stack:
        rel, state, parents = stack.pop()
        pending: list[tuple[str, tuple[bool, ...] | None, Parents]] = []
        with os.scandir(base / rel if rel else base) as entries:
            children = sorted(entries, key=lambda entry: entry.name)
        for child in children:
            child_rel = f"{rel}/{child.name}" if rel else child.name
            context_rel = f"{source}/{child_rel}" if source else child_rel
            child_state = ignore.state(context_rel, state)
            st = child.stat(follow_symlinks=False)
            excluded = ignore.decide(child_state)
            if excluded and not (stat.S_ISDIR(st.st_mode) and ignore.may_include_below(context_rel)):
                continue
            if not excluded:
                for parent in parents:
                    if parent[0] not in emitted:
                        emitted.add(parent[0])
                        yield parent
                yield child_rel, st
            if stat.S_ISDIR(st.st_mode):
                pending.append((child_rel, child_state, () if not excluded else (*parents, (child_rel, st))))
        stack.extend(reversed(pending))


def make_view(root: Path, source: str, ignore: IgnoreMatcher, view: Path) -> None:
    """Fill the empty directory `view` with what `kept` keeps of `root/source`."""
    base = root / source if source else root
    link = True
    for rel, st in kept(root, source, ignore):
        host, target = base / rel, view / rel
        if stat.S_ISDIR(st.st_mode):
            target.mkdir(mode=stat.S_IMODE(st.st_mode) | 0o700)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(host), target)
        else:
            if link:
                try:
                    os.link(host, target, follow_symlinks=False)
                    continue  # the file itself, owner and all
                except OSError:
                    link = False  # another file system (or protected hard links): copies from here on
            shutil.copy2(host, target, follow_symlinks=False)
        with contextlib.suppress(OSError):  # the owner the directory has (not possible for every id rootless)
            os.lchown(target, st.st_uid, st.st_gid)
    for rel, st in kept(root, source, ignore):  # directory modes last: a 0555 one took its files first
        if stat.S_ISDIR(st.st_mode):
            os.chmod(view / rel, stat.S_IMODE(st.st_mode))


def view_digest(root: Path, source: str, ignore: IgnoreMatcher) -> str:
    """A digest of the kept entries' metadata (what the step's cache key needs to see a change)."""
    digest = hashlib.sha256()
    for rel, st in kept(root, source, ignore):
        link = os.readlink(root / source / rel) if stat.S_ISLNK(st.st_mode) else ""
        digest.update(f"{rel}\0{st.st_mode:o}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{link}\n".encode(
            "utf-8", "surrogateescape"))
    return digest.hexdigest()
