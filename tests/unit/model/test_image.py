"""The image model: platforms as Docker matches them, strict manifest/index/config parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dockwright.model import documents, mediatypes
from dockwright.model.documents import Index, Manifest, parse_config, parse_document
from dockwright.model.errors import ImageFormatError, UsageError
from dockwright.model.platform import Platform, parse_platforms

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


# --------------------------------------------------------------------------- platforms


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("Linux/AMD64", Platform("linux", "amd64")),
        ("linux/x86_64", Platform("linux", "amd64")),
        ("linux/aarch64", Platform("linux", "arm64")),
        ("linux/arm64/v8", Platform("linux", "arm64", "v8")),
        ("linux/arm/v6", Platform("linux", "arm", "v6")),
        ("windows/amd64", Platform("windows", "amd64")),
        (" linux/s390x ", Platform("linux", "s390x")),
    ],
)
def test_platform_parse(text: str, expected: Platform) -> None:
    assert Platform.parse(text) == expected


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("linux/arm64", "linux/arm64/v8", True),
        ("linux/arm", "linux/arm/v7", True),
        ("linux/arm", "linux/arm/v6", False),
        ("linux/arm/v6", "linux/arm/v7", False),
        ("linux/amd64", "linux/arm64", False),
        ("linux/amd64", "windows/amd64", False),
        ("linux/x86_64", "linux/amd64", True),
    ],
)
def test_platform_matching(a: str, b: str, same: bool) -> None:
    assert Platform.parse(a).matches(Platform.parse(b)) is same
    assert Platform.parse(b).matches(Platform.parse(a)) is same


@pytest.mark.parametrize("text", ["linux/bogus", "plan10/amd64", "beos/ppc"])
def test_unknown_platform_names_the_input(text: str) -> None:
    with pytest.raises(UsageError) as info:
        Platform.parse(text)
    assert repr(text) in str(info.value)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("text", ["linux", "", "linux/", "/amd64", "linux/arm/v7/extra", "linux//v7"])
def test_malformed_platform_names_the_input_and_the_form(text: str) -> None:
    with pytest.raises(UsageError) as info:
        Platform.parse(text)
    assert repr(text) in str(info.value)
    assert "OS/ARCH" in str(info.value)


def test_platform_list_deduplicates_equivalent_entries() -> None:
    assert parse_platforms("linux/arm64,linux/arm64/v8,linux/amd64") == [
        Platform("linux", "arm64"), Platform("linux", "amd64")]
    assert parse_platforms("all") == "all"
    assert parse_platforms(None) == [Platform.host()]
    with pytest.raises(UsageError, match="linux/nope"):
        parse_platforms("linux/amd64,linux/nope")


def test_platform_json_round_trip() -> None:
    data = {"architecture": "arm", "os": "linux", "variant": "v7"}
    assert Platform.from_json(data).to_json() == data
    assert str(Platform.from_json(data)) == "linux/arm/v7"
    windows = {"architecture": "amd64", "os": "windows", "os.version": "10.0.20348.2227"}
    assert Platform.from_json(windows).to_json() == windows
    with pytest.raises(ImageFormatError):
        Platform.from_json({"os": "linux"})


# --------------------------------------------------------------------------- manifests and indexes


def _descriptor(digest: str = D1, media_type: str = mediatypes.OCI_LAYER_GZIP, size: int = 10, **extra: Any) -> dict:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def _manifest(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "config": _descriptor(D1, mediatypes.OCI_CONFIG, 100),
        "layers": [_descriptor(D2), _descriptor(D3)],
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def _index(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_INDEX,
        "manifests": [
            _descriptor(D1, mediatypes.OCI_MANIFEST, 500, platform={"os": "linux", "architecture": "amd64"}),
            _descriptor(D2, mediatypes.OCI_MANIFEST, 501,
                        platform={"os": "linux", "architecture": "arm64", "variant": "v8"}),
        ],
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def _parse(doc: dict[str, Any], header: str | None = None) -> Manifest | Index:
    return parse_document(json.dumps(doc).encode(), header, "example.com/app:1")


def test_oci_manifest() -> None:
    parsed = _parse(_manifest(annotations={"a": "b"}))
    assert isinstance(parsed, Manifest)
    assert parsed.format == "oci"
    assert parsed.config.digest == D1 and parsed.config.size == 100
    assert [layer.digest for layer in parsed.layers] == [D2, D3]
    assert parsed.annotations == {"a": "b"}


def test_docker_manifest() -> None:
    parsed = _parse(_manifest(mediaType=mediatypes.DOCKER_MANIFEST,
                              config=_descriptor(D1, mediatypes.DOCKER_CONFIG),
                              layers=[_descriptor(D2, mediatypes.DOCKER_LAYER_GZIP)]))
    assert isinstance(parsed, Manifest)
    assert parsed.format == "docker"


def test_oci_manifest_without_media_type_is_accepted() -> None:
    """The OCI spec makes `mediaType` optional in manifests (it was added in image-spec 1.0.2)."""
    parsed = _parse(_manifest(mediaType=None))
    assert isinstance(parsed, Manifest)
    assert parsed.media_type == mediatypes.OCI_MANIFEST
    parsed = _parse(_index(mediaType=None))
    assert isinstance(parsed, Index)
    assert parsed.media_type == mediatypes.OCI_INDEX


def test_media_type_header_is_used_when_the_document_has_none() -> None:
    parsed = _parse(_manifest(mediaType=None), header=mediatypes.DOCKER_MANIFEST)
    assert isinstance(parsed, Manifest)
    assert parsed.format == "docker"


def test_index_keeps_platforms_and_order() -> None:
    parsed = _parse(_index())
    assert isinstance(parsed, Index)
    assert [str(d.platform) for d in parsed.manifests] == ["linux/amd64", "linux/arm64/v8"]


@pytest.mark.parametrize(
    "doc",
    [
        {"schemaVersion": 1, "name": "library/nginx", "tag": "latest", "fsLayers": []},
        {"schemaVersion": 1, "mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws"},
    ],
)
def test_schema1_is_refused_with_advice(doc: dict[str, Any]) -> None:
    with pytest.raises(ImageFormatError) as info:
        _parse(doc)
    assert "schema 1" in str(info.value)
    assert "example.com/app:1" in str(info.value)
    assert info.value.hint


def test_schema1_by_header_is_refused() -> None:
    with pytest.raises(ImageFormatError, match="schema 1"):
        _parse({"schemaVersion": 2, "layers": []}, header=mediatypes.DOCKER_SCHEMA1[1])


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        (_index(layers=[_descriptor(D2)]), "both 'manifests' and 'layers'"),
        (_index(config=_descriptor(D2, mediatypes.OCI_CONFIG)), "ambiguous"),
        (_manifest(schemaVersion=3), "schemaVersion 3"),
        (_manifest(schemaVersion=None), "schemaVersion None"),
        (_manifest(mediaType="text/html"), "unsupported manifest media type"),
        (_manifest(mediaType=mediatypes.OCI_INDEX), "unsupported manifest media type"),
        (_index(mediaType=mediatypes.OCI_MANIFEST), "lists manifests but has media type"),
        (_manifest(layers=None), "no 'layers' list"),
        (_manifest(layers={"0": _descriptor()}), "no 'layers' list"),
        (_index(manifests="none"), "not a list"),
        (_manifest(config=None), "not an object"),
        (_manifest(layers=[_descriptor(digest="sha256:xyz")]), "invalid digest"),
        (_manifest(layers=[_descriptor(digest="sha256:" + "a" * 63)]), "invalid digest"),
        (_manifest(layers=[_descriptor(digest="../../etc/passwd")]), "invalid digest"),
        (_manifest(layers=[_descriptor(digest=None)]), "invalid digest"),
        (_manifest(layers=[_descriptor(size=-1)]), "invalid size"),
        (_manifest(layers=[_descriptor(size="10")]), "invalid size"),
        (_manifest(layers=[_descriptor(size=True)]), "invalid size"),
        (_manifest(layers=[{"digest": D2, "size": 1}]), "without mediaType"),
        (_manifest(layers=[_descriptor(annotations={"k": 1})]), "invalid annotations"),
        (_manifest(annotations=["a"]), "invalid annotations"),
        (_manifest(annotations={"a": {"b": "c"}}), "invalid annotations"),
        (_index(manifests=[_descriptor(platform={"os": "linux"})]), "invalid platform"),
    ],
)
def test_malformed_documents_name_the_problem_and_the_source(doc: dict[str, Any], says: str) -> None:
    with pytest.raises(ImageFormatError) as info:
        _parse(doc)
    assert says in str(info.value)
    assert "example.com/app:1" in str(info.value)


@pytest.mark.parametrize("data", [b"", b"not json", b"[1, 2]", b'"text"', b"\xff\xfe{}", b"null"])
def test_non_objects_are_rejected(data: bytes) -> None:
    with pytest.raises(ImageFormatError, match=r"example\.com/app:1"):
        parse_document(data, None, "example.com/app:1")


def test_oversized_manifest_is_refused_before_parsing() -> None:
    doc = _manifest(annotations={"pad": "x" * mediatypes.MAX_MANIFEST_BYTES})
    with pytest.raises(ImageFormatError, match="larger than"):
        _parse(doc)


# --------------------------------------------------------------------------- configs


def _config(**overrides: Any) -> bytes:
    doc: dict[str, Any] = {"architecture": "amd64", "os": "linux", "config": {"Env": ["A=1"]},
                           "rootfs": {"type": "layers", "diff_ids": [D1, D2]}}
    doc.update(overrides)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


def test_parse_config() -> None:
    config = parse_config(_config(), "base")
    assert config["rootfs"]["diff_ids"] == [D1, D2]
    assert parse_config(_config(config=None), "base")["architecture"] == "amd64"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (_config(rootfs=None), "no rootfs.diff_ids"),
        (_config(rootfs={"type": "layers"}), "no rootfs.diff_ids"),
        (_config(rootfs={"type": "layers", "diff_ids": ["sha256:short"]}), "invalid digest"),
        (_config(architecture=None), "'architecture'"),
        (_config(os=7), "'os'"),
        (_config(config=["Env"]), "'config' is not an object"),
        (b"[]", "not a JSON object"),
        (b"{", "not valid JSON"),
    ],
)
def test_malformed_configs(data: bytes, says: str) -> None:
    with pytest.raises(ImageFormatError) as info:
        parse_config(data, "example.com/app:1 config")
    assert says in str(info.value)
    assert "example.com/app:1 config" in str(info.value)


def test_oversized_config_is_refused() -> None:
    with pytest.raises(ImageFormatError, match="larger than"):
        parse_config(_config(pad="x" * mediatypes.MAX_CONFIG_BYTES), "base")


# --------------------------------------------------------------------------- media types


def test_layer_media_types_convert_between_families() -> None:
    assert mediatypes.layer_media_type_for("docker", mediatypes.OCI_LAYER_GZIP) == mediatypes.DOCKER_LAYER_GZIP
    assert mediatypes.layer_media_type_for("oci", mediatypes.DOCKER_LAYER_GZIP) == mediatypes.OCI_LAYER_GZIP
    assert (mediatypes.layer_media_type_for("docker", mediatypes.OCI_LAYER_NONDIST_GZIP)
            == mediatypes.DOCKER_LAYER_FOREIGN)
    assert mediatypes.layer_media_type_for("oci", mediatypes.OCI_LAYER_ZSTD) == mediatypes.OCI_LAYER_ZSTD
    with pytest.raises(UsageError, match="--format oci"):
        mediatypes.layer_media_type_for("docker", mediatypes.OCI_LAYER_ZSTD)


def test_canonical_json_is_stable() -> None:
    assert documents.canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
