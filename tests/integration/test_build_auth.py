"""`dockwright login` then `dockwright build --push` to registries that want credentials: htpasswd
basic auth, and the bearer-token flow of Docker Hub, GHCR and MCR."""

from __future__ import annotations

import stat
from pathlib import Path

from build_checks import EPOCH_ENV, assert_user_error, cache_args, digest_lines, make_app, skopeo_json
from conftest import DockerConfig, RunDockwright
from images import BusyboxBase, pull_to_layout
from servers import RegistryServer


def _login(dockwright: RunDockwright, server: RegistryServer) -> None:
    proc = dockwright("login", "-u", server.username or "", "--password-stdin", server.host,
                      input=f"{server.password}\n")
    assert proc.stdout == ""
    assert server.password not in proc.stderr


def _push(dockwright: RunDockwright, tmp_path: Path, base: str, tag: str, *, check: bool = True):
    context = make_app(tmp_path / "context")
    return dockwright("build", context, "--from", base, "--copy", "app:/app", "-t", tag, "--push",
                      *cache_args(tmp_path), env=EPOCH_ENV, check=check)


def _inspect(server: RegistryServer, ref: str, *extra: str) -> dict:
    return skopeo_json("inspect", "--tls-verify=false", "--creds", f"{server.username}:{server.password}",
                       *extra, f"docker://{ref}")


def test_login_then_push_to_a_basic_auth_registry(
    dockwright: RunDockwright,
    busybox_base: BusyboxBase,
    htpasswd_registry: RegistryServer,
    docker_config: DockerConfig,
    tmp_path: Path,
) -> None:
    """The base is on another (anonymous) registry: its layers go registry to registry."""
    _login(dockwright, htpasswd_registry)

    assert stat.S_IMODE(docker_config.file.stat().st_mode) == 0o600
    assert htpasswd_registry.host in docker_config.read()["auths"]

    tag = f"{htpasswd_registry.host}/team/app:1"
    ((ref, digest),) = digest_lines(_push(dockwright, tmp_path, busybox_base.docker_ref, tag).stdout)

    assert ref == tag
    assert _inspect(htpasswd_registry, tag)["Digest"] == digest
    creds = f"{htpasswd_registry.username}:{htpasswd_registry.password}"
    layout = pull_to_layout(tag, tmp_path / "pulled", "app", creds=creds)  # every blob is really there
    assert (layout / "index.json").exists()


def test_push_without_login_names_the_registry_and_suggests_login(
    dockwright: RunDockwright,
    busybox_base: BusyboxBase,
    htpasswd_registry: RegistryServer,
    docker_config: DockerConfig,
    tmp_path: Path,
) -> None:
    proc = _push(dockwright, tmp_path, busybox_base.docker_ref, f"{htpasswd_registry.host}/team/app:1", check=False)

    assert_user_error(proc, htpasswd_registry.host)
    assert "dockwright login" in proc.stderr


def test_logout_forgets_the_credentials(
    dockwright: RunDockwright, htpasswd_registry: RegistryServer, docker_config: DockerConfig
) -> None:
    _login(dockwright, htpasswd_registry)
    dockwright("logout", htpasswd_registry.host)

    assert htpasswd_registry.host not in docker_config.read().get("auths", {})


def test_bearer_token_registry_base_and_target(
    dockwright: RunDockwright,
    busybox_files: BusyboxBase,
    token_registry: RegistryServer,
    docker_config: DockerConfig,
    tmp_path: Path,
) -> None:
    base = busybox_files.seed(token_registry)
    _login(dockwright, token_registry)
    tag = f"{token_registry.host}/team/app:1"

    ((_, digest),) = digest_lines(_push(dockwright, tmp_path, base.docker_ref, tag).stdout)

    assert _inspect(token_registry, tag)["Digest"] == digest
    assert token_registry.token_server is not None
    granted = [access for request in token_registry.token_server.token_requests
               if request["account"] == token_registry.username for access in request["granted"]]
    assert any(a["name"] == "team/app" and "push" in a["actions"] for a in granted)
    assert any(a["name"] == base.repository and "pull" in a["actions"] for a in granted)


def test_anonymous_pull_through_bearer_tokens_to_an_archive(
    dockwright: RunDockwright,
    busybox_files: BusyboxBase,
    token_registry: RegistryServer,
    docker_config: DockerConfig,
    tmp_path: Path,
) -> None:
    """No login: the token server grants anonymous pull, as for a public image on Docker Hub."""
    base = busybox_files.seed(token_registry)
    archive = tmp_path / "app.oci.tar"
    context = make_app(tmp_path / "context")

    dockwright("build", context, "--from", base.oci_ref, "--copy", "app:/app", "-t", "example.com/app:1",
               "-o", f"type=oci,dest={archive}", *cache_args(tmp_path), env=EPOCH_ENV)

    assert len(skopeo_json("inspect", f"oci-archive:{archive}:1")["Layers"]) == 3
    assert token_registry.token_server is not None
    anonymous = [r for r in token_registry.token_server.token_requests if r["account"] is None]
    assert anonymous and all(a["actions"] == ["pull"] for r in anonymous for a in r["granted"])
