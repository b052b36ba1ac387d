"""Descriptors, manifests and indexes: strict parsing of what we read, canonical JSON for what we write."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from dockwright.model.digest import check_digest, digest_bytes
from dockwright.model.errors import ImageFormatError
from dockwright.model.mediatypes import (
    DOCKER_SCHEMA1,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    Format,
    format_of,
)
from dockwright.model.platform import Platform


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
