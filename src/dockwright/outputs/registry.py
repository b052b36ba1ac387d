"""Push a built image to one or more registry tags.

Order, as the spec wants it: all blobs to every target repository (in parallel; a blob the registry
already has is skipped, one in another repository of the same registry is mounted, one on another
registry is streamed registry to registry), then the platform manifests by digest, then the index,
then the tags. A failure before the tags leaves no tag pointing anywhere new.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from dockwright.blobs import BlobSource, RegistryBlob
from dockwright.build import BuildResult
from dockwright.image import FOREIGN_LAYER_TYPES
from dockwright.outputs import run_parallel
from dockwright.outputs.layout import all_blobs
from dockwright.progress import Progress
from dockwright.reference import Reference

if TYPE_CHECKING:
    from dockwright.registry import Registries, RegistryClient

log = logging.getLogger("dockwright")


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
    progress = progress or Progress("off")
    top = result.top
    targets: dict[tuple[str, str], _Target] = {}
    for tag in tags:
        targets.setdefault((tag.api_host, tag.repository), _Target(registries.client(tag.api_host), tag.repository))
    pending = [t for t in targets.values() if not _already_there(t, tags, top.descriptor.digest)]
    if pending:
        blobs = [(target, digest, size, source) for target in pending for digest, size, source in _blobs_only(result)]
        run_parallel([partial(_ensure_blob, stats, progress, *job) for job in blobs], jobs, "push")
        for target in pending:
            for img in result.images:
                if result.index is not None:
                    target.client.put_manifest(target.repository, img.manifest.descriptor.digest,
                                               img.manifest.data, img.manifest.descriptor.media_type)
            target.client.put_manifest(target.repository, top.descriptor.digest, top.data,
                                       top.descriptor.media_type)
    else:
        log.info("nothing to push: every tag already points at %s", top.descriptor.digest)
    lines = []
    for tag in tags:
        target = targets[(tag.api_host, tag.repository)]
        if target in pending and tag.tag:
            target.client.put_manifest(tag.repository, tag.tag, top.data, top.descriptor.media_type)
        lines.append(f"{tag.with_tag(tag.tag)}@{top.descriptor.digest}")
    return lines, stats


def _already_there(target: _Target, tags: list[Reference], digest: str) -> bool:
    """True when every tag of this repository already points at `digest` ("nothing to push")."""
    mine = [t for t in tags if (t.api_host, t.repository) == (target.client.host, target.repository)]
    for tag in mine:
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
    return [blob for blob in all_blobs(result) if blob[0] not in skipped]


def _ensure_blob(stats: PushStats, progress: Progress, target: _Target, digest: str, size: int,
                 source: BlobSource) -> None:
    client, repository = target.client, target.repository
    if client.blob_exists(repository, digest):
        stats.existing += 1
        return
    same_registry = isinstance(source, RegistryBlob) and source.host == client.host
    if same_registry and client.mount_blob(repository, digest, source.repository):  # type: ignore[union-attr]
        log.info("mounted %s from %s into %s", digest[:19], source.repository, repository)  # type: ignore[union-attr]
        stats.mounted += 1
        return
    label = f"push {digest[7:19]} to {client.host}/{repository}"
    client.upload_blob(repository, digest, size, lambda: progress.track(label, size, source.open()))
    stats.uploaded += 1
    stats.bytes_uploaded += size
