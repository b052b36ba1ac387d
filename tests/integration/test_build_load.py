"""`dockwright build --load`: into a local engine through the Docker Engine API (served here by
`podman system service`), with no docker CLI."""

from __future__ import annotations

from pathlib import Path

from build_checks import EPOCH_ENV, assert_user_error, cache_args, make_app
from conftest import RunDockwright
from images import BusyboxBase, Podman


def test_load_into_engine_lists_the_tagged_image(
    dockwright: RunDockwright, busybox_base: BusyboxBase, podman: Podman, podman_service: Path, tmp_path: Path
) -> None:
    context = make_app(tmp_path / "context")

    proc = dockwright(
        "build", context, "--from", busybox_base.docker_ref, "--copy", "app:/app",
        "--entrypoint", '["/app/hello.sh"]', "--label", "loaded=yes", "-t", "example.com/team/loaded:3",
        "--load", *cache_args(tmp_path), env={**EPOCH_ENV, "DOCKER_HOST": f"unix://{podman_service}"},
    )  # fmt: skip

    assert proc.stdout.startswith("sha256:")
    images = podman("images", "--format", "{{.Repository}}:{{.Tag}}").splitlines()
    assert "example.com/team/loaded:3" in images
    labels = podman("image", "inspect", "--format", "{{.Labels.loaded}} {{.Config.Entrypoint}}",
                    "example.com/team/loaded:3")
    assert labels.split() == ["yes", "[/app/hello.sh]"]


def test_load_without_an_engine_is_a_clear_error(
    dockwright: RunDockwright, busybox_files: BusyboxBase, tmp_path: Path
) -> None:
    missing = tmp_path / "no-engine.sock"

    proc = dockwright(
        "build", tmp_path, "--from", f"oci-layout://{busybox_files.layout}:latest", "-t", "x/y:1", "--load",
        *cache_args(tmp_path), env={"DOCKER_HOST": f"unix://{missing}"}, check=False,
    )  # fmt: skip

    assert_user_error(proc, str(missing))
