"""The OCI/Docker image model: media types, descriptors, platforms, strict manifest/index parsing."""

from __future__ import annotations

import json
import platform as _platform
from dataclasses import dataclass, field
from typing import Any, Literal

from dockwright.digest import check_digest, digest_bytes
from dockwright.errors import ImageFormatError, UsageError

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


# --------------------------------------------------------------------------- platforms

_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm",
                 "i386": "386", "i686": "386"}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT], e.g. linux/amd64")
        os_, arch = parts[0], _ARCH_ALIASES.get(parts[1], parts[1])
        variant = parts[2] if len(parts) == 3 else None
        known_os = {"linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "illumos",
                    "aix", "plan9", "js", "wasip1", "android", "ios", "dragonfly", "zos"}
        known_arch = {"amd64", "arm64", "arm", "386", "ppc64le", "ppc64", "s390x", "riscv64", "mips64le",
                      "mips64", "mipsle", "mips", "loong64", "wasm"}
        if os_ not in known_os or arch not in known_arch:
            raise UsageError(f"unknown platform {text!r}", hint="e.g. linux/amd64, linux/arm64/v8, linux/arm/v7")
        return cls(os_, arch, variant)

    @classmethod
    def from_json(cls, data: Any, where: str = "document") -> Platform:
        if not isinstance(data, dict) or not isinstance(data.get("os"), str) or not isinstance(
            data.get("architecture"), str
        ):
            raise ImageFormatError(f"invalid platform object {str(data)[:200]} in {where}")
        return cls(data["os"], data["architecture"], data.get("variant") or None, data.get("os.version"))

    @classmethod
    def host(cls) -> Platform:
        machine = _platform.machine().lower()
        if machine.startswith("armv"):
            return cls("linux", "arm", "v" + machine[4])
        return cls("linux", _ARCH_ALIASES.get(machine, machine))

    def normalized(self) -> tuple[str, str, str | None]:
        variant = self.variant
        if self.architecture == "arm64" and variant in (None, "v8"):
            variant = None
        if self.architecture == "arm" and variant is None:
            variant = "v7"
        return (self.os, self.architecture, variant)

    def matches(self, other: Platform) -> bool:
        return self.normalized() == other.normalized()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            data["os.version"] = self.os_version
        if self.variant:
            data["variant"] = self.variant
        return data

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def parse_platforms(text: str | None) -> list[Platform] | Literal["all"]:
    """`--platform` value: comma-separated list, or `all`. None means the host's platform."""
    if text is None:
        return [Platform.host()]
    if text.strip() == "all":
        return "all"
    platforms: list[Platform] = []
    for item in text.split(","):
        parsed = Platform.parse(item)
        if not any(parsed.matches(p) for p in platforms):
            platforms.append(parsed)
    return platforms


# --------------------------------------------------------------------------- descriptors


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] | None = None
    urls: tuple[str, ...] | None = None

    @classmethod
    def from_json(cls, data: Any, where: str) -> Descriptor:
        if not isinstance(data, dict):
            raise ImageFormatError(f"invalid descriptor in {where}: not an object")
        size = data.get("size")
        mt = data.get("mediaType")
        if not isinstance(mt, str) or not mt:
            raise ImageFormatError(f"descriptor without mediaType in {where}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ImageFormatError(f"invalid size {size!r} in descriptor in {where}")
        platform = Platform.from_json(data["platform"], where) if "platform" in data else None
        annotations = _annotations(data.get("annotations"), where) or None
        urls = data.get("urls")
        return cls(mt, check_digest(data.get("digest"), where), size, platform, annotations,
                   tuple(urls) if isinstance(urls, list) else None)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            data["urls"] = list(self.urls)
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        if self.platform:
            data["platform"] = self.platform.to_json()
        return data


def _annotations(value: Any, where: str) -> dict[str, str]:
    """Annotations are a string-to-string map (image-spec); absent or null is empty."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ImageFormatError(f"invalid annotations in {where}: expected an object of strings")
    return value


def descriptor_for(data: bytes, media_type_: str, platform: Platform | None = None) -> Descriptor:
    return Descriptor(media_type_, digest_bytes(data), len(data), platform)


# --------------------------------------------------------------------------- manifests


@dataclass
class Manifest:
    media_type: str
    config: Descriptor
    layers: list[Descriptor]
    annotations: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def format(self) -> Format:
        return format_of(self.media_type)


@dataclass
class Index:
    media_type: str
    manifests: list[Descriptor]
    annotations: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


def _json_object(data: bytes, limit: int, what: str) -> dict[str, Any]:
    """Bounded, strict JSON object parse; `what` names the document for error messages."""
    if len(data) > limit:
        raise ImageFormatError(f"{what} is larger than {limit} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageFormatError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ImageFormatError(f"{what} is not a JSON object")
    return doc


def parse_document(data: bytes, header_media_type: str | None, where: str) -> Manifest | Index:
    """Parse a manifest or index strictly. `where` names the source for error messages."""
    doc = _json_object(data, MAX_MANIFEST_BYTES, f"manifest from {where}")
    mt = doc.get("mediaType") or header_media_type or ""
    if mt in DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
        raise ImageFormatError(
            f"{where} is a Docker schema 1 manifest, which is deprecated and not supported",
            hint="re-push the image with a current Docker or skopeo to convert it to schema 2",
        )
    if doc.get("schemaVersion") != 2:
        raise ImageFormatError(f"manifest from {where} has schemaVersion {doc.get('schemaVersion')!r}, expected 2")
    if "manifests" in doc and ("layers" in doc or "config" in doc):
        raise ImageFormatError(f"document from {where} has both 'manifests' and 'layers'/'config': ambiguous")
    annotations = _annotations(doc.get("annotations"), f"manifest from {where}")
    if "manifests" in doc:
        if not mt:
            mt = OCI_INDEX
        if mt not in INDEX_TYPES:
            raise ImageFormatError(f"document from {where} lists manifests but has media type {mt!r}")
        items = doc["manifests"]
        if not isinstance(items, list):
            raise ImageFormatError(f"'manifests' in {where} is not a list")
        return Index(mt, [Descriptor.from_json(d, where) for d in items], annotations, doc)
    if not mt:
        mt = OCI_MANIFEST
    if mt not in MANIFEST_TYPES:
        raise ImageFormatError(f"unsupported manifest media type {mt!r} from {where}")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise ImageFormatError(f"manifest from {where} has no 'layers' list")
    return Manifest(
        mt,
        Descriptor.from_json(doc.get("config"), where),
        [Descriptor.from_json(d, where) for d in layers],
        annotations,
        doc,
    )


def parse_config(data: bytes, where: str) -> dict[str, Any]:
    """Parse an image config; checks the fields every runtime needs."""
    config = _json_object(data, MAX_CONFIG_BYTES, f"image config from {where}")
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
        raise ImageFormatError(f"image config from {where} has no rootfs.diff_ids")
    for d in rootfs["diff_ids"]:
        check_digest(d, f"rootfs.diff_ids of {where}")
    for key in ("architecture", "os"):
        if not isinstance(config.get(key), str):
            raise ImageFormatError(f"image config from {where} has no {key!r}")
    if config.get("config") is not None and not isinstance(config["config"], dict):
        raise ImageFormatError(f"image config from {where}: 'config' is not an object")
    return config


def canonical_json(doc: dict[str, Any]) -> bytes:
    """Stable bytes for a document we write: sorted keys, compact, no trailing newline."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
