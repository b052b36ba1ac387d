"""Config edits with Docker's semantics, history padding, and the manifest/index documents we write."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dockwright import mutate
from dockwright.model import documents, mediatypes
from dockwright.model.blobs import BytesBlob
from dockwright.model.digest import digest_bytes
from dockwright.model.documents import Descriptor, parse_config, parse_document
from dockwright.model.errors import UsageError
from dockwright.model.image import BaseImage, FinalImage, Layer
from dockwright.model.platform import Platform
from dockwright.plan import ConfigEdit

CREATED = mutate.timestamp(1_700_000_000)
AMD64 = Platform("linux", "amd64")


def _config(**inner: Any) -> dict[str, Any]:
    return {"architecture": "amd64", "os": "linux", "config": dict(inner),
            "rootfs": {"type": "layers", "diff_ids": []}, "history": []}


def _edited(edit: ConfigEdit, **inner: Any) -> dict[str, Any]:
    config = _config(**inner)
    mutate.apply_edit(config, edit)
    return config["config"]


def test_timestamp_is_rfc3339_utc() -> None:
    assert mutate.timestamp(0) == "1970-01-01T00:00:00Z"
    assert CREATED == "2023-11-14T22:13:20Z"


# --------------------------------------------------------------------------- apply_edit


def test_env_replaces_by_key_in_place_and_appends_new_keys() -> None:
    """Docker (and BuildKit) replace an existing variable where it stands; new ones go last."""
    c = _edited(ConfigEdit(env=(("PATH", "/app/bin:/usr/bin"), ("NEW", "1"), ("LANG", "C.UTF-8"))),
                Env=["PATH=/usr/bin", "LANG=C", "HOME=/root"])
    assert c["Env"] == ["PATH=/app/bin:/usr/bin", "LANG=C.UTF-8", "HOME=/root", "NEW=1"]


def test_env_later_value_of_the_same_key_wins() -> None:
    c = _edited(ConfigEdit(env=(("A", "1"), ("B", "2"), ("A", "3"))))
    assert c["Env"] == ["A=3", "B=2"]


def test_env_value_may_contain_equals_signs_and_keys_match_exactly() -> None:
    c = _edited(ConfigEdit(env=(("OPTS", "a=b=c"),)), Env=["OPTS_X=1", "OPT=2"])
    assert c["Env"] == ["OPTS_X=1", "OPT=2", "OPTS=a=b=c"]


def test_cmd_empty_tuple_clears_and_none_inherits() -> None:
    assert "Cmd" not in _edited(ConfigEdit(entrypoint=("/app",), cmd=()), Cmd=["nginx"])
    kept = _edited(ConfigEdit(entrypoint=("/app",)), Cmd=["nginx"])
    assert kept == {"Cmd": ["nginx"], "Entrypoint": ["/app"]}
    assert _edited(ConfigEdit(cmd=("a", "b")), Cmd=["nginx"])["Cmd"] == ["a", "b"]


def test_labels_merge_with_later_values_winning() -> None:
    c = _edited(ConfigEdit(labels=(("a", "new"), ("c", "3"), ("c", "4"))), Labels={"a": "old", "b": "2"})
    assert c["Labels"] == {"a": "new", "b": "2", "c": "4"}


def test_exposed_ports_and_volumes_merge() -> None:
    c = _edited(ConfigEdit(exposed_ports=("8080/tcp", "53/udp"), volumes=("/data",)),
                ExposedPorts={"80/tcp": {}}, Volumes={"/var/lib": {}})
    assert c["ExposedPorts"] == {"80/tcp": {}, "8080/tcp": {}, "53/udp": {}}
    assert c["Volumes"] == {"/var/lib": {}, "/data": {}}


def test_onbuild_appends() -> None:
    c = _edited(ConfigEdit(onbuild=("RUN make",)), OnBuild=["COPY . /src"])
    assert c["OnBuild"] == ["COPY . /src", "RUN make"]


def test_healthcheck_none_disables_the_inherited_one() -> None:
    c = _edited(ConfigEdit(healthcheck={"Test": ["NONE"]}),
                Healthcheck={"Test": ["CMD", "curl", "-f", "http://localhost"], "Interval": 30_000_000_000})
    assert c["Healthcheck"] == {"Test": ["NONE"]}


def test_scalar_fields_and_author() -> None:
    config = _config(User="root")
    mutate.apply_edit(config, ConfigEdit(workdir="/app", user="1000:1000", stop_signal="SIGQUIT",
                                          shell=("/bin/bash", "-c"), author="me <me@example.com>"))
    assert config["config"] == {"User": "1000:1000", "WorkingDir": "/app", "StopSignal": "SIGQUIT",
                                "Shell": ["/bin/bash", "-c"]}
    assert config["author"] == "me <me@example.com>"


def test_empty_edit_changes_nothing() -> None:
    config = _config(Env=["A=1"], Cmd=["x"])
    before = json.dumps(config, sort_keys=True)
    mutate.apply_edit(config, ConfigEdit())
    assert json.dumps(config, sort_keys=True) == before


def test_null_config_section_is_created() -> None:
    config = _config()
    config["config"] = None
    mutate.apply_edit(config, ConfigEdit(user="app"))
    assert config["config"] == {"User": "app"}


# --------------------------------------------------------------------------- history


def _non_empty(history: list[dict[str, Any]]) -> int:
    return sum(1 for h in history if not h.get("empty_layer"))


def test_pad_history_makes_non_empty_entries_equal_layers() -> None:
    config = _config()
    config["history"] = [{"created_by": "ADD rootfs"}, {"created_by": "ENV A=1", "empty_layer": True}]
    mutate.pad_history(config, 3, CREATED)
    assert _non_empty(config["history"]) == 3
    assert config["history"][:2] == [{"created_by": "ADD rootfs"},
                                     {"created_by": "ENV A=1", "empty_layer": True}]
    assert config["history"][2]["created"] == CREATED


@pytest.mark.parametrize("history", [None, "bogus", []])
def test_pad_history_replaces_missing_or_invalid_history(history: object) -> None:
    config = _config()
    config["history"] = history
    mutate.pad_history(config, 2, CREATED)
    assert _non_empty(config["history"]) == 2


def test_pad_history_leaves_a_consistent_history_alone() -> None:
    config = _config()
    config["history"] = [{"created_by": "a"}, {"created_by": "b"}]
    mutate.pad_history(config, 2, CREATED)
    assert len(config["history"]) == 2


# --------------------------------------------------------------------------- finish / make_index


def _layer(n: int, media_type: str = mediatypes.OCI_LAYER_GZIP) -> Layer:
    data = f"layer-{n}".encode()
    digest = digest_bytes(data)
    return Layer(Descriptor(media_type, digest, len(data)), digest_bytes(b"diff" + data), BytesBlob(data, digest))


def _base(fmt: mediatypes.Format, layers: list[Layer], *, history: int | None = None, name: str | None = None,
          digest: str | None = None, annotations: dict[str, str] | None = None,
          platform: Platform = AMD64) -> BaseImage:
    config = _config(Env=["PATH=/usr/bin"])
    config.update(platform.to_json())
    config["rootfs"]["diff_ids"] = [layer.diff_id for layer in layers]
    config["history"] = [{"created_by": f"layer {i}"} for i in range(len(layers) if history is None else history)]
    return BaseImage(platform, fmt, config, list(layers), dict(annotations or {}), name, digest)


def _manifest_json(final: FinalImage) -> dict[str, Any]:
    return json.loads(final.manifest.data)


def _all_media_types(doc: dict[str, Any]) -> list[str]:
    return [doc["mediaType"], doc["config"]["mediaType"], *(layer["mediaType"] for layer in doc["layers"])]


def test_finish_oci_image_from_a_docker_base_converts_every_media_type() -> None:
    base = _base("docker", [_layer(1, mediatypes.DOCKER_LAYER_GZIP), _layer(2, mediatypes.DOCKER_LAYER_FOREIGN)])
    final = mutate.finish(base, "oci", CREATED, {})
    doc = _manifest_json(final)
    assert _all_media_types(doc) == [mediatypes.OCI_MANIFEST, mediatypes.OCI_CONFIG, mediatypes.OCI_LAYER_GZIP,
                                     mediatypes.OCI_LAYER_NONDIST_GZIP]
    assert [layer.descriptor.media_type for layer in final.layers] == [layer["mediaType"] for layer in doc["layers"]]


def test_finish_docker_image_from_an_oci_base_has_no_oci_types_and_no_annotations() -> None:
    base = _base("oci", [_layer(1)], name="docker.io/library/alpine:3", digest="sha256:" + "e" * 64,
                 annotations={"org.opencontainers.image.title": "alpine"})
    final = mutate.finish(base, "docker", CREATED, {"com.example.x": "y"})
    doc = _manifest_json(final)
    assert _all_media_types(doc) == [mediatypes.DOCKER_MANIFEST, mediatypes.DOCKER_CONFIG, mediatypes.DOCKER_LAYER_GZIP]
    assert "annotations" not in doc
    assert final.format == "docker"


def test_finish_docker_refuses_a_zstd_layer() -> None:
    with pytest.raises(UsageError, match="--format oci"):
        mutate.finish(_base("oci", [_layer(1, mediatypes.OCI_LAYER_ZSTD)]), "docker", CREATED, {})


def test_finish_oci_annotates_the_base_and_user_annotations_win() -> None:
    base = _base("oci", [_layer(1)], name="docker.io/library/alpine:3", digest="sha256:" + "e" * 64,
                 annotations={"inherited": "1", "org.opencontainers.image.title": "alpine"})
    doc = _manifest_json(mutate.finish(base, "oci", CREATED, {"org.opencontainers.image.title": "mine"}))
    assert doc["annotations"] == {
        "inherited": "1",
        "org.opencontainers.image.title": "mine",
        mutate.BASE_NAME: "docker.io/library/alpine:3",
        mutate.BASE_DIGEST: "sha256:" + "e" * 64,
    }


def test_finish_from_scratch_has_no_base_annotations() -> None:
    doc = _manifest_json(mutate.finish(_base("oci", []), "oci", CREATED, {}))
    assert "annotations" not in doc
    assert doc["layers"] == []


def test_finish_writes_documents_that_parse_and_match_their_descriptors() -> None:
    base = _base("oci", [_layer(1), _layer(2)], history=0)
    final = mutate.finish(base, "oci", CREATED, {})
    for doc in (final.config, final.manifest):
        assert doc.descriptor.digest == digest_bytes(doc.data)
        assert doc.descriptor.size == len(doc.data)
        assert b"".join(doc.blob.open()) == doc.data
    manifest = parse_document(final.manifest.data, None, "result")
    assert isinstance(manifest, documents.Manifest)
    assert manifest.config.digest == final.config.descriptor.digest
    assert [d.digest for d in manifest.layers] == [layer.descriptor.digest for layer in base.layers]
    assert [d.size for d in manifest.layers] == [layer.descriptor.size for layer in base.layers]
    config = parse_config(final.config.data, "result")
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer.diff_id for layer in base.layers]}
    assert config["created"] == CREATED
    assert _non_empty(config["history"]) == 2  # padded: the base had no history at all
    assert final.manifest.descriptor.platform == AMD64


def test_finish_does_not_modify_the_image() -> None:
    base = _base("oci", [_layer(1)], history=0)
    before = json.dumps(base.config, sort_keys=True)
    mutate.finish(base, "oci", CREATED, {})
    assert json.dumps(base.config, sort_keys=True) == before


def test_finish_is_deterministic() -> None:
    def make() -> bytes:
        return mutate.finish(_base("oci", [_layer(1)]), "oci", CREATED, {"a": "b"}).manifest.data

    assert make() == make()


def test_append_layer_adds_diff_id_and_history() -> None:
    base = _base("oci", [_layer(1)])
    mutate.append_layer(base, _layer(2), CREATED, "COPY app /app")
    assert base.config["rootfs"]["diff_ids"] == [_layer(1).diff_id, _layer(2).diff_id]
    assert base.config["history"][-1] == {"created": CREATED, "created_by": "COPY app /app"}
    mutate.add_history(base.config, CREATED, "ENV A=1", empty_layer=True)
    assert base.config["history"][-1]["empty_layer"] is True
    final = mutate.finish(base, "oci", CREATED, {})
    assert _non_empty(json.loads(final.config.data)["history"]) == 2


@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_make_index(fmt: mediatypes.Format) -> None:
    arm = Platform("linux", "arm64", "v8")
    finals = [mutate.finish(_base(fmt, [_layer(1)]), fmt, CREATED, {}),
              mutate.finish(_base(fmt, [_layer(2)], platform=arm), fmt, CREATED, {})]
    index_doc = mutate.make_index(finals, fmt, {"org.opencontainers.image.version": "1"})
    assert index_doc.descriptor.digest == digest_bytes(index_doc.data)
    data = json.loads(index_doc.data)
    assert data["mediaType"] == mediatypes.media_type(fmt, "index")
    assert [m["mediaType"] for m in data["manifests"]] == [mediatypes.media_type(fmt, "manifest")] * 2
    assert [m["platform"] for m in data["manifests"]] == [
        {"architecture": "amd64", "os": "linux"}, {"architecture": "arm64", "os": "linux", "variant": "v8"}]
    assert [m["digest"] for m in data["manifests"]] == [f.manifest.descriptor.digest for f in finals]
    assert ("annotations" in data) is (fmt == "oci")
    parsed = parse_document(index_doc.data, None, "index")
    assert isinstance(parsed, documents.Index)


def test_foreign_layers_are_not_pushed_as_blobs() -> None:
    """Windows base layers (foreign, with urls) stay where their urls point; everything else goes up."""
    from dockwright.formats.registry import _blobs_only
    from dockwright.model.blobs import BytesBlob
    from dockwright.model.documents import Descriptor
    from dockwright.model.image import BaseImage, BuildResult, Layer
    from dockwright.model.mediatypes import DOCKER_LAYER_FOREIGN, DOCKER_LAYER_GZIP
    from dockwright.model.platform import Platform
    from dockwright.mutate import finish

    foreign = Descriptor(DOCKER_LAYER_FOREIGN, "sha256:" + "a" * 64, 10, urls=("https://example.invalid/l",))
    own = Descriptor(DOCKER_LAYER_GZIP, "sha256:" + "b" * 64, 10)
    config = {"architecture": "amd64", "os": "windows", "config": {},
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "c" * 64, "sha256:" + "d" * 64]}}
    base = BaseImage(Platform("windows", "amd64"), "docker", config,
                     [Layer(foreign, "sha256:" + "c" * 64, BytesBlob(b"", foreign.digest)),
                      Layer(own, "sha256:" + "d" * 64, BytesBlob(b"", own.digest))])
    final = finish(base, "docker", "1970-01-01T00:00:00Z", {})
    pushed = {digest for digest, _, _ in _blobs_only(BuildResult([final]))}
    assert own.digest in pushed and foreign.digest not in pushed
    assert final.config.descriptor.digest in pushed
    manifest = final.manifest.data.decode()
    assert "https://example.invalid/l" in manifest  # the urls stay in the manifest
