"""Content-addressed local cache: built layers memoised by the fingerprint of their inputs, and blobs
by digest. Safe to share between concurrent builds: every write goes to a unique temporary file and
is renamed into place; a blob is trusted only if its size matches, and its digest is re-checked
whenever its bytes are streamed out (blobs.FileBlob).

It looks after its size: when a build closes it, the least recently used entries go until it holds at most
its cap (cache_cap). A blob a build is using is never removed under it: every build holds a shared lock on
CACHE/lock while it runs, and trimming needs the exclusive lock, taken without waiting: when other builds are
running, the last of them to finish trims."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from dockwright.model.digest import check_digest, digest_bytes, is_digest
from dockwright.model.errors import DockwrightError
from dockwright.model.mediatypes import MAX_MANIFEST_BYTES
from dockwright.model.units import human_size, parse_size, plural

log = logging.getLogger("dockwright")

FORMAT_VERSION = "1"
ROOTFS = "rootfs"  # RUN's layer directories (dockwright.run.snapshots), by chain ID
ROOTFS_USER = "rootfs-user"  # the same for rootless RUN (overlayfs marks in user.* xattrs)
ROOTFS_CHROOT = "rootfs-chroot"  # --isolation chroot's whole root file systems (run/chroot.py), by chain ID
SNAPSHOTS = (ROOTFS, ROOTFS_USER, ROOTFS_CHROOT)
TEMP_PREFIX = "tmp-"  # their temporary directories
SIZE_PREFIX = ".size-"  # their sizes (cache._snapshot_size)
STALE_TEMP_SECONDS = 3600
RUN_CACHE = "run-cache"  # RUN --mount=type=cache directories: the user's, never trimmed
LOCK = "lock"
DEFAULT_CAP = 10 * 2**30
CAP_VARIABLE = "DOCKWRIGHT_CACHE_MAX"


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "dockwright"


def cache_cap(root: Path) -> int:
    """The most the cache at `root` keeps after a build: $DOCKWRIGHT_CACHE_MAX (a SIZE such as 5GB or 10GiB),
    else the smaller of 10 GiB and a tenth of the free space on its file system."""
    setting = _cap_setting()
    if setting is not None:
        return setting
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        return DEFAULT_CAP
    return min(DEFAULT_CAP, free // 10)


def _cap_setting() -> int | None:
    """$DOCKWRIGHT_CACHE_MAX in bytes, None when unset (a bad value is a UsageError)."""
    text = os.environ.get(CAP_VARIABLE)
    return parse_size(text, CAP_VARIABLE) if text else None


@dataclass(frozen=True)
class Resolution:
    """A base tag's answer: the digest of the manifest or index it pointed at, and its media type."""

    digest: str
    media_type: str | None = None


@dataclass(frozen=True)
class CachedLayer:
    digest: str
    size: int
    diff_id: str
    media_type_key: str  # compression algorithm ("gzip", "zstd", "none")
    path: Path


class Cache:
    """`root=None` gives a private temporary cache that is removed on close (--no-cache)."""

    def __init__(self, root: Path | None) -> None:
        self._temporary = root is None
        # absolute: RUN's overlay mount options and the runtime's spec name paths below it
        self.root = Path(tempfile.mkdtemp(prefix="dockwright-")) if root is None else root.absolute()
        self.blobs = self.root / "blobs" / "sha256"
        self.layers = self.root / "layers"
        self.indexes = self.root / "dirindex"  # layers/dirindex.py's per-layer indexes, by layer digest
        self.machines = self.root / "machines"  # the ELF machines in layers we wrote (layers/elf.py), by digest
        self.resolutions = self.root / "resolutions"  # base tags -> the digest they pointed at, last asked
        self.tmp = self.root / "tmp"
        self._temps: set[Path] = set()  # made by this process; what is left of them goes on close
        self._lock: int | None = None
        if not self._temporary:
            _cap_setting()  # a bad DOCKWRIGHT_CACHE_MAX fails now, not after the build
        try:
            for folder in (self.blobs, self.layers, self.indexes, self.machines, self.resolutions, self.tmp):
                folder.mkdir(parents=True, exist_ok=True)
            if not self._temporary:
                self._lock = _lock(self.root, fcntl.LOCK_SH)  # waits only while `cache prune` runs
                self._unlock = weakref.finalize(self, os.close, self._lock)  # a cache never closed
        except OSError as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        """Remove this process's leftover temporary files (an interrupted or failed write), then trim the cache
        to its cap unless another build is using it."""
        for temp in list(self._temps):
            with contextlib.suppress(OSError):
                temp.unlink()
        self._temps.clear()
        if self._temporary:
            shutil.rmtree(self.root, ignore_errors=True)
        if self._lock is not None:
            lock, self._lock = self._lock, None
            self._unlock.detach()
            try:
                self._trim(lock)
            finally:
                os.close(lock)

    def _trim(self, lock: int) -> None:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # from shared: no other build holds it
        except OSError:
            log.debug("cache %s: other builds are using it; the last to finish trims it", self.root)
            return
        cap = cache_cap(self.root)
        removed, freed = _remove_least_recent(self.root, cap)
        if removed:
            log.info("cache: removed %s (%s) to stay under its cap of %s", plural(removed, "entry", "entries"),
                     human_size(freed), human_size(cap))

    def _error(self, exc: OSError) -> DockwrightError:
        return DockwrightError(f"cannot write to the cache {self.root}: {exc.strerror}",
                               hint="free some space, or use --cache-dir on another disk (or --no-cache)")

    def temp_path(self, suffix: str = "") -> Path:
        """A unique path in the cache's filesystem (so a rename into place is atomic)."""
        try:
            fd, name = tempfile.mkstemp(dir=self.tmp, suffix=suffix)
        except OSError as exc:
            raise self._error(exc) from None
        os.close(fd)
        path = Path(name)
        self._temps.add(path)
        return path

    def _write_temp(self, data: bytes, suffix: str = "") -> Path:
        temp = self.temp_path(suffix)
        try:
            temp.write_bytes(data)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise self._error(exc) from None
        return temp

    def _put_json(self, path: Path, data: object) -> None:
        """Write a small record atomically: readers in other processes see the old one or the new one."""
        temp = self._write_temp(json.dumps(data).encode(), ".json")
        try:
            os.replace(temp, path)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise self._error(exc) from None
        finally:
            self._temps.discard(temp)

    def blob_path(self, digest: str) -> Path:
        return self.blobs / check_digest(digest, "cache").split(":", 1)[1]

    def has_blob(self, digest: str, size: int) -> bool:
        """Whether the blob is here (a hit counts as a use: trimming keeps what was used last)."""
        path = self.blob_path(digest)
        try:
            found = path.stat().st_size == size
        except OSError:
            return False
        if found:
            self.touch(path)
        return found

    def adopt_blob(self, temp: Path, digest: str) -> Path:
        """Move a verified temporary file into the cache under its digest."""
        final = self.blob_path(digest)
        os.replace(temp, final)
        self._temps.discard(temp)
        return final

    def put_bytes(self, data: bytes, digest: str) -> None:
        """Store a small verified document (a manifest) under its digest."""
        self.adopt_blob(self._write_temp(data), digest)

    def lookup_layer(self, fingerprint: str) -> CachedLayer | None:
        entry = self.layers / f"{fingerprint}.json"
        try:
            data = json.loads(entry.read_text())
            if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION or not all(
                is_digest(data.get(k, "")) for k in ("digest", "diff_id")
            ):
                raise ValueError("stale entry")
            layer = CachedLayer(data["digest"], int(data["size"]), data["diff_id"], data["compression"],
                                self.blob_path(data["digest"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not self.has_blob(layer.digest, layer.size):
            with contextlib.suppress(OSError):
                entry.unlink()
            return None
        self.touch(entry, layer.path)
        return layer

    @staticmethod
    def touch(*paths: Path) -> None:
        """Mark entries as just used: prune removes the least recently used first (by mtime, since
        access times are unreliable on most mounts)."""
        for path in paths:
            with contextlib.suppress(OSError):
                os.utime(path)

    def store_layer(self, fingerprint: str, temp: Path, digest: str, size: int, diff_id: str,
                    compression: str) -> CachedLayer:
        layer = CachedLayer(digest, size, diff_id, compression, self.adopt_blob(temp, digest))
        self.record_layer(fingerprint, layer)
        return layer

    def record_layer(self, fingerprint: str, layer: CachedLayer) -> None:
        """File a layer already in the cache under (another) fingerprint."""
        record = {"version": FORMAT_VERSION, "digest": layer.digest, "size": layer.size, "diff_id": layer.diff_id,
                  "compression": layer.media_type_key}
        self._put_json(self.layers / f"{fingerprint}.json", record)

    def lookup_json(self, folder: Path, digest: str) -> object | None:
        """A small JSON record filed under a digest in `folder` (self.indexes, self.machines), or None."""
        entry = folder / check_digest(digest, "cache").split(":", 1)[1]
        try:
            data = json.loads(entry.read_bytes())
        except (OSError, ValueError):
            return None
        self.touch(entry)
        return data

    def store_json(self, folder: Path, digest: str, data: object) -> None:
        entry = folder / check_digest(digest, "cache").split(":", 1)[1]
        self._put_json(entry, data)

    def resolution(self, name: str) -> Resolution | None:
        """What the tag `name` (REGISTRY/REPOSITORY:TAG) last resolved to, if this cache saw it."""
        try:
            data = json.loads(self._resolution_path(name).read_text())
            if data.get("version") != FORMAT_VERSION or data.get("name") != name or not is_digest(data["digest"]):
                return None
            return Resolution(data["digest"], data.get("media_type"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def record_resolution(self, name: str, resolution: Resolution) -> None:
        """Remember (atomically) that the tag `name` points at `resolution.digest`."""
        record = {"version": FORMAT_VERSION, "name": name, "digest": resolution.digest,
                  "media_type": resolution.media_type}
        self._put_json(self._resolution_path(name), record)

    def _resolution_path(self, name: str) -> Path:
        return self.resolutions / f"{hashlib.sha256(name.encode()).hexdigest()}.json"

    def document(self, digest: str) -> bytes | None:
        """A manifest or index kept under its digest, re-verified (a corrupt copy is removed)."""
        path = self.blob_path(digest)
        try:
            data = path.read_bytes() if path.stat().st_size <= MAX_MANIFEST_BYTES else b""
        except OSError:
            return None
        if digest_bytes(data) != digest:
            self.discard_blob(digest)
            return None
        self.touch(path)
        return data

    def discard_blob(self, digest: str) -> None:
        with contextlib.suppress(OSError):
            self.blob_path(digest).unlink()


def _entries(root: Path) -> list[tuple[Path, int, float]]:
    """(path, bytes, last use) of every entry: blobs, records, and RUN's layer directories (ROOTFS)."""
    found = []
    for folder in (root / "blobs" / "sha256", root / "layers", root / "dirindex", root / "machines"):
        if folder.is_dir():
            for path in folder.iterdir():
                with contextlib.suppress(OSError):
                    st = path.stat()
                    found.append((path, st.st_size, st.st_mtime))
    for snapshots in (root / name for name in SNAPSHOTS):
        if snapshots.is_dir():
            for path in snapshots.iterdir():
                if not path.name.startswith((TEMP_PREFIX, SIZE_PREFIX)):
                    with contextlib.suppress(OSError):
                        found.append((path, _snapshot_size(path), path.stat().st_mtime))
    return found


def _snapshot_size(path: Path) -> int:
    """A RUN layer directory's size, walked once and then remembered beside it (`.size-NAME`): a layer
    directory never changes once in place, and walking them all made every build's trim slow."""
    memo = path.with_name(SIZE_PREFIX + path.name)
    with contextlib.suppress(OSError, ValueError):
        return int(memo.read_text())
    size = _tree_size(path)
    temp = memo.with_name(f"{memo.name}.{os.getpid()}")
    with contextlib.suppress(OSError):
        temp.write_text(str(size))
        os.replace(temp, memo)
    return size


def _tree_size(path: Path) -> int:
    total = 0
    for folder, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def disk_usage(root: Path) -> str:
    """`dockwright cache du`: the total, the cap, and a line per kind of entry."""
    built: set[str] = set()
    for record in _files(root / "layers"):
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
            built.add(str(json.loads(record.read_bytes()).get("digest", "")).removeprefix("sha256:"))
    kinds: dict[str, list[int]] = {name: [0, 0] for name in _KINDS}

    def add(kind: str, size: int) -> None:
        kinds[kind][0] += 1
        kinds[kind][1] += size

    for path, size, _ in _entries(root):
        if path.parent.name == "sha256":
            add("layers built" if path.name in built else "manifests and configs" if _is_json(path)
                else "base image layers", size)
        else:
            add("RUN layer directories" if path.parent.name in SNAPSHOTS else "layer records and indexes", size)
    for path in _files(root / "resolutions"):
        with contextlib.suppress(OSError):
            add("layer records and indexes", path.stat().st_size)
    for path in (*_files(root / "tmp"), *(p for name in SNAPSHOTS for p in (root / name).glob(f"{TEMP_PREFIX}*"))):
        with contextlib.suppress(OSError):
            add("temporary files", _tree_size(path) if path.is_dir() else path.stat().st_size)
    for path in _files(root / RUN_CACHE):
        if path.is_dir() and not path.is_symlink():  # beside each: its .lock and .make files
            add("RUN cache mounts (never trimmed)", _tree_size(path))
    total = sum(size for count, size in kinds.values())
    how = f"${CAP_VARIABLE}" if os.environ.get(CAP_VARIABLE) else \
        f"the smaller of 10 GiB and a tenth of the free space; ${CAP_VARIABLE} sets it"
    lines = [f"{root}: {human_size(total)} (cap {human_size(cache_cap(root))}: {how})"]
    for name, (count, size) in kinds.items():
        lines.append(f"  {name:<33} {human_size(size):>10}  {plural(count, *_KINDS[name])}")
    return "\n".join(lines)


_KINDS = {"layers built": ("blob", "blobs"), "base image layers": ("blob", "blobs"),
          "manifests and configs": ("blob", "blobs"), "RUN layer directories": ("directory", "directories"),
          "layer records and indexes": ("file", "files"), "temporary files": ("entry", "entries"),
          "RUN cache mounts (never trimmed)": ("directory", "directories")}


def _files(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _is_json(path: Path) -> bool:
    """A manifest, index or config (JSON documents) rather than a layer (gzip, zstd or tar bytes)."""
    try:
        with path.open("rb") as file:
            return file.read(1) == b"{"
    except OSError:
        return False


def _lock(root: Path, kind: int) -> int:
    fd = os.open(root / LOCK, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)  # flock needs no write access
    try:
        fcntl.flock(fd, kind)
    except BaseException:
        os.close(fd)
        raise
    return fd


def prune(root: Path, keep_bytes: int) -> tuple[int, int]:
    """`dockwright cache prune`: remove the least recently used entries until at most `keep_bytes` remain.
    Returns (entries removed, bytes freed). Fails at once, removing nothing, while a build uses the cache."""
    if not root.is_dir():
        return 0, 0
    try:
        fd = _lock(root, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DockwrightError(f"the cache {root} is in use by a running build",
                              hint="prune again when it has finished (builds trim the cache to its cap "
                                   "themselves)") from None
    try:
        return _remove_least_recent(root, keep_bytes)
    finally:
        os.close(fd)


def _remove_least_recent(root: Path, keep_bytes: int) -> tuple[int, int]:
    """Remove the least recently used entries until at most `keep_bytes` remain (the caller holds the
    exclusive lock). Records whose blob is gone are ignored by lookups, so removal order cannot leave a torn
    entry."""
    entries = sorted(_entries(root), key=lambda item: item[2])
    total = sum(size for _, size, _ in entries)
    removed = freed = 0
    for path, size, _ in entries:
        if total <= keep_bytes:
            break
        with contextlib.suppress(OSError):
            if path.parent.name in SNAPSHOTS:  # renamed away first: a build never sees half of one
                doomed = path.with_name(f"{TEMP_PREFIX}pruned-{path.name}")
                os.rename(path, doomed)
                shutil.rmtree(doomed)
                path.with_name(SIZE_PREFIX + path.name).unlink(missing_ok=True)
            else:
                path.unlink()
            removed += 1
            freed += size
            total -= size
    cutoff = time.time() - STALE_TEMP_SECONDS  # temporary files of builds that were killed
    for path in (root / "tmp").glob("*"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
    mounts = Path("/proc/mounts").read_text() if Path("/proc/mounts").exists() else ""
    for path in (p for name in SNAPSHOTS for p in (root / name).glob(f"{TEMP_PREFIX}*")):
        with contextlib.suppress(OSError):  # a killed RUN's directories, unless something is still mounted there
            if path.stat().st_mtime < cutoff and f" {path}/" not in mounts:
                shutil.rmtree(path)
    return removed, freed
