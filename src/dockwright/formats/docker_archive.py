"""docker-archives: read one (`docker save`, `skopeo copy ... docker-archive:`) as a base image, and write one
for `docker load` / `podman load` (an OCI layout tar plus Docker's manifest.json, as Docker 25+ saves).

Its layers are usually uncompressed tars; each is streamed once through the layer compressor, which
checks it against the config's diff_id and gives a registry-ready gzip blob."""

from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from dockwright.formats.layout import OciArchive, blob_name
from dockwright.model import documents, mediatypes
from dockwright.model.blobs import FileBlob
from dockwright.model.digest import digest_bytes
from dockwright.model.documents import Descriptor
from dockwright.model.errors import DigestMismatchError, ImageFormatError, UsageError
from dockwright.model.image import BaseImage, BuildResult, Layer
from dockwright.model.platform import Platform
from dockwright.model.units import plural

if TYPE_CHECKING:
    from dockwright.formats import PublishContext
    from dockwright.model.reference import Reference

log = logging.getLogger("dockwright")
CHUNK = 1 << 20


def load_docker_archive(path: Path, workdir: Path) -> BaseImage:
    where = f"docker-archive://{path}"
    try:
        tar = tarfile.open(path)  # noqa: SIM115 - closed below
    except (OSError, tarfile.TarError) as exc:
        raise UsageError(f"{where}: cannot open the archive: {exc}") from None
    with tar:
        entry = _manifest_entry(tar, where)
        config_bytes = _read_small(tar, entry.get("Config"), where, mediatypes.MAX_CONFIG_BYTES)
        config = documents.parse_config(config_bytes, f"{where} config")
        names = entry.get("Layers")
        diff_ids = config["rootfs"]["diff_ids"]
        if not isinstance(names, list) or len(names) != len(diff_ids):
            raise ImageFormatError(f"{where}: manifest.json lists {plural(len(names or []), 'layer')}, "
                                   f"the config {plural(len(diff_ids), 'diff_id')}")
        layers = [_layer(tar, name, diff_id, workdir, where) for name, diff_id in zip(names, diff_ids, strict=True)]
    platform = Platform(config["os"], config["architecture"], config.get("variant"))
    tags = entry.get("RepoTags") or []
    name = tags[0] if tags and isinstance(tags[0], str) else None
    return BaseImage(platform, "docker", config, layers, {}, name, digest_bytes(config_bytes))


def _member(tar: tarfile.TarFile, name: object, where: str) -> tuple[tarfile.TarInfo, IO[bytes]]:
    if not isinstance(name, str):
        raise ImageFormatError(f"{where}: manifest.json names a file with a non-string {name!r}")
    try:
        info = tar.getmember(name)
        handle = tar.extractfile(info)
    except KeyError:
        raise ImageFormatError(f"{where}: manifest.json names {name!r}, which the archive lacks") from None
    if handle is None:
        raise ImageFormatError(f"{where}: {name!r} is not a regular file")
    return info, handle


def _read_small(tar: tarfile.TarFile, name: object, where: str, limit: int) -> bytes:
    info, handle = _member(tar, name, where)
    if info.size > limit:
        raise ImageFormatError(f"{where}: {name} is larger than {limit} bytes")
    return handle.read()


def _manifest_entry(tar: tarfile.TarFile, where: str) -> dict[str, Any]:
    names = {name.removeprefix("./") for name in tar.getnames()}
    if "manifest.json" not in names and "index.json" in names:
        path = where.removeprefix("docker-archive://")
        raise UsageError(f"{where}: {path} is an OCI archive, not a docker-archive (index.json, no manifest.json)",
                         hint=f"use oci-archive://{path}")
    try:
        manifest = json.loads(_read_small(tar, "manifest.json", where, mediatypes.MAX_MANIFEST_BYTES))
    except ValueError as exc:
        raise ImageFormatError(f"{where}: manifest.json is not valid JSON: {exc}") from None
    if not isinstance(manifest, list) or not manifest or not all(isinstance(e, dict) for e in manifest):
        raise ImageFormatError(f"{where}: manifest.json is not a list of images")
    if len(manifest) > 1:
        tags = ", ".join(t for e in manifest for t in e.get("RepoTags") or [])
        raise UsageError(f"{where} holds {len(manifest)} images ({tags}); save just one")
    return manifest[0]


def _layer(tar: tarfile.TarFile, name: str, diff_id: str, workdir: Path, where: str) -> Layer:
    from dockwright.layers.compress import Compression, compress_stream
    from dockwright.streams import inflate

    _, handle = _member(tar, name, where)
    target = workdir / f"base-{diff_id.split(':')[-1]}.tar.gz"
    layer = inflate(iter(lambda: handle.read(CHUNK), b""), f"layer {name} of {where}")
    blob = compress_stream(layer, target, Compression("gzip"))
    if blob.diff_id != diff_id:
        target.unlink(missing_ok=True)
        raise DigestMismatchError(f"{where}: layer {name} has content {blob.diff_id}, its config says {diff_id}")
    descriptor = Descriptor(mediatypes.DOCKER_LAYER_GZIP, blob.digest, blob.size)
    return Layer(descriptor, diff_id, FileBlob(target, blob.digest, blob.size, f"layer of {where}"))


class DockerArchive(OciArchive):
    """`-o type=docker,dest=FILE`: an OCI archive plus Docker's manifest.json (RepoTags from the tags)."""

    kind = "docker archive"

    def extra_files(self, result: BuildResult, context: PublishContext) -> dict[str, bytes]:
        return {"manifest.json": docker_manifest_json(result, context.tags)}


def docker_manifest_json(result: BuildResult, tags: list[Reference]) -> bytes:
    if len(result.images) != 1:
        raise UsageError("a docker archive holds one platform, but this build made "
                         f"{len(result.images)}", hint="pick one with --platform, or use -o type=oci")
    img = result.images[0]
    entry = {
        "Config": blob_name(img.config.descriptor.digest),
        "RepoTags": [t.familiar for t in tags if t.tag],
        "Layers": [blob_name(layer.descriptor.digest) for layer in img.layers],
    }
    return json.dumps([entry]).encode()
