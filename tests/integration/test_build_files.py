"""What `--copy` puts into the image, seen from inside a running container: COPY semantics for
files and directories, owners, modes (masked unless --chmod), symlinks; and --annotation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from build_checks import DOCKER_MANIFEST, EPOCH_ENV, OCI_MANIFEST, cache_args, raw_manifest
from conftest import RunDockwright
from images import BusyboxBase, run_oci_image


def _context(root: Path) -> Path:
    """A context with a nested tree, a setuid and a world-writable file, and symlinks."""
    (root / "site/static/css").mkdir(parents=True)
    (root / "site/index.html").write_text("<h1>hi</h1>\n")
    (root / "site/static/css/app.css").write_text("body {}\n")
    (root / "site/current").symlink_to("static/css/app.css")
    tool = root / "tool"
    tool.write_text("#!/bin/sh\necho tool\n")
    tool.chmod(0o4755)  # setuid: must be masked
    shared = root / "shared.txt"
    shared.write_text("shared\n")
    os.chmod(shared, 0o666)  # world-writable: must be masked
    return root


def _build_and_run(dockwright: RunDockwright, base: BusyboxBase, tmp_path: Path, script: str, *args: str) -> str:
    context = _context(tmp_path / "context")
    layout = tmp_path / "layout"
    dockwright(
        "build", context, "--from", f"oci-layout://{base.layout}:latest", *args,
        "-t", "example.com/files:1", "-o", f"type=oci,dest={layout},tar=false", *cache_args(tmp_path),
        env=EPOCH_ENV,
    )  # fmt: skip
    return run_oci_image(layout, "1", tmp_path, ["sh", "-c", script])


@pytest.mark.requires("runc")
def test_copy_semantics_owners_modes_and_symlinks(
    dockwright: RunDockwright, busybox_files: BusyboxBase, tmp_path: Path
) -> None:
    out = _build_and_run(
        dockwright, busybox_files, tmp_path,
        "cd /srv && stat -c '%n %a %u:%g' www www/index.html www/static/css/app.css bin/tool bin/shared.txt "
        "single/renamed.txt && readlink www/current && ls /srv/www && ls /work && stat -c '%n %a %u:%g' /srv",
        "--copy", "site:/srv/www", "--copy", "tool:/srv/bin/", "--copy", "shared.txt:/srv/bin/",
        "--copy", "shared.txt:/srv/single/renamed.txt", "--workdir", "/work", "--copy", "site/index.html:.",
    )  # fmt: skip

    assert out.splitlines() == [
        "www 755 0:0",
        "www/index.html 644 0:0",
        "www/static/css/app.css 644 0:0",
        "bin/tool 755 0:0",  # setuid bit masked
        "bin/shared.txt 644 0:0",  # world-write masked
        "single/renamed.txt 644 0:0",
        "static/css/app.css",  # the symlink is kept as a symlink
        "current",
        "index.html",
        "static",
        "index.html",  # a relative destination resolves against --workdir
        "/srv 755 0:0",
    ]


@pytest.mark.requires("runc")
def test_chown_and_chmod_apply_to_every_copy(
    dockwright: RunDockwright, busybox_files: BusyboxBase, tmp_path: Path
) -> None:
    out = _build_and_run(
        dockwright, busybox_files, tmp_path,
        "stat -c '%n %a %u:%g' /opt/site /opt/site/index.html /opt/tool",
        "--copy", "site:/opt/site", "--copy", "tool:/opt/tool", "--chown", "1000:1000", "--chmod", "4755",
    )  # fmt: skip

    assert out.splitlines() == [
        "/opt/site 4755 1000:1000",
        "/opt/site/index.html 4755 1000:1000",
        "/opt/tool 4755 1000:1000",  # an explicit --chmod is not masked
    ]


@pytest.mark.parametrize("format_args", [[], ["--format", "oci"]], ids=["implied", "explicit"])
def test_annotations_make_an_oci_manifest_even_on_a_docker_base(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path, format_args: list[str]
) -> None:
    """Docker schema 2 manifests cannot carry annotations: like BuildKit, use OCI media types."""
    tag = f"{busybox_base.host}/apps/annotated:1"
    dockwright(
        "build", tmp_path, "--from", busybox_base.docker_ref, *format_args,
        "--annotation", "org.opencontainers.image.source=https://example.com/repo",
        "-t", tag, "--push", *cache_args(tmp_path), env=EPOCH_ENV,
    )  # fmt: skip

    manifest = raw_manifest(tag)
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["annotations"]["org.opencontainers.image.source"] == "https://example.com/repo"
    assert manifest["annotations"]["org.opencontainers.image.base.name"] == busybox_base.docker_ref


def test_annotations_with_format_docker_are_not_dropped_silently(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    tag = f"{busybox_base.host}/apps/annotated:docker"
    proc = dockwright(
        "build", tmp_path, "--from", busybox_base.docker_ref, "--format", "docker", "--annotation", "a=b",
        "-t", tag, "--push", *cache_args(tmp_path), env=EPOCH_ENV,
    )  # fmt: skip

    assert "--annotation is ignored" in proc.stderr
    assert raw_manifest(tag)["mediaType"] == DOCKER_MANIFEST
