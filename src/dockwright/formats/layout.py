"""OCI image layouts, in a directory or a tar archive; a docker-archive is an OCI layout tar plus
Docker's manifest.json, which `docker load` and `podman load` read (the format Docker 25+ saves)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from dockwright.formats.registry import RegistryBlob
from dockwright.model import mediatypes
from dockwright.model.blobs import BlobSource, BytesBlob
from dockwright.model.digest import check_digest
from dockwright.model.errors import DockwrightError, ImageFormatError, UsageError
from dockwright.model.image import BuildResult
from dockwright.model.reference import Reference
from dockwright.parallel import run_parallel
from dockwright.progress import Progress

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
REF_NAME = "org.opencontainers.image.ref.name"
IMAGE_NAME = "io.containerd.image.name"


class Sink(Protocol):
    def has_blob(self, digest: str, size: int) -> bool: ...

    def put_blob(self, digest: str, size: int, chunks: Iterator[bytes]) -> None: ...

    def put_file(self, name: str, data: bytes) -> None: ...


def prefetch(result: BuildResult, jobs: int, progress: Progress) -> None:
    """Download the registry blobs a local output needs, in parallel, into the cache, so that the
    archive is then written from local files at disk speed."""
    missing = [(digest, size, source) for digest, size, source in result.blobs()
               if isinstance(source, RegistryBlob) and source.cache is not None
               and not source.cache.has_blob(digest, size)]
    if not missing:
        return

    def fetch(digest: str, size: int, source: BlobSource) -> None:
        for _ in progress.track(f"pull {digest[7:19]}", size, source.open()):
            pass

    run_parallel([partial(fetch, *blob) for blob in missing], jobs, "pull")


def write_layout(result: BuildResult, sink: Sink, tags: list[Reference],
                 existing_index: dict[str, Any] | None = None, progress: Progress | None = None) -> None:
    """Write blobs, then index.json naming the top document once per tag (or unnamed without tags)."""
    progress = progress or Progress("off")
    for digest, size, source in result.blobs():
        if not sink.has_blob(digest, size):
            chunks = source.open() if isinstance(source, BytesBlob) else progress.track(
                f"write {digest[7:19]}", size, source.open())
            sink.put_blob(digest, size, chunks)
    top = result.top.descriptor.to_json()
    entries: list[dict[str, Any]] = []
    for tag in tags:
        entries.append({**top, "annotations": {REF_NAME: tag.tag or "latest", IMAGE_NAME: str(tag)}})
    if not tags:
        entries.append(top)
    index = existing_index or {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": []}
    names = {e["annotations"][REF_NAME] for e in entries if "annotations" in e}
    # a tag moves to the new image; other tags stay, also when they name the same image
    kept = [m for m in index.get("manifests", []) if (ref := (m.get("annotations") or {}).get(REF_NAME)) not in names
            and (ref is not None or m.get("digest") != top["digest"])]
    index["manifests"] = kept + entries
    sink.put_file("oci-layout", OCI_LAYOUT)
    sink.put_file("index.json", json.dumps(index, indent=2, sort_keys=True).encode())


def docker_manifest_json(result: BuildResult, tags: list[Reference]) -> bytes:
    if len(result.images) != 1:
        raise UsageError("a docker archive holds one platform, but this build made "
                         f"{len(result.images)}", hint="pick one with --platform, or use -o type=oci")
    img = result.images[0]
    entry = {
        "Config": _blob_name(img.config.descriptor.digest),
        "RepoTags": [t.familiar for t in tags if t.tag],
        "Layers": [_blob_name(layer.descriptor.digest) for layer in img.layers],
    }
    return json.dumps([entry]).encode()


def _blob_name(digest: str) -> str:
    return "blobs/" + check_digest(digest, "blob").replace(":", "/", 1)


class _ChunkReader(io.RawIOBase):
    """File-like view of a chunk iterator, for tarfile.addfile."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = chunk
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def drain(self) -> None:
        """Consume the rest (this is where the source's digest check raises)."""
        for chunk in self._chunks:
            if chunk or self._buffer:
                raise ImageFormatError("a blob delivered more bytes than its descriptor declares")


class TarSink:
    """Writes a deterministic tar (sorted by the order written, fixed mtime, root-owned)."""

    def __init__(self, handle: Any, mtime: int) -> None:
        self.tar = tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 (closed in close())
        self.mtime = mtime
        self._names: set[str] = set()
        self._dirs: set[str] = set()

    def _info(self, name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.type, info.mtime = size, kind, self.mtime
        info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        return info

    def _mkdirs(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(len(parts)):
            folder = "/".join(parts[: i + 1])
            if folder not in self._dirs:
                self._dirs.add(folder)
                self.tar.addfile(self._info(folder, 0, tarfile.DIRTYPE))

    def has_blob(self, digest: str, size: int) -> bool:
        return _blob_name(digest) in self._names

    def put_blob(self, digest: str, size: int, chunks: Iterator[bytes]) -> None:
        name = _blob_name(digest)
        self._mkdirs(name)
        reader = _ChunkReader(chunks)
        self.tar.addfile(self._info(name, size), reader)  # type: ignore[arg-type]
        reader.drain()
        self._names.add(name)

    def put_file(self, name: str, data: bytes) -> None:
        self._mkdirs(name)
        self.tar.addfile(self._info(name, len(data)), io.BytesIO(data))
        self._names.add(name)

    def close(self) -> None:
        self.tar.close()


class DirSink:
    """An OCI layout directory: each file written to a temporary name and renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def has_blob(self, digest: str, size: int) -> bool:
        try:
            return (self.root / _blob_name(digest)).stat().st_size == size
        except OSError:
            return False

    def put_blob(self, digest: str, size: int, chunks: Iterator[bytes]) -> None:
        _atomic_write(self.root / _blob_name(digest), chunks)

    def put_file(self, name: str, data: bytes) -> None:
        _atomic_write(self.root / name, [data])


def _atomic_write(path: Path, chunks: Iterable[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with temp.open("wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def write_archive(result: BuildResult, dest: Path, tags: list[Reference], *, docker: bool, mtime: int,
                  progress: Progress | None = None) -> None:
    """Write an OCI archive (or, with docker=True, a docker-archive) to `dest` atomically."""
    manifest_json = docker_manifest_json(result, tags) if docker else None
    dest = dest.absolute()
    temp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        with temp.open("wb") as handle:
            sink = TarSink(handle, mtime)
            write_layout(result, sink, tags, progress=progress)
            if manifest_json is not None:
                sink.put_file("manifest.json", manifest_json)
            sink.close()
        os.replace(temp, dest)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise DockwrightError(f"cannot write {dest}: {exc.strerror}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def write_layout_dir(result: BuildResult, root: Path, tags: list[Reference], progress: Progress | None = None) -> None:
    """Add the image to the OCI layout at `root` (created when missing), tagged with `tags`."""
    existing = None
    index_path = root / "index.json"
    if index_path.exists():
        try:
            existing = json.loads(index_path.read_bytes())
        except ValueError:
            raise ImageFormatError(f"{index_path} is not valid JSON; refusing to overwrite it") from None
        if not isinstance(existing, dict) or not isinstance(existing.get("manifests"), list):
            raise ImageFormatError(f"{index_path} is not an OCI image index; refusing to overwrite it")
    elif root.exists() and any(root.iterdir()):
        raise UsageError(f"{root} exists and is not an OCI layout (no index.json)",
                         hint="name an empty or new directory")
    try:
        write_layout(result, DirSink(root), tags, existing, progress)
    except OSError as exc:
        raise DockwrightError(f"cannot write OCI layout {root}: {exc.strerror}") from None
