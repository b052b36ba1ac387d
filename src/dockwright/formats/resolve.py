"""Resolve the base image of a stage, per platform: a registry reference, `scratch`, an OCI layout
directory (`oci-layout://DIR[:TAG]`), an OCI archive (`oci-archive://FILE[:TAG]`: the same layout in a
tar, read in place) or a docker-archive file (`docker-archive://FILE`).

The result is a BaseImage per platform: its config, its layers (descriptor, diff_id and where the bytes
live) and its manifest annotations. Nothing is downloaded here but manifests and configs: base layers
stay where they are until an output needs their bytes.
"""

from __future__ import annotations

import posixpath
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from dockwright.cache import Resolution
from dockwright.formats.registry import RegistryBlob
from dockwright.model import documents, mediatypes
from dockwright.model.blobs import BlobSource, FileBlob
from dockwright.model.digest import check_digest, is_digest, verify_bytes
from dockwright.model.documents import Descriptor, Index, Manifest
from dockwright.model.errors import DockwrightError, ImageFormatError, UsageError
from dockwright.model.image import BaseImage, Layer
from dockwright.model.mediatypes import Format
from dockwright.model.platform import Platform, refuse_windows
from dockwright.model.reference import (
    DOCKER_ARCHIVE_PREFIX,
    OCI_ARCHIVE_PREFIX,
    OCI_LAYOUT_PREFIX,
    SCRATCH,
    parse_reference,
)
from dockwright.model.units import plural

if TYPE_CHECKING:
    from dockwright.cache import Cache
    from dockwright.plan import PullPolicy
    from dockwright.registry import Registries

REF_NAME = "org.opencontainers.image.ref.name"


Wanted = list[Platform] | Literal["all"]


def resolve_base(spec: str, wanted: Wanted, *, explicit: bool, registries: Registries | None,
                 workdir: Path, default_format: Format | None = None, cache: Cache | None = None,
                 pull: PullPolicy = "always") -> list[BaseImage]:
    """Resolve `spec` for the wanted platforms. `explicit` is False when the platform is the host default:
    then a single-platform base is used whatever its platform, as `docker build` does. `pull`: how much
    a registry base may be asked (see _RegistryStore)."""
    if spec == SCRATCH:
        if wanted == "all":
            raise UsageError("--platform all needs a multi-platform base; scratch has no platforms",
                             hint="name the platforms: --platform linux/amd64,linux/arm64")
        return [_scratch(p, default_format or "oci") for p in wanted]
    if spec.startswith((OCI_LAYOUT_PREFIX, OCI_ARCHIVE_PREFIX)):
        return _from_document_store(_LayoutStore.open(spec), wanted, explicit)
    if spec.startswith(DOCKER_ARCHIVE_PREFIX):
        from dockwright.formats.docker_archive import load_docker_archive

        base = load_docker_archive(Path(spec[len(DOCKER_ARCHIVE_PREFIX):]), workdir)
        _check_single(base.platform, wanted, explicit, spec)
        return [base]
    if registries is None:
        raise UsageError(f"base {spec!r} needs a registry, but this build runs offline")
    return _from_document_store(_RegistryStore(spec, registries, cache, pull), wanted, explicit)


def _scratch(platform: Platform, fmt: Format) -> BaseImage:
    os_, architecture, variant = platform.normalized()  # linux/arm is arm/v7, as Docker writes it
    platform = Platform(os_, architecture, variant, platform.os_version)
    config: dict[str, Any] = {
        **platform.to_json(),
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    }
    return BaseImage(platform, fmt, config)


class _DocumentStore(Protocol):
    """Something holding manifests and blobs by digest: a registry repository or an OCI layout."""

    where: str
    name: str | None

    def top(self) -> tuple[bytes, str | None, str]:
        """The document the reference points at: (bytes, media type, digest)."""
        ...

    def manifest(self, descriptor: Descriptor) -> bytes: ...

    def blob(self, descriptor: Descriptor) -> BlobSource: ...


class _RegistryStore:
    """A base on a registry, asked as little as `pull` allows: "always" checks the tag with a HEAD (a GET
    only when it points at a document the cache lacks), "missing" trusts the tag's cached resolution,
    "never" asks the registry nothing. Documents by digest come from the cache when it has them."""

    def __init__(self, spec: str, registries: Registries, cache: Cache | None, pull: PullPolicy) -> None:
        self.ref = parse_reference(spec)
        self.cache = cache
        self.pull = pull
        self.client = registries.client(self.ref.api_host)
        self.where = str(self.ref)
        self.name = str(self.ref)

    def top(self) -> tuple[bytes, str | None, str]:
        repository, identifier = self.ref.repository, self.ref.identifier
        if is_digest(identifier):
            return self._by_digest(Resolution(identifier))
        name = f"{self.ref.api_host}/{repository}:{identifier}"
        if self.cache is not None and self.pull != "always":
            known = self.cache.resolution(name)
            data = self.cache.document(known.digest) if known is not None else None
            if known is not None and data is not None:
                return data, known.media_type, known.digest
        self._may_ask(f"{self.where} is not in the cache")
        digest = self.client.manifest_digest(repository, identifier)
        data = self.cache.document(digest) if digest and self.cache is not None else None
        if digest and data is not None:
            media_type = None  # the document's own mediaType field says it (parse_document)
        else:  # by the tag, as before HEADs were asked: one GET either way, and whatever it holds now
            data, media_type, digest = self.client.get_manifest(repository, identifier)
            if self.cache is not None:
                self.cache.put_bytes(data, digest)
        if self.cache is not None:
            self.cache.record_resolution(name, Resolution(digest, media_type))
        return data, media_type, digest

    def manifest(self, descriptor: Descriptor) -> bytes:
        """A manifest by digest: immutable, so the cache answers when it can (verified)."""
        data, _, _ = self._by_digest(Resolution(descriptor.digest, descriptor.media_type))
        return data

    def _by_digest(self, wanted: Resolution) -> tuple[bytes, str | None, str]:
        data = self.cache.document(wanted.digest) if self.cache is not None else None
        if data is not None:
            return data, wanted.media_type, wanted.digest
        self._may_ask(f"{self.where}: manifest {wanted.digest} is not in the cache")
        data, media_type, digest = self.client.get_manifest(self.ref.repository, wanted.digest)
        if self.cache is not None:
            self.cache.put_bytes(data, digest)
        return data, media_type, digest

    def _may_ask(self, why: str) -> None:
        if self.pull == "never":
            raise DockwrightError(f"--pull never: {why}",
                                  hint="build once with --pull missing or always while the registry can be reached")

    def blob(self, descriptor: Descriptor) -> BlobSource:
        return RegistryBlob(self.client, self.ref.repository, descriptor.digest, descriptor.size, self.cache,
                            offline=self.pull == "never")


class _LayoutDir:
    """The files of an OCI layout directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def size(self, name: str) -> int | None:
        try:
            return (self.root / name).stat().st_size
        except OSError:
            return None

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def blob(self, name: str, descriptor: Descriptor, what: str) -> BlobSource:
        return FileBlob(self.root / name, descriptor.digest, descriptor.size, what)


class _LayoutTar:
    """The files of an OCI layout inside an uncompressed tar, read in place (a blob is a byte range)."""

    def __init__(self, path: Path, where: str) -> None:
        self.path = path
        try:
            with tarfile.open(path, "r:") as tar:
                self.members = {posixpath.normpath(m.name).lstrip("/"): (m.offset_data, m.size)
                                for m in tar if m.isfile()}
        except tarfile.ReadError:
            raise UsageError(f"{where}: {path} is not an uncompressed tar",
                             hint="a compressed OCI archive must be decompressed first (gunzip, zstd -d)") from None
        except OSError as exc:
            raise UsageError(f"{where}: cannot read {path}: {exc.strerror}") from None

    def size(self, name: str) -> int | None:
        member = self.members.get(name)
        return None if member is None else member[1]

    def read(self, name: str) -> bytes:
        offset, size = self.members[name]
        with self.path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(size)

    def blob(self, name: str, descriptor: Descriptor, what: str) -> BlobSource:
        if name not in self.members:
            raise ImageFormatError(f"{what}: {name} is missing from {self.path}")
        offset, _ = self.members[name]
        return FileBlob(self.path, descriptor.digest, descriptor.size, f"{what} ({name})", offset=offset)


class _LayoutStore:
    """An OCI layout, as a directory (oci-layout://) or a tar of one (oci-archive://)."""

    def __init__(self, files: _LayoutDir | _LayoutTar, where: str, tag: str | None) -> None:
        self.files = files
        self.tag = tag
        self.where = where
        self.name = None

    @classmethod
    def open(cls, spec: str) -> _LayoutStore:
        prefix = OCI_ARCHIVE_PREFIX if spec.startswith(OCI_ARCHIVE_PREFIX) else OCI_LAYOUT_PREFIX
        text = spec[len(prefix):]
        path, tag = text, None
        head, sep, tail = text.rpartition(":")
        if sep and head and "/" not in tail and not Path(text).exists():
            path, tag = head, tail
        root = Path(path)
        if prefix == OCI_LAYOUT_PREFIX and root.is_file():
            raise UsageError(f"{spec}: {root} is a file; an OCI archive is read with {OCI_ARCHIVE_PREFIX}{text}")
        if prefix == OCI_ARCHIVE_PREFIX and root.is_dir():
            raise UsageError(f"{spec}: {root} is a directory; an OCI layout is read with {OCI_LAYOUT_PREFIX}{text}")
        files = _LayoutDir(root) if prefix == OCI_LAYOUT_PREFIX else _LayoutTar(root, spec)
        if files.size("index.json") is None:
            docker = prefix == OCI_ARCHIVE_PREFIX and files.size("manifest.json") is not None
            raise UsageError(f"{spec}: {root} is a docker-archive, not an OCI archive (manifest.json, no index.json)"
                             if docker else f"{spec}: {root} is not an OCI layout (no index.json)",
                             hint=f"use {DOCKER_ARCHIVE_PREFIX}{path}" if docker else None)
        return cls(files, spec, tag)

    def _read(self, descriptor: Descriptor) -> bytes:
        name = self._name(descriptor)
        size = self.files.size(name)
        try:
            data = self.files.read(name) if size is not None and size <= mediatypes.MAX_CONFIG_BYTES else b""
        except (OSError, KeyError) as exc:
            raise ImageFormatError(f"{self.where}: cannot read {name}: {exc}") from None
        if size is None:
            raise ImageFormatError(f"{self.where}: {name} is missing")
        return verify_bytes(data, descriptor.digest, descriptor.size, f"{self.where} blob")

    def _name(self, descriptor: Descriptor) -> str:
        algorithm, _, hex_ = check_digest(descriptor.digest, self.where).partition(":")
        return f"blobs/{algorithm}/{hex_}"

    def top(self) -> tuple[bytes, str | None, str]:
        index_path = f"{self.where}: index.json"
        parsed = documents.parse_document(self.files.read("index.json"), mediatypes.OCI_INDEX, index_path)
        if not isinstance(parsed, Index):
            raise ImageFormatError(f"{index_path} is not an image index")
        candidates = parsed.manifests
        if self.tag is not None:
            candidates = [d for d in candidates if (d.annotations or {}).get(REF_NAME) == self.tag]
            if not candidates:
                tags = sorted({(d.annotations or {}).get(REF_NAME, "") for d in parsed.manifests} - {""})
                raise UsageError(f"{self.where}: no image tagged {self.tag!r}; tags: {', '.join(tags) or 'none'}")
        if len(candidates) != 1:
            raise UsageError(f"{self.where}: holds {len(candidates)} images; name one with :TAG")
        chosen = candidates[0]
        return self._read(chosen), chosen.media_type, chosen.digest

    def manifest(self, descriptor: Descriptor) -> bytes:
        return self._read(descriptor)

    def blob(self, descriptor: Descriptor) -> BlobSource:
        return self.files.blob(self._name(descriptor), descriptor, f"layer in {self.where}")


def _from_document_store(store: _DocumentStore, wanted: Wanted, explicit: bool) -> list[BaseImage]:
    data, media_type, digest = store.top()
    top = documents.parse_document(data, media_type, store.where)
    if isinstance(top, Manifest):
        base = _load_manifest(store, top, digest)
        _check_single(base.platform, wanted, explicit, store.where)
        return [base]
    chosen = select_platforms(top, wanted, store.where, explicit=explicit)
    bases = []
    for descriptor in chosen:
        child = documents.parse_document(store.manifest(descriptor), descriptor.media_type,
                                     f"{store.where}@{descriptor.digest}")
        if not isinstance(child, Manifest):
            raise ImageFormatError(f"{store.where}: nested index {descriptor.digest} is not supported")
        base = _load_manifest(store, child, descriptor.digest)
        if descriptor.platform:  # the index's platform wins (it carries the variant more reliably)
            base.platform = descriptor.platform
        bases.append(base)
    return bases


def _is_image_platform(d: Descriptor) -> bool:
    return d.platform is not None and d.platform.os != "unknown" and d.media_type in mediatypes.MANIFEST_TYPES


def select_platforms(index: Index, wanted: Wanted, where: str, *, explicit: bool) -> list[Descriptor]:
    """The index's images for `wanted`. A platform the caller asked for (`explicit`) that the base lacks
    is a usage error; the host's platform, picked by default, is the base's shortcoming."""
    available = [d for d in index.manifests if _is_image_platform(d)]
    if wanted == "all":
        if not available:
            raise ImageFormatError(f"{where}: the index lists no platform images")
        return available
    chosen = []
    for platform in wanted:
        match = next((d for d in available if d.platform and d.platform.matches(platform)), None)
        if match is None:
            if available and all(d.platform and d.platform.os == "windows" for d in available):
                refuse_windows(available[0].platform, f"base {where}")  # type: ignore[arg-type]
            have = ", ".join(str(d.platform) for d in available) or "none"
            error = UsageError if explicit else DockwrightError
            raise error(f"base {where} has no {platform} image; it has: {have}",
                        hint="pick one of those with --platform")
        chosen.append(match)
    return chosen


def _check_single(platform: Platform, wanted: Wanted, explicit: bool, where: str) -> None:
    if wanted == "all" or not explicit:
        return
    if len(wanted) != 1 or not wanted[0].matches(platform):
        asked = ", ".join(str(p) for p in wanted)
        raise UsageError(f"base {where} has no {asked} image; it has: {platform}",
                         hint="pick that platform with --platform, or use a multi-platform base")


def _load_manifest(store: _DocumentStore, manifest: Manifest, digest: str) -> BaseImage:
    config_bytes = b"".join(store.blob(manifest.config).open())
    config = documents.parse_config(config_bytes, f"{store.where} config {manifest.config.digest}")
    diff_ids = config["rootfs"]["diff_ids"]
    if len(diff_ids) != len(manifest.layers):
        raise ImageFormatError(
            f"{store.where}: manifest has {plural(len(manifest.layers), 'layer')} but its config lists "
            f"{plural(len(diff_ids), 'diff_id')}")
    layers = [Layer(d, diff_id, store.blob(d)) for d, diff_id in zip(manifest.layers, diff_ids, strict=True)]
    platform = Platform(config["os"], config["architecture"], config.get("variant"), config.get("os.version"))
    return BaseImage(platform, manifest.format, config, layers, dict(manifest.annotations), store.name, digest)
