"""The image model: layers (descriptor, diff_id and where the bytes are), an image being built, and the
finished documents every output writes."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from dockwright.model.blobs import BlobSource, BytesBlob
from dockwright.model.documents import Descriptor
from dockwright.model.mediatypes import Format
from dockwright.model.platform import Platform


@dataclass(frozen=True)
class Layer:
    descriptor: Descriptor
    diff_id: str
    source: BlobSource


@dataclass
class BaseImage:
    platform: Platform
    format: Format
    config: dict[str, Any]
    layers: list[Layer] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    name: str | None = None  # the reference, for the org.opencontainers.image.base.name annotation
    digest: str | None = None  # the manifest digest, for org.opencontainers.image.base.digest

    def clone(self) -> BaseImage:
        return BaseImage(self.platform, self.format, copy.deepcopy(self.config), list(self.layers),
                         dict(self.annotations), self.name, self.digest)


@dataclass(frozen=True)
class Document:
    """A JSON document we wrote (config, manifest or index) with its descriptor."""

    data: bytes
    descriptor: Descriptor

    @property
    def blob(self) -> BytesBlob:
        return BytesBlob(self.data, self.descriptor.digest)


@dataclass(frozen=True)
class FinalImage:
    """One platform's finished image: what every output writes."""

    platform: Platform
    format: Format
    config: Document
    manifest: Document
    layers: tuple[Layer, ...]


@dataclass
class BuildResult:
    """What a build made: each platform's finished image (+ the index of several), and the images before they
    were finished (`targets`, to build on in the library)."""

    images: list[FinalImage]
    index: Document | None = None
    layers_built: int = 0
    layers_cached: int = 0
    targets: list[BaseImage] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)  # the manifests' (and index's) own

    @property
    def top(self) -> Document:
        """The document tags point at: the index for a multi-platform build, else the manifest."""
        return self.index or self.images[0].manifest

    @property
    def format(self) -> Format:
        return self.images[0].format

    def blobs(self) -> list[tuple[str, int, BlobSource]]:
        """Every blob of the result, layers first, each once: (digest, size, source)."""
        seen: dict[str, tuple[str, int, BlobSource]] = {}
        for img in self.images:
            for layer in img.layers:
                seen.setdefault(layer.descriptor.digest, (layer.descriptor.digest, layer.descriptor.size, layer.source))
        for img in self.images:
            for doc in (img.config, img.manifest):
                seen.setdefault(doc.descriptor.digest, (doc.descriptor.digest, doc.descriptor.size, doc.blob))
        if self.index:
            seen.setdefault(self.index.descriptor.digest,
                            (self.index.descriptor.digest, self.index.descriptor.size, self.index.blob))
        return list(seen.values())
