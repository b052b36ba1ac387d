"""OCI archives, docker archives and OCI layout directories, written from a real (offline) build onto
scratch: every blob they name is there and verifies, tags accumulate, a failure leaves nothing behind."""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from validate import validate_docker_archive, validate_layout, validate_oci_archive

from dockwright.cache import Cache
from dockwright.executor import Builder
from dockwright.formats import PublishContext, write_all
from dockwright.formats.docker_archive import DockerArchive
from dockwright.formats.layout import IMAGE_NAME, REF_NAME, OciArchive, OciLayoutDir
from dockwright.frontends import flags
from dockwright.model import documents, mediatypes
from dockwright.model.errors import DigestMismatchError, DockwrightError, ImageFormatError, UsageError
from dockwright.model.image import BuildResult
from dockwright.model.reference import Reference, parse_reference
from dockwright.plan import BuildOptions
from dockwright.progress import Progress

EPOCH = 1_700_000_000


def _build(tmp_path: Path, text: str = "hello\n", fmt: str | None = None, base: str = "scratch") -> BuildResult:
    context = tmp_path / f"context-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    if not (context / "app").is_dir():  # written once: a rebuild of the same context may hit the cache
        (context / "app").mkdir(parents=True)
        (context / "app" / "hello.txt").write_text(text)
        (context / "app" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    edit = flags.config_edit(cmd='["/app/run.sh"]', env=["A=1"])
    plan = flags.plan_from_flags(context, base, ["app:/app"], edit, annotations=["com.example.k=v"])
    options = BuildOptions(platforms="linux/amd64", format=fmt, source_date_epoch=EPOCH)
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    return Builder(options, Cache(tmp_path / "cache"), None, workdir).build(lambda platform: plan)


@pytest.fixture
def result(tmp_path: Path) -> BuildResult:
    return _build(tmp_path)


@pytest.fixture
def cached(tmp_path: Path) -> BuildResult:
    """The same build twice: the second one's layer comes from the cache."""
    _build(tmp_path)
    return _build(tmp_path)


def write_archive(result: BuildResult, dest: Path, tags: list[Reference], *, docker: bool, mtime: int) -> None:
    """What `-o type=docker|oci,dest=...` does with the build's result."""
    output = DockerArchive(dest) if docker else OciArchive(dest)
    write_all(result, [output], PublishContext(tags, None, dest.parent, Progress(), mtime=mtime))


def write_layout_dir(result: BuildResult, root: Path, tags: list[Reference]) -> None:
    """What `-o type=oci,dest=DIR,tar=false` does with the build's result."""
    write_all(result, [OciLayoutDir(root)], PublishContext(tags, None, root.parent, Progress()))


def _tags(*texts: str) -> list[Reference]:
    return [parse_reference(t) for t in texts]


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Files:
    """Uniform read access to a layout, in a directory or a tar archive."""

    def __init__(self, path: Path) -> None:
        self.files: dict[str, bytes] = {}
        if path.is_dir():
            for file in path.rglob("*"):
                if file.is_file():
                    self.files[file.relative_to(path).as_posix()] = file.read_bytes()
        else:
            with tarfile.open(path) as archive:
                for member in archive:
                    if member.isfile():
                        self.files[member.name] = archive.extractfile(member).read()  # type: ignore[union-attr]

    def json(self, name: str) -> Any:
        return json.loads(self.files[name])

    def blob(self, digest: str) -> bytes:
        data = self.files[f"blobs/{digest.replace(':', '/')}"]
        assert _sha(data) == digest
        return data


def _check_image(files: _Files, manifest_descriptor: dict[str, Any]) -> dict[str, Any]:
    """Every blob the manifest names is present with the declared size and digest."""
    manifest_bytes = files.blob(manifest_descriptor["digest"])
    assert len(manifest_bytes) == manifest_descriptor["size"]
    manifest = documents.parse_document(manifest_bytes, None, "written manifest")
    assert isinstance(manifest, documents.Manifest)
    for descriptor in (manifest.config, *manifest.layers):
        assert len(files.blob(descriptor.digest)) == descriptor.size
    config = documents.parse_config(files.blob(manifest.config.digest), "written config")
    assert len(config["rootfs"]["diff_ids"]) == len(manifest.layers)
    return config


def test_oci_archive(result: BuildResult, tmp_path: Path) -> None:
    dest = tmp_path / "app.tar"
    write_archive(result, dest, _tags("example.com/app:1", "example.com/app:latest"), docker=False, mtime=EPOCH)
    files = _Files(dest)
    assert files.json("oci-layout") == {"imageLayoutVersion": "1.0.0"}
    index = files.json("index.json")
    assert index["schemaVersion"] == 2 and index["mediaType"] == mediatypes.OCI_INDEX
    assert [m["annotations"] for m in index["manifests"]] == [
        {REF_NAME: "1", IMAGE_NAME: "example.com/app:1"},
        {REF_NAME: "latest", IMAGE_NAME: "example.com/app:latest"},
    ]
    assert {m["digest"] for m in index["manifests"]} == {result.top.descriptor.digest}
    config = _check_image(files, index["manifests"][0])
    assert config["config"]["Cmd"] == ["/app/run.sh"]
    assert "manifest.json" not in files.files
    assert validate_oci_archive(dest).images == {result.top.descriptor.digest.removeprefix("sha256:"): 1}
    with tarfile.open(dest) as archive:
        assert {m.mtime for m in archive} == {EPOCH}
        assert {(m.uid, m.gid) for m in archive} == {(0, 0)}


def test_untagged_oci_archive_names_the_image_once(result: BuildResult, tmp_path: Path) -> None:
    dest = tmp_path / "app.tar"
    write_archive(result, dest, [], docker=False, mtime=EPOCH)
    index = _Files(dest).json("index.json")
    assert index["manifests"] == [result.top.descriptor.to_json()]


def test_archives_are_reproducible(result: BuildResult, tmp_path: Path) -> None:
    tags = _tags("example.com/app:1")
    write_archive(result, tmp_path / "a.tar", tags, docker=True, mtime=EPOCH)
    write_archive(_build(tmp_path / "again"), tmp_path / "b.tar", tags, docker=True, mtime=EPOCH)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_docker_archive(result: BuildResult, tmp_path: Path) -> None:
    dest = tmp_path / "app-docker.tar"
    write_archive(result, dest, _tags("nginx:v1", "example.com/team/app:2", f"example.com/app@sha256:{'a' * 64}"),
                  docker=True, mtime=EPOCH)
    files = _Files(dest)
    (entry,) = files.json("manifest.json")
    assert entry["RepoTags"] == ["nginx:v1", "example.com/team/app:2"]  # a digest-only reference is no tag
    img = result.images[0]
    assert entry["Config"] == "blobs/" + img.config.descriptor.digest.replace(":", "/")
    assert entry["Layers"] == ["blobs/" + layer.descriptor.digest.replace(":", "/") for layer in img.layers]
    for name in (entry["Config"], *entry["Layers"]):
        assert name in files.files
    _check_image(files, files.json("index.json")["manifests"][0])  # also an OCI layout (Docker 25+ format)
    assert set(validate_docker_archive(dest).images.values()) == {1}


def test_docker_format_build_gives_docker_media_types(tmp_path: Path) -> None:
    built = _build(tmp_path, fmt="docker")
    dest = tmp_path / "d.tar"
    write_archive(built, dest, _tags("app:1"), docker=True, mtime=EPOCH)
    files = _Files(dest)
    manifest = files.json("blobs/" + built.top.descriptor.digest.replace(":", "/"))
    assert manifest["mediaType"] == mediatypes.DOCKER_MANIFEST
    assert {layer["mediaType"] for layer in manifest["layers"]} == {mediatypes.DOCKER_LAYER_GZIP}
    assert "annotations" not in manifest
    assert set(validate_docker_archive(dest).images.values()) == {1}


def test_layout_dir_accumulates_tags(tmp_path: Path) -> None:
    first, second = _build(tmp_path, "one\n"), _build(tmp_path, "two\n")
    root = tmp_path / "layout"
    write_layout_dir(first, root, _tags("example.com/app:1"))
    write_layout_dir(second, root, _tags("example.com/app:2"))
    files = _Files(root)
    index = files.json("index.json")
    by_tag = {m["annotations"][REF_NAME]: m["digest"] for m in index["manifests"]}
    assert by_tag == {"1": first.top.descriptor.digest, "2": second.top.descriptor.digest}
    for descriptor in index["manifests"]:
        _check_image(files, descriptor)
    assert len(validate_layout(root).images) == 2


def test_validate_image_finds_what_is_wrong(result: BuildResult, tmp_path: Path) -> None:
    """The shared checks (tests/validate.py) fail on a layer whose bytes or diff_id are wrong."""
    root = tmp_path / "layout"
    write_layout_dir(result, root, _tags("example.com/app:1"))
    validate_layout(root)
    layer = result.images[0].layers[0].descriptor.digest
    blob = root / "blobs" / layer.replace(":", "/")
    good = blob.read_bytes()
    blob.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(AssertionError, match="descriptor says"):
        validate_layout(root)
    blob.write_bytes(good)
    config_digest = result.images[0].config.descriptor.digest
    config = json.loads((root / "blobs" / config_digest.replace(":", "/")).read_bytes())
    config["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    with pytest.raises(AssertionError, match="has diff_id"):
        _check_config_only(config, root, layer)


def _check_config_only(config: dict[str, Any], root: Path, layer: str) -> None:
    import gzip

    from validate import check_config
    check_config(config, [gzip.decompress((root / "blobs" / layer.replace(":", "/")).read_bytes())], "test")


def test_layout_dir_keeps_both_tags_of_the_same_image(result: BuildResult, tmp_path: Path) -> None:
    root = tmp_path / "layout"
    write_layout_dir(result, root, _tags("example.com/app:1"))
    write_layout_dir(result, root, _tags("example.com/app:stable"))
    index = _Files(root).json("index.json")
    assert sorted(m["annotations"][REF_NAME] for m in index["manifests"]) == ["1", "stable"]


def test_layout_dir_names_an_untagged_image_once(result: BuildResult, tmp_path: Path) -> None:
    root = tmp_path / "layout"
    write_layout_dir(result, root, [])
    write_layout_dir(result, root, [])
    write_layout_dir(result, root, _tags("example.com/app:1"))
    index = _Files(root).json("index.json")
    assert [(m.get("annotations") or {}).get(REF_NAME) for m in index["manifests"]] == ["1"]


def test_layout_dir_moves_a_tag_to_the_new_image(tmp_path: Path) -> None:
    first, second = _build(tmp_path, "one\n"), _build(tmp_path, "two\n")
    root = tmp_path / "layout"
    write_layout_dir(first, root, _tags("example.com/app:1"))
    write_layout_dir(second, root, _tags("example.com/app:1"))
    index = _Files(root).json("index.json")
    assert [m["digest"] for m in index["manifests"]] == [second.top.descriptor.digest]


def test_a_written_layout_is_a_usable_base(tmp_path: Path) -> None:
    first = _build(tmp_path, "one\n")
    root = tmp_path / "layout"
    write_layout_dir(first, root, _tags("example.com/base:1", "example.com/base:2"))
    child = _build(tmp_path, "two\n", base=f"oci-layout://{root}:2")
    (img,) = child.images
    assert [layer.descriptor.digest for layer in img.layers[:1]] == [first.images[0].layers[0].descriptor.digest]
    assert len(img.layers) == 2
    config = json.loads(img.config.data)
    assert config["config"]["Env"] == ["A=1"]  # inherited and replaced in place, not duplicated
    assert [h["created_by"] for h in config["history"] if not h.get("empty_layer")] == [
        "dockwright --copy app:/app", "dockwright --copy app:/app"]
    with pytest.raises(UsageError, match="no image tagged '3'"):
        _build(tmp_path, "x\n", base=f"oci-layout://{root}:3")
    with pytest.raises(UsageError, match="not an OCI layout"):
        _build(tmp_path, "y\n", base=f"oci-layout://{tmp_path / 'nowhere'}")


def test_a_written_oci_archive_is_a_usable_base_read_in_place(tmp_path: Path) -> None:
    """Issue 11 item 9: `-o type=oci` output as `oci-archive://FILE[:TAG]`; its layers stream from byte ranges of
    the archive (the bytes verified against their digests), and the wrong scheme says which to use."""
    first = _build(tmp_path, "one\n")
    archive = tmp_path / "first.tar"
    write_archive(first, archive, _tags("example.com/base:1"), docker=False, mtime=0)
    child = _build(tmp_path, "two\n", base=f"oci-archive://{archive}:1")
    (img,) = child.images
    base_layer = img.layers[0]
    assert base_layer.descriptor.digest == first.images[0].layers[0].descriptor.digest
    assert b"".join(base_layer.source.open()) == b"".join(first.images[0].layers[0].source.open())
    with pytest.raises(UsageError, match="is a file; an OCI archive is read with oci-archive://"):
        _build(tmp_path, "x\n", base=f"oci-layout://{archive}")
    with pytest.raises(UsageError, match="is a directory; an OCI layout is read with oci-layout://"):
        _build(tmp_path, "x\n", base=f"oci-archive://{tmp_path}")
    docker = tmp_path / "first.docker.tar"
    write_archive(first, docker, _tags("example.com/base:1"), docker=True, mtime=0)
    assert len(_build(tmp_path, "y\n", base=f"oci-archive://{docker}").images[0].layers) == 2  # both formats in one


def test_layout_dir_refuses_a_directory_that_is_not_a_layout(result: BuildResult, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    (root / "holiday.jpg").write_bytes(b"jpg")
    with pytest.raises(UsageError, match="not an OCI layout"):
        write_layout_dir(result, root, [])
    assert sorted(p.name for p in root.iterdir()) == ["holiday.jpg"]


@pytest.mark.parametrize("index_text", ["{broken", '{"manifests": "x"}', "[]"])
def test_layout_dir_refuses_to_overwrite_a_broken_index(result: BuildResult, tmp_path: Path,
                                                        index_text: str) -> None:
    root = tmp_path / "layout"
    root.mkdir()
    (root / "index.json").write_text(index_text)
    with pytest.raises(ImageFormatError, match="refusing to overwrite"):
        write_layout_dir(result, root, [])
    assert (root / "index.json").read_text() == index_text


def test_docker_archive_refuses_several_platforms(result: BuildResult, tmp_path: Path) -> None:
    two = BuildResult([result.images[0], result.images[0]])
    with pytest.raises(UsageError, match="one platform"):
        write_archive(two, tmp_path / "x.tar", [], docker=True, mtime=EPOCH)
    assert list(tmp_path.glob("*x.tar*")) == []


def _corrupt_first_layer(result: BuildResult) -> None:
    """Same size, wrong bytes: only a digest check can notice. The layer must come from the cache (a
    layer built in this process is trusted, its digest made from the bytes as they were written)."""
    source = result.images[0].layers[0].source
    assert not source.fresh  # type: ignore[attr-defined]
    path: Path = source.path  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_layer_built_in_this_process_is_not_hashed_again_but_its_size_is_checked(result: BuildResult,
                                                                                   tmp_path: Path) -> None:
    source = result.images[0].layers[0].source
    assert source.fresh  # type: ignore[attr-defined]
    path: Path = source.path  # type: ignore[attr-defined]
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DigestMismatchError, match=r"got .* bytes, descriptor declares"):
        write_layout_dir(result, tmp_path / "layout", [])
    assert not (tmp_path / "layout" / "index.json").exists()


def _leftovers(folder: Path) -> Iterator[Path]:
    return (p for p in folder.rglob("*") if ".tmp-" in p.name)


@pytest.mark.parametrize("docker", [False, True])
def test_failing_blob_leaves_no_archive_and_no_temp_file(cached: BuildResult, tmp_path: Path, docker: bool) -> None:
    result = cached
    out = tmp_path / "out"
    out.mkdir()
    _corrupt_first_layer(result)
    with pytest.raises(DigestMismatchError):
        write_archive(result, out / "app.tar", _tags("app:1"), docker=docker, mtime=EPOCH)
    assert list(out.iterdir()) == []


def test_failing_blob_keeps_the_previous_archive(cached: BuildResult, tmp_path: Path) -> None:
    result = cached
    dest = tmp_path / "out" / "app.tar"
    dest.parent.mkdir()
    write_archive(result, dest, _tags("app:1"), docker=False, mtime=EPOCH)
    before = dest.read_bytes()
    _corrupt_first_layer(result)
    with pytest.raises(DigestMismatchError):
        write_archive(result, dest, _tags("app:2"), docker=False, mtime=EPOCH)
    assert dest.read_bytes() == before
    assert list(_leftovers(dest.parent)) == []


def test_failing_blob_leaves_no_index_and_no_temp_file_in_a_layout_dir(cached: BuildResult, tmp_path: Path) -> None:
    result = cached
    root = tmp_path / "layout"
    _corrupt_first_layer(result)
    with pytest.raises(DigestMismatchError):
        write_layout_dir(result, root, _tags("app:1"))
    assert not (root / "index.json").exists()
    assert list(_leftovers(root)) == []
    bad = result.images[0].layers[0].descriptor.digest
    assert not (root / "blobs" / "sha256" / bad[7:]).exists()


def test_unwritable_destination_is_one_clear_error(result: BuildResult, tmp_path: Path) -> None:
    with pytest.raises(DockwrightError) as info:
        write_archive(result, tmp_path / "missing-dir" / "app.tar", [], docker=False, mtime=EPOCH)
    assert "cannot write" in str(info.value)
    assert str(tmp_path / "missing-dir" / "app.tar") in str(info.value)
