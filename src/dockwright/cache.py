"""Content-addressed local cache: built layers memoised by the fingerprint of their inputs, and blobs
by digest. Safe to share between concurrent builds: every write goes to a unique temporary file and
is renamed into place; a blob is trusted only if its size matches, and its digest is re-checked
whenever its bytes are streamed out (blobs.FileBlob)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dockwright.model.digest import check_digest, digest_bytes, is_digest
from dockwright.model.errors import DockwrightError
from dockwright.model.mediatypes import MAX_MANIFEST_BYTES

FORMAT_VERSION = "1"
ROOTFS = "rootfs"  # RUN's layer directories (dockwright.run.snapshots), by chain ID
TEMP_PREFIX = "tmp-"  # their temporary directories
STALE_TEMP_SECONDS = 3600


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "dockwright"


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
        self.root = Path(tempfile.mkdtemp(prefix="dockwright-")) if root is None else root
        self.blobs = self.root / "blobs" / "sha256"
        self.layers = self.root / "layers"
        self.indexes = self.root / "dirindex"  # layers/dirindex.py's per-layer indexes, by layer digest
        self.machines = self.root / "machines"  # the ELF machines in layers we wrote (layers/elf.py), by digest
        self.resolutions = self.root / "resolutions"  # base tags -> the digest they pointed at, last asked
        self.tmp = self.root / "tmp"
        self._temps: set[Path] = set()  # made by this process; what is left of them goes on close
        try:
            for folder in (self.blobs, self.layers, self.indexes, self.machines, self.resolutions, self.tmp):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        """Remove this process's leftover temporary files (an interrupted or failed write)."""
        for temp in list(self._temps):
            with contextlib.suppress(OSError):
                temp.unlink()
        self._temps.clear()
        if self._temporary:
            shutil.rmtree(self.root, ignore_errors=True)

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
        try:
            return self.blob_path(digest).stat().st_size == size
        except OSError:
            return False

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
    snapshots = root / ROOTFS
    if snapshots.is_dir():
        for path in snapshots.iterdir():
            if not path.name.startswith(TEMP_PREFIX):
                with contextlib.suppress(OSError):
                    found.append((path, _tree_size(path), path.stat().st_mtime))
    return found


def _tree_size(path: Path) -> int:
    total = 0
    for folder, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def disk_usage(root: Path) -> str:
    entries = _entries(root)
    blobs = sum(1 for path, _, _ in entries if path.parent.name == "sha256")
    snapshots = sum(1 for path, _, _ in entries if path.parent.name == ROOTFS)
    total = sum(size for _, size, _ in entries)  # layer records: built layers' and directory indexes
    return (f"{root}: {blobs} blobs, {len(entries) - blobs - snapshots} layer records, {total} bytes "
            f"(with {snapshots} layer directories for RUN)")


def prune(root: Path, keep_bytes: int) -> tuple[int, int]:
    """Remove the least recently used entries until at most `keep_bytes` remain. Records whose blob is
    gone are ignored by lookups, so removal order cannot leave a torn entry."""
    entries = sorted(_entries(root), key=lambda item: item[2])
    total = sum(size for _, size, _ in entries)
    removed = freed = 0
    for path, size, _ in entries:
        if total <= keep_bytes:
            break
        with contextlib.suppress(OSError):
            if path.parent.name == ROOTFS:  # renamed away first: a build never sees half of one
                doomed = path.with_name(f"{TEMP_PREFIX}pruned-{path.name}")
                os.rename(path, doomed)
                shutil.rmtree(doomed)
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
    for path in (root / ROOTFS).glob(f"{TEMP_PREFIX}*"):
        with contextlib.suppress(OSError):  # a killed RUN's directories, unless something is still mounted there
            if path.stat().st_mtime < cutoff and f" {path}/" not in mounts:
                shutil.rmtree(path)
    return removed, freed
