"""Reading image layers back: streaming decompression, safe extraction with OCI whiteouts, and
the user/group lookups that `--chown=NAME` needs.

Extraction never trusts the archive: names are cleaned and may not climb out of the root, nothing
is written through a symlink (every parent directory is checked with lstat), devices and FIFOs
are skipped, hard links must point inside the root, and the decompressed size is capped.

`extract_layer` is the faithful variant for RUN's root file systems: one layer into a directory of its
own, in overlayfs's form (whiteouts as 0/0 character devices, opaque directories marked by an xattr),
with owners, modes (setuid included), mtimes, xattrs, devices and FIFOs as the archive has them.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from dockwright.layers.copy import CopySettings, collect_from_root, resolve_in_root
from dockwright.layers.tar import TarEntry
from dockwright.model.errors import DockwrightError, ImageFormatError
from dockwright.streams import MAX_LAYER_BYTES, ChunkReader, inflate, read_ahead

log = logging.getLogger(__name__)

MAX_SMALL_FILE = 16 << 20  # RootFS.open
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


def layer_reader(chunks: Iterable[bytes], name: str = "layer", max_bytes: int = MAX_LAYER_BYTES) -> ChunkReader:
    """A read-only file of a layer's tar bytes from its (gzip, zstd or plain) chunks (streams.inflate)."""
    return ChunkReader(inflate(chunks, name, max_bytes))


def iter_layer(chunks: Iterable[bytes], name: str = "layer",
               max_bytes: int = MAX_LAYER_BYTES) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
    """(member, content) for each tar member of a layer blob; content is a file object for regular
    files, only valid until the next member is requested."""
    return _members(layer_reader(chunks, name, max_bytes), name)


def _members(reader: ChunkReader, name: str) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
    try:
        with tarfile.open(fileobj=io.BufferedReader(reader, 1 << 20), mode="r|", errorlevel=1) as archive:
            for member in archive:
                yield member, archive.extractfile(member) if member.isreg() else None
    except tarfile.TarError as exc:
        raise ImageFormatError(f"{name} is not a valid tar archive: {exc}") from None


class RootFS:
    """The merged file tree of several layers, extracted into `root`."""

    def __init__(self, root: Path, where: str = "the image", owners: dict[str, tuple[int, int]] | None = None) -> None:
        self.root = root
        self.where = where
        self.owners = owners or {}  # in-image path -> owner in the layers (the files on disk are the user's)

    @classmethod
    def from_layers(cls, layers: Sequence[Callable[[], Iterable[bytes]]], workdir: Path, *,
                    names: Sequence[str] | None = None, max_bytes: int = MAX_LAYER_BYTES, where: str = "the image",
                    faithful: bool = False) -> RootFS:
        """Extract `layers` (bottom first; each a callable giving its blob's chunks) into `workdir`,
        applying whiteouts. `faithful`: owners, mtimes, xattrs, devices and FIFOs as the layers have them
        (a root file system to run commands in: needs root)."""
        workdir.mkdir(parents=True, exist_ok=True)
        extractor = _Extractor(str(workdir.resolve()), faithful=faithful)
        budget = max_bytes
        for index, layer in enumerate(layers):
            name = names[index] if names else f"layer {index + 1} of {where}"
            reader = layer_reader(layer(), name, budget)
            extractor.start_layer()
            for member, content in _members(reader, name):
                extractor.extract(member, content, name)
            reader.drain()  # to the blob's end, where its source checks the digest
            extractor.finish_layer()
            budget -= reader.total
        return cls(workdir, where, extractor.owners)

    def open(self, path: str) -> bytes | None:
        """The content of a small regular file (symlinks resolved inside the root), or None."""
        real = resolve_in_root(str(self.root), path)
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            data = file.read(MAX_SMALL_FILE + 1)
        if len(data) > MAX_SMALL_FILE:
            raise ImageFormatError(f"/{path} in {self.where} is larger than {MAX_SMALL_FILE} bytes")
        return data

    def _table(self, path: str) -> list[list[str]]:
        data = self.open(path)
        if data is None:
            return []
        return [line.split(":") for line in data.decode("utf-8", "replace").splitlines()
                if line and not line.startswith("#")]

    def lookup_user(self, user: str) -> tuple[int, int]:
        """A user name or number -> (uid, primary gid) from /etc/passwd. A number is used as it
        is, with gid = uid, without consulting /etc/passwd (BuildKit's rule)."""
        if user.isdecimal():
            return int(user), int(user)
        for fields in self._table("etc/passwd"):
            if len(fields) >= 4 and fields[0] == user and fields[2].isdecimal() and fields[3].isdecimal():
                return int(fields[2]), int(fields[3])
        raise DockwrightError(f"user {user!r} not found in /etc/passwd of {self.where}",
                              hint="use a numeric uid, or a user the image defines")

    def lookup_group(self, group: str) -> int:
        if group.isdecimal():
            return int(group)
        for fields in self._table("etc/group"):
            if len(fields) >= 3 and fields[0] == group and fields[2].isdecimal():
                return int(fields[2])
        raise DockwrightError(f"group {group!r} not found in /etc/group of {self.where}",
                              hint="use a numeric gid, or a group the image defines")

    def collect(self, sources: Sequence[str], dest: str, settings: CopySettings) -> list[TarEntry]:
        """COPY --from: collect_copy semantics with sources relative to the image root; permission bits
        kept, and owners too unless --chown gives one (settings.keep_owners; Docker keeps them since
        moby/moby#38599, BuildKit too)."""
        return collect_from_root(self.root, self.where, sources, dest, settings,
                                 self.owners if settings.keep_owners else None)


class AccountFiles(RootFS):
    """Just /etc/passwd and /etc/group, from their text (layers/dirindex.py), for user and group lookups
    without extracting anything; nothing else of the image is there."""

    def __init__(self, files: dict[str, str], where: str = "the image") -> None:
        super().__init__(Path("/nonexistent"), where)
        self.files = files

    def open(self, path: str) -> bytes | None:
        text = self.files.get(path.strip("/"))
        return None if text is None else text.encode()


def resolve_chown(chown: str, rootfs: RootFS | None) -> tuple[int, int]:
    """"USER[:GROUP]" -> (uid, gid). Numbers need no image; names are looked up in its
    /etc/passwd and /etc/group. Without a group: gid = uid for a numeric user, the user's
    primary group for a named one (BuildKit's rule)."""
    user, _, group = chown.partition(":")
    if not user or (":" in chown and not group):
        raise DockwrightError(f"invalid --chown value {chown!r}", hint="use USER, USER:GROUP, UID or UID:GID")
    for part in (user, group):
        if part.isdecimal() and int(part) > 0xFFFFFFFE:
            raise DockwrightError(f"invalid --chown value {chown!r}: {part} is out of range")
    names = [p for p in (user, group) if p and not p.isdecimal()]
    if names and rootfs is None:
        raise DockwrightError(
            f"--chown={chown} names a user or group, but the base image has no /etc/passwd to look it up",
            hint="the image must contain /etc/passwd (and /etc/group), or use numeric ids",
        )
    if rootfs is None:
        return int(user), int(group or user)
    uid, primary = rootfs.lookup_user(user)
    return uid, rootfs.lookup_group(group) if group else primary


def extract_layer(chunks: Iterable[bytes], dest: Path, *, name: str, opaque_xattr: str,
                  lower_dirs: Sequence[Path] = (), max_bytes: int = MAX_LAYER_BYTES) -> None:
    """Extract one layer into `dest` (an empty directory) as an overlayfs layer directory: faithful
    owners, modes, mtimes, xattrs and special files; `.wh.NAME` -> a 0/0 character device NAME,
    `.wh..wh..opq` -> xattr `opaque_xattr`="y" on its directory. A hard link to a file of a lower layer
    (`lower_dirs`, top first, on the same file system) links to that layer directory's file."""
    extractor = _Extractor(str(dest.resolve()), faithful=True, opaque_xattr=opaque_xattr,
                           lower_dirs=[str(d) for d in lower_dirs])
    extractor.start_layer()
    reader = ChunkReader(read_ahead(inflate(chunks, name, max_bytes)))
    for member, content in _members(reader, name):
        extractor.extract(member, content, name)
    reader.drain()  # to the blob's end, where its source checks the digest
    extractor.finish_layer()


class _Extractor:
    """Applies one layer after another to a directory; see the module docstring for the rules.
    `faithful`: keep owners, mtimes, xattrs and special files (needs root, or a user namespace);
    `opaque_xattr`: write whiteouts in overlayfs's form instead of applying them."""

    def __init__(self, root: str, *, faithful: bool = False,
                 opaque_xattr: str | None = None, lower_dirs: Sequence[str] = ()) -> None:
        self.root = root
        self.faithful = faithful
        self.opaque_xattr = opaque_xattr
        self.lower_dirs = lower_dirs
        self.dir_times: list[tuple[str, int]] = []  # set last: writing into a directory changes its mtime
        self.safe_dirs: set[str] = {""}  # in-root dirs checked to be real directories
        self.layer_paths: set[str] = set()  # paths written by the current layer
        self.owners: dict[str, tuple[int, int]] = {}  # path -> (uid, gid) in its layer (COPY --from keeps them)

    def start_layer(self) -> None:
        self.layer_paths = set()

    def finish_layer(self) -> None:
        for path, mtime in reversed(self.dir_times):
            os.utime(path, ns=(mtime, mtime), follow_symlinks=False)
        self.dir_times = []

    def host(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def extract(self, member: tarfile.TarInfo, content: IO[bytes] | None, layer: str) -> None:
        rel = clean_member_name(member.name, layer)
        if not rel:
            return
        parent, _, base = rel.rpartition("/")
        if self.opaque_xattr is not None and base.startswith(_WHITEOUT):
            self._overlay_whiteout(parent, base, rel)
            return
        if base == _OPAQUE:
            if self._parent_ok(parent, rel, create=False):
                self._clear_lower(parent)
            return
        if base.startswith(_WHITEOUT):
            target = f"{parent}/{base[len(_WHITEOUT):]}" if parent else base[len(_WHITEOUT):]
            if target not in self.layer_paths and self._parent_ok(parent, rel, create=False):
                self._remove(target)
            return
        special = not (member.isreg() or member.isdir() or member.issym() or member.islnk())
        if special and not self.faithful:
            return  # devices, FIFOs: nothing COPY --from or a user lookup could use
        if not self._parent_ok(parent, rel, create=True):
            return
        path = self.host(rel)
        self.layer_paths.add(rel)
        self.owners[rel] = (member.uid, member.gid)
        if member.isdir():
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                st = None
            if st is not None and not stat.S_ISDIR(st.st_mode):
                self._remove(rel)
                st = None
            if st is None:
                os.mkdir(path, 0o700)
            if self.faithful:
                _chown(os.lchown, path, member.uid, member.gid)
                self._set_xattrs(path, member)
                self.dir_times.append((path, member.mtime * 1_000_000_000))
            os.chmod(path, member.mode & 0o7777)
            self.safe_dirs.add(rel)
            return
        if member.isreg():
            self._write_file(rel, path, member, content)
            return
        self._remove(rel)
        if member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            target = clean_member_name(member.linkname, layer)
            target_parent = target.rpartition("/")[0]
            if target and self.faithful and not os.path.lexists(self.host(target)):
                self._link_from_lower(target, path, layer)
                return
            if not target or not self._parent_ok(target_parent, target, create=False):
                log.warning("%s: skipping hard link %s to %s", layer, rel, member.linkname)
                return
            try:
                os.link(self.host(target), path, follow_symlinks=False)
            except OSError as exc:
                raise ImageFormatError(f"{layer}: hard link /{rel} -> /{target}: {exc.strerror}") from None
            return  # the link shares its target's metadata
        elif special:
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
            try:
                os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor) if member.isdev() else 0)
            except PermissionError:  # no CAP_MKNOD (a user namespace): a device node cannot be made
                log.warning("%s: skipping device node /%s (no permission to create devices)", layer, rel)
                return
        if self.faithful:
            _chown(os.lchown, path, member.uid, member.gid)  # owner, then mode: chown clears setuid
            if not member.issym():
                os.chmod(path, member.mode & 0o7777)
            self._set_xattrs(path, member)
            os.utime(path, ns=(member.mtime * 1_000_000_000,) * 2, follow_symlinks=False)

    def _write_file(self, rel: str, path: str, member: tarfile.TarInfo, content: IO[bytes] | None) -> None:
        """A regular file and its metadata, all through one descriptor: RUN's base layers hold thousands
        of them, and a path lookup per call (lstat first, chown, utime by name) was a third of their cost."""
        assert content is not None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:  # an earlier entry of the same path (rare): replaced
            self._remove(rel)
            fd = os.open(path, flags, 0o600)
        try:
            while data := content.read(1 << 20):
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            if self.faithful:
                _chown(os.fchown, fd, member.uid, member.gid)  # owner, then mode: chown clears setuid
            os.fchmod(fd, member.mode & 0o7777)
            if self.faithful:
                self._set_xattrs(fd, member)
                os.utime(fd, ns=(member.mtime * 1_000_000_000,) * 2)
        finally:
            os.close(fd)

    @staticmethod
    def _set_xattrs(target: str | int, member: tarfile.TarInfo) -> None:
        """`target`: a path (never followed) or a descriptor."""
        for key, value in member.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                try:
                    os.setxattr(target, key[len("SCHILY.xattr."):], value.encode("utf-8", "surrogateescape"),
                                follow_symlinks=isinstance(target, int))
                except OSError as exc:  # e.g. security.selinux on a host without SELinux
                    log.debug("cannot set xattr %s on %s: %s", key, target, exc.strerror)

    def _overlay_whiteout(self, parent: str, base: str, rel: str) -> None:
        if not self._parent_ok(parent, rel, create=True):
            return
        if base == _OPAQUE:
            assert self.opaque_xattr is not None
            os.setxattr(self.host(parent), self.opaque_xattr, b"y", follow_symlinks=False)
            return
        name = base[len(_WHITEOUT):]
        target = f"{parent}/{name}" if parent else name
        if target in self.layer_paths or not name:
            return
        self._remove(target)
        os.mknod(self.host(target), stat.S_IFCHR | 0o600, os.makedev(0, 0))

    def _link_from_lower(self, target: str, path: str, layer: str) -> None:
        """A hard link to `target`, a file of a layer below: linked across layer directories (one file
        system, the cache), so that in the stacked root the two names are one file with two links, as in
        a root file system the layers are applied to in turn (a RUN's `cp -a` or `tar` keeps the link, and
        overlayfs's copy-up breaks it as for links within one layer); a copy where linking fails."""
        source = self._lower_file(target)
        if source is None:
            log.warning("%s: skipping hard link /%s: /%s is no file of the layers below", layer,
                        path[len(self.root):].lstrip("/"), target)
            return
        try:
            os.link(source, path, follow_symlinks=False)
            return
        except OSError as exc:
            log.debug("%s: hard link /%s to a lower layer's file failed (%s): a copy", layer, target, exc.strerror)
        shutil.copy2(source, path, follow_symlinks=False)
        st = os.lstat(source)
        os.lchown(path, st.st_uid, st.st_gid)
        os.chmod(path, st.st_mode & 0o7777)

    def _lower_file(self, target: str) -> str | None:
        """The regular file `target` of the layer directories below (`lower_dirs`, top first) as overlayfs
        shows them: the topmost one holding the path, unless a whiteout, a non-directory parent or an
        opaque parent directory above it hides the layers below."""
        parts = target.split("/")
        for lower in (self.root, *self.lower_dirs):
            path, hidden = lower, False
            for depth, part in enumerate(parts):
                path = os.path.join(path, part)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    break  # not in this layer
                if depth == len(parts) - 1:
                    return path if stat.S_ISREG(st.st_mode) else None  # (a whiteout is a character device)
                if not stat.S_ISDIR(st.st_mode):
                    return None
                hidden = hidden or self._opaque(path)
            if hidden:
                return None
        return None

    def _opaque(self, directory: str) -> bool:
        assert self.opaque_xattr is not None
        try:
            return os.getxattr(directory, self.opaque_xattr, follow_symlinks=False) == b"y"
        except OSError:
            return False

    def _parent_ok(self, parent: str, rel: str, *, create: bool) -> bool:
        """Is every directory above `rel` a real directory (no symlink)? Creates missing ones."""
        if parent in self.safe_dirs:
            return True
        parts = parent.split("/")
        for i in range(len(parts)):
            prefix = "/".join(parts[: i + 1])
            if prefix in self.safe_dirs:
                continue
            try:
                mode = os.lstat(self.host(prefix)).st_mode
            except FileNotFoundError:
                if not create:
                    return False
                os.mkdir(self.host(prefix), 0o755)
                mode = stat.S_IFDIR
            if not stat.S_ISDIR(mode):
                if create:
                    log.warning("skipping /%s: /%s is not a directory (never written through)", rel, prefix)
                return False
            self.safe_dirs.add(prefix)
        return True

    def _remove(self, rel: str) -> None:
        path = self.host(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
            self.safe_dirs = {d for d in self.safe_dirs if d != rel and not d.startswith(rel + "/")}
        else:
            os.unlink(path)

    def _clear_lower(self, rel: str) -> None:
        """Opaque directory: remove what lower layers put below `rel`, keep this layer's files."""
        with os.scandir(self.host(rel)) as it:
            children = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for name, is_dir in children:
            child = f"{rel}/{name}" if rel else name
            if child not in self.layer_paths:
                self._remove(child)
            elif is_dir:
                self._clear_lower(child)


def clean_member_name(name: str, layer: str) -> str:
    """A member name as a clean root-relative path; names climbing out of the root are errors."""
    stripped = name.lstrip("/")
    normalized = posixpath.normpath(stripped) if stripped else "."
    if normalized == ".." or normalized.startswith("../"):
        raise ImageFormatError(f"{layer}: entry {name!r} points outside the image root",
                               hint="the layer is malformed or malicious; it was not extracted further")
    return "" if normalized == "." else normalized


def _chown(chown: Callable[[Any, int, int], None], target: Any, uid: int, gid: int) -> None:
    """chown, except where the id does not exist here: in a user namespace that maps only the user's own id
    (rootless RUN without subordinate ids) the file keeps the mapped owner (EINVAL means unmapped)."""
    try:
        chown(target, uid, gid)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        log.debug("cannot own %s by %d:%d here (id not mapped)", target, uid, gid)
