"""Push a built image to one or more registry tags.

Order, as the spec wants it: first every check at once (does each tag already point at the image, which
blobs does each target repository have), then the missing blobs (in parallel; one in another repository
of the same registry is mounted, one on another registry is streamed registry to registry), then the
platform manifests of an index by digest, then the tags. A failure before the tags leaves no tag pointing
anywhere new. Each step costs round trips, which a registry in another region makes expensive: no check
waits for another, and a tagged manifest goes up once, under its tag.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from dockwright.model.blobs import BlobSource, FileBlob
from dockwright.model.errors import DigestMismatchError, DockwrightError, UsageError
from dockwright.model.image import BuildResult
from dockwright.model.mediatypes import FOREIGN_LAYER_TYPES
from dockwright.model.reference import Reference
from dockwright.model.units import human_size, plural
from dockwright.parallel import cancellable, run_parallel
from dockwright.progress import Progress

if TYPE_CHECKING:
    from dockwright.cache import Cache
    from dockwright.formats import PublishContext
    from dockwright.registry import Registries, RegistryClient

log = logging.getLogger("dockwright")
CHECK_JOBS = 8  # HEAD requests at once, at least: small, and each one a round trip


@dataclass
class PushStats:
    uploaded: int = 0
    mounted: int = 0
    existing: int = 0
    bytes_uploaded: int = 0


@dataclass(frozen=True)
class _Target:
    client: RegistryClient
    repository: str


def push(result: BuildResult, tags: list[Reference], registries: Registries, jobs: int,
         progress: Progress | None = None) -> tuple[list[str], PushStats]:
    """Push to every tag; returns the `REF@DIGEST` lines and what moved."""
    stats = PushStats()
    progress = progress or Progress()
    top = result.top
    targets: dict[tuple[str, str], _Target] = {}
    for tag in tags:
        targets.setdefault((tag.api_host, tag.repository), _Target(registries.client(tag.api_host), tag.repository))
    heads = [(target, blob) for target in targets.values() for blob in _blobs_only(result)]
    answers = run_parallel([*(partial(_already_there, target, tags, top.descriptor.digest)
                              for target in targets.values()),
                            *(partial(target.client.blob_exists, target.repository, blob[0])
                              for target, blob in heads)], max(jobs, CHECK_JOBS), "check", registries.cancel)
    pending = [target for target, there in zip(targets.values(), answers[:len(targets)], strict=True) if not there]
    present = answers[len(targets):]
    missing = [(target, *blob) for (target, blob), has in zip(heads, present, strict=True)
               if target in pending and not has]
    stats.existing = sum(1 for (target, _), has in zip(heads, present, strict=True) if target in pending and has)
    run_parallel([partial(_send_blob, stats, progress, registries.cancel, *job) for job in missing], jobs, "push",
                 registries.cancel)
    for target in pending:
        if result.index is not None:
            for img in result.images:
                target.client.put_manifest(target.repository, img.manifest.descriptor.digest,
                                           img.manifest.data, img.manifest.descriptor.media_type)
        if not any(tag.tag for tag in _tags_of(target, tags)):  # by digest only: no tag will hold it
            target.client.put_manifest(target.repository, top.descriptor.digest, top.data,
                                       top.descriptor.media_type)
    if not pending:
        log.info("nothing to push: every tag already points at %s", top.descriptor.digest)
    lines = []
    for tag in tags:
        target = targets[(tag.api_host, tag.repository)]
        if target in pending and tag.tag:
            target.client.put_manifest(tag.repository, tag.tag, top.data, top.descriptor.media_type)
        lines.append(f"{tag.with_tag(tag.tag)}@{top.descriptor.digest}")
    return lines, stats


class RegistryPush:
    """`--push` / `-o type=registry`: to every tag. Nothing to prepare: the push itself puts the tags last."""

    needs_blobs = False
    visible_last = False

    def prepare(self, result: BuildResult, context: PublishContext) -> None:
        if not context.tags:
            raise UsageError("a push needs at least one tag to push to")

    def commit(self, result: BuildResult, context: PublishContext) -> None:
        assert context.registries is not None
        lines, stats = push(result, context.tags, context.registries, context.jobs, context.progress)
        log.info("pushed: %s uploaded (%s), %d mounted, %d already there", plural(stats.uploaded, "blob"),
                 human_size(stats.bytes_uploaded), stats.mounted, stats.existing)
        context.notes.extend(lines)

    def discard(self) -> None:
        pass


def _tags_of(target: _Target, tags: list[Reference]) -> list[Reference]:
    return [t for t in tags if (t.api_host, t.repository) == (target.client.host, target.repository)]


def _already_there(target: _Target, tags: list[Reference], digest: str) -> bool:
    """True when every tag of this repository already points at `digest` ("nothing to push")."""
    for tag in _tags_of(target, tags):
        found = target.client.head_manifest(target.repository, tag.identifier)
        if found is None or found[0] != digest:
            return False
    return True


def _blobs_only(result: BuildResult) -> list[tuple[str, int, BlobSource]]:
    """Layers and configs; manifests and the index go up as manifests, not blobs. Foreign layers (Windows
    base layers with `urls`, which registries serve from elsewhere and may not accept) are not pushed."""
    skipped = {img.manifest.descriptor.digest for img in result.images}
    if result.index:
        skipped.add(result.index.descriptor.digest)
    skipped.update(layer.descriptor.digest for img in result.images for layer in img.layers
                   if layer.descriptor.urls and layer.descriptor.media_type in FOREIGN_LAYER_TYPES)
    return [blob for blob in result.blobs() if blob[0] not in skipped]


def _send_blob(stats: PushStats, progress: Progress, cancel: threading.Event | None, target: _Target, digest: str,
               size: int, source: BlobSource) -> None:
    """A blob the target repository does not have: mounted from the repository it came from when that is
    on the same registry, else uploaded."""
    client, repository = target.client, target.repository
    same_registry = isinstance(source, RegistryBlob) and source.host == client.host
    if same_registry and client.mount_blob(repository, digest, source.repository):  # type: ignore[union-attr]
        log.info("mounted %s from %s into %s", digest[:19], source.repository, repository)  # type: ignore[union-attr]
        stats.mounted += 1
        return
    label = f"push {digest[7:19]} to {client.host}/{repository}"
    client.upload_blob(repository, digest, size,
                       lambda: cancellable(progress.track(label, size, source.open()), cancel))
    stats.uploaded += 1
    stats.bytes_uploaded += size


@dataclass(frozen=True)
class RegistryBlob:
    """A blob that lives in a registry repository; can be mounted or streamed without touching disk.

    With a cache, a blob that is read (for an archive output, a cross-registry push, COPY --from) is
    kept there as it streams past, and later reads come from the cache."""

    client: RegistryClient
    repository: str
    digest: str
    size: int
    cache: Cache | None = None
    offline: bool = False  # --pull never: only the cache may answer

    @property
    def host(self) -> str:
        return self.client.host

    def open(self) -> Iterator[bytes]:
        if self.offline and (self.cache is None or not self.cache.has_blob(self.digest, self.size)):
            raise DockwrightError(f"--pull never: blob {self.digest} of {self.host}/{self.repository} "
                                  "is not in the cache",
                                  hint="build once with --pull missing or always while the registry can be reached")
        if self.cache is None:
            yield from self.client.open_blob(self.repository, self.digest, self.size)
            return
        if self.cache.has_blob(self.digest, self.size):
            cached = FileBlob(self.cache.blob_path(self.digest), self.digest, self.size, "cached blob")
            self.cache.touch(cached.path)
            try:
                yield from cached.open()
            except DigestMismatchError as exc:
                self.cache.discard_blob(self.digest)
                raise DigestMismatchError(exc.message, hint="the corrupt cached copy was removed; run the "
                                          "build again") from None
            return
        temp = self.cache.temp_path(".blob")
        try:
            with temp.open("wb") as handle:
                for chunk in self.client.open_blob(self.repository, self.digest, self.size):
                    handle.write(chunk)
                    yield chunk
            self.cache.adopt_blob(temp, self.digest)
        finally:
            temp.unlink(missing_ok=True)
