"""Failed builds as a user sees them: one `error:` line naming what failed and where, a non-zero
exit, no traceback, no output file or temporary file left behind, no tag pushed."""

from __future__ import annotations

from pathlib import Path

import pytest
from build_checks import (
    EPOCH_ENV,
    assert_user_error,
    cache_args,
    corrupt_blob,
    make_app,
    raw_manifest,
    requests,
    tag_exists,
)
from conftest import DockerConfig, RunDockwright
from images import BusyboxBase
from servers import RegistryServer, free_port


def _build(dockwright: RunDockwright, tmp_path: Path, *args: str):
    context = tmp_path / "context"
    if not context.exists():
        make_app(context)
    return dockwright("build", context, *args, *cache_args(tmp_path), env=EPOCH_ENV, check=False)


def _base_layer(base: BusyboxBase) -> str:
    """The first (busybox) layer of the Docker schema 2 base."""
    return raw_manifest(base.docker_ref)["layers"][0]["digest"]


def test_corrupted_base_layer_fails_an_archive_build_and_leaves_no_file(
    dockwright: RunDockwright, busybox_base: BusyboxBase, registry: RegistryServer, tmp_path: Path
) -> None:
    layer = _base_layer(busybox_base)
    corrupt_blob(registry, layer)
    out = tmp_path / "out"
    out.mkdir()

    proc = _build(dockwright, tmp_path, "--from", busybox_base.docker_ref, "--copy", "app:/app",
                  "-t", "example.com/app:1", "-o", f"type=docker,dest={out / 'x.tar'}")

    assert_user_error(proc, layer)
    assert list(out.iterdir()) == []
    assert requests(registry, "GET", f"/blobs/{layer}")  # it was downloaded, and refused


def test_corrupted_base_layer_streamed_to_another_registry_pushes_no_tag(
    dockwright: RunDockwright,
    busybox_base: BusyboxBase,
    registry: RegistryServer,
    htpasswd_registry: RegistryServer,
    docker_config: DockerConfig,
    tmp_path: Path,
) -> None:
    docker_config.login(htpasswd_registry.host, htpasswd_registry.username, htpasswd_registry.password)
    layer = _base_layer(busybox_base)
    corrupt_blob(registry, layer)

    proc = _build(dockwright, tmp_path, "--from", busybox_base.docker_ref, "--copy", "app:/app",
                  "-t", f"{htpasswd_registry.host}/team/app:1", "--push")

    assert_user_error(proc, layer)
    assert not tag_exists(htpasswd_registry, "team/app")
    assert not htpasswd_registry.blob_data_path(layer).exists()


def test_missing_base_names_the_reference(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    missing = f"{busybox_base.host}/{busybox_base.repository}:no-such-tag"

    proc = _build(dockwright, tmp_path, "--from", missing, "-o", f"type=oci,dest={tmp_path / 'x.tar'}")

    assert_user_error(proc, busybox_base.repository, "no-such-tag")
    assert not (tmp_path / "x.tar").exists()


def test_unreachable_registry_is_one_line(dockwright: RunDockwright, tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"

    proc = _build(dockwright, tmp_path, "--from", f"{host}/base:1", "-o", f"type=oci,dest={tmp_path / 'x.tar'}")

    assert_user_error(proc, host)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--from", "Not A Ref", "-o", "type=oci,dest=x.tar"], ["Not A Ref"]),
        (["--from", "scratch", "--copy", "missing:/x", "-o", "type=oci,dest=x.tar"], ["missing"]),
        (["--from", "scratch", "--copy", "../outside:/x", "-o", "type=oci,dest=x.tar"], ["../outside"]),
        (["--from", "scratch", "-o", "type=bogus"], ["bogus"]),
        (["--from", "scratch", "-o", "type=oci"], ["dest"]),
        (["--from", "scratch", "--push"], ["--push", "-t"]),
        (["--from", "scratch", "-t", "a/b:1", "--platform", "linux/amd64,linux/arm64",
          "-o", "type=docker,dest=x.tar"], ["--platform"]),
        (["--from", "scratch", "--platform", "nonsense", "-o", "type=oci,dest=x.tar"], ["nonsense"]),
        (["--from", "scratch", "--env", "NOEQUALS", "-o", "type=oci,dest=x.tar"], ["NOEQUALS"]),
        (["--from", "scratch", "--cmd", "[not json", "-o", "type=oci,dest=x.tar"], ["--cmd"]),
        (["--from", "oci-layout:///nonexistent/layout:1", "-o", "type=oci,dest=x.tar"], ["/nonexistent/layout"]),
    ],
    ids=["bad-ref", "missing-copy-source", "copy-outside-context", "bad-output-type", "output-without-dest",
         "push-without-tag", "docker-archive-multi-platform", "bad-platform", "bad-env", "bad-json-cmd",
         "missing-layout"],
)
def test_bad_input_is_one_line_without_traceback(
    dockwright: RunDockwright, tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    make_app(tmp_path / "context")
    (tmp_path / "outside").write_text("not in the context\n")

    proc = dockwright("build", "context", *args, *cache_args(tmp_path), cwd=tmp_path, check=False)

    assert_user_error(proc, *needles)
    assert not (tmp_path / "x.tar").exists()
