"""The registry client against the real CNCF registry (`docker-registry`): anonymous, htpasswd basic auth
and bearer tokens (a token server like Docker Hub's), mounts, refreshes and corrupted storage."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import DockerConfig
from servers import RegistryServer

from dockwright.model.digest import digest_bytes
from dockwright.model.documents import canonical_json
from dockwright.model.errors import AuthError, DigestMismatchError, NotFoundError
from dockwright.model.mediatypes import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from dockwright.registry import Registries, RegistryClient
from dockwright.registry.auth import push_scope
from dockwright.registry.login import login

LAYER = bytes(range(256)) * 12_000  # ~3 MiB: several 1 MiB chunks
CONFIG = canonical_json({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [digest_bytes(b"uncompressed")]}})
MANIFEST = canonical_json({
    "schemaVersion": 2, "mediaType": OCI_MANIFEST,
    "config": {"mediaType": OCI_CONFIG, "digest": digest_bytes(CONFIG), "size": len(CONFIG)},
    "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": digest_bytes(LAYER), "size": len(LAYER)}],
})


@pytest.fixture
def registries(docker_config: DockerConfig) -> Registries:
    with Registries(jobs=2) as instance:
        yield instance


def push_image(client: RegistryClient, repository: str, tag: str = "v1") -> str:
    for blob in (LAYER, CONFIG):
        client.upload_blob(repository, digest_bytes(blob), len(blob),
                           lambda blob=blob: (blob[i:i + 65536] for i in range(0, len(blob), 65536)))
    return client.put_manifest(repository, tag, MANIFEST, OCI_MANIFEST)


def pull_layer(client: RegistryClient, repository: str) -> bytes:
    return b"".join(client.open_blob(repository, digest_bytes(LAYER), len(LAYER)))


def test_anonymous_push_and_pull_read_back_by_skopeo(registry: RegistryServer, registries: Registries) -> None:
    client = registries.client(registry.host)
    assert not client.blob_exists("team/app", digest_bytes(LAYER))
    assert client.head_manifest("team/app", "v1") is None
    digest = push_image(client, "team/app")
    assert digest == digest_bytes(MANIFEST)
    assert client.blob_exists("team/app", digest_bytes(LAYER))
    assert client.head_manifest("team/app", "v1") == (digest, OCI_MANIFEST, len(MANIFEST))
    assert client.get_manifest("team/app", "v1") == (MANIFEST, OCI_MANIFEST, digest)
    assert client.get_manifest("team/app", digest)[0] == MANIFEST
    assert pull_layer(client, "team/app") == LAYER
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/team/app:v1"],
                         check=True, capture_output=True).stdout
    assert raw == MANIFEST
    with pytest.raises(NotFoundError, match=rf"{registry.host}/team/app:v2"):
        client.get_manifest("team/app", "v2")


def test_basic_auth_with_the_right_credentials(htpasswd_registry: RegistryServer, docker_config: DockerConfig,
                                               registries: Registries) -> None:
    docker_config.login(htpasswd_registry.host, htpasswd_registry.username, htpasswd_registry.password)
    client = registries.client(htpasswd_registry.host)
    push_image(client, "app")
    assert pull_layer(client, "app") == LAYER


@pytest.mark.parametrize("password", ["wrong", None])
def test_basic_auth_refused_names_the_registry_and_says_how_to_log_in(
    htpasswd_registry: RegistryServer, docker_config: DockerConfig, registries: Registries, password: str | None
) -> None:
    if password:
        docker_config.login(htpasswd_registry.host, htpasswd_registry.username, password)
    with pytest.raises(AuthError) as info:
        registries.client(htpasswd_registry.host).get_manifest("app", "v1")
    assert info.value.status == 401 and info.value.registry == htpasswd_registry.host
    assert f"dockwright login {htpasswd_registry.host}" in str(info.value)


def test_bearer_tokens_end_to_end_with_a_cross_repository_mount(
    token_registry: RegistryServer, docker_config: DockerConfig, registries: Registries
) -> None:
    docker_config.login(token_registry.host, token_registry.username, token_registry.password)
    client = registries.client(token_registry.host)
    push_image(client, "base/image")
    assert client.mount_blob("apps/web", digest_bytes(LAYER), "base/image")
    assert client.mount_blob("apps/web", digest_bytes(CONFIG), "base/image")
    client.put_manifest("apps/web", "latest", MANIFEST, OCI_MANIFEST)
    assert client.get_manifest("apps/web", "latest")[0] == MANIFEST
    assert pull_layer(client, "apps/web") == LAYER

    requests = token_registry.token_server.token_requests
    assert {r["account"] for r in requests} == {token_registry.username}
    mount_request = next(r for r in requests if len(r["scopes"]) == 2)
    assert sorted(mount_request["scopes"]) == ["repository:apps/web:pull,push", "repository:base/image:pull"]
    assert len(requests) <= 3  # one token per scope set, reused for every request it covers
    log = token_registry.log_text()
    mounted = r'"POST /v2/apps/web/blobs/uploads/\?mount=sha256%3A[0-9a-f]+&from=base%2Fimage [^"]*" 201'
    assert len(re.findall(mounted, log)) == 2
    assert "PATCH /v2/apps/web/" not in log  # the layer was mounted, never uploaded again


def test_anonymous_clients_may_pull_but_not_push(token_registry: RegistryServer, docker_config: DockerConfig,
                                                 registries: Registries, tmp_path: Path) -> None:
    with Registries(docker_config=_logged_in(tmp_path, token_registry)) as authed:
        push_image(authed.client(token_registry.host), "public/app")
    client = registries.client(token_registry.host)
    assert client.get_manifest("public/app", "v1")[0] == MANIFEST
    with pytest.raises(AuthError, match=f"dockwright login {token_registry.host}"):
        client.upload_blob("public/app", digest_bytes(b"new"), 3, lambda: [b"new"])


def test_a_token_the_registry_refuses_is_refreshed_mid_operation(
    token_registry: RegistryServer, docker_config: DockerConfig, registries: Registries
) -> None:
    docker_config.login(token_registry.host, token_registry.username, token_registry.password)
    client = registries.client(token_registry.host)
    push_image(client, "app")
    before = len(token_registry.token_server.token_requests)
    # as if the cached token had expired or been revoked: the registry answers 401
    registries.tokens.put(token_registry.host, [push_scope("app")], "expired.token.value", ttl=300)
    client.put_manifest("app", "v2", MANIFEST, OCI_MANIFEST)
    assert pull_layer(client, "app") == LAYER
    assert len(token_registry.token_server.token_requests) == before + 1  # one refresh, then reused
    assert re.findall(r'"PUT /v2/app/manifests/v2 [^"]*" (\d+)', token_registry.log_text()) == ["401", "201"]


def test_wrong_credentials_for_the_token_service(token_registry: RegistryServer, docker_config: DockerConfig,
                                                 registries: Registries) -> None:
    docker_config.login(token_registry.host, token_registry.username, "not-the-password")
    with pytest.raises(AuthError, match=rf"authenticating to {token_registry.host}.*refused.*'tester'") as info:
        registries.client(token_registry.host).get_manifest("app", "v1")
    assert f"dockwright login {token_registry.host}" in str(info.value)


def test_corrupted_blob_in_registry_storage_is_detected(registry: RegistryServer, registries: Registries) -> None:
    client = registries.client(registry.host)
    push_image(client, "app")
    data_path = registry.blob_data_path(digest_bytes(LAYER))
    corrupted = bytearray(data_path.read_bytes())
    corrupted[-1] ^= 0xFF
    data_path.write_bytes(bytes(corrupted))
    chunks = client.open_blob("app", digest_bytes(LAYER), len(LAYER))
    received = 0
    with pytest.raises(DigestMismatchError, match=digest_bytes(LAYER)):
        for chunk in chunks:
            received += len(chunk)
    assert received == len(LAYER)  # every byte arrived; only the final check failed


@pytest.mark.parametrize("auth_fixture", ["htpasswd_registry", "token_registry"])
def test_login_checks_credentials_before_storing_them(request: pytest.FixtureRequest, auth_fixture: str,
                                                      docker_config: DockerConfig) -> None:
    server: RegistryServer = request.getfixturevalue(auth_fixture)
    with pytest.raises(AuthError):
        login(server.host, server.username or "", "wrong", docker_config.path)
    assert not docker_config.file.exists()
    login(server.host, server.username or "", server.password or "", docker_config.path)
    assert server.host in docker_config.read()["auths"]
    with Registries() as fresh:  # reads the stored credentials from DOCKER_CONFIG
        push_image(fresh.client(server.host), "after-login")


def _logged_in(tmp_path: Path, server: RegistryServer) -> Path:
    directory = tmp_path / "other-config"
    directory.mkdir()
    DockerConfig(directory).login(server.host, server.username, server.password)
    return directory


def test_registry_error_json_reaches_the_message(registry: RegistryServer, registries: Registries) -> None:
    client = registries.client(registry.host)
    bad = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                      "config": {"mediaType": OCI_CONFIG, "digest": digest_bytes(b"missing"), "size": 7},
                      "layers": []}).encode()
    with pytest.raises(Exception, match=r"pushing manifest .*app:v1: MANIFEST_BLOB_UNKNOWN"):
        client.put_manifest("app", "v1", bad, OCI_MANIFEST)
