"""A fault-injecting HTTP proxy for integration tests: it sits between dockwright and a real
`docker-registry` on its own free loopback port and, per (method, path regex) rule, answers with an
error status, breaks or truncates a body, corrupts bytes, lies in Docker-Content-Digest, delays,
throttles an upload, redirects blob downloads to another loopback host, declines cross-repository
mounts, rewrites upload `Location` headers between absolute and relative form, changes the status of
an answer (ECR's 201 to a PATCH), or swallows upload chunks while reporting the registry's real Range.

Everything else is forwarded unchanged (streamed both ways, `Host` kept so that the registry builds
its absolute URLs for the proxy). Every request is recorded in `requests` with its headers and the
status the client got, and each rule counts its `hits`, so that a test can check that its fault
really happened (a fault test whose fault never fired proves nothing).

    proxy.fail("GET", r"/manifests/", 503)                       # once
    proxy.fail("HEAD", r"/blobs/", 503, times=None)              # always
    proxy.fail("GET", r"/manifests/", 429, headers={"Retry-After": "1"})
    proxy.reset("GET", r"/blobs/sha256:", after=100_000)          # RST after 100 kB of body
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from servers import RegistryServer

_CHUNK = 64 * 1024
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
_UPSTREAM_TIMEOUT = 120.0


@dataclass
class Rule:
    """One fault: applied to the first `times` matching requests (None: to all of them)."""

    method: str
    path: str  # a regex searched in the request path (with its query string)
    action: str
    times: int | None = 1
    status: int = 500
    headers: dict[str, str | Callable[[], str]] = field(default_factory=dict)  # callables: at answer time
    seconds: float = 0.0
    after: int = 0  # bytes of body passed before a reset/truncate/corruption
    rate: int = 0  # bytes per second for "throttle"
    hits: int = 0
    fired: threading.Event = field(default_factory=threading.Event)
    tokens_before: int = 0  # len(token_requests) of the upstream's token server when the rule last fired
    header: str | None = None  # only requests with this header ("!name": without it)
    passed: int = 0  # "stall-range": matching requests forwarded unchanged before the stalling starts

    def matches(self, method: str, path: str, headers: dict[str, str]) -> bool:
        wanted = self.header is None or (self.header.lstrip("!") in headers) != self.header.startswith("!")
        return method == self.method and re.search(self.path, path) is not None and wanted and (
            self.times is None or self.hits < self.times)


@dataclass
class Seen:
    """One request as the proxy saw it, and what the client got back."""

    method: str
    path: str
    headers: dict[str, str]
    time: float  # time.time() on arrival
    status: int = 0
    answered: float = 0.0  # time.time() when the status line was sent
    location: str | None = None  # the Location header the client got
    reply: dict[str, str] = field(default_factory=dict)  # headers of an answer the proxy made itself
    rule: str | None = None  # the action applied, if any


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up (an interrupted build, a reset we made) are expected, not worth a traceback."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class BlobServer:
    """A second server, on another loopback address, that serves blobs straight from a registry's
    storage (the target of `FaultProxy.redirect`) and records the Authorization headers it was sent."""

    def __init__(self, registry: RegistryServer, address: str = "127.0.0.2") -> None:
        self.registry = registry
        self.authorizations: list[str | None] = []
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer._serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        try:
            self._httpd = ThreadingHTTPServer((address, 0), Handler)
        except OSError:  # a sandbox without 127.0.0.0/8 beyond .1: a different port is another origin too
            self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        host, port = self._httpd.server_address[:2]
        self.origin = f"http://{host}:{port}"
        threading.Thread(target=self._httpd.serve_forever, name="blob-server", daemon=True).start()

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        self.authorizations.append(request.headers.get("Authorization"))
        self.paths.append(request.path)
        digest = urlsplit(request.path).path.rsplit("/", 1)[-1]
        data_path = self.registry.blob_data_path(digest)
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest) or not data_path.is_file():
            request.send_error(404)
            return
        data = data_path.read_bytes()
        request.send_response(200)
        request.send_header("Content-Type", "application/octet-stream")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class FaultProxy:
    """The proxy in front of `upstream`; `host` is what dockwright is told the registry is."""

    def __init__(self, upstream: RegistryServer) -> None:
        self.upstream = upstream
        self.rules: list[Rule] = []
        self.requests: list[Seen] = []
        self.blob_server: BlobServer | None = None
        self.connections = 0  # TCP connections accepted (a TLS handshake attempt counts, too)
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                with outer._lock:
                    outer.connections += 1
                super().setup()

            def _any(self) -> None:
                outer._handle(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, name="fault-proxy", daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self.blob_server is not None:
            self.blob_server.close()

    # ------------------------------------------------------------------ rules

    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def fail(self, method: str, path: str, status: int, *, times: int | None = 1,
             headers: dict[str, str | Callable[[], str]] | None = None, header: str | None = None) -> Rule:
        """Answer with `status` (and `headers`, e.g. Retry-After) and a distribution error body; with
        `header`, only requests that carry that header (or, as "!name", do not)."""
        return self._add(Rule(method, path, "status", times, status=status, headers=dict(headers or {}),
                              header=header))

    def restatus(self, method: str, path: str, status: int, *, times: int | None = None) -> Rule:
        """Forward, but give the client `status` instead of the registry's (ECR's 201 to a PATCH)."""
        return self._add(Rule(method, path, "restatus", times, status=status))

    def stall_range(self, *, passed: int = 1, times: int | None = None) -> Rule:
        """Chunked uploads (PATCH with Content-Range): forward the first `passed`, then swallow each chunk
        and answer 202 with the registry's real Range and Location, which no longer advance."""
        return self._add(Rule("PATCH", r"/blobs/uploads/", "stall-range", times, header="content-range",
                              passed=passed))

    def unauthorized(self, method: str, path: str, *, times: int | None = 1) -> Rule:
        """Answer 401 with the registry's own challenge, as when a bearer token has expired."""
        return self._add(Rule(method, path, "unauthorized", times, status=401))

    def reset(self, method: str, path: str, *, after: int, times: int | None = 1) -> Rule:
        """Forward, but reset the connection (TCP RST) after `after` bytes of the response body."""
        return self._add(Rule(method, path, "reset", times, after=after))

    def truncate(self, method: str, path: str, *, after: int, times: int | None = 1) -> Rule:
        """Forward with the full Content-Length, but close the connection after `after` bytes."""
        return self._add(Rule(method, path, "truncate", times, after=after))

    def corrupt(self, method: str, path: str, *, after: int = 0, times: int | None = 1) -> Rule:
        """Forward with the byte at offset `after` of the response body flipped (same length)."""
        return self._add(Rule(method, path, "corrupt", times, after=after))

    def false_digest(self, method: str, path: str, *, times: int | None = 1) -> Rule:
        """Forward with a Docker-Content-Digest header that names other content."""
        return self._add(Rule(method, path, "false-digest", times))

    def delay(self, method: str, path: str, seconds: float, *, times: int | None = 1) -> Rule:
        """Wait `seconds` before forwarding (a slow or hanging registry)."""
        return self._add(Rule(method, path, "delay", times, seconds=seconds))

    def no_digest(self, method: str, path: str, *, times: int | None = None) -> Rule:
        """Forward without the Docker-Content-Digest header (some registries leave it out of a HEAD)."""
        return self._add(Rule(method, path, "no-digest", times))

    def throttle(self, method: str, path: str, rate: int, *, times: int | None = 1) -> Rule:
        """Read the request body at `rate` bytes per second (a slow uplink)."""
        return self._add(Rule(method, path, "throttle", times, rate=rate))

    def redirect(self, method: str = "GET", path: str = r"/blobs/sha256:", *, times: int | None = None) -> Rule:
        """Answer blob requests with a 307 to a BlobServer on another loopback host (`blob_server`)."""
        if self.blob_server is None:
            self.blob_server = BlobServer(self.upstream)
        return self._add(Rule(method, path, "redirect", times))

    def decline_mounts(self, *, times: int | None = None) -> Rule:
        """Forward `POST .../blobs/uploads/?mount=..&from=..` without the mount: the registry answers
        202 with a fresh upload session, as registries do when the source is not mountable."""
        return self._add(Rule("POST", r"/blobs/uploads/\?.*mount=", "decline-mount", times))

    def locations(self, form: str, *, times: int | None = None) -> Rule:
        """Rewrite every Location header to `form` "relative" (path only) or "absolute" (with origin)."""
        assert form in ("relative", "absolute")
        return self._add(Rule("*", ".", f"location-{form}", times))

    def seen(self, method: str, path: str = "") -> list[Seen]:
        """The requests with this method whose path contains `path`."""
        with self._lock:
            return [s for s in self.requests if s.method == method and path in s.path]

    def _take(self, method: str, path: str, headers: dict[str, str]) -> tuple[Rule | None, Rule | None]:
        """The fault rule and the Location rule for this request (counting their hits)."""
        with self._lock:
            fault = next((r for r in self.rules if r.method != "*" and r.matches(method, path, headers)), None)
            location = next((r for r in self.rules if r.method == "*" and r.matches("*", path, headers)), None)
            if fault is not None and fault.action == "stall-range" and fault.passed:
                fault.passed -= 1
                fault = None
            for rule in (fault, location):
                if rule is not None:
                    rule.hits += 1
            return fault, location

    # ------------------------------------------------------------------ one exchange

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        method, path = req.command, req.path
        seen = Seen(method, path, {k.lower(): v for k, v in req.headers.items()}, time.time())
        with self._lock:
            self.requests.append(seen)
        rule, location = self._take(method, path, seen.headers)
        if rule is not None:
            seen.rule = rule.action
            tokens = self.upstream.token_server
            rule.tokens_before = len(tokens.token_requests) if tokens is not None else 0
            rule.fired.set()
        body = _request_body(req, rule.rate if rule and rule.action == "throttle" else 0)
        if rule is not None and rule.action == "delay":
            time.sleep(rule.seconds)
        if rule is not None and rule.action == "stall-range":
            for _ in body:  # the chunk goes nowhere
                pass
            self._answer_stalled(req, seen)
            return
        if rule is not None and rule.action in ("status", "unauthorized", "redirect"):
            for _ in body:  # drain what the client sends, so the connection stays usable
                pass
            self._answer_locally(req, rule, seen)
            return
        if rule is not None and rule.action == "decline-mount":
            split = urlsplit(path)
            query = [(k, v) for k, v in parse_qsl(split.query) if k not in ("mount", "from")]
            path = split.path + (f"?{urlencode(query)}" if query else "")
        self._forward(req, method, path, body, rule, location, seen)

    def _answer_locally(self, req: BaseHTTPRequestHandler, rule: Rule, seen: Seen) -> None:
        headers = {name: value if isinstance(value, str) else value() for name, value in rule.headers.items()}
        if rule.action == "redirect":
            assert self.blob_server is not None
            status, payload = 307, b""
            headers["Location"] = self.blob_server.origin + req.path
        elif rule.action == "unauthorized":
            status = 401
            payload = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "token expired"}]}).encode()
            challenge = self._upstream_challenge()
            if challenge:
                headers["WWW-Authenticate"] = challenge
        else:
            status = rule.status
            payload = json.dumps({"errors": [{"code": "INJECTED", "message": f"fault proxy says {status}"}]}).encode()
            headers.setdefault("Content-Type", "application/json")
        seen.status, seen.answered, seen.location, seen.reply = status, time.time(), headers.get("Location"), headers
        req.send_response(status)
        for name, value in headers.items():
            req.send_header(name, value)
        req.send_header("Content-Length", str(len(payload)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(payload)

    def _answer_stalled(self, req: BaseHTTPRequestHandler, seen: Seen) -> None:
        """202 with the upload's state as the registry reports it (GET on the session: Range, Location)."""
        conn = http.client.HTTPConnection(self.upstream.host, timeout=_UPSTREAM_TIMEOUT)
        try:
            conn.putrequest("GET", req.path, skip_host=True, skip_accept_encoding=True)
            for name in ("Host", "Authorization"):
                if req.headers.get(name):
                    conn.putheader(name, req.headers[name])
            conn.endheaders()
            status = conn.getresponse()
            status.read()
            headers = {name: status.getheader(name) or "" for name in ("Location", "Range", "Docker-Upload-UUID")}
        finally:
            conn.close()
        seen.status, seen.answered, seen.location, seen.reply = 202, time.time(), headers["Location"], headers
        req.send_response(202)
        for name, value in headers.items():
            req.send_header(name, value)
        req.send_header("Content-Length", "0")
        req.end_headers()

    def _upstream_challenge(self) -> str | None:
        conn = http.client.HTTPConnection(self.upstream.host, timeout=_UPSTREAM_TIMEOUT)
        try:
            conn.request("GET", "/v2/")
            response = conn.getresponse()
            response.read()
            return response.getheader("WWW-Authenticate")
        finally:
            conn.close()

    def _forward(self, req: BaseHTTPRequestHandler, method: str, path: str, body: Iterator[bytes],
                 rule: Rule | None, location: Rule | None, seen: Seen) -> None:
        conn = http.client.HTTPConnection(self.upstream.host, timeout=_UPSTREAM_TIMEOUT)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            chunked = "chunked" in req.headers.get("Transfer-Encoding", "").lower()
            for name, value in req.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for piece in body:
                conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                conn.send(b"0\r\n\r\n")
            response = conn.getresponse()
            self._relay(req, response, rule, location, seen)
        finally:
            conn.close()

    def _relay(self, req: BaseHTTPRequestHandler, response: http.client.HTTPResponse, rule: Rule | None,
               location: Rule | None, seen: Seen) -> None:
        action = rule.action if rule else None
        headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
        length = response.getheader("Content-Length")
        payload: bytes | None = None
        if req.command != "HEAD" and length is None:  # chunked upstream: pass on with a length
            payload = response.read()
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(payload))))
        if action == "no-digest":
            headers = [(k, v) for k, v in headers if k.lower() != "docker-content-digest"]
        if action == "false-digest":
            headers = [(k, v) for k, v in headers if k.lower() != "docker-content-digest"]
            headers.append(("Docker-Content-Digest", "sha256:" + "0" * 64))
        if location is not None:
            headers = [(k, _rewrite_location(v, location.action, self.host) if k.lower() == "location" else v)
                       for k, v in headers]
        status = rule.status if action == "restatus" else response.status  # type: ignore[union-attr]
        seen.status, seen.answered = status, time.time()
        seen.location = next((v for k, v in headers if k.lower() == "location"), None)
        req.send_response(status)
        for name, value in headers:
            req.send_header(name, value)
        req.end_headers()
        if req.command == "HEAD":
            return
        sent = 0
        pieces = iter([payload]) if payload is not None else iter(lambda: response.read(_CHUNK), b"")
        for piece in pieces:
            if action in ("reset", "truncate") and sent + len(piece) >= rule.after:  # type: ignore[union-attr]
                req.wfile.write(piece[: rule.after - sent])  # type: ignore[union-attr]
                _break(req, hard=action == "reset")
                return
            if action == "corrupt" and sent <= rule.after < sent + len(piece):  # type: ignore[union-attr]
                at = rule.after - sent  # type: ignore[union-attr]
                piece = piece[:at] + bytes([piece[at] ^ 0xFF]) + piece[at + 1 :]
            req.wfile.write(piece)
            sent += len(piece)


def _request_body(req: BaseHTTPRequestHandler, rate: int) -> Iterator[bytes]:
    """The request body as it arrives (Content-Length or chunked), at most `rate` bytes/s if set."""
    if "chunked" in req.headers.get("Transfer-Encoding", "").lower():
        pieces = _read_chunked(req)
    else:
        pieces = _read_length(req, int(req.headers.get("Content-Length") or 0))
    for piece in pieces:
        if rate:
            time.sleep(len(piece) / rate)
        yield piece


def _read_length(req: BaseHTTPRequestHandler, remaining: int) -> Iterator[bytes]:
    while remaining > 0:
        piece = req.rfile.read(min(_CHUNK, remaining))
        if not piece:
            raise ConnectionError("client closed the connection mid-body")
        remaining -= len(piece)
        yield piece


def _read_chunked(req: BaseHTTPRequestHandler) -> Iterator[bytes]:
    while True:
        size = int(req.rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while req.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return
        yield from _read_length(req, size)
        req.rfile.readline()


def _break(req: BaseHTTPRequestHandler, *, hard: bool) -> None:
    """End the connection mid-body: a TCP reset (`hard`) or an orderly close (a truncated body)."""
    req.close_connection = True
    sock: socket.socket = req.connection
    req.wfile.flush()
    if hard:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    else:
        sock.shutdown(socket.SHUT_RDWR)


def _rewrite_location(value: str, action: str, proxy_host: str) -> str:
    parts = urlsplit(value)
    if action == "location-relative":
        return parts.path + (f"?{parts.query}" if parts.query else "")
    if parts.scheme:
        return value
    return f"http://{proxy_host}{value}"

