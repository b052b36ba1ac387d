"""dockwright.httpclient against real local servers (http.server on 127.0.0.1, HTTP/1.1 keep-alive):
connection reuse, stale connections, redirects and the Authorization header, streamed uploads, failures
(refused, timed out, cut short, a failing body), proxies from the environment and NO_PROXY."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.client
import ipaddress
import os
import resource
import socket
import socketserver
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from dockwright.httpclient import Client, Response, Timeout, TransportError, add_query
from dockwright.httpclient.proxies import Proxies, bypassed

TIMEOUT = Timeout(5, 5)
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "request_method")


@dataclass
class Seen:
    """One request as a server received it."""

    method: str
    target: str  # the request line's target, as sent (origin-form, or absolute-form to a proxy)
    headers: Message
    body: bytes
    connection: int  # which of the server's connections carried it, from 1


App = Callable[["Handler", Seen], None]


class Recording:
    """What the test servers share: the app that answers, and what they saw."""

    app: App

    def start_recording(self, app: App) -> None:
        self.app = app
        self.connections = 0
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.release = threading.Event()  # stalled handlers wait for this; set when the test ends

    def targets(self) -> list[str]:
        with self.lock:
            return [seen.target for seen in self.seen]

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that went away mid-exchange is what several tests do on purpose


class Server(Recording, ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, app: App, tls: ssl.SSLContext | None = None) -> None:
        self.start_recording(app)
        super().__init__(("127.0.0.1", 0), Handler)
        self.scheme = "https" if tls else "http"
        if tls:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"


class UnixServer(Recording, socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, app: App) -> None:
        self.start_recording(app)
        super().__init__(path, Handler)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Recording  # type: ignore[assignment]

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1
            self.connection_number = self.server.connections

    def log_message(self, format: str, *args: object) -> None:
        pass

    def dispatch(self) -> None:
        seen = Seen(self.command, self.path, self.headers, read_body(self), self.connection_number)
        with self.server.lock:
            self.server.seen.append(seen)
        self.server.app(self, seen)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_CONNECT = dispatch


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if not size:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(body)
            body += handler.rfile.read(size)
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def reply(handler: BaseHTTPRequestHandler, status: int = 200, body: bytes = b"",
          headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def echo(handler: Handler, seen: Seen) -> None:
    """Answers with the request line's method and target."""
    reply(handler, 200, f"{seen.method} {seen.target}".encode())


def routes(table: dict[str, tuple[int, dict[str, str]]]) -> App:
    """Answers the paths in `table` with their (status, headers), every other path like `echo`."""

    def app(handler: Handler, seen: Seen) -> None:
        status, headers = table.get(urlsplit(seen.target).path, (200, {}))
        reply(handler, status, f"{seen.method} {seen.target}".encode(), headers)

    return app


def forward_to(origin: Server) -> App:
    """A plain-HTTP proxy that sends everything on to `origin` (whatever host the request names)."""

    def app(handler: Handler, seen: Seen) -> None:
        if seen.method == "CONNECT":
            reply(handler, 403)
            return
        parts = urlsplit(seen.target)
        headers = {name: value for name, value in seen.headers.items()
                   if name.lower() not in ("proxy-authorization", "connection")}
        upstream = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=5)
        try:
            upstream.request(seen.method, parts.path + (f"?{parts.query}" if parts.query else ""),
                             body=seen.body, headers=headers)
            answer = upstream.getresponse()
            reply(handler, answer.status, answer.read(), {"X-Via": "test-proxy"})
        finally:
            upstream.close()

    return app


@pytest.fixture(autouse=True)
def no_proxy_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(app: App, tls: ssl.SSLContext | None = None) -> Server:
        server = Server(app, tls)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def client() -> Iterator[Client]:
    with Client(timeout=TIMEOUT) as client:
        yield client


def get(client: Client, url: str, **send: bool) -> Response:
    return client.send(client.build_request("GET", url), **send)


# ---------------------------------------------------------------------- keep-alive


def test_sequential_requests_reuse_one_keep_alive_connection(serve: Callable[..., Server], client: Client) -> None:
    server = serve(echo)
    for i in range(3):
        response = get(client, f"{server.url}/{i}")
        assert (response.status_code, response.read()) == (200, f"GET /{i}".encode())
    with get(client, f"{server.url}/streamed", stream=True) as response:
        assert b"".join(response.iter_bytes()) == b"GET /streamed"
    head = client.send(client.build_request("HEAD", f"{server.url}/head"))
    assert head.status_code == 200 and head.read() == b""
    assert get(client, f"{server.url}/last").read() == b"GET /last"
    assert server.connections == 1
    assert {seen.connection for seen in server.seen} == {1}


def test_a_chunked_response_leaves_its_connection_reusable(serve: Callable[..., Server], client: Client) -> None:
    def chunked(handler: Handler, seen: Seen) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for piece in (b"one ", b"two ", seen.target.encode()):
            handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")

    server = serve(chunked)
    assert get(client, f"{server.url}/a").read() == b"one two /a"
    assert get(client, f"{server.url}/b").read() == b"one two /b"
    assert server.connections == 1


def test_a_response_closed_unread_does_not_leak_into_the_next_one(serve: Callable[..., Server],
                                                                    client: Client) -> None:
    big = b"x" * (2 << 20)

    def app(handler: Handler, seen: Seen) -> None:
        reply(handler, 200, big if seen.target == "/big" else b"small")

    server = serve(app)
    response = get(client, f"{server.url}/big", stream=True)
    assert response.status_code == 200
    response.close()
    assert get(client, f"{server.url}/small").read() == b"small"
    assert server.connections == 2


def test_threads_share_the_pool_and_each_gets_its_own_answer(serve: Callable[..., Server],
                                                              client: Client) -> None:
    server = serve(echo)
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda i: get(client, f"{server.url}/{i}").read(), range(80)))
    assert bodies == [f"GET /{i}".encode() for i in range(80)]
    assert server.connections <= 8


def test_an_idle_connection_the_server_closed_is_replaced(serve: Callable[..., Server], client: Client) -> None:
    def close_after_answering(handler: Handler, seen: Seen) -> None:
        echo(handler, seen)  # no `Connection: close`: the client learns only from the socket
        handler.close_connection = True

    server = serve(close_after_answering)
    for i in range(3):
        assert get(client, f"{server.url}/{i}").read() == f"GET /{i}".encode()
    assert server.connections == 3


def drop_every_second_request(handler: Handler, seen: Seen) -> None:
    """A server that closed its idle keep-alive connection just as the next request arrived on it."""
    with handler.server.lock:
        on_this_connection = [other for other in handler.server.seen if other.connection == seen.connection]
    if len(on_this_connection) == 2:
        handler.close_connection = True  # gone without an answer
        return
    reply(handler, 200, f"{seen.method} {seen.target} {seen.body.decode()}".encode())


@pytest.mark.parametrize("method, body", [("GET", None), ("PUT", b"the body")])
def test_a_request_on_a_connection_that_died_is_sent_again_on_a_new_one(
        serve: Callable[..., Server], client: Client, method: str, body: bytes | None) -> None:
    server = serve(drop_every_second_request)
    assert get(client, f"{server.url}/first").read() == b"GET /first "
    response = client.send(client.build_request(method, f"{server.url}/second", body=body))
    assert response.read() == f"{method} /second {(body or b'').decode()}".encode()
    assert [(seen.target, seen.connection, seen.body) for seen in server.seen] == [
        ("/first", 1, b""), ("/second", 1, body or b""), ("/second", 2, body or b"")]


def test_a_streamed_body_is_not_sent_twice_when_the_connection_died(serve: Callable[..., Server],
                                                                    client: Client) -> None:
    server = serve(drop_every_second_request)
    assert get(client, f"{server.url}/first").read() == b"GET /first "
    request = client.build_request("PUT", f"{server.url}/upload", body=iter([b"once ", b"only"]),
                                   headers={"Content-Length": "9"})
    with pytest.raises(TransportError):
        client.send(request)
    assert server.targets() == ["/first", "/upload"]


# ---------------------------------------------------------------------- redirects


def test_redirects_are_followed_only_when_asked(serve: Callable[..., Server], client: Client) -> None:
    server = serve(routes({"/old": (302, {"Location": "/new"})}))
    response = get(client, f"{server.url}/old")
    assert response.status_code == 302 and response.headers.get("location") == "/new"
    assert server.targets() == ["/old"]
    response = get(client, f"{server.url}/old", follow_redirects=True)
    assert (response.status_code, response.read()) == (200, b"GET /new")
    assert response.url == f"{server.url}/new"
    assert server.targets() == ["/old", "/old", "/new"]
    assert server.connections == 1  # the redirect's small body was read, its connection reused


def test_a_cross_origin_redirect_drops_the_authorization_header(serve: Callable[..., Server],
                                                               client: Client) -> None:
    elsewhere = serve(echo)
    origin = serve(routes({"/away": (307, {"Location": f"{elsewhere.url}/landing?sig=1"})}))
    request = client.build_request("GET", f"{origin.url}/away",
                                   headers={"Authorization": "Bearer secret", "X-Trace": "kept"})
    response = client.send(request, follow_redirects=True)
    assert response.read() == b"GET /landing?sig=1"
    assert origin.seen[0].headers["Authorization"] == "Bearer secret"
    (landing,) = elsewhere.seen
    assert "Authorization" not in landing.headers
    assert landing.headers["X-Trace"] == "kept"


def test_a_same_origin_redirect_keeps_the_authorization_header(serve: Callable[..., Server],
                                                              client: Client) -> None:
    server = serve(routes({"/v2/here": (302, {"Location": "there"})}))
    request = client.build_request("GET", f"{server.url}/v2/here", headers={"Authorization": "Bearer secret"})
    assert client.send(request, follow_redirects=True).read() == b"GET /v2/there"
    assert [seen.headers["Authorization"] for seen in server.seen] == ["Bearer secret", "Bearer secret"]


def test_303_turns_a_post_into_a_get_without_its_body(serve: Callable[..., Server], client: Client) -> None:
    server = serve(routes({"/submit": (303, {"Location": "/result"})}))
    request = client.build_request("POST", f"{server.url}/submit", body=b"payload",
                                   headers={"Content-Type": "text/plain"})
    assert client.send(request, follow_redirects=True).read() == b"GET /result"
    post, follow = server.seen
    assert (post.method, post.body, post.headers["Content-Type"]) == ("POST", b"payload", "text/plain")
    assert (follow.method, follow.body) == ("GET", b"")
    assert "Content-Type" not in follow.headers and "Content-Length" not in follow.headers


def test_307_sends_the_post_and_its_body_again(serve: Callable[..., Server], client: Client) -> None:
    server = serve(routes({"/submit": (307, {"Location": "/again"})}))
    request = client.build_request("POST", f"{server.url}/submit", body=b"payload",
                                   headers={"Content-Type": "text/plain"})
    assert client.send(request, follow_redirects=True).read() == b"POST /again"
    assert [(seen.method, seen.body) for seen in server.seen] == [("POST", b"payload"), ("POST", b"payload")]
    assert server.seen[1].headers["Content-Type"] == "text/plain"


def test_a_307_to_a_streamed_body_is_returned_rather_than_followed(serve: Callable[..., Server],
                                                                    client: Client) -> None:
    server = serve(routes({"/upload": (307, {"Location": "/elsewhere"})}))
    request = client.build_request("PUT", f"{server.url}/upload", body=iter([b"ab", b"cd"]),
                                   headers={"Content-Length": "4"})
    response = client.send(request, follow_redirects=True)
    assert response.status_code == 307
    assert server.targets() == ["/upload"] and server.seen[0].body == b"abcd"


def test_a_redirect_loop_ends_in_a_transport_error(serve: Callable[..., Server], client: Client) -> None:
    server = serve(routes({"/loop": (302, {"Location": "/loop"})}))
    with pytest.raises(TransportError, match="redirects"):
        get(client, f"{server.url}/loop", follow_redirects=True)


# ---------------------------------------------------------------------- request bodies


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def sha256_of_body(handler: Handler, seen: Seen) -> None:
    reply(handler, 201, hashlib.sha256(seen.body).hexdigest().encode())


def test_a_streamed_body_with_content_length_arrives_intact(serve: Callable[..., Server], client: Client) -> None:
    data = bytes(range(256)) * 12_289  # a little over 3 MiB
    server = serve(sha256_of_body)
    request = client.build_request("PATCH", f"{server.url}/upload", body=pieces(data, 100_003),
                                   headers={"Content-Length": str(len(data))})
    assert client.send(request).read() == hashlib.sha256(data).hexdigest().encode()
    (seen,) = server.seen
    assert seen.body == data
    assert seen.headers["Content-Length"] == str(len(data)) and "Transfer-Encoding" not in seen.headers
    assert get(client, f"{server.url}/after").status_code == 201 and server.connections == 1


def test_a_streamed_body_without_a_length_is_sent_chunked(serve: Callable[..., Server], client: Client) -> None:
    data = b"0123456789" * 50_000
    server = serve(sha256_of_body)
    request = client.build_request("POST", f"{server.url}/upload", body=pieces(data, 65_536))
    assert client.send(request).read() == hashlib.sha256(data).hexdigest().encode()
    (seen,) = server.seen
    assert seen.body == data and seen.headers["Transfer-Encoding"] == "chunked"


@pytest.mark.parametrize("error", [OSError(5, "Input/output error reading the layer"), ValueError("size check")])
def test_a_failing_body_iterator_raises_its_own_error(serve: Callable[..., Server], client: Client,
                                                      error: Exception) -> None:
    server = serve(sha256_of_body)

    def body() -> Iterator[bytes]:
        yield b"first part"
        raise error

    request = client.build_request("PUT", f"{server.url}/upload", body=body(), headers={"Content-Length": "100"})
    with pytest.raises(type(error)) as raised:
        client.send(request)
    assert raised.value is error and not isinstance(raised.value, TransportError)
    assert get(client, f"{server.url}/after").status_code == 201  # the half-sent connection was not kept


def test_form_and_params(serve: Callable[..., Server], client: Client) -> None:
    server = serve(echo)
    request = client.build_request("POST", f"{server.url}/token?service=reg", form={"scope": "repository:a:pull"},
                                   params=[("scope", "x y"), ("scope", "z")])
    assert client.send(request).read() == b"POST /token?service=reg&scope=x+y&scope=z"
    (seen,) = server.seen
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(seen.body.decode()) == {"scope": ["repository:a:pull"]}


def test_client_headers_are_sent_and_a_request_header_replaces_them_whatever_its_case(
        serve: Callable[..., Server]) -> None:
    server = serve(echo)
    with Client(timeout=TIMEOUT, headers={"User-Agent": "dockwright/1", "X-Default": "d"}) as client:
        get(client, f"{server.url}/default")
        client.send(client.build_request("GET", f"{server.url}/custom", headers={"user-agent": "custom/2"}))
    default, custom = server.seen
    assert default.headers.get_all("User-Agent") == ["dockwright/1"] and default.headers["X-Default"] == "d"
    assert custom.headers.get_all("User-Agent") == ["custom/2"] and custom.headers["X-Default"] == "d"


# ---------------------------------------------------------------------- failures


def test_a_refused_connection_is_a_transport_error(client: Client) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the probe is closed
    with pytest.raises(TransportError, match=r"(?i)refused"):
        get(client, f"http://127.0.0.1:{port}/v2/")


@pytest.mark.parametrize("where", ["before the headers", "in the body"])
def test_a_server_silent_longer_than_the_read_timeout_is_a_transport_error(
        serve: Callable[..., Server], where: str) -> None:
    def stall(handler: Handler, seen: Seen) -> None:
        if where == "in the body":
            handler.send_response(200)
            handler.send_header("Content-Length", "10")
            handler.end_headers()
            handler.wfile.write(b"abc")
        handler.server.release.wait(10)

    server = serve(stall)
    with Client(timeout=Timeout(5, 0.2)) as client, pytest.raises(TransportError, match="timed out"):
        response = get(client, f"{server.url}/slow", stream=True)
        response.read()


def test_a_read_timeout_on_a_reused_connection_does_not_send_the_request_again(
        serve: Callable[..., Server]) -> None:
    def slow_charge(handler: Handler, seen: Seen) -> None:
        if seen.target == "/charge":
            handler.server.release.wait(10)
        reply(handler, 200, b"done")

    server = serve(slow_charge)
    with Client(timeout=Timeout(5, 0.2)) as client:
        assert get(client, f"{server.url}/warm-up").read() == b"done"  # leaves a connection in the pool
        with pytest.raises(TransportError, match="timed out"):
            client.send(client.build_request("POST", f"{server.url}/charge", body=b"once"))
    assert server.targets() == ["/warm-up", "/charge"]  # a timeout is no stale connection: no second POST


def cut_short(framing: str) -> App:
    """Promises more body than it sends, then closes the connection."""

    def app(handler: Handler, seen: Seen) -> None:
        handler.send_response(200)
        if framing == "content-length":
            handler.send_header("Content-Length", "100")
            handler.end_headers()
            handler.wfile.write(b"only ten..")
        else:
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            handler.wfile.write(b"64\r\nonly ten..")
        handler.close_connection = True

    return app


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("reading", ["send", "read", "iter_bytes"])
def test_a_response_cut_short_is_a_transport_error(serve: Callable[..., Server], client: Client,
                                                   framing: str, reading: str) -> None:
    server = serve(cut_short(framing))
    with pytest.raises(TransportError):
        if reading == "send":
            get(client, f"{server.url}/blob")
        else:
            response = get(client, f"{server.url}/blob", stream=True)
            assert response.status_code == 200
            if reading == "read":
                response.read()
            else:
                for _ in response.iter_bytes():
                    pass


def test_what_arrived_before_a_stall_is_handed_over_before_the_error(serve: Callable[..., Server]) -> None:
    def stall_midway(handler: Handler, seen: Seen) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        handler.wfile.write(b"first ten.")
        handler.server.release.wait(10)

    server = serve(stall_midway)
    received = bytearray()
    with Client(timeout=Timeout(5, 0.2)) as client:
        response = get(client, f"{server.url}/blob", stream=True)
        with pytest.raises(TransportError, match="timed out"):
            for piece in response.iter_bytes():
                received += piece
    assert received == b"first ten."  # what a resumed download's Range request starts after


def test_keep_alive_works_with_more_than_1024_open_files(serve: Callable[..., Server], client: Client) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"the open files limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]  # the sockets' numbers go above 1024
    try:
        server = serve(echo)
        for i in range(3):
            assert get(client, f"{server.url}/{i}").read() == f"GET /{i}".encode()
        assert server.connections == 1
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_unsupported_urls_are_transport_errors(client: Client) -> None:
    with pytest.raises(TransportError, match="only http"):
        get(client, "ftp://files.example/x")
    with pytest.raises(TransportError, match="invalid port"):
        get(client, "http://registry.example:port/")


# ---------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (certificate, key) PEM files."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dockwright test registry")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture
def tls_server(serve: Callable[..., Server], certificate: tuple[Path, Path]) -> Server:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return serve(echo, context)


def test_https_without_verification_talks_to_a_self_signed_server(tls_server: Server) -> None:
    with Client(timeout=TIMEOUT, verify=False) as client:
        assert get(client, f"{tls_server.url}/v2/").read() == b"GET /v2/"
        assert get(client, f"{tls_server.url}/v2/again").read() == b"GET /v2/again"
    assert tls_server.connections == 1


def test_https_with_verification_refuses_an_unknown_certificate(tls_server: Server) -> None:
    with Client(timeout=TIMEOUT) as client, pytest.raises(TransportError, match=r"(?i)certificate"):
        get(client, f"{tls_server.url}/v2/")
    assert tls_server.seen == []


def test_ssl_cert_file_adds_a_trusted_certificate(tls_server: Server, certificate: tuple[Path, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    with Client(timeout=TIMEOUT) as client:
        assert get(client, f"{tls_server.url}/v2/").read() == b"GET /v2/"


# ---------------------------------------------------------------------- the Docker Engine's socket


def test_a_unix_socket_carries_every_request() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as directory:
        path = str(Path(directory) / "engine.sock")
        server = UnixServer(path, echo)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        try:
            with Client(timeout=TIMEOUT, unix_socket=path) as client:
                assert get(client, "http://localhost/v1.43/version").read() == b"GET /v1.43/version"
                request = client.build_request("POST", "http://localhost/images/load", body=b"tar")
                assert client.send(request).read() == b"POST /images/load"
            assert server.connections == 1
            assert [seen.headers["Host"] for seen in server.seen] == ["localhost", "localhost"]
            assert server.seen[1].body == b"tar"
        finally:
            server.release.set()
            server.shutdown()
            server.server_close()


# ---------------------------------------------------------------------- proxies


@pytest.mark.parametrize("names", [("HTTP_PROXY", "NO_PROXY"), ("http_proxy", "no_proxy")])
def test_http_proxy_gets_plain_http_requests_in_absolute_form(serve: Callable[..., Server],
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             names: tuple[str, str]) -> None:
    origin = serve(echo)
    proxy = serve(forward_to(origin))
    monkeypatch.setenv(names[0], proxy.url)
    monkeypatch.setenv(names[1], "elsewhere.example")
    with Client(timeout=TIMEOUT) as client:
        response = get(client, "http://registry.example:5000/v2/?n=1")
        assert response.read() == b"GET /v2/?n=1" and response.headers.get("x-via") == "test-proxy"
        assert get(client, "http://registry.example:5000/v2/tags").read() == b"GET /v2/tags"
    assert proxy.targets() == ["http://registry.example:5000/v2/?n=1", "http://registry.example:5000/v2/tags"]
    assert [seen.headers["Host"] for seen in proxy.seen] == ["registry.example:5000"] * 2
    assert "Proxy-Authorization" not in proxy.seen[0].headers
    assert proxy.connections == 1


def test_a_proxy_url_with_credentials_sends_proxy_authorization(serve: Callable[..., Server],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    origin = serve(echo)
    proxy = serve(forward_to(origin))
    monkeypatch.setenv("HTTP_PROXY", f"http://ann:p%40ss@127.0.0.1:{proxy.port}")
    with Client(timeout=TIMEOUT) as client:
        assert get(client, "http://registry.example/v2/").read() == b"GET /v2/"
    (seen,) = proxy.seen
    assert seen.target == "http://registry.example/v2/"
    assert seen.headers["Proxy-Authorization"] == "Basic " + base64.b64encode(b"ann:p@ss").decode()


def test_https_through_a_proxy_asks_it_for_a_tunnel(serve: Callable[..., Server],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = serve(forward_to(serve(echo)))  # refuses CONNECT
    monkeypatch.setenv("HTTPS_PROXY", f"http://ann:pw@127.0.0.1:{proxy.port}")
    with Client(timeout=TIMEOUT) as client, pytest.raises(TransportError, match="through the proxy"):
        get(client, "https://registry.example/v2/")
    (seen,) = proxy.seen
    assert (seen.method, seen.target) == ("CONNECT", "registry.example:443")
    assert seen.headers["Proxy-Authorization"] == "Basic " + base64.b64encode(b"ann:pw").decode()


@pytest.mark.parametrize("no_proxy, direct", [
    ("127.0.0.1", True),
    ("127.0.0.0/8", True),
    ("127.0.0.1:{port}", True),
    ("*", True),
    ("registry.example, 127.0.0.1", True),
    ("127.0.0.1:1", False),
    ("localhost", False),
    ("10.0.0.0/8", False),
])
def test_no_proxy_entries_bypass_the_proxy(serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch,
                                           no_proxy: str, direct: bool) -> None:
    origin = serve(echo)
    proxy = serve(forward_to(origin))
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy.format(port=origin.port))
    with Client(timeout=TIMEOUT) as client:
        assert get(client, f"{origin.url}/v2/").read() == b"GET /v2/"
    assert origin.targets() == ["/v2/"]
    assert proxy.targets() == ([] if direct else [f"{origin.url}/v2/"])


def test_trust_env_false_ignores_the_proxy_variables(serve: Callable[..., Server],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    origin = serve(echo)
    proxy = serve(forward_to(origin))
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    with Client(timeout=TIMEOUT, trust_env=False) as client:
        assert get(client, f"{origin.url}/v2/").read() == b"GET /v2/"
    assert proxy.seen == []


@pytest.mark.parametrize("host, port, entries, expected", [
    ("anything.test", 80, ["*"], True),
    ("example.com", 80, ["example.com"], True),
    ("registry.example.com", 80, ["example.com"], True),
    ("a.b.example.com", 443, ["example.com"], True),
    ("badexample.com", 80, ["example.com"], False),
    ("example.com.evil.test", 80, ["example.com"], False),
    ("registry.example.com", 80, [".example.com"], True),
    ("example.com", 80, [".example.com"], True),
    ("badexample.com", 80, [".example.com"], False),
    ("registry.example.com", 80, ["*.example.com"], True),
    ("example.com", 5000, ["example.com:5000"], True),
    ("example.com", 443, ["example.com:5000"], False),
    ("registry.example.com", 5000, [".example.com:5000"], True),
    ("registry.example.com", 80, ["other.test", "example.com"], True),
    ("registry.example.com", 80, ["other.test", "example.org"], False),
    ("10.0.0.1", 80, ["10.0.0.1"], True),
    ("10.0.0.2", 80, ["10.0.0.1"], False),
    ("10.0.0.1", 8080, ["10.0.0.1:8080"], True),
    ("10.0.0.1", 80, ["10.0.0.1:8080"], False),
    ("127.0.0.1", 80, ["127.0.0.0/8"], True),
    ("127.255.0.9", 5000, ["127.0.0.0/8"], True),
    ("128.0.0.1", 80, ["127.0.0.0/8"], False),
    ("localhost", 80, ["127.0.0.0/8"], False),
    ("::1", 5000, ["::1"], True),
    ("::1", 5000, ["[::1]:5000"], True),
    ("::1", 80, ["[::1]:5000"], False),
    ("::1", 80, ["[::1]"], True),
    ("fd00::5", 80, ["fd00::/8"], True),
    ("fe80::5", 80, ["fd00::/8"], False),
    ("example.com", 80, [], False),
])
def test_no_proxy_matching(host: str, port: int, entries: list[str], expected: bool) -> None:
    assert bypassed(host, port, entries) is expected


def test_no_proxy_from_the_environment_ignores_case_and_spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", " other.test , Example.COM ,")
    proxies = Proxies.from_environment()
    assert proxies.for_target("http", "Registry.Example.com", 80) is None
    proxy = proxies.for_target("http", "registry.example.org", 80)
    assert proxy is not None and (proxy.host, proxy.port, proxy.authorization) == ("proxy.internal", 3128, None)
    assert proxies.for_target("https", "registry.example.org", 443) is None  # HTTP_PROXY is for http:// only


def test_all_proxy_stands_in_for_both_schemes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", "http://proxy.internal:3128")
    proxies = Proxies.from_environment()
    for scheme in ("http", "https"):
        proxy = proxies.for_target(scheme, "registry.example", 443)
        assert proxy is not None and proxy.url == "http://proxy.internal:3128"


def test_under_cgi_an_upper_case_http_proxy_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUEST_METHOD", "GET")
    monkeypatch.setenv("HTTP_PROXY", "http://attacker.example:8080")  # may come from a request's Proxy: header
    assert Proxies.from_environment().for_target("http", "registry.example", 80) is None


def test_an_unsupported_proxy_is_a_transport_error_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "socks5://ann:secret@proxy.internal:1080")
    with Client(timeout=TIMEOUT) as client, pytest.raises(TransportError, match="only http:// proxies") as raised:
        get(client, "http://registry.example/v2/")
    assert "secret" not in str(raised.value)


# ---------------------------------------------------------------------- add_query


@pytest.mark.parametrize("url, params, expected", [
    ("https://r.example/v2/a/blobs/uploads/u?_state=abc", {"digest": "sha256:12"},
     "https://r.example/v2/a/blobs/uploads/u?_state=abc&digest=sha256%3A12"),
    ("https://auth.example/token", [("scope", "repository:a:pull"), ("scope", "repository:b:push")],
     "https://auth.example/token?scope=repository%3Aa%3Apull&scope=repository%3Ab%3Apush"),
    ("https://r.example/p?a=1#part", [("b", "x y")], "https://r.example/p?a=1&b=x+y#part"),
])
def test_add_query_appends_to_the_query(url: str, params: dict[str, str] | Iterable[tuple[str, str]],
                                        expected: str) -> None:
    assert add_query(url, params) == expected


def test_add_query_keeps_the_existing_parameters() -> None:
    url = add_query("https://r.example/upload?_state=a%2Bb&n=1", [("digest", "sha256:ff")])
    assert parse_qs(urlsplit(url).query) == {"_state": ["a+b"], "n": ["1"], "digest": ["sha256:ff"]}
