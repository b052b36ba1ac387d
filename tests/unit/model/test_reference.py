"""Image references, normalised as `docker pull` does (distribution/reference's ParseNormalizedNamed)."""

from __future__ import annotations

import pytest

from dockwright.model.errors import InvalidReferenceError, UsageError
from dockwright.model.reference import Reference, is_loopback, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", "latest", None),
        ("nginx:1.27-alpine", "docker.io", "library/nginx", "1.27-alpine", None),
        ("user/app", "docker.io", "user/app", "latest", None),
        ("docker.io/nginx", "docker.io", "library/nginx", "latest", None),
        ("index.docker.io/user/app:v1", "docker.io", "user/app", "v1", None),
        ("localhost/a", "localhost", "a", "latest", None),
        ("localhost:5000/a", "localhost:5000", "a", "latest", None),
        ("127.0.0.1:5000/team/app:dev", "127.0.0.1:5000", "team/app", "dev", None),
        ("[::1]:5000/a:b", "[::1]:5000", "a", "b", None),
        ("mcr.microsoft.com/dotnet/aspnet:8.0", "mcr.microsoft.com", "dotnet/aspnet", "8.0", None),
        ("ghcr.io/owner/repo/sub/path:v_1.2", "ghcr.io", "owner/repo/sub/path", "v_1.2", None),
        (f"nginx@{DIGEST}", "docker.io", "library/nginx", None, DIGEST),
        (f"nginx:1.27@{DIGEST}", "docker.io", "library/nginx", "1.27", DIGEST),
        (f"localhost:5000/a@{DIGEST}", "localhost:5000", "a", None, DIGEST),
        ("a__b/c.d/e--f", "docker.io", "a__b/c.d/e--f", "latest", None),
        # a first component with an uppercase letter is a registry host, as in Docker
        ("Registry/app", "Registry", "app", "latest", None),
        # a bare host:port is a Hub image with a tag, as in Docker
        ("localhost:5000", "docker.io", "library/localhost", "5000", None),
    ],
)
def test_normalisation(text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    assert parse_reference(text) == Reference(registry, repository, tag, digest)


def test_string_forms() -> None:
    ref = parse_reference("nginx")
    assert str(ref) == "docker.io/library/nginx:latest"
    assert ref.familiar == "nginx:latest"
    assert ref.name == "docker.io/library/nginx"
    pinned = parse_reference(f"ghcr.io/o/r:1@{DIGEST}")
    assert str(pinned) == f"ghcr.io/o/r:1@{DIGEST}"
    assert pinned.familiar == f"ghcr.io/o/r:1@{DIGEST}"
    assert parse_reference("user/app:v2").familiar == "user/app:v2"


def test_identifier_prefers_the_digest() -> None:
    assert parse_reference("nginx:1.27").identifier == "1.27"
    assert parse_reference(f"nginx:1.27@{DIGEST}").identifier == DIGEST
    assert parse_reference("nginx", default_tag=False).identifier == "latest"
    assert parse_reference("nginx", default_tag=False).tag is None


def test_with_tag_drops_the_digest_and_with_digest_keeps_the_tag() -> None:
    ref = parse_reference(f"nginx:1@{DIGEST}")
    assert str(ref.with_tag("2")) == "docker.io/library/nginx:2"
    assert str(parse_reference("nginx:1").with_digest(DIGEST)) == f"docker.io/library/nginx:1@{DIGEST}"


@pytest.mark.parametrize(
    ("text", "api_host"),
    [
        ("nginx", "registry-1.docker.io"),
        ("docker.io/user/app", "registry-1.docker.io"),
        ("index.docker.io/user/app", "registry-1.docker.io"),
        ("ghcr.io/o/r", "ghcr.io"),
        ("localhost:5000/a", "localhost:5000"),
        ("[::1]:5000/a", "[::1]:5000"),
    ],
)
def test_api_host(text: str, api_host: str) -> None:
    assert parse_reference(text).api_host == api_host


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("ngi nx", "spaces"),
        ("nginx\n", "spaces"),
        ("NGINX", "bad repository name"),
        ("user/App", "bad repository name"),
        ("nginx:", "bad tag"),
        ("nginx:-dash", "bad tag"),
        ("nginx:.dot", "bad tag"),
        ("nginx:a/b", "bad registry host"),  # "nginx:a" is a host with a non-numeric port

        ("nginx:" + "t" * 129, "bad tag"),
        ("nginx:tagé", "bad tag"),  # Docker's \w is ASCII only
        ("nginx@sha256:xyz", "not a sha256"),
        ("nginx@sha256:" + "a" * 63, "not a sha256"),
        ("nginx@sha256:" + "a" * 65, "not a sha256"),
        ("nginx@sha256:" + "A" * 64, "not a sha256"),
        ("nginx@md5:" + "a" * 32, "not a sha256"),
        ("nginx@", "not a sha256"),
        ("a//b", "bad repository name"),
        ("a/b/", "bad repository name"),
        ("/a", "bad repository name"),
        ("a-/b", "bad repository name"),
        ("-host.com/a", "bad registry host"),
        ("host_name.com:5000/a", "bad registry host"),
        ("a" * 250, "longer than 255"),
        ("example.com/" + "/".join(["abcdefghi"] * 25), "longer than 255"),
        ("x" * 600, "too long"),
    ],
)
def test_invalid_references_name_the_input(text: str, says: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_reference(text)
    message = str(info.value)
    assert says in message
    assert repr(text)[:40] in message
    assert "\n" not in info.value.message  # one line; a hint goes on its own line


def test_invalid_reference_is_a_usage_error_with_a_hint_for_uppercase() -> None:
    with pytest.raises(UsageError) as info:
        parse_reference("MyApp:latest")
    assert info.value.exit_code == 2
    assert info.value.hint == "repository names must be lowercase"


def test_longest_valid_name_is_accepted() -> None:
    path = "a" * (255 - len("example.com/"))
    assert parse_reference(f"example.com/{path}").repository == path
    with pytest.raises(InvalidReferenceError):
        parse_reference(f"example.com/{path}a")


@pytest.mark.parametrize(
    "host",
    ["localhost", "LOCALHOST", "localhost:5000", "127.0.0.1", "127.0.0.1:5000", "127.8.9.10:1",
     "::1", "[::1]", "[::1]:5000"],
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    ["127.evil.com", "127.0.0.1.nip.io", "localhost.evil.com", "evil-localhost", "10.0.0.1", "10.0.0.1:5000",
     "192.168.1.1", "0.0.0.0", "[::2]:5000", "::", "registry-1.docker.io", ""],
)
def test_non_loopback_hosts(host: str) -> None:
    assert not is_loopback(host)
