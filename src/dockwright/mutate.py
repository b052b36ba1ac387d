"""Image mutations: apply config edits, append layers with history, and write the config, manifest
and index documents. Pure functions over BaseImage; no I/O."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from dockwright.model import documents, mediatypes
from dockwright.model.digest import digest_bytes
from dockwright.model.documents import Descriptor
from dockwright.model.image import BaseImage, Document, FinalImage, Layer
from dockwright.model.mediatypes import Format
from dockwright.plan import ConfigEdit

BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"
PADDING_HISTORY = "dockwright: history entry added for a base layer that had none"


def timestamp(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def apply_edit(config: dict[str, Any], edit: ConfigEdit) -> None:
    """Apply one ConfigEdit to an image config in place (Docker's `config` keys)."""
    c = config.setdefault("config", {})
    if c is None:
        c = config["config"] = {}
    if edit.entrypoint is not None:
        c["Entrypoint"] = list(edit.entrypoint)
    if edit.cmd is not None:
        if edit.cmd:
            c["Cmd"] = list(edit.cmd)
        else:
            c.pop("Cmd", None)
    if edit.env:
        env: list[str] = list(c.get("Env") or [])
        for key, value in edit.env:  # as Docker: replace a variable where it stands, else append
            keys = [item.split("=", 1)[0] for item in env]
            if key in keys:
                env[keys.index(key)] = f"{key}={value}"
            else:
                env.append(f"{key}={value}")
        c["Env"] = env
    if edit.workdir is not None:
        c["WorkingDir"] = edit.workdir
    if edit.user is not None:
        c["User"] = edit.user
    if edit.exposed_ports:
        ports = dict(c.get("ExposedPorts") or {})
        ports.update({port: {} for port in edit.exposed_ports})
        c["ExposedPorts"] = ports
    if edit.volumes:
        volumes = dict(c.get("Volumes") or {})
        volumes.update({volume: {} for volume in edit.volumes})
        c["Volumes"] = volumes
    if edit.labels:
        labels = dict(c.get("Labels") or {})
        labels.update(dict(edit.labels))
        c["Labels"] = labels
    if edit.stop_signal is not None:
        c["StopSignal"] = edit.stop_signal
    if edit.healthcheck is not None:
        c["Healthcheck"] = dict(edit.healthcheck)
    if edit.onbuild:
        c["OnBuild"] = [*(c.get("OnBuild") or []), *edit.onbuild]
    if edit.shell is not None:
        c["Shell"] = list(edit.shell)
    if edit.author is not None:
        config["author"] = edit.author


def add_history(config: dict[str, Any], created: str, created_by: str, *, empty_layer: bool) -> None:
    entry: dict[str, Any] = {"created": created, "created_by": created_by}
    if empty_layer:
        entry["empty_layer"] = True
    config.setdefault("history", []).append(entry)


def pad_history(config: dict[str, Any], layer_count: int, created: str) -> None:
    """Make the number of non-empty history entries equal the number of layers (spec requirement)."""
    history = config.get("history")
    if not isinstance(history, list):
        history = config["history"] = []
    missing = layer_count - sum(1 for h in history if isinstance(h, dict) and not h.get("empty_layer"))
    for _ in range(max(0, missing)):
        history.append({"created": created, "created_by": PADDING_HISTORY})


def append_layer(img: BaseImage, layer: Layer, created: str, created_by: str) -> None:
    """Add a new layer with its history entry. Call pad_history on the base first."""
    img.layers.append(layer)
    img.config["rootfs"]["diff_ids"].append(layer.diff_id)
    add_history(img.config, created, created_by, empty_layer=False)


def finish(img: BaseImage, fmt: Format, created: str, annotations: dict[str, str]) -> FinalImage:
    """Write the config and manifest of `img` in format `fmt`."""
    config = copy.deepcopy(img.config)
    config["created"] = created
    config["rootfs"]["type"] = "layers"
    pad_history(config, len(img.layers), created)
    config_bytes = documents.canonical_json(config)
    config_doc = Document(config_bytes, documents.descriptor_for(config_bytes, mediatypes.media_type(fmt, "config")))
    layer_descriptors = [
        Descriptor(mediatypes.layer_media_type_for(fmt, layer.descriptor.media_type), layer.descriptor.digest,
                   layer.descriptor.size, annotations=layer.descriptor.annotations, urls=layer.descriptor.urls)
        for layer in img.layers
    ]
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mediatypes.media_type(fmt, "manifest"),
        "config": config_doc.descriptor.to_json(),
        "layers": [d.to_json() for d in layer_descriptors],
    }
    if fmt == "oci":
        merged = dict(img.annotations)
        if img.name and img.digest:
            merged[BASE_NAME] = img.name
            merged[BASE_DIGEST] = img.digest
        merged.update(annotations)
        if merged:
            manifest["annotations"] = merged
    manifest_bytes = documents.canonical_json(manifest)
    manifest_doc = Document(
        manifest_bytes, documents.descriptor_for(manifest_bytes, manifest["mediaType"], img.platform)
    )
    return FinalImage(img.platform, fmt, config_doc, manifest_doc, tuple(
        Layer(d, layer.diff_id, layer.source) for d, layer in zip(layer_descriptors, img.layers, strict=True)
    ))


def make_index(images: list[FinalImage], fmt: Format, annotations: dict[str, str]) -> Document:
    index: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mediatypes.media_type(fmt, "index"),
        "manifests": [img.manifest.descriptor.to_json() for img in images],
    }
    if annotations and fmt == "oci":
        index["annotations"] = dict(annotations)
    data = documents.canonical_json(index)
    return Document(data, Descriptor(index["mediaType"], digest_bytes(data), len(data)))
