"""validate_image: what go-containerregistry's `validate` checks, for every place dockwright writes an image.

- every blob matches its descriptor: the config's and each layer's digest and size;
- each layer's uncompressed tar hashes to its diff_id in the config (same count);
- media types of one family: an OCI manifest has an OCI config and OCI layers, a Docker one Docker types;
  an index's children are of its family too;
- the config's history has one non-empty_layer entry per layer;
- no path twice within one layer's tar.

Independent of dockwright's code on purpose: hashlib, tarfile, gzip and zstandard only. Sources: an OCI
layout directory, an OCI archive, a docker-archive (its manifest.json, and its OCI layout when it has one)
and an image in a registry (plain HTTP, optional basic auth). Each returns what it checked, so a test can
also assert on it (how many images and layers).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYERS = {"application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
              "application/vnd.oci.image.layer.v1.tar+zstd",
              "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"}
DOCKER_LAYERS = {"application/vnd.docker.image.rootfs.diff.tar.gzip",
                 "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"}
FAMILY = {  # manifest type -> (index type, config type, layer types)
    OCI_MANIFEST: (OCI_INDEX, OCI_CONFIG, OCI_LAYERS),
    DOCKER_MANIFEST: (DOCKER_LIST, DOCKER_CONFIG, DOCKER_LAYERS),
}

Blobs = Callable[[str], bytes]  # digest -> bytes


@dataclass
class Checked:
    """What validate_* looked at: one entry per image (manifest digest or archive entry), its layer count."""

    images: dict[str, int] = field(default_factory=dict)


def validate_layout(root: Path) -> Checked:
    """An OCI layout directory: oci-layout, index.json, and every image it lists."""
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    return _validate_layout_files(lambda name: (root / name).read_bytes())


def validate_oci_archive(path: Path) -> Checked:
    """A tar of an OCI layout (`-o type=oci,dest=FILE`)."""
    files = _tar_files(path)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    return _validate_layout_files(lambda name: files[name])


def validate_docker_archive(path: Path) -> Checked:
    """A docker-archive (`docker save` format): each manifest.json entry's config and layers; and its OCI
    layout too when it carries one (Docker 25+ writes both)."""
    files = _tar_files(path)
    checked = Checked()
    entries = json.loads(files["manifest.json"])
    assert isinstance(entries, list) and entries, "manifest.json lists no image"
    for entry in entries:
        config_bytes = files[entry["Config"]]
        hex_ = hashlib.sha256(config_bytes).hexdigest()
        assert hex_ in entry["Config"], f"config {entry['Config']} holds sha256:{hex_}"
        layers = [_tar_of(files[name], name) for name in entry["Layers"]]
        check_config(json.loads(config_bytes), layers, entry["Config"])
        checked.images[entry["Config"]] = len(layers)
    if "index.json" in files:
        checked.images.update(_validate_layout_files(lambda name: files[name]).images)
    return checked


def validate_registry(url: str, repository: str, reference: str, *, username: str | None = None,
                      password: str | None = None) -> Checked:
    """An image or index in a registry (`url` like http://127.0.0.1:5000), read over the distribution API."""
    headers = {"Accept": ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])}
    if username is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    def get(kind: str, ref: str) -> tuple[bytes, str]:
        request = urllib.request.Request(f"{url}/v2/{repository}/{kind}/{ref}", headers=headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read(), response.headers.get("Content-Type", "")

    top, media_type = get("manifests", reference)
    checked = Checked()
    _validate_document(top, media_type, lambda digest: get("manifests", digest)[0],
                       lambda digest: get("blobs", digest)[0], checked, f"{repository}:{reference}")
    return checked


def _validate_layout_files(read: Callable[[str], bytes]) -> Checked:
    def blob(digest: str) -> bytes:
        algorithm, _, hex_ = digest.partition(":")
        return read(f"blobs/{algorithm}/{hex_}")

    index = json.loads(read("index.json"))
    assert index.get("schemaVersion") == 2
    checked = Checked()
    for descriptor in index["manifests"]:
        data = blob(descriptor["digest"])
        _check_blob(descriptor, data, "index.json entry")
        _validate_document(data, descriptor["mediaType"], blob, blob, checked, descriptor["digest"])
    return checked


def _validate_document(data: bytes, media_type: str, manifests: Blobs, blobs: Blobs, checked: Checked,
                       where: str) -> None:
    doc = json.loads(data)
    doc_type = doc.get("mediaType") or media_type
    assert doc.get("schemaVersion") == 2, where
    if doc_type in (OCI_INDEX, DOCKER_LIST):
        assert doc["manifests"], f"{where}: an empty index"
        for child in doc["manifests"]:
            child_data = manifests(child["digest"])
            _check_blob(child, child_data, f"{where} -> {child['digest']}")
            family = FAMILY[child["mediaType"]][0]
            assert family == doc_type, f"{where}: a {doc_type} lists a {child['mediaType']}"
            assert child.get("platform", {}).get("os"), f"{where}: {child['digest']} has no platform"
            _validate_document(child_data, child["mediaType"], manifests, blobs, checked, child["digest"])
        return
    assert doc_type in FAMILY, f"{where}: unknown manifest type {doc_type}"
    assert media_type in ("", doc_type) or media_type.startswith(doc_type), f"{where}: served as {media_type}"
    _, config_type, layer_types = FAMILY[doc_type]
    config = doc["config"]
    assert config["mediaType"] == config_type, f"{where}: a {doc_type} with a {config['mediaType']} config"
    config_bytes = blobs(config["digest"])
    _check_blob(config, config_bytes, f"{where} config")
    layers = []
    for descriptor in doc["layers"]:
        assert descriptor["mediaType"] in layer_types, f"{where}: {doc_type} with a {descriptor['mediaType']} layer"
        layer = blobs(descriptor["digest"])
        _check_blob(descriptor, layer, f"{where} layer {descriptor['digest']}")
        layers.append(_uncompressed(layer, descriptor["mediaType"], descriptor["digest"]))
    check_config(json.loads(config_bytes), layers, where)
    checked.images[hashlib.sha256(data).hexdigest()] = len(layers)


def _check_blob(descriptor: dict[str, Any], data: bytes, where: str) -> None:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert descriptor["digest"] == digest, f"{where}: descriptor says {descriptor['digest']}, bytes are {digest}"
    assert descriptor["size"] == len(data), f"{where}: descriptor says {descriptor['size']} bytes, blob has {len(data)}"


def check_config(config: dict[str, Any], layers: list[bytes], where: str) -> None:
    """diff_ids against the uncompressed layers, history against the layer count, no path twice in a layer."""
    diff_ids = config["rootfs"]["diff_ids"]
    assert config["rootfs"]["type"] == "layers"
    assert len(diff_ids) == len(layers), f"{where}: {len(diff_ids)} diff_ids for {len(layers)} layers"
    for index, (diff_id, tar) in enumerate(zip(diff_ids, layers, strict=True)):
        actual = "sha256:" + hashlib.sha256(tar).hexdigest()
        assert diff_id == actual, f"{where}: layer {index} has diff_id {actual}, the config says {diff_id}"
        with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as archive:
            names = Counter(_clean(member.name) for member in archive)
        twice = sorted(name for name, count in names.items() if count > 1)
        assert not twice, f"{where}: layer {index} holds {twice} more than once"
    history = config.get("history")
    if history is not None:
        non_empty = [h for h in history if not h.get("empty_layer")]
        assert len(non_empty) == len(layers), f"{where}: {len(non_empty)} layer history entries, {len(layers)} layers"


def _uncompressed(blob: bytes, media_type: str, where: str) -> bytes:
    if media_type.endswith("gzip"):
        return gzip.decompress(blob)
    if media_type.endswith("zstd"):
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    assert media_type.endswith(".tar"), f"{where}: unknown layer type {media_type}"
    return blob


def _tar_of(data: bytes, where: str) -> bytes:
    """A docker-archive layer: a tar, or a gzip of one."""
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _tar_files(path: Path) -> dict[str, bytes]:
    """The regular files of a tar by name; a name twice fails."""
    files: dict[str, bytes] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            if member.isreg():
                name = _clean(member.name)
                assert name not in files, f"{path}: {name} twice"
                handle = tar.extractfile(member)
                assert handle is not None
                files[name] = handle.read()
    return files


def _clean(name: str) -> str:
    return name.removeprefix("./").rstrip("/") or "."
