"""Paths inside an image's root file system, resolved as a chroot resolves them: a symlink's absolute target
starts again at the root, ".." stops at it, so nothing leads out of the root. One walk for a root on disk
(layers/copy.py resolve_in_root) and for a root known from layer indexes (layers/dirindex.py)."""

from __future__ import annotations

from collections.abc import Callable

from dockwright.model.errors import ContextError

MAX_LINKS = 255  # symlinks followed in one path before giving up (the loop a→b→a never ends)


def walk(path: str, readlink: Callable[[str], str | None],
         is_dir: Callable[[str], bool] | None = None) -> tuple[list[str], list[str]]:
    """`path` (relative to the root, or absolute) resolved component by component: (resolved, rest).
    `readlink(p)` gives the target of the symlink at root-relative `p`, None when `p` is no symlink.
    With `is_dir`, the walk stops at the first component that is neither a symlink nor a directory: `rest`
    holds it and the components after it, unresolved; without, every component is taken and `rest` is []."""
    todo = list(reversed(path.split("/")))
    resolved: list[str] = []
    links = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = "/".join((*resolved, part))
        target = readlink(candidate)
        if target is not None:
            links += 1
            if links > MAX_LINKS:
                raise ContextError(f"too many levels of symbolic links resolving /{path.lstrip('/')}")
            if target.startswith("/"):
                resolved = []
            todo.extend(reversed(target.split("/")))
            continue
        if is_dir is not None and not is_dir(candidate):
            return resolved, [part, *reversed(todo)]
        resolved.append(part)
    return resolved, []
