"""The deterministic layer writer: entries -> tar bytes -> compressor -> file, in one pass.

Tar headers are written here (USTAR, with PAX extended headers only where USTAR cannot hold a
value), because `tarfile` is several times slower per entry and would not let us control every
byte. The bytes go to a compress.BlobSink: fixed blocks, hashed (diff_id) on their way to the
compressor, whose output is hashed (digest) and counted on its way to the file.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, NamedTuple
from zlib import adler32

from dockwright.layers.compress import BLOCK_SIZE, BlobSink, Compression, LayerBlob, write_blob
from dockwright.layers.elf import HEAD as ELF_HEAD
from dockwright.layers.elf import machine
from dockwright.layers.pyc import fix_header
from dockwright.model.errors import ContextError

# Bump when anything that changes the bytes of a layer changes (header layout, block size...):
# it is part of every layer-cache fingerprint.
FORMAT_VERSION = "dockwright-layer-2"  # 2: .pyc source mtimes (pyc.py)
SMALL_FILE = 1 << 16  # read whole into memory; larger files stream through the block buffer
LARGE_PYC = 1 << 24  # a .pyc up to this size is read whole too, for its header (pyc.py)

EntryKind = Literal["file", "dir", "symlink", "hardlink", "chardev", "blockdev", "fifo"]
_TYPEFLAG = {"file": b"0", "hardlink": b"1", "symlink": b"2", "dir": b"5", "chardev": b"3", "blockdev": b"4",
             "fifo": b"6"}
_TYPE_BITS = {"file": 0o100000, "hardlink": 0o100000, "symlink": 0o120000, "dir": 0o040000, "chardev": 0o020000,
              "blockdev": 0o060000, "fifo": 0o010000}
_DEVICES = ("chardev", "blockdev")
_ZERO_BLOCK = bytes(512)
_PAX_NAME = b"././@PaxHeader"
_MAX_ID = 8**7  # the largest uid/gid USTAR's 8-byte octal fields hold, plus one
_MAX_NUMBER = 8**11  # likewise for the 12-byte size and mtime fields
_USTAR_MAGIC = b"ustar\x0000" + bytes(64) + b"0000000\0" * 2  # magic, version, uname, gname, devmajor, devminor
_USTAR_PAD = bytes(12)
# typeflag onwards for a header with no link name and no name prefix: most of a layer's
_PLAIN_TAILS = {flag: flag + bytes(100) + _USTAR_MAGIC + bytes(155) + _USTAR_PAD
                for flag in (*_TYPEFLAG.values(), b"x")}
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


class TarEntry(NamedTuple):
    """One tar member. `path` is relative, "/"-separated, without leading or trailing "/".
    A NamedTuple rather than a frozen dataclass: a build makes one per file, and this is ~5x cheaper."""

    path: str
    kind: EntryKind
    mode: int  # permission bits only; the writer adds the type bits
    uid: int = 0
    gid: int = 0
    size: int = 0  # for files read from `source`; inline `data` uses len(data)
    linkname: str = ""  # symlink target as-is / hardlink target (an in-layer path)
    source: str | Path | None = None  # host file; a str is fine (and saves Path()'s ~5 µs per file)
    data: bytes | None = None
    mtime: int = 0
    host_stat: os.stat_result | None = None  # the source's identity for the cache key, read in fingerprint()
    xattrs: tuple[tuple[str, bytes], ...] = ()  # extended attributes (PAX SCHILY.xattr.NAME records)
    device: tuple[int, int] = (0, 0)  # (major, minor) of a chardev/blockdev

    @property
    def content_size(self) -> int:
        if self.kind != "file":
            return 0
        return len(self.data) if self.data is not None else self.size


def _fsencode(name: str) -> bytes:
    """os.fsencode without its Python-level wrapper (~1 us a call, four calls per entry)."""
    return name.encode(_FS_ENCODING, _FS_ERRORS)


def fingerprint(entries: Iterable[TarEntry], compression: Compression) -> str:
    """A key that changes whenever the layer's bytes could: entry metadata, host file identity,
    inline content, compression settings and the writer's format version (threads excluded)."""
    parts = [f"{FORMAT_VERSION}\0{BLOCK_SIZE}\0{compression.algorithm}\0{compression.resolved_level()}\n".encode()]
    fsencode = _fsencode
    for e in entries:
        if e.data is not None:
            content = hashlib.sha256(e.data).hexdigest()
        elif (st := e.host_stat) is not None:
            # ctime too: a rewrite that keeps size and mtime (touch -r, some extractors) changes it
            content = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
            if e.path.endswith(".pyc"):  # its header may be rewritten after its source's stat (pyc.py)
                from dockwright.layers.pyc import source_stat

                py = source_stat(os.fspath(e.source))  # type: ignore[arg-type]
                content += f":{py.st_size}:{py.st_mtime_ns}" if py is not None else ":-"
        else:
            content = ""
        parts.append(b"%s\0%s\0%o\0%d\0%d\0%d\0%d\0%s\0%s\n" % (
            fsencode(e.path), e.kind.encode(), e.mode, e.uid, e.gid, e.content_size, e.mtime, content.encode(),
            fsencode(e.linkname)))
        if e.xattrs or e.device != (0, 0):  # only then: the keys of other entries stay as they were
            parts.append(repr((e.xattrs, e.device)).encode() + b"\n")
    return "sha256:" + hashlib.sha256(b"".join(parts)).hexdigest()


# --------------------------------------------------------------------------- tar headers


def _pax_record(key: bytes, value: bytes) -> bytes:
    payload = b" %s=%s\n" % (key, value)
    length = len(payload) + len(str(len(payload)))
    if len(str(length)) + len(payload) != length:
        length += 1
    return b"%d%s" % (length, payload)


def _split_name(name: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) for USTAR (prefix <= 155 bytes, name 1..100 bytes), or None when it cannot fit."""
    if len(name) <= 100:
        return b"", name
    cut = name.rfind(b"/", 0, 156)
    while cut > 0:
        rest = len(name) - cut - 1
        if rest > 100:
            return None
        if rest:
            return name[:cut], name[cut + 1 :]
        cut = name.rfind(b"/", 0, cut)  # a directory's trailing "/": try the previous one
    return None


def _ustar(name: bytes, prefix: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
           typeflag: bytes, linkname: bytes) -> bytes:
    """One USTAR header block; every number must fit its field (callers put 0 where PAX holds it).

    The checksum is the sum of the block's bytes, its own field counted as spaces. The fields that
    repeat within a layer come with their sum; the others are summed by Adler-32, whose low half is
    1 + the byte sum mod 65521: exact while fewer than 257 bytes are summed at once (255 * 256 < 65521)."""
    owner, stamp, fixed_sum = _fixed_fields(mode, uid, gid, mtime)
    size_field = b"%011o\0" % size
    checksum = fixed_sum + typeflag[0] + (adler32(linkname, adler32(size_field, adler32(name))) & 0xFFFF) - 1
    if prefix:
        checksum += (adler32(prefix) & 0xFFFF) - 1
    tail = _PLAIN_TAILS[typeflag] if not linkname and not prefix else b"".join(
        (typeflag, linkname.ljust(100, b"\0"), _USTAR_MAGIC, prefix.ljust(155, b"\0"), _USTAR_PAD))
    return b"".join((name.ljust(100, b"\0"), owner, size_field, stamp, b"%06o\0 " % checksum, tail))


@functools.lru_cache(maxsize=256)
def _fixed_fields(mode: int, uid: int, gid: int, mtime: int) -> tuple[bytes, bytes, int]:
    """The mode+uid+gid and mtime fields, which a layer has few of, and the byte sum of the header's
    constant parts with them (the checksum field counts as eight spaces)."""
    owner, stamp = b"%07o\0%07o\0%07o\0" % (mode, uid, gid), b"%011o\0" % mtime
    return owner, stamp, sum(owner) + sum(stamp) + sum(_USTAR_MAGIC) + 8 * 32


def encode_header(entry: TarEntry) -> bytes:
    """The header block(s) for `entry`: a PAX extended header when needed, then the USTAR header."""
    path, kind, mode, uid, gid, size, linkname, _, data, mtime, _, xattrs, device = entry  # unpacked: once per file
    name = path.encode(_FS_ENCODING, _FS_ERRORS)
    if kind == "dir":
        name += b"/"
    if kind != "file":
        size = 0
    elif data is not None:
        size = len(data)
    link = linkname.encode(_FS_ENCODING, _FS_ERRORS) if linkname else b""
    mode = mode & 0o7777 | _TYPE_BITS[kind]
    if (len(name) <= 100 and len(link) <= 100 and name.isascii() and link.isascii() and 0 <= uid < _MAX_ID
            and 0 <= gid < _MAX_ID and 0 <= size < _MAX_NUMBER and 0 <= mtime < _MAX_NUMBER and not xattrs
            and kind not in _DEVICES):
        return _ustar(name, b"", mode, uid, gid, size, mtime, _TYPEFLAG[kind], link)  # the common case

    pax: list[bytes] = [b"".join(_pax_record(b"SCHILY.xattr." + key.encode(_FS_ENCODING, _FS_ERRORS), value)
                                 for key, value in sorted(xattrs))] if xattrs else []
    binary = False
    split = _split_name(name) if name.isascii() else None
    if split is None:
        pax.append(_pax_record(b"path", name))
        binary = not _is_utf8(name)
        split = (b"", name[:100])
    if len(link) > 100 or not link.isascii():
        pax.append(_pax_record(b"linkpath", link))
        binary = binary or not _is_utf8(link)
        link = link[:100]
    fields: dict[bytes, int] = {}
    for key, value, limit in ((b"uid", uid, _MAX_ID), (b"gid", gid, _MAX_ID), (b"size", size, _MAX_NUMBER),
                              (b"mtime", mtime, _MAX_NUMBER)):
        fits = 0 <= value < limit
        if not fits:
            pax.append(_pax_record(key, b"%d" % value))
        fields[key] = value if fits else 0
    header = _ustar(split[1], split[0], mode, fields[b"uid"], fields[b"gid"], fields[b"size"], fields[b"mtime"],
                    _TYPEFLAG[kind], link)
    if kind in _DEVICES:
        header = _with_device(header, *device)
    if not pax:
        return header
    if binary:
        pax.insert(0, _pax_record(b"hdrcharset", b"BINARY"))
    records = b"".join(pax)
    pax_header = _ustar(_PAX_NAME, b"", 0o644, 0, 0, len(records), fields[b"mtime"], b"x", b"")
    return pax_header + records + bytes(-len(records) % 512) + header


def _with_device(header: bytes, major: int, minor: int) -> bytes:
    """A USTAR header with its devmajor/devminor fields set, and its checksum made again."""
    block = bytearray(header)
    block[329:345] = b"%07o\0%07o\0" % (major, minor)
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --------------------------------------------------------------------------- the writer


def _copy_file(sink: BlobSink, path: str | Path, size: int) -> None:
    """Stream a large host file straight into the block buffer; exactly `size` bytes."""
    fd = _open(path)
    try:
        remaining = size
        while remaining:
            n = min(remaining, BLOCK_SIZE - sink.pos)
            got = _read_into(fd, sink.view[sink.pos : sink.pos + n], path)
            if got == 0:
                raise _changed(path)
            sink.pos += got
            remaining -= got
            if sink.pos == BLOCK_SIZE:
                sink.flush_block()  # an OSError here is the layer file's: write_layer reports it
        if os.fstat(fd).st_size != size:
            raise _changed(path)
    finally:
        os.close(fd)


def _open(path: str | Path) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _unreadable(path, exc, hint="check the file's permissions") from None


def _read_into(fd: int, buffer: memoryview, path: str | Path) -> int:
    try:
        return os.readv(fd, [buffer])
    except OSError as exc:
        raise _unreadable(path, exc) from None


def _read_small(path: str | Path, size: int) -> bytes:
    """A small host file's `size` bytes in one read, a cheaper path than copy_file's block buffer.
    Asking for one byte more shows a file that grew since it was listed, as copy_file's fstat does."""
    fd = _open(path)
    try:
        data = os.read(fd, size + 1)
        while 0 < len(data) < size:  # a short read before the end (rare for regular files)
            more = os.read(fd, size + 1 - len(data))
            if not more:
                break
            data += more
    except OSError as exc:
        raise _unreadable(path, exc) from None
    finally:
        os.close(fd)
    if len(data) != size:
        raise _changed(path)
    return data


def _read_head(path: str | Path) -> bytes:
    """The first bytes of a large host file, for its ELF header."""
    fd = _open(path)
    try:
        return os.pread(fd, ELF_HEAD, 0)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    finally:
        os.close(fd)


def _unreadable(path: str | Path, exc: OSError, hint: str | None = None) -> ContextError:
    return ContextError(f"cannot read {path}: {exc.strerror}", hint=hint)


def _changed(path: str | Path) -> ContextError:
    return ContextError(f"{path} changed during the build (its size is not what it was when listed)",
                        hint="do not modify the build context while a build runs")


class PackCounters:
    """(files, tar bytes) a layer writer has packed so far, read by a progress display on another thread. The
    writer does nothing per file for them: the file count is the size of its duplicate-path set, the byte count
    its block buffer's position plus the blocks it has passed on."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.sink: BlobSink | None = None

    def __call__(self) -> tuple[int, int]:
        sink = self.sink
        return len(self.seen), 0 if sink is None else sink.flushed + sink.pos


def write_layer(entries: Iterable[TarEntry], dest: Path, compression: Compression,
                counters: PackCounters | None = None) -> LayerBlob:
    """Write the layer to `dest` (a temporary name the caller renames). Entries are written in the
    given order; a duplicate path is an error. On failure `dest` is removed.

    On the way, a timestamp-based .pyc gets the layer's mtime for its source (pyc.py), and the machine
    of each ELF executable or shared library (a file with an exec bit or named *.so*) is recorded in
    the result's `machines` (elf.py): both from bytes a small file has in hand already. `counters`, when
    given, show how far it is."""

    counters = counters or PackCounters()
    seen = counters.seen
    machines: dict[str, list[str]] = {}

    def note(path: str, head: bytes) -> None:
        if (key := machine(head)) is not None:
            machines.setdefault(key, []).append(path)

    def feed(sink: BlobSink) -> None:
        counters.sink = sink
        write = sink.write
        for entry in entries:
            path, kind, mode, _, _, size, _, source, data, mtime, _, _, _ = entry
            if path in seen:
                raise ContextError(f"duplicate path {path!r} in one layer")
            seen.add(path)
            header = encode_header(entry)
            if kind != "file":
                write(header)
            elif data is not None:  # header, content and padding in one write, unless the content is large
                if mode & 0o111 or ".so" in path:
                    note(path, data)
                write(header + data + _ZERO_BLOCK[: -len(data) % 512])
            elif size == 0:
                write(header)
            elif size <= SMALL_FILE or (size <= LARGE_PYC and path.endswith(".pyc")):
                content = _read_small(source, size)  # type: ignore[arg-type]
                if path.endswith(".pyc"):
                    content = fix_header(content, os.fspath(source), mtime)  # type: ignore[arg-type]
                elif mode & 0o111 or ".so" in path:
                    note(path, content)
                write(header + content + _ZERO_BLOCK[: -size % 512])
            else:
                if mode & 0o111 or ".so" in path:
                    note(path, _read_head(source))  # type: ignore[arg-type]
                write(header)
                _copy_file(sink, source, size)  # type: ignore[arg-type]
                write(_ZERO_BLOCK[: -size % 512])
        sink.write(_ZERO_BLOCK * 2)

    return dataclasses.replace(write_blob(dest, compression, feed), entries=len(seen),
                               machines=machines)


