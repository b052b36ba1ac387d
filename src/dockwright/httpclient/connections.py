"""Connections to one route (a host, or a proxy in front of it), kept alive in a pool between exchanges."""

from __future__ import annotations

import contextlib
import http.client
import re
import select
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

from dockwright.httpclient.messages import Response, Timeout, TransportError

if TYPE_CHECKING:
    import ssl

CHUNK_SIZE = 1 << 20
# how a keep-alive connection that the server has closed fails the next request (never a timeout)
CLOSED_BY_SERVER = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class Route(NamedTuple):
    key: tuple[str, str, int, str | None]  # target scheme, host, port, proxy: connections are reused per key
    scheme: str  # of the connection (a tunnel through a proxy is https to the target)
    host: str  # where the connection goes: the target, or the proxy
    port: int
    target: str  # the request line's target: origin-form, or absolute-form for a plain-HTTP proxy
    headers: dict[str, str]  # sent with every request on this route (Proxy-Authorization)
    tunnel: tuple[str, int, dict[str, str]] | None  # CONNECT through a proxy: target host, port, headers


class Connection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, timeout: Timeout, unix_socket: str | None = None) -> None:
        super().__init__(host, port, timeout=timeout.connect, blocksize=CHUNK_SIZE)
        self._read_timeout = timeout.read
        self._unix_socket = unix_socket

    def connect(self) -> None:
        if self._unix_socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self._unix_socket)
            except BaseException:
                sock.close()
                raise
            self.sock = sock
        else:
            super().connect()
        self.sock.settimeout(self._read_timeout)


class TLSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, timeout: Timeout, *, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout.connect, context=context, blocksize=CHUNK_SIZE)
        self._read_timeout = timeout.read

    def connect(self) -> None:
        super().connect()  # TCP, the proxy's CONNECT when tunnelling, and the TLS handshake
        self.sock.settimeout(self._read_timeout)


class Pool:
    """Idle keep-alive connections per route; a connection is used by one exchange at a time. The pool also
    knows the connections on loan to an exchange, so that `abort` can break them (a cancelled transfer)."""

    def __init__(self, size: int) -> None:
        self._size = max(1, size)
        self._idle: dict[tuple[str, str, int, str | None], list[http.client.HTTPConnection]] = {}
        self._busy: set[http.client.HTTPConnection] = set()
        self._aborted = False
        self._lock = threading.Lock()

    def take(self, key: tuple[str, str, int, str | None]) -> http.client.HTTPConnection | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                connection = idle.pop()
            if _still_open(connection):
                self.lend(connection)
                return connection
            connection.close()

    def lend(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._aborted:
                self._busy.add(connection)
                return
        connection.close()
        raise TransportError("the exchange was aborted")

    def release(self, key: tuple[str, str, int, str | None], connection: http.client.HTTPConnection, *,
                keep: bool) -> None:
        """An exchange is done with `connection`: kept for the next one when `keep`, else closed."""
        with self._lock:
            self._busy.discard(connection)
            idle = self._idle.setdefault(key, [])
            if keep and len(idle) < self._size:
                idle.append(connection)
                return
        connection.close()

    def abort(self) -> None:
        """Break the connections in use, and refuse new exchanges: a read or write blocked on one fails at once."""
        with self._lock:
            self._aborted = True
            busy = list(self._busy)
        for connection in busy:
            if connection.sock is not None:
                with contextlib.suppress(OSError):
                    connection.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()


def _still_open(connection: http.client.HTTPConnection) -> bool:
    """An idle connection is usable while the server has sent nothing on it (not even its close)."""
    sock = connection.sock
    if sock is None:
        return False
    try:
        if hasattr(select, "poll"):  # select() cannot take a descriptor past 1023
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return not poller.poll(0)
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def wrap_response(raw: http.client.HTTPResponse, connection: http.client.HTTPConnection, route: Route,
                  pool: Pool) -> Response:
    def end(complete: bool) -> None:
        raw.close()  # its end of the socket only: the connection holds the socket
        pool.release(route.key, connection, keep=complete and not raw.will_close)

    return Response(raw.status, raw.getheaders(), reason=raw.reason, stream=_body(raw, route), on_end=end)


def _body(raw: http.client.HTTPResponse, route: Route) -> Iterator[bytes]:
    """The body as it arrives (one socket read per piece): a connection that breaks loses nothing
    that was already received, so a download can resume where it stopped."""
    try:
        while chunk := raw.read1(CHUNK_SIZE):
            yield chunk
        missing = raw.length  # what Content-Length promised and did not come: read1 takes EOF for the end
    except (OSError, http.client.HTTPException) as exc:
        raise TransportError(f"the connection broke while reading the response: {describe(exc, route)}") from None
    if missing:
        raise TransportError(f"the connection closed {missing} bytes before the end of the response")


def describe(exc: BaseException, route: Route) -> str:
    text = str(exc) or ("timed out" if isinstance(exc, TimeoutError) else type(exc).__name__)
    text = re.sub(r" \(_ssl\.c:\d+\)", "", text)  # where in CPython's ssl module: noise to a user
    via = f" (through the proxy {route.host}:{route.port})" if route.key[3] else ""
    return f"{text}{via}"


def tls_context(verify: bool) -> ssl.SSLContext:
    """Certificates are checked against the system's trust store (SSL_CERT_FILE / SSL_CERT_DIR change
    it, as for OpenSSL); certifi's bundle stands in only where the system has none (e.g. macOS)."""
    import ssl

    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    paths = ssl.get_default_verify_paths()
    if paths.cafile or paths.capath:
        return ssl.create_default_context()
    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())
