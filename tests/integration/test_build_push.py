"""`dockwright build` in flags mode onto the busybox base, pushed to a real registry, pulled back
by skopeo and run by runc: what the program printed, and what skopeo says about the image."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from build_checks import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    EPOCH_ENV,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    cache_args,
    digest_lines,
    image_config,
    make_app,
    raw_manifest,
    requests,
    skopeo_json,
)
from conftest import RunDockwright
from images import APP_UID, BASE_LABEL, BASE_PATH_ENV, BusyboxBase, pull_to_layout, run_oci_image
from servers import RegistryServer
from validate import validate_registry


def _build_app(
    dockwright: RunDockwright, tmp_path: Path, base: str, tags: list[str], *extra: str
) -> subprocess.CompletedProcess[str]:
    """Build and push the hello app. The same call twice builds the same image."""
    context = tmp_path / "context"
    if not context.exists():
        make_app(context)
    tag_args = [arg for tag in tags for arg in ("-t", tag)]
    return dockwright(
        "build", context, "--from", base, "--copy", "app:/app",
        "--entrypoint", '["/app/hello.sh"]', "--cmd", '["one", "two"]',
        "--env", "GREETING=hello from dockwright", "--workdir", "/app", "--user", str(APP_UID),
        "--label", "org.example.app=hello", *tag_args, "--push", *cache_args(tmp_path), *extra,
        env=EPOCH_ENV,
    )  # fmt: skip


@pytest.mark.requires("runc")
@pytest.mark.parametrize(
    ("flavour", "format_args", "expected"),
    [
        ("docker", [], (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER)),
        ("oci", [], (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER)),
        ("docker", ["--format", "oci"], (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER)),
    ],
    ids=["docker-base", "oci-base", "docker-base-as-oci"],
)
def test_app_pushed_onto_busybox_runs_with_its_config(
    dockwright: RunDockwright,
    busybox_base: BusyboxBase,
    tmp_path: Path,
    flavour: str,
    format_args: list[str],
    expected: tuple[str, str, str],
) -> None:
    base = busybox_base.docker_ref if flavour == "docker" else busybox_base.oci_ref
    tags = [f"{busybox_base.host}/apps/hello:1.0", f"{busybox_base.host}/apps/hello:latest"]

    stdout = _build_app(dockwright, tmp_path, base, tags, *format_args).stdout

    pushed = digest_lines(stdout)
    assert [ref for ref, _ in pushed] == tags
    digests = {digest for _, digest in pushed}
    assert len(digests) == 1
    manifest = raw_manifest(tags[0])
    digest = digests.pop()
    assert raw_manifest(f"{busybox_base.host}/apps/hello@{digest}") == manifest
    assert validate_registry(f"http://{busybox_base.host}", "apps/hello", "1.0").images == {
        digest.removeprefix("sha256:"): 3}

    layout = pull_to_layout(tags[1], tmp_path / "pulled", "app")
    assert run_oci_image(layout, "app", tmp_path).splitlines() == [
        "greeting=hello from dockwright",
        f"uid={APP_UID} gid={APP_UID}",
        "pwd=/app",
        "args=one two",
    ]
    listing = run_oci_image(layout, "app", tmp_path, ["ls", "-ln", "/app", "/bin/busybox"])
    assert "-rwxr-xr-x    1 0        0" in listing  # copied files are root-owned, modes kept
    assert "hello.sh" in listing and "data.txt" in listing

    manifest_type, config_type, layer_type = expected
    assert manifest["mediaType"] == manifest_type
    assert manifest["config"]["mediaType"] == config_type
    assert [layer["mediaType"] for layer in manifest["layers"]] == [layer_type] * 3

    config = image_config(tags[0])
    assert config["config"]["Env"] == [BASE_PATH_ENV, "GREETING=hello from dockwright"]
    assert config["config"]["Labels"] == {BASE_LABEL[0]: BASE_LABEL[1], "org.example.app": "hello"}
    assert config["config"]["Entrypoint"] == ["/app/hello.sh"]
    assert config["config"]["Cmd"] == ["one", "two"]
    assert config["config"]["WorkingDir"] == "/app"
    assert config["config"]["User"] == str(APP_UID)
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert len(config["rootfs"]["diff_ids"]) == 3
    assert len([h for h in config["history"] if not h.get("empty_layer")]) == 3
    base_config = image_config(base)
    assert config["rootfs"]["diff_ids"][:2] == base_config["rootfs"]["diff_ids"]
    assert config["history"][: len(base_config["history"])] == base_config["history"]


@pytest.mark.requires("runc")
def test_shell_form_cmd_and_other_config_flags(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    """A non-JSON --cmd is the shell form; unset fields stay the base's; ports, volumes, stop signal."""
    tag = f"{busybox_base.host}/apps/shell:1"
    context = tmp_path / "empty-context"
    context.mkdir()
    dockwright(
        "build", context, "--from", busybox_base.docker_ref, "--cmd", "echo $HOME && id -un",
        "--expose", "8080", "--expose", "53/udp", "--volume", "/data", "--stop-signal", "SIGINT",
        "-t", tag, "--push", *cache_args(tmp_path), env=EPOCH_ENV,
    )  # fmt: skip

    config = image_config(tag)["config"]
    assert config["Cmd"] == ["/bin/sh", "-c", "echo $HOME && id -un"]
    assert config["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert config["Volumes"] == {"/data": {}}
    assert config["StopSignal"] == "SIGINT"
    assert config["Env"] == [BASE_PATH_ENV]
    assert config["WorkingDir"] == "/"
    layout = pull_to_layout(tag, tmp_path / "pulled", "shell")
    assert run_oci_image(layout, "shell", tmp_path).splitlines() == ["/root", "root"]


def test_a_tagged_push_checks_everything_first_and_puts_its_manifest_once(
    dockwright: RunDockwright, busybox_base: BusyboxBase, registry: RegistryServer, tmp_path: Path
) -> None:
    """Round trips are what a registry far away charges for: the tag and blob checks come before any
    upload, and the manifest goes up once, under its tag (not by digest and then again by tag)."""
    tag = f"{registry.host}/apps/once:1"

    proc = _build_app(dockwright, tmp_path, busybox_base.docker_ref, [tag, f"{registry.host}/apps/once:2"])

    assert requests(registry, "PUT", "/manifests/") == ["PUT /v2/apps/once/manifests/1",
                                                        "PUT /v2/apps/once/manifests/2"]
    assert len(requests(registry, "HEAD", "/v2/apps/once/manifests/")) == 1  # the first tag's: it is not there
    (digest,) = {digest for _, digest in digest_lines(proc.stdout)}
    assert skopeo_json("inspect", "--tls-verify=false", f"docker://{tag}")["Digest"] == digest
    assert validate_registry(registry.url, "apps/once", "2").images == {digest.removeprefix("sha256:"): 3}



def test_same_registry_push_moves_no_base_layer_and_a_repeat_pushes_nothing(
    dockwright: RunDockwright, busybox_base: BusyboxBase, registry: RegistryServer, tmp_path: Path
) -> None:
    base_layers = [layer["digest"] for layer in raw_manifest(busybox_base.docker_ref)["layers"]]
    tag = f"{registry.host}/apps/mounted:1"

    first = _build_app(dockwright, tmp_path, busybox_base.docker_ref, [tag]).stdout

    assert requests(registry, "GET", f"/v2/{busybox_base.repository}/manifests/")  # the log is read right
    for digest in base_layers:
        assert requests(registry, "GET", f"/blobs/{digest}") == [], f"base layer {digest} went through the client"
        assert requests(registry, "PUT", f"digest={digest}") == []
        assert requests(registry, "POST", f"mount={digest}")  # mounted from base/busybox instead
    assert image_config(tag)["rootfs"]["diff_ids"][:2] == image_config(busybox_base.docker_ref)["rootfs"]["diff_ids"]

    writes = [requests(registry, method, "/v2/apps/mounted/") for method in ("POST", "PATCH", "PUT")]
    again = _build_app(dockwright, tmp_path, busybox_base.docker_ref, [tag])

    assert again.stdout == first
    assert "nothing to push" in again.stderr
    assert [requests(registry, method, "/v2/apps/mounted/") for method in ("POST", "PATCH", "PUT")] == writes
