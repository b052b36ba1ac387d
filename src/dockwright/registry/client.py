"""The OCI distribution API client: manifests and blobs, verified, with auth and bounded retries.

`Registries` owns the shared state (HTTP connection pools, credentials, token cache); one
`RegistryClient` per registry host speaks the API. Both are safe to use from several threads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

from dockwright import __version__
from dockwright.httpclient import Client, Request, Response, Timeout, TransportError, UnknownHostError, add_query
from dockwright.model.digest import Verifier, digest_bytes, is_digest, verify_bytes
from dockwright.model.errors import AuthError, DigestMismatchError, ImageFormatError, RegistryError
from dockwright.model.mediatypes import ACCEPT_MANIFESTS, MAX_MANIFEST_BYTES
from dockwright.model.reference import is_loopback
from dockwright.parallel import check_cancelled
from dockwright.registry.auth import HostAuth, TokenCache, pull_scope, push_scope
from dockwright.registry.credentials import CredentialStore
from dockwright.registry.transport import (
    CONNECT_TIMEOUT,
    MAX_ATTEMPTS,
    RETRY_STATUSES,
    ConnectionFailed,
    Op,
    backoff_delay,
    login_name,
    read_timeout,
    send_with_retries,
    wait_before_retry,
)
from dockwright.registry.upload import RangeStalled, counted, range_end, rechunk

log = logging.getLogger("dockwright")
CHUNK_SIZE = 1 << 20
UPLOAD_CHUNK_SIZE = 16 << 20  # for registries that only take chunked uploads
_CHUNKED_UPLOAD_STATUSES = (413, 416)  # a single streamed PATCH was refused: too large / needs ranges
PING_MEMORY = 10.0  # seconds a failed probe of a registry answers for every later request
_GENERIC_TYPES = ("", "application/json", "text/plain", "application/octet-stream")


class Registries:
    """Factory + shared state: one RegistryClient per host, shared credential store, token cache,
    insecure set, one HTTP client per TLS mode (connection pool sized for `jobs` threads)."""

    def __init__(self, *, insecure: Iterable[str] = (), jobs: int = 4, docker_config: Path | None = None,
                 user_agent: str = f"dockwright/{__version__}", cancel: threading.Event | None = None) -> None:
        self.insecure = frozenset(host.split("://")[-1].rstrip("/") for host in insecure)
        self.credentials = CredentialStore(docker_config)
        self.tokens = TokenCache()
        self.cancel = cancel  # set by the caller: requests and transfers stop at their next step
        self.sleep: Callable[[float], None] = self._pause
        self._jobs = max(1, jobs)
        self._user_agent = user_agent
        self._http: dict[bool, Client] = {}
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        if cancel is not None:
            threading.Thread(target=self._abort_on_cancel, name="dockwright-cancel", daemon=True).start()

    def _abort_on_cancel(self) -> None:
        """Once the caller cancels, break the exchanges in flight: a read blocked on a silent registry ends now,
        not at its timeout (the worker then stops at its backoff wait, which raises Cancelled)."""
        assert self.cancel is not None
        while not self._closed.is_set():
            if self.cancel.wait(0.2):
                with self._lock:
                    clients = list(self._http.values())
                for client in clients:
                    client.abort()
                return

    def _pause(self, seconds: float) -> None:
        """A backoff wait that ends early, raising Cancelled, when the caller cancels."""
        if self.cancel is None:
            time.sleep(seconds)
        elif self.cancel.wait(seconds):
            check_cancelled(self.cancel)

    def is_insecure(self, host: str) -> bool:
        """Loopback and --insecure hosts: TLS unverified, plain HTTP allowed as a fallback."""
        return host in self.insecure or is_loopback(host)

    def http_for(self, host: str) -> Client:
        """The pooled HTTP client for `host`: certificates verified unless the host is insecure."""
        verify = not self.is_insecure(host)
        with self._lock:
            client = self._http.get(verify)
            if client is None:
                client = Client(verify=verify, timeout=Timeout(CONNECT_TIMEOUT, read_timeout()),
                                pool_size=2 * self._jobs + 2, headers={"User-Agent": self._user_agent})
                self._http[verify] = client
            return client

    def client(self, host: str) -> RegistryClient:
        with self._lock:
            if host not in self._clients:
                self._clients[host] = RegistryClient(host, self)
            return self._clients[host]

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            for client in self._http.values():
                client.close()
            self._http.clear()
            self._clients.clear()

    def __enter__(self) -> Registries:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RegistryClient:
    """The distribution API of one registry host."""

    def __init__(self, host: str, registries: Registries) -> None:
        self.host = host
        self._registries = registries
        self._auth = HostAuth(host, registries.credentials, registries.tokens, registries.http_for, self._sleep,
                              insecure=host in registries.insecure)
        self._base: str | None = None
        self._ping_failure: tuple[RegistryError, float] | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ manifests

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """GET a manifest or index: (raw bytes, media type, digest), verified against the reference
        when it is a digest and against the registry's Docker-Content-Digest when sent."""
        name = self._name(repository, reference)
        op = Op(f"fetching manifest {name}", self.host, repository)
        path = f"{repository}/manifests/{reference}"
        for attempt in range(1, MAX_ATTEMPTS + 1):
            response = self._send(op, "GET", path, scopes=[pull_scope(repository)],
                                  headers={"Accept": ACCEPT_MANIFESTS}, stream=True, follow_redirects=True)
            try:
                if response.status_code != 200:
                    raise self._failed(response, op)
                data = _read_bounded(response, MAX_MANIFEST_BYTES, f"manifest {name}")
                break
            except TransportError as exc:
                if attempt == MAX_ATTEMPTS:
                    raise ConnectionFailed(op, exc) from None
                self._sleep(backoff_delay(attempt))
            finally:
                response.close()
        what = f"manifest {name}"
        if is_digest(reference):
            verify_bytes(data, reference, None, what)
        sent = response.headers.get("docker-content-digest")
        if sent:
            verify_bytes(data, sent, None, f"{what} (the registry's Docker-Content-Digest)")
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        if media_type in _GENERIC_TYPES:
            media_type = _declared_media_type(data) or media_type
        return data, media_type, reference if is_digest(reference) else digest_bytes(data)

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The digest `tag` points at now, asked with HEAD (Docker Hub does not count a HEAD as a pull).
        None when the registry does not say (no Docker-Content-Digest, or not a 200): then GET."""
        op = Op(f"checking manifest {self._name(repository, tag)}", self.host, repository)
        response = self._send(op, "HEAD", f"{repository}/manifests/{tag}", scopes=[pull_scope(repository)],
                              headers={"Accept": ACCEPT_MANIFESTS}, follow_redirects=True)
        digest = response.headers.get("docker-content-digest", "")
        return digest if response.status_code == 200 and is_digest(digest) else None

    def head_manifest(self, repository: str, reference: str) -> tuple[str, str, int] | None:
        """(digest, media type, size) of a manifest, or None when the registry does not have it."""
        op = Op(f"checking manifest {self._name(repository, reference)}", self.host, repository)
        response = self._send(op, "HEAD", f"{repository}/manifests/{reference}", scopes=[pull_scope(repository)],
                              headers={"Accept": ACCEPT_MANIFESTS}, follow_redirects=True)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._failed(response, op)
        digest = response.headers.get("docker-content-digest", "")
        size = response.headers.get("content-length", "")
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        if not is_digest(digest) or not size.isdigit() or media_type in _GENERIC_TYPES:
            data, media_type, digest = self.get_manifest(repository, reference)  # registry told too little
            return digest, media_type, len(data)
        return digest, media_type, int(size)

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT a manifest or index under a tag or digest; returns its digest (sha256 of `data`)."""
        name = self._name(repository, reference)
        digest = reference if is_digest(reference) else digest_bytes(data)
        verify_bytes(data, digest, None, f"manifest {name}")
        op = Op(f"pushing manifest {name}", self.host, repository)
        response = self._send(op, "PUT", f"{repository}/manifests/{reference}", scopes=[push_scope(repository)],
                              headers={"Content-Type": media_type}, body=lambda: data)
        if response.status_code not in (200, 201):
            raise self._failed(response, op)
        sent = response.headers.get("docker-content-digest")
        if sent:
            verify_bytes(data, sent, None, f"manifest {name} as stored by the registry")
        return digest

    # ------------------------------------------------------------------ blobs

    def blob_exists(self, repository: str, digest: str) -> bool:
        op = Op("checking blob", self.host, repository, digest)
        response = self._send(op, "HEAD", f"{repository}/blobs/{digest}", scopes=[pull_scope(repository)],
                              follow_redirects=True)
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise self._failed(response, op)
        return True

    def open_blob(self, repository: str, digest: str, size: int | None) -> Iterator[bytes]:
        """Stream a blob in ~1 MiB chunks, verified as it goes: the last iteration raises
        DigestMismatchError when size or digest do not match, so rename only after exhausting it.
        A broken download resumes with a Range request (or restarts, skipping what was read)."""
        verifier = Verifier(digest, size, f"blob {digest} from {login_name(self.host)}/{repository}")
        return self._stream_blob(Op("pulling blob", self.host, repository, digest), verifier)

    def _stream_blob(self, op: Op, verifier: Verifier) -> Iterator[bytes]:
        path = f"{op.repository}/blobs/{op.digest}"
        pending = bytearray()  # verified bytes not yet handed out: survives a broken connection
        failures = 0
        while True:
            offset = verifier.received
            # identity: a Range must address the blob's own bytes, never a re-encoding of them
            headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={offset}-"} if offset else {})
            response = self._send(op, "GET", path, scopes=[pull_scope(op.repository or "")], headers=headers,
                                  stream=True, follow_redirects=True)
            try:
                skip = self._blob_start(response, op, verifier)
                for piece in response.iter_bytes():
                    check_cancelled(self._registries.cancel)
                    if skip:
                        skipped = min(skip, len(piece))
                        piece, skip = piece[skipped:], skip - skipped
                    verifier.update(piece)
                    pending += piece
                    while len(pending) >= CHUNK_SIZE:
                        yield bytes(pending[:CHUNK_SIZE])
                        del pending[:CHUNK_SIZE]
            except TransportError as exc:
                failures += 1
                if failures >= MAX_ATTEMPTS:
                    raise ConnectionFailed(op, exc) from None
                self._sleep(backoff_delay(failures))
                continue
            finally:
                response.close()
            if pending:
                yield bytes(pending)
            verifier.finish()
            return

    def _blob_start(self, response: Response, op: Op, verifier: Verifier) -> int:
        """Check a blob GET response; return how many leading bytes to skip (a restart after a break)."""
        offset = verifier.received
        status = response.status_code
        if status == 206 and offset and response.headers.get("content-range", "").startswith(f"bytes {offset}-"):
            return 0
        if status != 200:
            raise self._failed(response, op)
        length = response.headers.get("content-length", "")
        if verifier.size is not None and length.isdigit() and int(length) != verifier.size:
            raise DigestMismatchError(
                f"{verifier.what}: the registry sends {length} bytes, the descriptor declares {verifier.size}"
            )
        return offset

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Cross-repository mount; True when mounted, False when the registry declined (no upload left open)."""
        op = Op(f"mounting blob from {from_repository}", self.host, repository, digest)
        query = urlencode({"mount": digest, "from": from_repository})
        response = self._send(op, "POST", f"{repository}/blobs/uploads/?{query}",
                              scopes=[push_scope(repository), pull_scope(from_repository)])
        if response.status_code == 201:
            return True
        if response.status_code != 202:
            raise self._failed(response, op)
        location = response.headers.get("location")
        if location:  # the registry opened an upload session instead: cancel it, best effort
            with contextlib.suppress(RegistryError):
                self._send(op, "DELETE", urljoin(response.url, location), scopes=[push_scope(repository)],
                           attempts=1)
        return False

    def upload_blob(self, repository: str, digest: str, size: int,
                    chunks: Callable[[], Iterable[bytes]]) -> None:
        """Upload a blob: POST a session, one streamed PATCH, PUT ?digest=. A failed PATCH or PUT restarts
        with a new session (`chunks()` is called again), at most MAX_ATTEMPTS times in all. Falls back to
        chunked PATCHes when the registry refuses the single PATCH, and to one monolithic PUT when the
        registry's Range header shows that it did not keep what a PATCH sent."""
        op = Op("pushing blob", self.host, repository, digest)
        mode = "streamed"
        stalled: RangeStalled | None = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            location = self._start_upload(op)  # retried within _send: its failure ends the upload
            try:
                if mode == "whole":
                    self._finish_upload(op, location, size, chunks)
                    return
                if mode == "chunked":
                    location = self._patch_chunks(op, location, size, chunks)
                else:
                    response = self._send(op, "PATCH", location, scopes=[push_scope(repository)], attempts=1,
                                          headers={"Content-Type": "application/octet-stream",
                                                   "Content-Length": str(size)},
                                          body=lambda: counted(chunks(), size, op))
                    if response.status_code in _CHUNKED_UPLOAD_STATUSES:
                        mode = "chunked"
                        continue
                    location = self._patched(response, op, location, 0, size - 1)
                self._finish_upload(op, location)
                return
            except RangeStalled as exc:
                stalled, mode = exc, "whole"
                log.info("%s; uploading the blob again in one PUT", exc.message)
                continue
            except RegistryError as exc:
                retryable = isinstance(exc, ConnectionFailed) or exc.status in RETRY_STATUSES
                if stalled is not None and (not retryable or attempt == MAX_ATTEMPTS):
                    how = "" if exc.status else f": {exc.message}"
                    raise op.error(f"{stalled.detail}, and the monolithic upload after it failed{how}",
                                   status=exc.status, hint=exc.hint) from None
                if not retryable or attempt == MAX_ATTEMPTS:
                    raise
                delay = wait_before_retry(exc.status, exc.retry_after, attempt, op)
            self._sleep(delay)
        raise op.error("the registry refused both a streamed and a chunked upload")

    def _start_upload(self, op: Op) -> str:
        response = self._send(op, "POST", f"{op.repository}/blobs/uploads/",
                              scopes=[push_scope(op.repository or "")])
        if response.status_code != 202:
            raise self._failed(response, op)
        return self._upload_location(response, op)

    def _patch_chunks(self, op: Op, location: str, size: int, chunks: Callable[[], Iterable[bytes]]) -> str:
        start = 0
        for piece in rechunk(counted(chunks(), size, op), UPLOAD_CHUNK_SIZE):
            end = start + len(piece) - 1
            response = self._send(op, "PATCH", location, scopes=[push_scope(op.repository or "")], attempts=1,
                                  headers={"Content-Type": "application/octet-stream",
                                           "Content-Range": f"{start}-{end}"},
                                  body=lambda piece=piece: piece)
            location = self._patched(response, op, location, start, end)
            start = end + 1
        return location

    def _patched(self, response: Response, op: Op, location: str, start: int, end: int) -> str:
        """The upload URL after a PATCH of bytes start-end. 202 is the spec's answer; 201 and 204 are
        taken as well, as go-containerregistry and Docker's client take them (ECR answers 201), and
        without a Location the session stays where it was. A Range header that ends before `end` means
        the registry did not keep everything sent: RangeStalled."""
        if response.status_code not in (201, 202, 204):
            raise self._failed(response, op)
        kept = range_end(response.headers.get("range"))
        if kept is not None and kept < end:
            raise RangeStalled(op, start, end, response.headers.get("range") or "")
        next_location = response.headers.get("location")
        return urljoin(response.url, next_location) if next_location else location

    def _finish_upload(self, op: Op, location: str, size: int = 0,
                       chunks: Callable[[], Iterable[bytes]] | None = None) -> None:
        """PUT ?digest= closes the session; with `chunks`, the PUT carries the whole blob (monolithic)."""
        url = add_query(location, {"digest": op.digest or ""})
        headers = {"Content-Type": "application/octet-stream"} | ({"Content-Length": str(size)} if chunks else {})

        def body() -> bytes | Iterable[bytes]:
            return counted(chunks(), size, op) if chunks else b""

        response = self._send(op, "PUT", url, scopes=[push_scope(op.repository or "")], attempts=1,
                              headers=headers, body=body)
        if response.status_code not in (201, 204):
            raise self._failed(response, op)
        sent = response.headers.get("docker-content-digest")
        if sent and sent != op.digest:
            raise DigestMismatchError(f"{op.action}: the registry stored {sent} for {op.digest}")

    def _upload_location(self, response: Response, op: Op) -> str:
        """The upload URL from a 202 (relative or absolute Location)."""
        if response.status_code != 202:
            raise self._failed(response, op)
        location = response.headers.get("location")
        if not location:
            raise op.error("the registry answered without an upload Location", status=response.status_code)
        return urljoin(response.url, location)

    # ------------------------------------------------------------------ login

    def verify_access(self) -> None:
        """Check the credentials for this host: a token without scope (Bearer) or GET /v2/ (Basic)."""
        self._ready()
        if self._auth.scheme == "bearer":
            self._auth.header([])
        elif self._auth.scheme == "basic":
            op = Op("logging in", self.host)
            response = self._send(op, "GET", "", scopes=[])
            if response.status_code != 200:
                raise self._failed(response, op)

    # ------------------------------------------------------------------ HTTP

    def _sleep(self, seconds: float) -> None:
        self._registries.sleep(seconds)

    def _name(self, repository: str, reference: str) -> str:
        return f"{login_name(self.host)}/{repository}{'@' if is_digest(reference) else ':'}{reference}"

    def _ready(self) -> str:
        """The API base URL (https://HOST/v2/, or http:// for a loopback/insecure host without TLS).
        One probe answers for every thread: a registry found unreachable stays so for PING_MEMORY s."""
        with self._lock:
            if self._base is None:
                failed = self._ping_failure
                if failed is not None and time.monotonic() - failed[1] < PING_MEMORY:
                    raise failed[0]
                try:
                    self._base = self._ping()
                except RegistryError as exc:
                    self._ping_failure = (exc, time.monotonic())
                    raise
            return self._base

    def _ping(self) -> str:
        op = Op("contacting the registry", self.host)
        schemes = ("https", "http") if self._registries.is_insecure(self.host) else ("https",)
        client = self._registries.http_for(self.host)
        for scheme in schemes:
            base = f"{scheme}://{self.host}/v2/"
            last = scheme == schemes[-1]
            try:
                response = send_with_retries(client, lambda base=base: client.build_request("GET", base), op,
                                             sleep=self._sleep, attempts=MAX_ATTEMPTS if last else 1)
            except ConnectionFailed as exc:
                if last or isinstance(exc.transport_error, UnknownHostError):
                    raise
                continue
            self._auth.plain_http = scheme == "http"
            if response.status_code == 401:
                self._auth.set_challenge(response)
            elif response.status_code != 200:
                raise op.error(f"{base} does not answer as a registry: HTTP {response.status_code}",
                               status=response.status_code, hint="check the registry address")
            return base
        raise AssertionError("unreachable: the last scheme either returns or raises")

    def _send(self, op: Op, method: str, path: str, *, scopes: list[str], headers: dict[str, str] | None = None,
              body: Callable[[], bytes | Iterable[bytes]] | None = None, stream: bool = False,
              follow_redirects: bool = False, attempts: int = MAX_ATTEMPTS) -> Response:
        """One API exchange: `path` relative to /v2/ or an absolute URL. Authorization is sent only to the
        registry's own origin; a 401 refreshes the challenge/token once and retries."""
        check_cancelled(self._registries.cancel)
        base = self._ready()
        url = path if "://" in path else base + path
        same_origin = urlsplit(url)[:2] == urlsplit(base)[:2]
        client = self._registries.http_for(self.host)
        for first_try in (True, False):
            authorization = self._auth.header(scopes) if same_origin else None

            def build(authorization: str | None = authorization) -> Request:
                request_headers = dict(headers or {})
                if authorization:
                    request_headers["Authorization"] = authorization
                return client.build_request(method, url, headers=request_headers, body=body() if body else None)

            response = send_with_retries(client, build, op, sleep=self._sleep, stream=stream,
                                         follow_redirects=follow_redirects, attempts=attempts)
            refreshable = authorization is None or authorization.startswith("Bearer ")
            if response.status_code != 401 or not first_try or not same_origin or not refreshable:
                return response
            response.close()
            self._auth.forget(authorization)
            self._auth.set_challenge(response)
        return response

    def _failed(self, response: Response, op: Op) -> RegistryError:
        sent = response.request.headers if response.request else {}
        if response.status_code == 401 and any(name.lower() == "authorization" and value.startswith("Basic ")
                                                for name, value in sent.items()):
            return op.error(f"wrong username or password for {login_name(self.host)}", status=401, cls=AuthError,
                            hint=f"`dockwright login {login_name(self.host)}` replaces the stored credentials")
        return op.failed_with_hint(response)


def _read_bounded(response: Response, limit: int, what: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ImageFormatError(f"{what} is {declared} bytes, more than the {limit} allowed")
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > limit:
            raise ImageFormatError(f"{what} is larger than the {limit} bytes allowed")
    return bytes(data)


def _declared_media_type(data: bytes) -> str | None:
    try:
        value = json.loads(data).get("mediaType")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, str) else None
