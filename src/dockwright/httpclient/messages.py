"""Requests and responses as the client hands them over: plain data, and a body read once."""

from __future__ import annotations

import http.client
import json as jsonlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import urlencode

Body = bytes | Iterable[bytes] | None


Headers_ = Mapping[str, str] | Iterable[tuple[str, str]] | None


class TransportError(Exception):
    """The exchange failed below HTTP: no connection, TLS, a timeout, or a connection that broke."""


class CertificateError(TransportError):
    """The server's TLS certificate failed verification: trying again will not help. `wrong_name`: the
    certificate is valid but made out to another host name or address."""

    def __init__(self, message: str, *, wrong_name: bool = False) -> None:
        super().__init__(message)
        self.wrong_name = wrong_name


class UnknownHostError(TransportError):
    """The host name does not resolve: trying again at once will not help."""


class RefusedError(TransportError):
    """Nothing listens at the address (the host said so at once)."""


class PlainHTTPError(TransportError):
    """The server answered the TLS handshake in plain HTTP: it does not speak HTTPS on that port."""


class Timeout(NamedTuple):
    connect: float
    read: float


@dataclass


class Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: Body = None


class Headers:
    """Header fields, case-insensitive and repeatable, in the order received."""

    def __init__(self, fields: Headers_ = None) -> None:
        pairs = fields.items() if isinstance(fields, Mapping) else (fields or ())
        self._fields = [(name, value) for name, value in pairs]

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        return next((value for key, value in self._fields if key.lower() == name), default)

    def get_list(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self._fields if key.lower() == name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)


class Response:
    """A status, headers and a body that is read once: whole (`read`) or in pieces (`iter_bytes`).

    Tests build one directly, as a transport's answer: `Response(404, json={...})`,
    `Response(200, headers={...}, stream=generator)`."""

    def __init__(self, status_code: int, headers: Headers_ = None, content: bytes = b"", *,
                 json: object = None, stream: Iterable[bytes] | None = None, reason: str = "",
                 on_end: Callable[[bool], None] | None = None) -> None:
        fields = Headers(headers).items()
        if json is not None:
            content = jsonlib.dumps(json).encode()
            fields.append(("Content-Type", "application/json"))
        self.status_code = status_code
        self.reason_phrase = reason or _phrase(status_code)
        self.headers = Headers(fields)
        self.url = ""
        self.request: Request | None = None
        self._chunks: Iterator[bytes] = iter(stream) if stream is not None else iter((content,))
        self._content: bytes | None = None
        self._on_end = on_end  # told, once, whether the body was read to its end (its connection's fate)
        self._finished = False

    @property
    def text(self) -> str:
        return self.read().decode("utf-8", "replace")

    def read(self) -> bytes:
        if self._content is None:
            self._content = b"".join(self.iter_bytes())
        return self._content

    def iter_bytes(self) -> Iterator[bytes]:
        if self._content is not None:
            if self._content:
                yield self._content
            return
        try:
            for chunk in self._chunks:
                if chunk:
                    yield chunk
        except BaseException:
            self._finish(complete=False)
            raise
        self._finish(complete=True)

    def close(self) -> None:
        self._finish(complete=False)

    def _finish(self, complete: bool) -> None:
        if not self._finished:
            self._finished = True
            if self._on_end is not None:
                self._on_end(complete)

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def add_query(url: str, params: Iterable[tuple[str, str]] | Mapping[str, str]) -> str:
    """`url` with `params` appended to its query."""
    query = urlencode(list(params.items()) if isinstance(params, Mapping) else list(params))
    base, _, fragment = url.partition("#")
    joined = f"{base}{'&' if '?' in base else '?'}{query}"
    return f"{joined}#{fragment}" if fragment else joined


def _phrase(status: int) -> str:
    try:
        return http.client.responses[status]
    except KeyError:
        return ""
