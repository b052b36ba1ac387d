"""The client: a request in, a response out, over pooled connections, through redirects."""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from urllib.parse import urlencode, urljoin, urlsplit

from dockwright.httpclient.connections import (
    CLOSED_BY_SERVER,
    Connection,
    Pool,
    Route,
    TLSConnection,
    describe,
    tls_context,
    wrap_response,
)
from dockwright.httpclient.messages import (
    Body,
    CertificateError,
    PlainHTTPError,
    RefusedError,
    Request,
    Response,
    Timeout,
    TransportError,
    UnknownHostError,
    add_query,
)
from dockwright.httpclient.proxies import Proxies

MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DRAIN_LIMIT = 64 << 10  # a redirect's body up to this size is read so that its connection can be reused
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAME_MISMATCH = (62, 64)  # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
# how OpenSSL reports a TLS handshake answered with plain text (an HTTP response): 1.1/3.0, then 3.2+
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL"})

Transport = Callable[[Request], Response]


class Client:
    """Sends requests over pooled keep-alive connections; safe to share between threads.

    `verify=False` skips certificate checks (for --insecure and loopback registries); `unix_socket`
    sends everything to that socket (the Docker Engine API); `transport` replaces the network (tests)."""

    def __init__(self, *, timeout: Timeout, verify: bool = True, headers: Mapping[str, str] | None = None,
                 pool_size: int = 10, unix_socket: str | None = None, trust_env: bool = True,
                 transport: Transport | None = None) -> None:
        self._timeout = timeout
        self._verify = verify
        self._headers = dict(headers or {})
        self._unix_socket = unix_socket
        self._proxies = Proxies.from_environment() if trust_env and not unix_socket else Proxies({}, [])
        self._pool = Pool(pool_size)
        self._transport = transport or self._exchange
        self._tls: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def build_request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                      body: Body = None, params: Iterable[tuple[str, str]] | Mapping[str, str] | None = None,
                      form: Mapping[str, str] | None = None) -> Request:
        merged = _merged(self._headers, headers or {})
        if params:
            url = add_query(url, params)
        if form is not None:
            body = urlencode(form).encode()
            merged["Content-Type"] = "application/x-www-form-urlencoded"
        return Request(method, url, merged, body)

    def send(self, request: Request, *, stream: bool = False, follow_redirects: bool = False) -> Response:
        """The response to `request`; its body is read already unless `stream` (then close it)."""
        for _ in range(MAX_REDIRECTS + 1):
            response = self._transport(request)
            response.url, response.request = request.url, request
            location = response.headers.get("location")
            if not (follow_redirects and location and response.status_code in REDIRECT_STATUSES):
                break
            next_request = _redirected(request, response.status_code, location)
            if next_request is None:  # a streamed body cannot be sent again
                break
            _discard(response)
            request = next_request
        else:
            response.close()
            raise TransportError(f"more than {MAX_REDIRECTS} redirects, the last to {request.url}")
        if not stream:
            try:
                response.read()
            finally:
                response.close()
        return response

    def close(self) -> None:
        self._pool.close()

    def abort(self) -> None:
        """Break the exchanges in flight (from another thread): they fail at once with TransportError."""
        self._pool.abort()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the network

    def _exchange(self, request: Request) -> Response:
        route = self._route(request.url)
        headers = _merged(route.headers, request.headers)
        replayable = isinstance(request.body, bytes | None)
        body = request.body if replayable else _guarded(request.body)  # type: ignore[arg-type]
        while True:
            connection = self._pool.take(route.key)
            reused = connection is not None
            if connection is None:
                connection = self._connect(route)
                self._pool.lend(connection)
            try:
                connection.request(request.method, route.target, body=body, headers=headers)
                raw = connection.getresponse()
            except _SourceFailed as failed:  # the body's own iterator failed: not the network's doing
                self._pool.release(route.key, connection, keep=False)
                raise failed.error from None
            except (OSError, http.client.HTTPException) as exc:
                self._pool.release(route.key, connection, keep=False)
                if reused and replayable and isinstance(exc, CLOSED_BY_SERVER):
                    continue  # the server had closed the idle connection: once more on a new one
                raise _classified(exc, route) from None
            except BaseException:
                self._pool.release(route.key, connection, keep=False)
                raise
            return wrap_response(raw, connection, route, self._pool)

    def _route(self, url: str) -> Route:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise TransportError(f"unsupported URL {url!r}: only http:// and https:// are spoken")
        try:
            port = parts.port or _DEFAULT_PORTS[scheme]
        except ValueError:
            raise TransportError(f"invalid port in URL {url!r}") from None
        host = parts.hostname
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        proxy = None if self._unix_socket else self._proxies.for_target(scheme, host, port)
        if proxy is None:
            return Route((scheme, host, port, None), scheme, host, port, target, {}, None)
        proxy_headers = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else {}
        if scheme == "http":  # absolute-form request line to the proxy
            absolute = f"http://{parts.netloc.rpartition('@')[2]}{target}"
            return Route((scheme, host, port, proxy.url), "http", proxy.host, proxy.port, absolute,
                         proxy_headers, None)
        return Route((scheme, host, port, proxy.url), "https", proxy.host, proxy.port, target, {},
                     (host, port, proxy_headers))

    def _connect(self, route: Route) -> http.client.HTTPConnection:
        if route.scheme == "https":
            connection: http.client.HTTPConnection = TLSConnection(
                route.host, route.port, self._timeout, context=self._tls_context())
            if route.tunnel is not None:
                host, port, headers = route.tunnel
                connection.set_tunnel(host, port, headers=headers)
        else:
            connection = Connection(route.host, route.port, self._timeout, self._unix_socket)
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._tls is None:
                self._tls = tls_context(self._verify)
            return self._tls


def _classified(exc: OSError | http.client.HTTPException, route: Route) -> TransportError:
    """The TransportError for a failed exchange, typed where the kind of failure decides what to do next:
    a certificate, a name that does not resolve, a refused connection, a server that speaks plain HTTP."""
    text = describe(exc, route)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return CertificateError(text, wrong_name=exc.verify_code in _NAME_MISMATCH)
    if isinstance(exc, ssl.SSLError) and exc.reason in _NOT_TLS:
        return PlainHTTPError(text)
    if isinstance(exc, socket.gaierror):
        return UnknownHostError(text)
    if isinstance(exc, ConnectionRefusedError):
        return RefusedError(text)
    return TransportError(text)


def _merged(defaults: Mapping[str, str], headers: Mapping[str, str]) -> dict[str, str]:
    """`defaults` with `headers` over them, names compared without case (a header is sent once)."""
    given = {name.lower() for name in headers}
    return {**{name: value for name, value in defaults.items() if name.lower() not in given}, **headers}


class _SourceFailed(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _guarded(body: Iterable[bytes]) -> Iterator[bytes]:
    """`body`, with its own failures (a file that cannot be read, a size check) told apart from
    the socket's: both can be OSError."""
    try:
        yield from body
    except Exception as exc:
        raise _SourceFailed(exc) from exc


def _discard(response: Response) -> None:
    """Close a response nobody reads; a small body is read first so that its connection stays reusable."""
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) <= _DRAIN_LIMIT:
        with contextlib.suppress(TransportError):
            response.read()
    response.close()


def _redirected(request: Request, status: int, location: str) -> Request | None:
    """The request a redirect asks for; None when its body cannot be sent twice."""
    url = urljoin(request.url, location)
    method, body = request.method, request.body
    headers = dict(request.headers)
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, body = "GET", None
        for name in [name for name in headers if name.lower() in ("content-length", "content-type")]:
            del headers[name]
    elif not isinstance(body, bytes | None):
        return None
    if _origin(url) != _origin(request.url):
        for name in [name for name in headers if name.lower() == "authorization"]:
            del headers[name]
    return Request(method, url, headers, body)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port
