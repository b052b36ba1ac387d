"""RegistryClient against an in-memory registry (a transport in place of the network): auth flows, verification,
resumed downloads, redirects, uploads. The same flows run against the real registry in
tests/integration/test_registry_auth.py."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from dockwright.httpclient import Client, Headers, PlainHTTPError, Request, Response, Timeout, TransportError
from dockwright.model.digest import digest_bytes
from dockwright.model.errors import AuthError, DigestMismatchError, ImageFormatError, NotFoundError, RegistryError
from dockwright.model.mediatypes import MAX_MANIFEST_BYTES, OCI_MANIFEST
from dockwright.registry import Registries, RegistryClient

HOST = "registry.example"
REALM = "https://auth.example/token"
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()


def broken_stream(data: bytes, cut: int) -> Iterator[bytes]:
    """A body that stops after `cut` bytes with a connection error, like a reset mid-download."""
    yield data[:cut]
    raise TransportError("connection reset by peer")


def headers_of(request: Request) -> Headers:
    """The request's headers, looked up case-insensitively (the client keeps the names as sent)."""
    return Headers(request.headers)


def header(request: Request, name: str) -> str:
    """The request's header `name`, case-insensitively; KeyError when it was not sent."""
    value = headers_of(request).get(name)
    if value is None:
        raise KeyError(name)
    return value


def host_of(request: Request) -> str | None:
    return urlsplit(request.url).hostname


def path_of(request: Request) -> str:
    return unquote(urlsplit(request.url).path)


def params_of(request: Request) -> dict[str, list[str]]:
    return parse_qs(urlsplit(request.url).query)


def content_of(request: Request) -> bytes:
    """The request body: bytes as given, or a streamed upload's pieces joined (read once)."""
    if request.body is None:
        return b""
    if isinstance(request.body, bytes):
        return request.body
    return b"".join(request.body)


@dataclass
class FakeRegistry:
    """Just enough of the distribution API, with switchable auth and faults."""

    auth: str | None = None  # None | "basic" | "bearer"
    user: tuple[str, str] = ("ann", "pw")
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    valid_tokens: set[str] = field(default_factory=set)
    token_scopes: list[list[str]] = field(default_factory=list)
    breaks: int = 0  # blob GETs to cut short
    ranges: bool = True  # honour Range requests
    redirect_blobs: bool = False
    corrupt_manifest: bool = False
    wrong_digest_header: bool = False
    refuse_streamed_patch: bool = False
    uploads: dict[str, bytearray] = field(default_factory=dict)

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        url = urlsplit(request.url)
        if url.hostname == "auth.example":
            return self._token(request)
        if url.hostname == "cdn.example":
            return self._blob_body(request, self.blobs[path_of(request).rsplit("/", 1)[-1]])
        if url.scheme != "https":
            raise TransportError("only https here")
        denied = self._check_auth(request)
        if denied:
            return denied
        path = path_of(request)
        if path == "/v2/":
            return Response(200)
        if match := re.fullmatch(r"/v2/(.+)/manifests/(.+)", path):
            return self._manifest(request, match.group(1), match.group(2))
        if match := re.fullmatch(r"/v2/(.+)/blobs/uploads/(.*)", path):
            return self._upload(request, match.group(1), match.group(2))
        if match := re.fullmatch(r"/v2/(.+)/blobs/(.+)", path):
            digest = match.group(2)
            if digest not in self.blobs:
                return Response(404, json={"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]})
            if request.method == "HEAD":
                return Response(200, headers={"Content-Length": str(len(self.blobs[digest]))})
            if self.redirect_blobs:
                return Response(307, headers={"Location": f"https://cdn.example/b/{digest}?X-Sig=1"})
            return self._blob_body(request, self.blobs[digest])
        return Response(404)

    def _check_auth(self, request: Request) -> Response | None:
        given = headers_of(request).get("authorization") or ""
        if self.auth == "basic":
            expected = "Basic " + base64.b64encode(":".join(self.user).encode()).decode()
            if given != expected:
                return Response(401, headers={"WWW-Authenticate": 'Basic realm="fake"'})
        if self.auth == "bearer" and given.removeprefix("Bearer ") not in self.valid_tokens:
            return Response(401, headers={"WWW-Authenticate": f'Bearer realm="{REALM}",service="fake"'},
                                  json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]})
        return None

    def _token(self, request: Request) -> Response:
        given = headers_of(request).get("authorization")
        if given and given != "Basic " + base64.b64encode(":".join(self.user).encode()).decode():
            return Response(401)
        token = f"tok{len(self.valid_tokens)}"
        self.valid_tokens.add(token)
        self.token_scopes.append(params_of(request).get("scope", []))
        return Response(200, json={"token": token, "expires_in": 300})

    def _blob_body(self, request: Request, data: bytes) -> Response:
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", headers_of(request).get("range") or "")
        status, headers = 200, {"Content-Length": str(len(data))}
        if match and self.ranges:
            start = int(match.group(1))
            status = 206
            headers = {"Content-Length": str(len(data) - start),
                       "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        body = data[start:]
        if self.breaks:
            self.breaks -= 1
            return Response(status, headers=headers, stream=broken_stream(body, len(body) // 2))
        return Response(status, headers=headers, content=body)

    def _manifest(self, request: Request, repo: str, reference: str) -> Response:
        if request.method == "PUT":
            data = content_of(request)
            self.manifests[f"{repo}:{reference}"] = (data, header(request, "content-type"))
            return Response(201, headers={"Docker-Content-Digest": digest_bytes(data)})
        if f"{repo}:{reference}" not in self.manifests:
            return Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
        data, media_type = self.manifests[f"{repo}:{reference}"]
        digest = digest_bytes(b"other" if self.wrong_digest_header else data)
        if self.corrupt_manifest:
            data = data.replace(b"2", b"3")
        headers = {"Content-Type": media_type, "Docker-Content-Digest": digest}
        if request.method == "HEAD":
            return Response(200, headers={**headers, "Content-Length": str(len(data))})
        return Response(200, headers=headers, content=data)

    def _upload(self, request: Request, repo: str, session: str) -> Response:
        if request.method == "POST":
            mount = next(iter(params_of(request).get("mount", [])), None)
            if mount and mount in self.blobs:
                return Response(201)
            name = f"s{len(self.uploads)}"
            self.uploads[name] = bytearray()
            return Response(202, headers={"Location": f"/v2/{repo}/blobs/uploads/{name}?_state=x"})
        if request.method == "DELETE":
            del self.uploads[session]
            return Response(204)
        if request.method == "PATCH":
            if self.refuse_streamed_patch and "content-range" not in headers_of(request):
                return Response(416)
            self.uploads[session] += content_of(request)
            # an absolute Location this time
            return Response(202, headers={"Location": f"https://{HOST}/v2/{repo}/blobs/uploads/{session}"})
        (digest,) = params_of(request)["digest"]
        data = bytes(self.uploads.pop(session)) + content_of(request)
        if digest_bytes(data) != digest:
            return Response(400, json={"errors": [{"code": "DIGEST_INVALID", "message": "digest invalid"}]})
        self.blobs[digest] = data
        return Response(201, headers={"Docker-Content-Digest": digest})


Handler = Callable[[Request], Response]


def connect(fake: Handler, tmp_path: Path, config: dict[str, object] | None = None) -> RegistryClient:
    (tmp_path / "config.json").write_text(json.dumps(config or {}))
    registries = Registries(docker_config=tmp_path)
    registries.sleep = lambda seconds: None
    mock = Client(timeout=Timeout(5, 5), transport=fake)
    registries._http = {True: mock, False: mock}  # the only seam: a transport instead of the network
    return registries.client(HOST)


def login_config(user: str = "ann", password: str = "pw") -> dict[str, object]:
    return {"auths": {HOST: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}


def test_manifest_round_trip_anonymous(tmp_path: Path) -> None:
    fake = FakeRegistry()
    client = connect(fake, tmp_path)
    digest = client.put_manifest("app", "v1", MANIFEST, OCI_MANIFEST)
    assert client.get_manifest("app", "v1") == (MANIFEST, OCI_MANIFEST, digest)
    assert client.head_manifest("app", "v1") == (digest, OCI_MANIFEST, len(MANIFEST))
    assert client.head_manifest("app", "v2") is None
    assert all("authorization" not in headers_of(r) for r in fake.requests)


def test_manifest_not_found_names_the_reference(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"fetching manifest registry\.example/app:nope: MANIFEST_UNKNOWN"):
        connect(FakeRegistry(), tmp_path).get_manifest("app", "nope")


def test_manifest_bytes_must_match_the_digest_asked_for(tmp_path: Path) -> None:
    fake = FakeRegistry(corrupt_manifest=True)
    fake.manifests["app:" + digest_bytes(MANIFEST)] = (MANIFEST, OCI_MANIFEST)
    with pytest.raises(DigestMismatchError):
        connect(fake, tmp_path).get_manifest("app", digest_bytes(MANIFEST))


def test_manifest_must_match_docker_content_digest(tmp_path: Path) -> None:
    fake = FakeRegistry(wrong_digest_header=True)
    fake.manifests["app:v1"] = (MANIFEST, OCI_MANIFEST)
    with pytest.raises(DigestMismatchError, match="Docker-Content-Digest"):
        connect(fake, tmp_path).get_manifest("app", "v1")


def test_oversized_manifest_is_refused(tmp_path: Path) -> None:
    fake = FakeRegistry()
    fake.manifests["app:big"] = (b" " * (MAX_MANIFEST_BYTES + 1), OCI_MANIFEST)
    with pytest.raises(ImageFormatError, match=r"larger than|more than"):
        connect(fake, tmp_path).get_manifest("app", "big")


def test_basic_auth(tmp_path: Path) -> None:
    fake = FakeRegistry(auth="basic")
    fake.manifests["app:v1"] = (MANIFEST, OCI_MANIFEST)
    assert connect(fake, tmp_path, login_config()).get_manifest("app", "v1")[0] == MANIFEST


def test_wrong_basic_credentials_fail_with_a_login_hint(tmp_path: Path) -> None:
    fake = FakeRegistry(auth="basic")
    with pytest.raises(AuthError, match=r"dockwright login registry\.example"):
        connect(fake, tmp_path, login_config(password="wrong")).blob_exists("app", digest_bytes(b"x"))


def test_bearer_tokens_are_fetched_per_scope_and_reused(tmp_path: Path) -> None:
    fake = FakeRegistry(auth="bearer")
    client = connect(fake, tmp_path, login_config())
    blob = b"layer"
    client.upload_blob("app", digest_bytes(blob), len(blob), lambda: [blob])
    assert client.blob_exists("app", digest_bytes(blob))  # pull is covered by the pull,push token
    assert client.mount_blob("other", digest_bytes(blob), "app")
    assert fake.token_scopes == [["repository:app:pull,push"],
                                 ["repository:app:pull", "repository:other:pull,push"]]
    token_requests = [r for r in fake.requests if host_of(r) == "auth.example"]
    assert all(header(r, "authorization").startswith("Basic ") for r in token_requests)


def test_a_refused_token_is_refreshed_once(tmp_path: Path) -> None:
    fake = FakeRegistry(auth="bearer")
    client = connect(fake, tmp_path)
    fake.blobs[digest_bytes(b"x")] = b"x"
    assert client.blob_exists("app", digest_bytes(b"x"))
    fake.valid_tokens.clear()  # the registry no longer accepts the cached token (expired early)
    assert client.blob_exists("app", digest_bytes(b"x"))
    assert len(fake.token_scopes) == 2


def _plain_http_registry(tmp_path: Path, challenge: str, seen: list[Request]) -> Registries:
    """HOST, named with --insecure-registry, answering https with plain HTTP and http with `challenge`."""
    def handler(request: Request) -> Response:
        seen.append(request)
        if urlsplit(request.url).scheme == "https":
            raise PlainHTTPError("[SSL: WRONG_VERSION_NUMBER] wrong version number")
        if "authorization" in headers_of(request):
            return Response(404)
        return Response(401, headers={"WWW-Authenticate": challenge})

    (tmp_path / "config.json").write_text(json.dumps(login_config()))
    registries = Registries(docker_config=tmp_path, insecure=[HOST])
    registries.sleep = lambda seconds: None
    registries._http = {False: Client(timeout=Timeout(5, 5), transport=handler)}
    return registries


def test_plain_http_carries_credentials_to_a_host_named_insecure_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dockwright.registry import auth

    monkeypatch.setattr(auth, "_WARNED", set())  # once per process: forget earlier tests' warnings
    seen: list[Request] = []
    client = _plain_http_registry(tmp_path, 'Basic realm="x"', seen).client(HOST)
    assert not client.blob_exists("app", digest_bytes(b"x"))
    assert not client.blob_exists("app", digest_bytes(b"y"))
    assert [urlsplit(r.url).scheme for r in seen][:2] == ["https", "http"]
    assert (headers_of(seen[-1]).get("authorization") or "").startswith("Basic ")
    warnings = [r.getMessage() for r in caplog.records if "plain HTTP" in r.getMessage()]
    assert warnings == [f"warning: sending credentials for {HOST} over plain HTTP (--insecure-registry {HOST})"]


def test_a_token_realm_over_plain_http_on_another_host_is_refused(tmp_path: Path) -> None:
    seen: list[Request] = []
    registries = _plain_http_registry(tmp_path, 'Bearer realm="http://auth.example/token"', seen)
    with pytest.raises(AuthError, match="refusing to request a token over plain HTTP"):
        registries.client(HOST).blob_exists("app", digest_bytes(b"x"))
    assert all(host_of(r) == HOST and "authorization" not in headers_of(r) for r in seen)


def test_open_blob_streams_and_verifies(tmp_path: Path) -> None:
    fake = FakeRegistry()
    data = bytes(range(256)) * 10_000
    fake.blobs[digest_bytes(data)] = data
    chunks = list(connect(fake, tmp_path).open_blob("app", digest_bytes(data), len(data)))
    assert b"".join(chunks) == data
    assert max(len(c) for c in chunks) <= 1 << 20


def test_open_blob_detects_corruption_on_the_last_iteration(tmp_path: Path) -> None:
    fake = FakeRegistry()
    data = b"a" * 3_000_000
    fake.blobs[digest_bytes(data)] = data[:-1] + b"b"
    stream = connect(fake, tmp_path).open_blob("app", digest_bytes(data), len(data))
    received = [next(stream), next(stream), next(stream)]
    assert sum(map(len, received)) == len(data)
    with pytest.raises(DigestMismatchError, match="content digest"):
        next(stream)


def test_open_blob_rejects_a_size_different_from_the_descriptor(tmp_path: Path) -> None:
    fake = FakeRegistry()
    fake.blobs[digest_bytes(b"abc")] = b"abc"
    with pytest.raises(DigestMismatchError, match="declares 4"):
        list(connect(fake, tmp_path).open_blob("app", digest_bytes(b"abc"), 4))


@pytest.mark.parametrize("ranges", [True, False])
def test_open_blob_resumes_after_a_connection_reset(tmp_path: Path, ranges: bool) -> None:
    fake = FakeRegistry(breaks=2, ranges=ranges)
    data = bytes(range(256)) * 4096
    fake.blobs[digest_bytes(data)] = data
    assert b"".join(connect(fake, tmp_path).open_blob("app", digest_bytes(data), len(data))) == data
    gets = [r for r in fake.requests if r.method == "GET" and "/blobs/" in path_of(r)]
    assert len(gets) == 3
    assert "range" not in headers_of(gets[0]) and header(gets[1], "range").startswith("bytes=")


def test_redirected_blob_download_drops_the_authorization_header(tmp_path: Path) -> None:
    fake = FakeRegistry(auth="bearer", redirect_blobs=True)
    fake.blobs[digest_bytes(b"payload")] = b"payload"
    client = connect(fake, tmp_path, login_config())
    assert b"".join(client.open_blob("app", digest_bytes(b"payload"), 7)) == b"payload"
    registry_get, cdn_get = [r for r in fake.requests if (r.method == "GET" and "blobs" in path_of(r))
                             or host_of(r) == "cdn.example"]
    assert header(registry_get, "authorization").startswith("Bearer ")
    assert host_of(cdn_get) == "cdn.example" and "authorization" not in headers_of(cdn_get)


def test_upload_streams_one_patch_and_follows_relative_and_absolute_locations(tmp_path: Path) -> None:
    fake = FakeRegistry()
    data = b"x" * 5000
    calls = []

    def chunks() -> Iterator[bytes]:
        calls.append(1)
        yield from (data[:1000], data[1000:])

    connect(fake, tmp_path).upload_blob("app", digest_bytes(data), len(data), chunks)
    assert fake.blobs[digest_bytes(data)] == data
    assert [r.method for r in fake.requests if "uploads" in path_of(r)] == ["POST", "PATCH", "PUT"]
    patch = next(r for r in fake.requests if r.method == "PATCH")
    assert header(patch, "content-length") == "5000" and "transfer-encoding" not in headers_of(patch)
    assert params_of(patch)["_state"] == ["x"]
    assert calls == [1]


def test_upload_falls_back_to_chunks_when_a_streamed_patch_is_refused(tmp_path: Path) -> None:
    fake = FakeRegistry(refuse_streamed_patch=True)
    data = b"y" * 100
    connect(fake, tmp_path).upload_blob("app", digest_bytes(data), len(data), lambda: [data])
    assert fake.blobs[digest_bytes(data)] == data
    ranged = [r for r in fake.requests if r.method == "PATCH" and "content-range" in headers_of(r)]
    assert [header(r, "content-range") for r in ranged] == ["0-99"]


def test_upload_of_wrong_size_is_a_caller_error_not_retried(tmp_path: Path) -> None:
    fake = FakeRegistry()
    with pytest.raises(DigestMismatchError, match="not the declared 10 bytes"):
        connect(fake, tmp_path).upload_blob("app", digest_bytes(b"short"), 10, lambda: [b"short"])
    assert [r.method for r in fake.requests if r.method == "POST"] == ["POST"]


def test_refused_mount_cancels_the_upload_it_opened(tmp_path: Path) -> None:
    fake = FakeRegistry()
    assert not connect(fake, tmp_path).mount_blob("app", digest_bytes(b"absent"), "base")
    assert fake.uploads == {}
    assert [r.method for r in fake.requests][-2:] == ["POST", "DELETE"]


def test_threads_share_one_token_and_one_ping(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    fake = FakeRegistry(auth="bearer")
    fake.blobs[digest_bytes(b"x")] = b"x"
    client = connect(fake, tmp_path)
    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(lambda _: client.blob_exists("app", digest_bytes(b"x")), range(32)))
    assert len(fake.token_scopes) == 1
    assert [path_of(r) for r in fake.requests].count("/v2/") == 1


def test_unreachable_registry_is_one_clear_error(tmp_path: Path) -> None:
    def refuse(request: Request) -> Response:
        raise TransportError("[Errno 111] Connection refused")

    client = connect(refuse, tmp_path)
    with pytest.raises(RegistryError, match=r"cannot talk to registry\.example: \[Errno 111\] Connection refused"):
        client.get_manifest("app", "v1")


def test_identity_tokens_use_the_oauth2_refresh_grant(tmp_path: Path) -> None:
    fake = FakeRegistry(auth="bearer")
    fake.blobs[digest_bytes(b"x")] = b"x"
    config = {"auths": {HOST: {"auth": base64.b64encode(b"ann:").decode(), "identitytoken": "refresh-123"}}}
    assert connect(fake, tmp_path, config).blob_exists("app", digest_bytes(b"x"))
    (token_request,) = [r for r in fake.requests if host_of(r) == "auth.example"]
    form = parse_qs(content_of(token_request).decode())
    assert token_request.method == "POST" and "authorization" not in headers_of(token_request)
    assert form == {"grant_type": ["refresh_token"], "refresh_token": ["refresh-123"], "client_id": ["dockwright"],
                    "scope": ["repository:app:pull"], "service": ["fake"]}


def test_upload_range_headers_are_read_in_both_forms() -> None:
    from dockwright.registry.upload import range_end

    assert range_end("0-99") == 99
    assert range_end("bytes=0-16777215") == 16777215
    assert range_end(None) is None and range_end("10-20") is None and range_end("junk") is None
