"""OCI image layouts, in a directory or a tar archive (writing; reading a layout as a base is in resolve.py)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dockwright.files import StagedFile, atomic_write
from dockwright.formats.registry import RegistryBlob
from dockwright.model import mediatypes
from dockwright.model.blobs import BlobSource, BytesBlob
from dockwright.model.digest import check_digest
from dockwright.model.errors import DockwrightError, ImageFormatError, UsageError
from dockwright.model.image import BuildResult
from dockwright.model.reference import Reference
from dockwright.parallel import cancellable, run_parallel
from dockwright.progress import Progress
from dockwright.streams import ChunkReader

if TYPE_CHECKING:
    from dockwright.formats import PublishContext

log = logging.getLogger("dockwright")
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
REF_NAME = "org.opencontainers.image.ref.name"
IMAGE_NAME = "io.containerd.image.name"


class Sink(Protocol):
    def has_blob(self, digest: str, size: int) -> bool: ...

    def put_blob(self, digest: str, size: int, chunks: Iterator[bytes]) -> None: ...

    def put_file(self, name: str, data: bytes) -> None: ...


def prefetch(result: BuildResult, jobs: int, progress: Progress, cancel: threading.Event | None = None) -> None:
    """Download the registry blobs a local output needs, in parallel, into the cache, so that the
    archive is then written from local files at disk speed."""
    missing = [(digest, size, source) for digest, size, source in result.blobs()
               if isinstance(source, RegistryBlob) and source.cache is not None
               and not source.cache.has_blob(digest, size)]
    if not missing:
        return

    def fetch(digest: str, size: int, source: BlobSource) -> None:
        for _ in cancellable(progress.track(f"pull {digest[7:19]}", size, source.open()), cancel):
            pass

    run_parallel([partial(fetch, *blob) for blob in missing], jobs, "pull", cancel)


def write_layout(result: BuildResult, sink: Sink, tags: list[Reference],
                 existing_index: dict[str, Any] | None = None, progress: Progress | None = None) -> None:
    """Write blobs, then index.json naming the top document once per tag (or unnamed without tags)."""
    progress = progress or Progress()
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


def blob_name(digest: str) -> str:
    return "blobs/" + check_digest(digest, "blob").replace(":", "/", 1)


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
        return blob_name(digest) in self._names

    def put_blob(self, digest: str, size: int, chunks: Iterator[bytes]) -> None:
        name = blob_name(digest)
        self._mkdirs(name)
        reader = ChunkReader(chunks)
        self.tar.addfile(self._info(name, size), reader)  # type: ignore[arg-type]
        if reader.drain():
            raise ImageFormatError("a blob delivered more bytes than its descriptor declares")
        self._names.add(name)

    def put_file(self, name: str, data: bytes) -> None:
        self._mkdirs(name)
        self.tar.addfile(self._info(name, len(data)), io.BytesIO(data))
        self._names.add(name)

    def close(self) -> None:
        self.tar.close()


class DirSink:
    """An OCI layout directory: each blob written to a temporary name and renamed into place; the small files
    (index.json, oci-layout) are held until `flush`, which makes the image visible. `discard` removes the
    blobs this sink added."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[str, bytes] = {}
        self._added: list[Path] = []

    def has_blob(self, digest: str, size: int) -> bool:
        try:
            return (self.root / blob_name(digest)).stat().st_size == size
        except OSError:
            return False

    def put_blob(self, digest: str, size: int, chunks: Iterator[bytes]) -> None:
        path = self.root / blob_name(digest)
        atomic_write(path, chunks)
        self._added.append(path)

    def put_file(self, name: str, data: bytes) -> None:
        self._files[name] = data

    def flush(self) -> None:
        for name in sorted(self._files, key=lambda n: n == "index.json"):  # the index last
            atomic_write(self.root / name, [self._files[name]])
        self._added.clear()

    def discard(self) -> None:
        for path in self._added:
            with contextlib.suppress(OSError):
                path.unlink()
        self._added.clear()


def write_archive(result: BuildResult, dest: Path, tags: list[Reference], *, mtime: int,
                  progress: Progress | None = None, extra: dict[str, bytes] | None = None,
                  shown: Path | None = None) -> None:
    """Write an OCI archive (plus `extra` files, such as a docker-archive's manifest.json) to `dest`, named
    `shown` in errors. The caller owns `dest`: on a failure it may hold a partial archive (see `StagedFile`)."""
    try:
        with dest.open("wb") as handle:
            sink = TarSink(handle, mtime)
            write_layout(result, sink, tags, progress=progress)
            for name, data in (extra or {}).items():
                sink.put_file(name, data)
            sink.close()
    except OSError as exc:
        raise DockwrightError(f"cannot write {shown or dest}: {exc.strerror}") from None


class OciArchive:
    """`-o type=oci,dest=FILE`: a tar of an OCI layout."""

    needs_blobs = True
    visible_last = True
    kind = "OCI archive"

    def __init__(self, dest: Path) -> None:
        self.file = StagedFile(dest)

    def extra_files(self, result: BuildResult, context: PublishContext) -> dict[str, bytes]:
        """Files besides the layout's (a docker-archive adds its manifest.json)."""
        return {}

    def prepare(self, result: BuildResult, context: PublishContext) -> None:
        write_archive(result, self.file.temp, context.tags, mtime=context.mtime, progress=context.progress,
                      extra=self.extra_files(result, context), shown=self.file.dest)

    def commit(self, result: BuildResult, context: PublishContext) -> None:
        self.file.commit()
        log.info("wrote %s %s", self.kind, self.file.dest)

    def discard(self) -> None:
        self.file.discard()


class OciLayoutDir:
    """`-o type=oci,dest=DIR,tar=false`: the image added to an OCI layout directory. Blobs go in first; the
    new index.json is what makes the image visible, so it is written on commit."""

    needs_blobs = True
    visible_last = True

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._sink: DirSink | None = None

    def prepare(self, result: BuildResult, context: PublishContext) -> None:
        existing = None
        index_path = self.root / "index.json"
        if index_path.exists():
            try:
                existing = json.loads(index_path.read_bytes())
            except ValueError:
                raise ImageFormatError(f"{index_path} is not valid JSON; refusing to overwrite it") from None
            if not isinstance(existing, dict) or not isinstance(existing.get("manifests"), list):
                raise ImageFormatError(f"{index_path} is not an OCI image index; refusing to overwrite it")
        elif self.root.exists() and any(self.root.iterdir()):
            raise UsageError(f"{self.root} exists and is not an OCI layout (no index.json)",
                             hint="name an empty or new directory")
        self._sink = DirSink(self.root)
        self._new = not self.root.exists()
        try:
            write_layout(result, self._sink, context.tags, existing, context.progress)
        except OSError as exc:
            raise DockwrightError(f"cannot write OCI layout {self.root}: {exc.strerror}") from None

    def commit(self, result: BuildResult, context: PublishContext) -> None:
        assert self._sink is not None
        try:
            self._sink.flush()
        except OSError as exc:
            raise DockwrightError(f"cannot write OCI layout {self.root}: {exc.strerror}") from None
        log.info("wrote OCI layout %s", self.root)

    def discard(self) -> None:
        if self._sink is not None:
            self._sink.discard()
            if self._new:  # a layout this output began: nothing of it stays
                shutil.rmtree(self.root, ignore_errors=True)
