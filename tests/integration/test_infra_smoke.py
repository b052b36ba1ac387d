"""The test infrastructure itself works: what the other integration tests rely on is checked here
with independent tools (skopeo, umoci, runc, podman, the Docker SDK), not with dockwright."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from images import BusyboxBase, Podman, pull_to_layout, run_oci_image, sh
from servers import RegistryServer

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def skopeo(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["skopeo", *map(str, args)], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"skopeo {args} failed:\n{proc.stderr}")
    return proc


def raw_manifest(ref: str, *extra: str) -> dict:
    return json.loads(skopeo("inspect", "--raw", "--tls-verify=false", *extra, f"docker://{ref}").stdout)


def inspect_config(ref: str, *extra: str) -> dict:
    return json.loads(skopeo("inspect", "--config", "--tls-verify=false", *extra, f"docker://{ref}").stdout)


@pytest.mark.requires("runc")
@pytest.mark.parametrize("flavour", ["docker", "oci"])
def test_busybox_base_pulled_back_runs_with_runc(busybox_base: BusyboxBase, tmp_path: Path, flavour: str) -> None:
    ref = busybox_base.docker_ref if flavour == "docker" else busybox_base.oci_ref
    layout = pull_to_layout(ref, tmp_path / "pulled", "x")

    assert run_oci_image(layout, "x", tmp_path, ["busybox", "echo", "hello"]) == "hello\n"
    out = run_oci_image(layout, "x", tmp_path, ["sh", "-c", "id app; stat -c '%a %U' /tmp /home/app"])
    assert out.splitlines() == [
        "uid=1000(app) gid=1000(app) groups=1000(app)",
        "1777 root",
        "755 app",
    ]


@pytest.mark.requires("runc")
def test_busybox_base_default_process_uses_image_config(busybox_files: BusyboxBase, tmp_path: Path) -> None:
    # Cmd is ["sh"] and stdin is /dev/null: the shell reads nothing and exits 0 without output.
    assert run_oci_image(busybox_files.layout, "latest", tmp_path) == ""
    env = run_oci_image(busybox_files.layout, "latest", tmp_path, ["env"])
    assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in env.splitlines()


def test_busybox_base_manifests_have_the_advertised_formats(busybox_base: BusyboxBase) -> None:
    docker = raw_manifest(busybox_base.docker_ref)
    oci = raw_manifest(busybox_base.oci_ref)
    assert docker["mediaType"] == DOCKER_MANIFEST
    assert oci["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert len(docker["layers"]) == len(oci["layers"]) == 2

    config = inspect_config(busybox_base.docker_ref)
    assert config["config"]["Cmd"] == ["sh"]
    assert config["config"]["Labels"] == {"base": "busybox"}
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    assert len(config["rootfs"]["diff_ids"]) == 2
    assert len([h for h in config["history"] if not h.get("empty_layer")]) == 2


def test_busybox_multi_is_an_index_of_amd64_and_arm64_v8(busybox_base: BusyboxBase) -> None:
    index = raw_manifest(busybox_base.multi_ref)
    assert index["mediaType"] == OCI_INDEX
    platforms = sorted(
        (m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant", ""))
        for m in index["manifests"]
    )
    assert platforms == [("linux", "amd64", ""), ("linux", "arm64", "v8")]

    arm = inspect_config(busybox_base.multi_ref, "--override-arch", "arm64", "--override-variant", "v8")
    assert (arm["architecture"], arm.get("variant")) == ("arm64", "v8")
    amd = inspect_config(busybox_base.multi_ref, "--override-arch", "amd64")
    assert amd["rootfs"] == arm["rootfs"]


def test_registry_log_and_storage_show_blob_requests(
    busybox_base: BusyboxBase, registry: RegistryServer, tmp_path: Path
) -> None:
    layer = raw_manifest(busybox_base.oci_ref)["layers"][0]["digest"]
    assert registry.blob_data_path(layer).is_file()

    pull_to_layout(busybox_base.oci_ref, tmp_path / "pulled")
    assert f'GET /v2/base/busybox/blobs/{layer} HTTP/1.1" 200' in registry.log_text()


def test_registry_restart_keeps_content(busybox_base: BusyboxBase, registry: RegistryServer) -> None:
    before = raw_manifest(busybox_base.docker_ref)
    registry.restart()
    assert raw_manifest(busybox_base.docker_ref) == before


def test_token_registry_push_needs_credentials_and_pull_is_anonymous(
    busybox_files: BusyboxBase, token_registry: RegistryServer
) -> None:
    source = f"oci:{busybox_files.layout}:latest"
    target = f"docker://{token_registry.host}/team/app:1"
    refused = skopeo("copy", "--dest-tls-verify=false", source, target, check=False)
    assert refused.returncode != 0
    assert "denied" in refused.stderr or "unauthorized" in refused.stderr

    creds = f"{token_registry.username}:{token_registry.password}"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, source, target)
    assert raw_manifest(f"{token_registry.host}/team/app:1")["layers"]  # anonymous pull is allowed

    assert token_registry.token_server is not None
    requests = token_registry.token_server.token_requests
    pushes = [r for r in requests if r["account"] == token_registry.username]
    assert pushes and all(r["service"] == "dockwright-test-registry" for r in requests)
    assert "repository:team/app:pull,push" in pushes[0]["scopes"]
    assert pushes[0]["granted"] == [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]
    anonymous = [r for r in requests if r["account"] is None]
    assert all(a["actions"] == ["pull"] for r in anonymous for a in r["granted"])


def test_token_registry_rejects_wrong_password(busybox_files: BusyboxBase, token_registry: RegistryServer) -> None:
    wrong = skopeo(
        "copy", "--dest-tls-verify=false", "--dest-creds", f"{token_registry.username}:nope",
        f"oci:{busybox_files.layout}:latest", f"docker://{token_registry.host}/team/app:1",
        check=False,
    )  # fmt: skip
    assert wrong.returncode != 0
    assert "401" in wrong.stderr or "unauthorized" in wrong.stderr.lower()


def test_htpasswd_registry_needs_credentials_for_everything(
    busybox_files: BusyboxBase, htpasswd_registry: RegistryServer
) -> None:
    seeded = busybox_files.seed(htpasswd_registry)
    creds = f"{htpasswd_registry.username}:{htpasswd_registry.password}"
    assert raw_manifest(seeded.docker_ref, "--creds", creds)["mediaType"] == DOCKER_MANIFEST
    anonymous = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{seeded.docker_ref}", check=False)
    assert anonymous.returncode != 0
    assert "unauthorized" in anonymous.stderr


def test_docker_config_login_is_read_by_skopeo(
    busybox_files: BusyboxBase, htpasswd_registry: RegistryServer, docker_config
) -> None:
    busybox_files.seed(htpasswd_registry)
    docker_config.login(htpasswd_registry.host, htpasswd_registry.username, htpasswd_registry.password)
    ref = f"{htpasswd_registry.host}/base/busybox:oci"
    assert raw_manifest(ref, "--authfile", str(docker_config.file))["layers"]


@pytest.mark.requires("podman")
def test_podman_loads_the_docker_archive(busybox_files: BusyboxBase, podman: Podman) -> None:
    assert "base/busybox:latest" in podman("load", "-i", busybox_files.archive)
    images = json.loads(podman("images", "--format", "json"))
    assert any("docker.io/base/busybox:latest" in image.get("Names", []) for image in images)


@pytest.mark.requires("podman")
def test_podman_service_speaks_the_docker_engine_api(busybox_files: BusyboxBase, podman_service: Path) -> None:
    import docker

    client = docker.DockerClient(base_url=f"unix://{podman_service}")
    try:
        assert client.ping()
        with busybox_files.archive.open("rb") as archive:
            loaded = client.images.load(archive.read())
        assert "base/busybox:latest" in loaded[0].tags[0]
    finally:
        client.close()


def test_oci_layout_has_latest_and_multi_tags(busybox_files: BusyboxBase) -> None:
    tags = sh("umoci", "ls", "--layout", busybox_files.layout).split()
    assert sorted(tags) == ["latest", "multi"]


def test_dockwright_fixture_runs_the_cli(dockwright) -> None:
    assert "usage" in dockwright("--help").stdout.lower()
    bad = dockwright("--no-such-flag", check=False)
    assert bad.returncode != 0
    assert bad.stderr
