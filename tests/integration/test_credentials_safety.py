"""Credentials (issue 5): never printed, even with -v and on failures; config written 0600; bearer tokens
scoped per repository. (Redirects that must not carry Authorization:
test_faults.test_blob_redirect_to_another_host_is_followed_without_authorization; plain HTTP only to a
host named with --insecure-registry: test_first_contact.)"""

from __future__ import annotations

import base64
import re
import stat
from pathlib import Path

import pytest
from build_checks import EPOCH_ENV, assert_user_error, cache_args, digest_lines, make_app
from conftest import DockerConfig, RunDockwright
from images import BusyboxBase
from servers import RegistryServer


def _build(dockwright: RunDockwright, registry: RegistryServer, tmp_path: Path, host: str | None = None,
           *extra: str, check: bool = True):  # type: ignore[no-untyped-def]
    host = host or registry.host
    return dockwright("build", make_app(tmp_path / "context"), "--from", f"{host}/base/busybox:docker",
                      "--copy", "app:/app", "-t", f"{host}/apps/secret:1", "--push", "-v", *cache_args(tmp_path),
                      *extra, env=EPOCH_ENV, check=check)


def _secrets(registry: RegistryServer) -> list[str]:
    assert registry.password
    basic = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    return [registry.password, basic]


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
def test_credentials_and_tokens_never_appear_in_verbose_output(
    dockwright: RunDockwright, busybox_files: BusyboxBase, docker_config: DockerConfig, tmp_path: Path,
    htpasswd_registry: RegistryServer, token_registry: RegistryServer, auth: str,
) -> None:
    registry = htpasswd_registry if auth == "htpasswd" else token_registry
    busybox_files.seed(registry)
    docker_config.login(registry.host, registry.username, registry.password)

    proc = _build(dockwright, registry, tmp_path)

    assert digest_lines(proc.stdout)
    output = proc.stdout + proc.stderr
    assert "GET" in proc.stderr  # -v really logged the exchanges
    for secret in _secrets(registry):
        assert secret not in output
    # no JWT: header.payload.signature, both JSON parts base64 '{"...' (a registry's _state may hold 'eyJ')
    assert not re.search(r"eyJ[\w-]+\.eyJ[\w-]+\.", output)
    if auth == "token":
        assert registry.token_server is not None and registry.token_server.token_requests


def test_wrong_credentials_fail_without_echoing_them(
    dockwright: RunDockwright, busybox_files: BusyboxBase, docker_config: DockerConfig, tmp_path: Path,
    token_registry: RegistryServer,
) -> None:
    busybox_files.seed(token_registry)
    wrong = "not-the-password-8d1f"
    docker_config.login(token_registry.host, token_registry.username, wrong)

    proc = _build(dockwright, token_registry, tmp_path, check=False)

    assert_user_error(proc, "refused to authenticate", repr(token_registry.username))
    assert wrong not in proc.stdout + proc.stderr
    assert base64.b64encode(f"{token_registry.username}:{wrong}".encode()).decode() not in proc.stderr


def test_login_writes_the_config_file_0600(
    dockwright: RunDockwright, docker_config: DockerConfig, htpasswd_registry: RegistryServer,
) -> None:
    dockwright("login", htpasswd_registry.host, "-u", htpasswd_registry.username or "",
               "--password-stdin", input=f"{htpasswd_registry.password}\n")

    assert stat.S_IMODE(docker_config.file.stat().st_mode) == 0o600
    assert docker_config.read()["auths"][htpasswd_registry.host]


def test_token_scopes_are_per_repository(
    dockwright: RunDockwright, busybox_files: BusyboxBase, docker_config: DockerConfig, tmp_path: Path,
    token_registry: RegistryServer,
) -> None:
    busybox_files.seed(token_registry)
    docker_config.login(token_registry.host, token_registry.username, token_registry.password)
    tokens = token_registry.token_server
    assert tokens is not None
    seeded = len(tokens.token_requests)  # skopeo's own requests while seeding

    _build(dockwright, token_registry, tmp_path)

    asked = [frozenset(r["scopes"]) for r in tokens.token_requests[seeded:]]
    base_pull, target_pull = "repository:base/busybox:pull", "repository:apps/secret:pull"
    target_push = "repository:apps/secret:pull,push"
    assert {base_pull} in asked  # the base: pull only
    assert {target_push, base_pull} in asked  # the cross-repository mount: push on the target, pull on the base
    assert set().union(*asked) == {base_pull, target_pull, target_push}  # never push on the base
