"""Dockerfile COPY semantics over the build context (or an image root) -> sorted TarEntry lists."""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import starmap
from operator import itemgetter
from pathlib import Path

from dockwright.layers import chroot
from dockwright.layers.dockerignore import IgnoreMatcher, clean_path, has_wildcards, translate
from dockwright.layers.tar import TarEntry
from dockwright.model.errors import ContextError

_DIR_MODE = 0o755
_COPYABLE = frozenset((stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK))
_S_IFMT, _S_IFDIR = 0o170000, stat.S_IFDIR  # stat.S_IFMT(mode) is mode & 0o170000, without the call


# --------------------------------------------------------------------------- COPY


@dataclass(frozen=True)
class CopySettings:
    """How one COPY writes what it copies (all but the sources, the destination and .dockerignore)."""

    uid: int = 0  # owner of every entry (--chown)
    gid: int = 0
    chmod: int | None = None  # --chmod; None: the source's permission bits, masked (see _Collector)
    excludes: tuple[str, ...] = ()  # COPY --exclude patterns, relative to each source
    parents: bool = False  # COPY --parents
    mtime: int = 0  # every entry's mtime (SOURCE_DATE_EPOCH)
    dest_exists: bool = False  # the destination directory is known to exist (see owns_destination)
    make_dirs: tuple[str, ...] = ()  # missing parents the copy creates, as BuildKit's MkdirAll (--chown)
    keep_owners: bool = False  # COPY --from without --chown: entries keep their owner in the source image


# A walked host item, before ownership, dedup and hard-link decisions: (host path, its lstat). A plain
# tuple: a NamedTuple's __new__ runs Python code, and a walk makes one per file.
_Found = tuple[str, os.stat_result]


class _Collector:
    """Gathers one COPY's items. `scoped`: sources live in an image root (symlinks resolve as in a
    chroot, absolute targets from the root); otherwise in a build context (never leave it)."""

    def __init__(self, context: str, where: str, ignore: IgnoreMatcher | None, settings: CopySettings, *,
                 scoped: bool = False, mode_mask: int = _DIR_MODE) -> None:
        self.context = context
        self.where = where
        self.ignore = ignore if ignore else None
        self.exclude = IgnoreMatcher(settings.excludes) if settings.excludes else None
        self.uid, self.gid, self.chmod, self.mtime = settings.uid, settings.gid, settings.chmod, settings.mtime
        self.parents = settings.parents
        self.scoped = scoped
        self.mode_mask = mode_mask
        self.found: dict[str, _Found] = {}  # in-image path -> host item; later sources win
        # in-image dirs made for the copy (not from a host dir) -> mode
        self.created: dict[str, int] = dict.fromkeys(settings.make_dirs, _DIR_MODE)
        self.dest_exists = settings.dest_exists
        self.first_link: dict[tuple[int, int], str] = {}  # (dev, inode) of a hard-linked file -> its first path
        self.owners: dict[str, tuple[int, int]] | None = None  # host path below the root -> owner to keep

    @property
    def owns_destination(self) -> bool:
        """Whether the layer carries the destination directory itself. The layer never holds the
        destination's ancestors, nor the destination unless --chown/--chmod set its owner or mode and it
        is not known to exist: the base may already have them (/tmp at 1777, a user's home), and a
        layer entry would replace their mode and owner, which Docker never does. Runtimes create
        missing parents (0755 root), as Docker does."""
        return not self.dest_exists and (self.chmod is not None or (self.uid, self.gid) != (0, 0))

    def context_rel(self, real: str) -> str:
        return "" if real == self.context else real[len(self.context) + 1 :]

    def host_path(self, rel: str) -> str:
        """Where a context-relative path is on the host (symlinks resolved when scoped)."""
        return resolve_in_root(self.context, rel) if self.scoped else os.path.join(self.context, rel)

    def resolve(self, rel: str, shown: str) -> tuple[str, os.stat_result]:
        """Follow symlinks in a source path, inside the root only; (real path, its stat)."""
        real = self.host_path(rel) if self.scoped else os.path.realpath(os.path.join(self.context, rel))
        if real != self.context and not real.startswith(self.context + "/"):
            raise ContextError(f"COPY source {shown!r} resolves to {real}, outside {self.where}",
                               hint="a source may not leave the context, even through a symlink")
        try:
            st = os.stat(real)
        except OSError as exc:
            raise ContextError(f"COPY source {shown!r} not found in {self.where}: {exc.strerror}") from None
        if self.ignore and self.ignore.matches(self.context_rel(real)):
            raise ContextError(f"COPY source {shown!r} is excluded by .dockerignore",
                               hint="remove it from .dockerignore or add an exception (!pattern)")
        return real, st

    def add(self, image_path: str, host: str, st: os.stat_result) -> None:
        _check(image_path, host, st)
        self.found[image_path] = (host, st)

    def walk(self, host_dir: str, image_dir: str, src_rel: str, ignore_state: tuple[bool, ...] | None,
             exclude_state: tuple[bool, ...] | None) -> Iterator[tuple[str, str, os.stat_result]]:
        """Everything below `host_dir`, as (in-image path under `image_dir`, host path, lstat), in layer order:
        sorted by whole path, which a walk gives when a directory's contents sort among its siblings as
        "name/" (git orders its trees so). Symlinks are kept, never followed. `src_rel` is the path
        relative to the COPY source (for --exclude); the states are the matchers' per-pattern results
        for `host_dir` (see IgnoreMatcher.state). A stack of listings, not nested generators: each
        level of `yield from` would cost every item below it."""
        stack = [iter(self._listing(host_dir, image_dir, src_rel, ignore_state, exclude_state))]
        while stack:
            for _, path, host, st, below in stack[-1]:
                if below is None:
                    yield path, host, st
                elif isinstance(below, list):
                    yield from below
                else:
                    stack.append(iter(self._listing(host, path, *below)))
                    break
            else:
                stack.pop()

    def _listing(self, host_dir: str, image_dir: str, src_rel: str, ignore_state: tuple[bool, ...] | None,
                 exclude_state: tuple[bool, ...] | None) -> list[_Item]:
        """One directory's items for walk(), sorted: (sort key, in-image path, host path, lstat, below). `below` is
        None for the item itself; for a directory's contents, walk()'s remaining arguments for it, or
        the contents already walked."""
        try:
            with os.scandir(host_dir) as it:
                children = list(it)
        except OSError as exc:
            raise ContextError(f"cannot read directory {host_dir}: {exc.strerror}") from None
        prefix = image_dir + "/" if image_dir else ""
        order: list[_Item] = []
        if self.ignore is None and self.exclude is None:
            for child in children:  # the common case, kept lean: a node_modules tree has 10^4..10^5 files
                name = child.name
                path = prefix + name
                st = _lstat(child)
                kind = st.st_mode & _S_IFMT
                host = child.path
                if kind not in _COPYABLE or name.startswith(".wh."):
                    _check(path, host, st)  # raises the error
                order.append((name, path, host, st, None))
                if kind == _S_IFDIR:
                    order.append((name + "/", path, host, st, _WALK_ALL))
        else:
            for child in children:
                self._order_filtered(child, prefix, src_rel, ignore_state, exclude_state, order)
        order.sort(key=_sort_key)
        return order

    def _order_filtered(self, child: os.DirEntry[str], prefix: str, src_rel: str,
                        ignore_state: tuple[bool, ...] | None, exclude_state: tuple[bool, ...] | None,
                        order: list[_Item]) -> None:
        """walk()'s step for one child when .dockerignore or --exclude patterns apply."""
        name = child.name
        rel = f"{src_rel}/{name}" if src_rel else name
        ign = exc = None
        # (matcher, path it sees) for each matcher that excludes this child
        excluded_by: list[tuple[IgnoreMatcher, str]] = []
        if self.ignore:
            ign = self.ignore.state(self.context_rel(child.path), ignore_state)
            if self.ignore.decide(ign):
                excluded_by.append((self.ignore, self.context_rel(child.path)))
        if self.exclude:
            exc = self.exclude.state(rel, exclude_state)
            if self.exclude.decide(exc):
                excluded_by.append((self.exclude, rel))
        st = _lstat(child)
        path = prefix + name
        if excluded_by:
            if stat.S_ISDIR(st.st_mode) and all(matcher.may_include_below(p) for matcher, p in excluded_by):
                below = list(self.walk(child.path, path, rel, ign, exc))
                if below:  # something re-included: its directory comes too
                    _check(path, child.path, st)
                    order.extend(((name, path, child.path, st, None), (name + "/", path, child.path, st, below)))
            return
        _check(path, child.path, st)
        order.append((name, path, child.path, st, None))
        if stat.S_ISDIR(st.st_mode):
            order.append((name + "/", path, child.path, st, (rel, ign, exc)))

    def entry(self, path: str, host: str, st: os.stat_result) -> TarEntry:
        """The tar entry of a walked item. Items must come in layer order: the first path of a file
        with several hard links carries its content, later ones link to it."""
        uid, gid, mtime = self.uid, self.gid, self.mtime
        if self.owners is not None:
            uid, gid = self.owners.get(host[len(self.context) + 1:], (0, 0))
        mode = st.st_mode
        perm = (mode & self.mode_mask) if self.chmod is None else self.chmod
        kind = mode & _S_IFMT
        if kind == _S_IFDIR:
            return TarEntry(path, "dir", perm, uid, gid, mtime=mtime)
        if kind == stat.S_IFLNK:
            try:
                target = os.readlink(host)
            except OSError as exc:
                raise ContextError(f"cannot read symbolic link {host}: {exc.strerror}") from None
            return TarEntry(path, "symlink", 0o777, uid, gid, linkname=target, mtime=mtime)
        if st.st_nlink > 1:
            first = self.first_link.setdefault((st.st_dev, st.st_ino), path)
            if first != path:
                return TarEntry(path, "hardlink", perm, uid, gid, linkname=first, mtime=mtime)
        return TarEntry(path, "file", perm, uid, gid, st.st_size, "", host, None, mtime, st)

    def entries(self) -> list[TarEntry]:
        result = {path: TarEntry(path, "dir", mode, self.uid, self.gid, mtime=self.mtime)
                  for path, mode in self.created.items()}
        for path in sorted(self.found):  # mostly sorted already: each walk yields in layer order
            result[path] = self.entry(path, *self.found[path])
        return [result[path] for path in sorted(result)] if self.created else list(result.values())


_Below = tuple[str, tuple[bool, ...] | None, tuple[bool, ...] | None] | list[tuple[str, str, os.stat_result]] | None
_Item = tuple[str, str, str, os.stat_result, _Below]
_sort_key = itemgetter(0)
_WALK_ALL = ("", None, None)  # walk()'s arguments below a directory when nothing is excluded


def _check(image_path: str, host: str, st: os.stat_result) -> None:
    """Refuse an item whose name or type a layer may not hold."""
    if image_path.rpartition("/")[2].startswith(".wh.") or host.rpartition("/")[2].startswith(".wh."):
        raise ContextError(f"{host}: names starting with '.wh.' are reserved for layer whiteouts "
                           f"(in-image path /{image_path})", hint="rename the file or exclude it in .dockerignore")
    if stat.S_IFMT(st.st_mode) not in _COPYABLE:
        raise ContextError(f"{host}: cannot copy a device, FIFO or socket into an image",
                           hint="exclude it in .dockerignore")


def _lstat(child: os.DirEntry[str]) -> os.stat_result:
    try:
        return child.stat(follow_symlinks=False)
    except OSError as exc:
        raise ContextError(f"cannot read {child.path}: {exc.strerror}") from None


def resolve_in_root(root: str, rel: str) -> str:
    """The host path of `rel` inside the image root `root`, following symlinks as a chroot would:
    absolute targets start again at `root`, ".." stops at it. The result never leaves `root`."""

    def readlink(candidate: str) -> str | None:
        full = os.path.join(root, candidate)
        try:
            return os.readlink(full) if stat.S_ISLNK(os.lstat(full).st_mode) else None
        except OSError:
            return None

    return os.path.join(root, *chroot.walk(rel, readlink)[0])


def _expand(collector: _Collector, pattern: str) -> list[str]:
    """Context-relative paths matching a wildcard source, sorted (Go filepath.Match per component)."""
    candidates = [""]
    for part in pattern.split("/"):
        if not has_wildcards(part):
            candidates = [f"{c}/{part}" if c else part for c in candidates]
            continue
        regex = re.compile(translate(part, doublestar=False), re.DOTALL)
        matched: list[str] = []
        for cand in candidates:
            try:
                with os.scandir(collector.host_path(cand)) as it:
                    names = [e.name for e in it if regex.fullmatch(e.name)]
            except OSError:
                continue
            matched.extend(f"{cand}/{name}" if cand else name for name in sorted(names))
        candidates = matched
    return [c for c in candidates if os.path.lexists(collector.host_path(c))]


def _split_pivot(source: str) -> tuple[str, str]:
    """COPY --parents: "a/./b/c" keeps only "b/c" under the destination. (full path, kept part)."""
    cleaned = clean_path(source)
    head, sep, _ = source.partition("/./")
    return cleaned, (clean_path(source[len(head) + len(sep):]) if sep else cleaned)


def collect_copy(context: Path, sources: Sequence[str], dest: str, settings: CopySettings = CopySettings(), *,
                 ignore: IgnoreMatcher | None = None) -> list[TarEntry]:
    """The entries of one COPY layer: `sources` (context-relative, wildcards allowed; "/x" means "x")
    copied to the absolute in-image `dest`, leaving out what `ignore` (.dockerignore) and the settings'
    excludes (COPY --exclude, relative to each source) match. Sorted, no duplicates; the destination's
    parents are not included (see _Collector.owns_destination) except the settings' `make_dirs`:
    missing parents the copy creates, owned by uid:gid (--chown), mode 0755, as BuildKit's MkdirAll
    does. Permission bits are masked with 0o755 unless `chmod` is given."""
    return _collect(_context_collector(context, ignore, settings), sources, dest)


def stream_copy(context: Path, source: str, dest: str, settings: CopySettings = CopySettings(), *,
                ignore: IgnoreMatcher | None = None) -> Iterator[TarEntry]:
    """collect_copy of one source, as an iterator. For a directory the entries come in layer order
    while the tree is walked, so the layer writer and its compressor threads start at once rather than
    after the walk; the source itself is checked now."""
    collector = _context_collector(context, ignore, settings)
    dest_path, dest_dir = _destination([source], dest)
    _check_source(collector, source)
    full, kept = _split_pivot(source)
    if not has_wildcards(full):
        real, st, base = _place(collector, full, kept, source, dest_path, dest_dir)
        if stat.S_ISDIR(st.st_mode):
            return _stream_dir(collector, real, st, base, dest_path, dest_dir)
    return iter(_collect(_context_collector(context, ignore, settings), [source], dest))


def _stream_dir(collector: _Collector, real: str, st: os.stat_result, base: str, dest_path: str,
                dest_dir: bool) -> Iterator[TarEntry]:
    """_collect of one directory, lazily: the same entries in the same order. The directories the copy
    makes (the destination, --parents ancestors) are all above `base`, so they come first."""
    made = dict(collector.created)
    if dest_dir and dest_path and dest_path != base and collector.owns_destination:
        made.setdefault(dest_path, collector.chmod if collector.chmod is not None else _DIR_MODE)
    for path in sorted(made):
        yield TarEntry(path, "dir", made[path], collector.uid, collector.gid, mtime=collector.mtime)
    if _carries(collector, base, dest_path):
        _check(base, real, st)
        yield collector.entry(base, real, st)
    yield from starmap(collector.entry, _walk_source(collector, real, base))


def _walk_source(collector: _Collector, real: str, base: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """The walk below a directory source, with the matchers' states for the source itself."""
    state = collector.ignore.state(collector.context_rel(real), None) if collector.ignore else None
    return collector.walk(real, base, "", state, (False,) * len(collector.exclude.patterns)
                          if collector.exclude else None)


def _context_collector(context: Path, ignore: IgnoreMatcher | None, settings: CopySettings) -> _Collector:
    try:
        root = os.path.realpath(context, strict=True)
    except OSError as exc:
        raise ContextError(f"build context {context} cannot be used: {exc.strerror}") from None
    return _Collector(root, f"the build context {root}", ignore, settings)


def collect_from_root(root: Path, where: str, sources: Sequence[str], dest: str,
                      settings: CopySettings = CopySettings(),
                      owners: dict[str, tuple[int, int]] | None = None) -> list[TarEntry]:
    """collect_copy for an extracted image root (COPY --from): symlinks in source paths resolve
    inside `root` as in a chroot, and modes are kept as they are (setuid included). `owners` (in-root
    path -> uid, gid) gives each entry its owner in the image instead of settings' uid:gid."""
    collector = _Collector(os.path.realpath(root), where, None, settings, scoped=True, mode_mask=0o7777)
    collector.owners = owners
    return _collect(collector, sources, dest)


def _destination(sources: Sequence[str], dest: str) -> tuple[str, bool]:
    """(the cleaned destination, whether it names a directory), after checking the COPY's shape."""
    if not sources:
        raise ContextError("COPY needs at least one source")
    if not dest.startswith("/"):
        raise ContextError(f"COPY destination {dest!r} must be an absolute path here")
    dest_dir = dest.endswith("/") or dest.endswith("/.") or clean_path(dest) == ""
    if len(sources) > 1 and not dest_dir:
        raise ContextError(
            f"COPY {' '.join(sources)} {dest}: when using COPY with more than one source file, "
            "the destination must be a directory and end with a /")
    return clean_path(dest), dest_dir


def _check_source(collector: _Collector, source: str) -> None:
    if posixpath.normpath(source.lstrip("/") or ".").startswith(".."):
        raise ContextError(f"COPY source {source!r} is outside {collector.where}")


def _collect(collector: _Collector, sources: Sequence[str], dest: str) -> list[TarEntry]:
    dest_path, dest_dir = _destination(sources, dest)
    for source in sources:
        _check_source(collector, source)
        full, kept = _split_pivot(source)
        if has_wildcards(full):
            matches = _expand(collector, full)
            if collector.ignore:
                matches = [m for m in matches if not collector.ignore.matches(m)]
            if not matches:
                raise ContextError(f"COPY source {source!r}: nothing in {collector.where} matches this pattern")
            if len(matches) > 1:
                dest_dir = True  # BuildKit treats the destination as a directory, as for several sources
            kept_prefix = full[: len(full) - len(kept)]
            items = [(m, m[len(kept_prefix):] if m.startswith(kept_prefix) else m) for m in matches]
        else:
            items = [(full, kept)]
        for rel, keep in items:
            _copy_one(collector, rel, keep, source, dest_path, dest_dir)
    if dest_dir and dest_path and dest_path not in collector.found and collector.owns_destination:
        collector.created.setdefault(dest_path, collector.chmod if collector.chmod is not None else _DIR_MODE)
    return collector.entries()


def _ancestors(path: str) -> list[str]:
    """"a/b/c" -> ["a", "a/b", "a/b/c"]."""
    parts = path.split("/") if path else []
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _place(collector: _Collector, rel: str, keep: str, shown: str, dest_path: str,
           dest_dir: bool) -> tuple[str, os.stat_result, str]:
    """Resolve one source: (its real path, its stat, where it goes in the image). With --parents, the
    kept part's parent directories are recorded as made by the copy."""
    real, st = collector.resolve(rel, shown)
    if collector.parents:
        base = posixpath.join(dest_path, keep) if keep else dest_path
        for created in _ancestors(posixpath.dirname(keep)):
            collector.created.setdefault(posixpath.join(dest_path, created).strip("/"),
                                         collector.chmod if collector.chmod is not None else _DIR_MODE)
    elif stat.S_ISDIR(st.st_mode):
        base = dest_path
    else:
        base = posixpath.join(dest_path, posixpath.basename(rel)) if dest_dir else dest_path
    return real, st, base.strip("/")


def _carries(collector: _Collector, base: str, dest_path: str) -> bool:
    """Whether a directory source's own entry is in the layer (not the destination, unless owned)."""
    return bool(base) and (base != dest_path.strip("/") or collector.owns_destination)


def _copy_one(collector: _Collector, rel: str, keep: str, shown: str, dest_path: str, dest_dir: bool) -> None:
    real, st, base = _place(collector, rel, keep, shown, dest_path, dest_dir)
    if stat.S_ISDIR(st.st_mode):
        if _carries(collector, base, dest_path):
            collector.add(base, real, st)
        walked = _walk_source(collector, real, base)
        collector.found.update((path, (host, item_st)) for path, host, item_st in walked)
        return
    if collector.exclude and collector.exclude.matches(posixpath.basename(rel)):
        return
    if not base:
        raise ContextError(f"COPY {shown!r} to /: cannot replace the root directory with a file")
    collector.add(base, real, st)
