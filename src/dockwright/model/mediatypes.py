"""Media types of manifests, indexes, configs and layers, and the Docker/OCI format families."""

from __future__ import annotations

from typing import Literal

from dockwright.model.errors import UsageError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
FOREIGN_LAYER_TYPES = (DOCKER_LAYER_FOREIGN, OCI_LAYER_NONDIST_GZIP)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ACCEPT_MANIFESTS = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 8 * 1024 * 1024

Format = Literal["oci", "docker"]

_FORMAT_TYPES: dict[str, dict[str, str]] = {
    "oci": {"manifest": OCI_MANIFEST, "index": OCI_INDEX, "config": OCI_CONFIG, "gzip": OCI_LAYER_GZIP},
    "docker": {"manifest": DOCKER_MANIFEST, "index": DOCKER_LIST, "config": DOCKER_CONFIG,
               "gzip": DOCKER_LAYER_GZIP},
}
# Layer media types, per family, for converting a base layer to the other family (same bytes).
_LAYER_EQUIVALENT = {
    ("docker", OCI_LAYER_GZIP): DOCKER_LAYER_GZIP,
    ("docker", OCI_LAYER_NONDIST_GZIP): DOCKER_LAYER_FOREIGN,
    ("oci", DOCKER_LAYER_GZIP): OCI_LAYER_GZIP,
    ("oci", DOCKER_LAYER_FOREIGN): OCI_LAYER_NONDIST_GZIP,
}


def media_type(fmt: Format, kind: Literal["manifest", "index", "config", "gzip"]) -> str:
    return _FORMAT_TYPES[fmt][kind]


def format_of(manifest_media_type: str) -> Format:
    return "docker" if manifest_media_type in (DOCKER_MANIFEST, DOCKER_LIST) else "oci"


def layer_media_type_for(fmt: Format, layer_type: str) -> str:
    """The layer media type to use in a `fmt` manifest for a layer of type `layer_type`."""
    converted = _LAYER_EQUIVALENT.get((fmt, layer_type), layer_type)
    if fmt == "docker" and converted in (OCI_LAYER_ZSTD, OCI_LAYER_TAR):
        raise UsageError(
            f"a {converted} layer cannot go into a Docker-format manifest",
            hint="use --format oci (or --compression gzip)",
        )
    return converted
