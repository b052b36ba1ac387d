"""First contact with a registry (issue 12): a plain-HTTP registry on a LAN name, unreachable registries,
wrong passwords and logouts say what is wrong in one line, at once.

A LAN name is an /etc/hosts alias of 127.0.0.1 made for the test (hostnames.host_alias): not a loopback
*name*, so dockwright treats it as a remote host. "At once" is checked by counting attempts (the proxy's
connections, or the `-v` log's attempt lines), never by a clock."""

from __future__ import annotations

import re
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from build_checks import EPOCH_ENV, assert_user_error, cache_args, digest_lines, make_app
from conftest import DockerConfig, RunDockwright
from faultproxy import FaultProxy
from hostnames import host_alias
from images import BusyboxBase
from servers import RegistryServer

FAST_RETRIES = {"DOCKWRIGHT_RETRY_BASE_DELAY": "0.05"}


def build(dockwright: RunDockwright, tmp_path: Path, base: str, target: str, *extra: str,
          check: bool = True) -> subprocess.CompletedProcess[str]:
    context = tmp_path / "context"
    if not context.exists():
        make_app(context)
    return dockwright("build", context, "--from", base, "--copy", "app:/app", "-t", target, "--push",
                      *cache_args(tmp_path), *extra, env={**EPOCH_ENV, **FAST_RETRIES}, check=check)


def attempts(stderr: str, host: str) -> list[str]:
    """The failed attempts to reach `host` that `-v` logged (`GET https://HOST/v2/: ... (attempt N)`)."""
    return re.findall(rf"\S+ https?://{re.escape(host)}/v2/\S*: .* \(attempt (\d+)\)", stderr)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------ plain HTTP


def test_a_plain_http_registry_on_a_lan_name_fails_at_once_naming_the_flag(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path,
) -> None:
    with host_alias() as name:
        host = f"{name}:{proxy.host.rsplit(':', 1)[1]}"

        proc = build(dockwright, tmp_path, f"{host}/base/busybox:docker", f"{host}/apps/lan:1", check=False)

        line = assert_user_error(proc)
        assert line == f"error: {host} speaks plain HTTP; if you trust this network, pass --insecure-registry {host}"
        assert "hint:" not in proc.stderr
        assert proxy.connections == 1, "the TLS handshake was tried again"
        assert proxy.requests == [], "nothing was sent over plain HTTP without --insecure-registry"

        proc = build(dockwright, tmp_path, f"{host}/base/busybox:docker", f"{host}/apps/lan:1",
                     "--insecure-registry", host)

        [(ref, _)] = digest_lines(proc.stdout)
        assert ref == f"{host}/apps/lan:1"


def test_credentials_go_over_plain_http_only_to_a_host_named_insecure_with_one_warning(
    dockwright: RunDockwright, busybox_files: BusyboxBase, docker_config: DockerConfig, tmp_path: Path,
    htpasswd_registry: RegistryServer,
) -> None:
    busybox_files.seed(htpasswd_registry)
    proxy = FaultProxy(htpasswd_registry)
    user, password = htpasswd_registry.username or "", htpasswd_registry.password or ""
    try:
        with host_alias() as name:
            host = f"{name}:{proxy.host.rsplit(':', 1)[1]}"
            refused = dockwright("login", host, "-u", user, "--password-stdin", input=password, check=False)
            assert_user_error(refused, f"{host} speaks plain HTTP", f"--insecure-registry {host}")
            assert proxy.requests == [] and docker_config.read() == {}

            dockwright("login", "--insecure-registry", host, "-u", user, "--password-stdin", input=password)
            proc = build(dockwright, tmp_path, f"{host}/base/busybox:docker", f"{host}/apps/lan:1",
                         "--insecure-registry", host)

        assert digest_lines(proc.stdout)
        warnings = [line for line in proc.stderr.splitlines() if "plain HTTP" in line]
        assert warnings == [f"warning: sending credentials for {host} over plain HTTP (--insecure-registry {host})"]
        api = [s for s in proxy.requests if s.path != "/v2/"]  # the probes go anonymous, for the challenge
        assert api and all((s.headers.get("authorization") or "").startswith("Basic ") for s in api)
        assert password not in proc.stderr
    finally:
        proxy.close()


# ------------------------------------------------------------------------------ unreachable


def test_a_refused_connection_is_tried_twice_by_one_probe_for_all_workers(
    dockwright: RunDockwright, busybox_files: BusyboxBase, tmp_path: Path,
) -> None:
    with host_alias() as name:
        host = f"{name}:{free_port()}"

        # pushing the busybox layers and the app's: every parallel check would need the registry
        proc = build(dockwright, tmp_path, f"oci-layout://{busybox_files.layout}:latest", f"{host}/apps/down:1",
                     "-v", "--jobs", "8", check=False)

    assert_user_error(proc, f"cannot talk to {host}", "Connection refused")
    assert attempts(proc.stderr, host) == ["1", "2"]
    assert "and that it runs" in proc.stderr  # the hint line


def test_an_unknown_host_is_not_retried(dockwright: RunDockwright, tmp_path: Path) -> None:
    host = f"dw-{uuid.uuid4().hex[:12]}.invalid:5000"

    proc = build(dockwright, tmp_path, f"{host}/base/busybox:docker", f"{host}/apps/nowhere:1", "-v", check=False)

    assert_user_error(proc, f"cannot talk to {host}")
    assert attempts(proc.stderr, host) == ["1"]
    assert "your DNS" in proc.stderr


# ------------------------------------------------------------------------------ credentials


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
def test_a_wrong_password_says_so(
    dockwright: RunDockwright, busybox_files: BusyboxBase, docker_config: DockerConfig, tmp_path: Path,
    htpasswd_registry: RegistryServer, token_registry: RegistryServer, auth: str,
) -> None:
    registry = htpasswd_registry if auth == "htpasswd" else token_registry
    busybox_files.seed(registry)
    docker_config.login(registry.host, registry.username, "not-the-password")

    proc = build(dockwright, tmp_path, f"{registry.host}/base/busybox:docker", f"{registry.host}/apps/x:1",
                 check=False)

    assert_user_error(proc, f"wrong username or password for {registry.host}")
    refused = dockwright("login", registry.host, "-u", registry.username or "", "--password-stdin",
                         input="not-the-password", check=False)
    assert_user_error(refused, f"wrong username or password for {registry.host}")


def test_logout_when_not_logged_in_says_so_and_succeeds(
    dockwright: RunDockwright, docker_config: DockerConfig, htpasswd_registry: RegistryServer,
) -> None:
    host = htpasswd_registry.host
    dockwright("login", host, "-u", htpasswd_registry.username or "", "--password-stdin",
               input=htpasswd_registry.password)

    first = dockwright("logout", host)
    second = dockwright("logout", host)

    assert first.stderr.strip() == f"Removed login credentials for {host}"
    assert second.stderr.strip() == f"Not logged in to {host}"
    assert host not in docker_config.read().get("auths", {})
