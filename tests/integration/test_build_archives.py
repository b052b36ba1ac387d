"""`dockwright build` to files: docker-archives loaded by podman, OCI archives read by skopeo, OCI
layout directories read by umoci and run by runc, several outputs in one build, and local bases
(`oci-layout://`, `docker-archive://`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from build_checks import EPOCH_ENV, OCI_MANIFEST, cache_args, digest_lines, make_app, raw_manifest, skopeo_json
from conftest import RunDockwright
from images import BusyboxBase, Podman, pull_to_layout, run_oci_image, sh
from validate import validate_docker_archive, validate_layout, validate_oci_archive, validate_registry

APP_ARGS = ["--copy", "app:/app", "--entrypoint", '["/app/hello.sh"]', "--env", "GREETING=archived"]


def _build(dockwright: RunDockwright, tmp_path: Path, base: str, *args: str) -> str:
    context = tmp_path / "context"
    if not context.exists():
        make_app(context)
    return dockwright("build", context, "--from", base, *APP_ARGS, *cache_args(tmp_path), *args, env=EPOCH_ENV).stdout


def _only_digest(stdout: str) -> str:
    """Without a push, stdout is the image digest alone."""
    lines = stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sha256:") and len(lines[0]) == 71, stdout
    return lines[0]


def _layout_tags(layout: Path) -> dict[str, str]:
    index = json.loads((layout / "index.json").read_text())
    return {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"] for m in index["manifests"]}


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.mark.requires("runc")
def test_docker_archive_is_loaded_by_podman(
    dockwright: RunDockwright, busybox_files: BusyboxBase, podman: Podman, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    archive = out / "app.tar"
    _only_digest(_build(dockwright, tmp_path, f"oci-layout://{busybox_files.layout}:latest",
                        "-t", "example.com/team/app:2.0", "-o", f"type=docker,dest={archive}"))

    assert list(out.iterdir()) == [archive]  # no temporary file left beside it
    assert set(validate_docker_archive(archive).images.values()) == {3}  # manifest.json and the OCI layout
    loaded = podman("load", "-i", archive)
    assert "example.com/team/app:2.0" in loaded
    images = podman("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert "example.com/team/app:2.0" in images.splitlines()
    config_digest = skopeo_json("inspect", "--raw", f"docker-archive:{archive}")["config"]["digest"]
    assert podman("image", "inspect", "--format", "{{.Id}}", "example.com/team/app:2.0").strip() == \
        config_digest.removeprefix("sha256:")

    layout = pull_to_layout(f"docker-archive:{archive}", tmp_path / "pulled", "app")
    assert run_oci_image(layout, "app", tmp_path).splitlines()[0] == "greeting=archived"


def test_oci_archive_is_read_by_skopeo(dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path) -> None:
    """From a Docker schema 2 base too: an OCI archive holds OCI media types (skopeo sees no others)."""
    archive = tmp_path / "app.oci.tar"
    digest = _only_digest(_build(dockwright, tmp_path, busybox_base.docker_ref,
                                 "-t", "example.com/app:v1", "-o", f"type=oci,dest={archive}"))

    info = skopeo_json("inspect", f"oci-archive:{archive}:v1")
    assert info["Digest"] == digest
    assert info["Labels"] == {"base": "busybox"}
    assert "GREETING=archived" in info["Env"]
    assert len(info["Layers"]) == 3
    manifest = skopeo_json("inspect", "--raw", f"oci-archive:{archive}:v1")
    assert manifest["mediaType"] == OCI_MANIFEST
    assert validate_oci_archive(archive).images == {digest.removeprefix("sha256:"): 3}


@pytest.mark.requires("runc")
def test_oci_layout_dir_read_by_umoci_and_extended_by_a_second_build(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    """The base is Docker schema 2; umoci reads only OCI media types, which type=oci implies."""
    layout = tmp_path / "layout"
    first = _only_digest(_build(dockwright, tmp_path, busybox_base.docker_ref,
                                "-t", "example.com/app:one", "-o", f"type=oci,dest={layout},tar=false"))

    assert sh("umoci", "ls", "--layout", layout).split() == ["one"]
    assert run_oci_image(layout, "one", tmp_path).splitlines()[0] == "greeting=archived"

    second = _only_digest(_build(dockwright, tmp_path, busybox_base.docker_ref, "--env", "GREETING=second",
                                 "-t", "example.com/app:two", "-o", f"type=oci,dest={layout},tar=false"))

    assert second != first
    assert _layout_tags(layout) == {"one": first, "two": second}
    assert sorted(sh("umoci", "ls", "--layout", layout).split()) == ["one", "two"]
    assert run_oci_image(layout, "one", tmp_path).splitlines()[0] == "greeting=archived"
    assert run_oci_image(layout, "two", tmp_path).splitlines()[0] == "greeting=second"
    assert _leftovers(layout) == [] and _leftovers(layout / "blobs/sha256") == []
    assert validate_layout(layout).images == {first.removeprefix("sha256:"): 3, second.removeprefix("sha256:"): 3}


def test_several_outputs_in_one_build_hold_the_same_image(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    tag = f"{busybox_base.host}/apps/multi-out:1"
    archive, layout = tmp_path / "app.tar", tmp_path / "layout"

    stdout = _build(dockwright, tmp_path, busybox_base.docker_ref, "-t", tag, "--push",
                    "-o", f"type=docker,dest={archive}", "-o", f"type=oci,dest={layout},tar=false")

    ((ref, digest),) = digest_lines(stdout)
    assert ref == tag
    pushed = raw_manifest(tag)
    assert pushed["mediaType"] == OCI_MANIFEST  # one image for every output; type=oci implies OCI
    assert skopeo_json("inspect", "--raw", f"oci:{layout}:1") == pushed
    assert _layout_tags(layout) == {"1": digest}
    # a docker-archive has no manifest of its own: the same image means the same config (image ID)
    assert skopeo_json("inspect", "--raw", f"docker-archive:{archive}")["config"]["digest"] == \
        pushed["config"]["digest"]
    name = digest.removeprefix("sha256:")
    assert validate_registry(f"http://{busybox_base.host}", "apps/multi-out", "1").images == {name: 3}
    assert validate_layout(layout).images == {name: 3}
    assert set(validate_docker_archive(archive).images.values()) == {3}  # manifest.json and the OCI layout


@pytest.mark.requires("runc")
@pytest.mark.parametrize("source", ["oci-layout", "docker-archive"])
def test_local_base_to_docker_archive_loads_and_runs(
    dockwright: RunDockwright, busybox_files: BusyboxBase, podman: Podman, tmp_path: Path, source: str
) -> None:
    base = (f"oci-layout://{busybox_files.layout}:latest" if source == "oci-layout"
            else f"docker-archive://{busybox_files.archive}")
    archive = tmp_path / "app.tar"

    _build(dockwright, tmp_path, base, "--cmd", '["from", "local"]', "-t", "local/app:1",
           "-o", f"type=docker,dest={archive}")

    podman("load", "-i", archive)
    assert "docker.io/local/app:1" in podman("images", "--format", "{{.Repository}}:{{.Tag}}").splitlines()
    layout = pull_to_layout(f"docker-archive:{archive}", tmp_path / "pulled", "app")
    assert run_oci_image(layout, "app", tmp_path).splitlines() == [
        "greeting=archived", "uid=0 gid=0", "pwd=/", "args=from local",
    ]
