"""Which proxy, if any, a request goes through: HTTP_PROXY / HTTPS_PROXY / ALL_PROXY and NO_PROXY."""

from __future__ import annotations

import base64
import os
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

from dockwright.httpclient.messages import TransportError


class Proxy(NamedTuple):
    url: str
    host: str
    port: int
    authorization: str | None


class Proxies:
    """HTTP_PROXY / HTTPS_PROXY / ALL_PROXY and NO_PROXY, lower case first (as curl and Python do)."""

    def __init__(self, proxies: dict[str, str], no_proxy: list[str]) -> None:
        self._proxies = proxies
        self._no_proxy = no_proxy

    @classmethod
    def from_environment(cls) -> Proxies:
        def env(name: str) -> str:
            return (os.environ.get(name.lower()) or os.environ.get(name.upper()) or "").strip()

        proxies = {}
        for scheme in ("http", "https"):
            value = env(f"{scheme}_proxy") or env("all_proxy")
            if scheme == "http" and "REQUEST_METHOD" in os.environ and not os.environ.get("http_proxy"):
                value = env("all_proxy")  # under CGI, HTTP_PROXY may come from a request header (httpoxy)
            if value:
                proxies[scheme] = value
        no_proxy = [entry.strip().lower() for entry in env("no_proxy").split(",") if entry.strip()]
        return cls(proxies, no_proxy)

    def for_target(self, scheme: str, host: str, port: int) -> Proxy | None:
        value = self._proxies.get(scheme)
        if not value or bypassed(host.lower(), port, self._no_proxy):
            return None
        return parse_proxy(value)


def parse_proxy(value: str) -> Proxy:
    parts = urlsplit(value if "://" in value else f"http://{value}")
    if parts.scheme.lower() != "http" or not parts.hostname:
        raise TransportError(f"unsupported proxy {_without_userinfo(value)!r}: only http:// proxies are spoken "
                             "(check HTTP_PROXY / HTTPS_PROXY / ALL_PROXY)")
    try:
        port = parts.port or 80
    except ValueError:
        raise TransportError(f"invalid port in the proxy {_without_userinfo(value)!r}") from None
    authorization = None
    if parts.username is not None:
        raw = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(raw).decode("ascii")
    return Proxy(f"http://{parts.hostname}:{port}", parts.hostname, port, authorization)


def _without_userinfo(value: str) -> str:
    scheme, sep, rest = value.rpartition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"


def bypassed(host: str, port: int, no_proxy: list[str]) -> bool:
    """NO_PROXY: `*`, host names (a name matches its subdomains too, `.name` only them and the name),
    IP addresses and CIDR ranges, each optionally with `:port`."""
    for entry in no_proxy:
        if entry == "*":
            return True
        name, entry_port = entry, None
        if entry.startswith("["):  # [v6]:port
            name, _, rest = entry[1:].partition("]")
            entry_port = rest[1:] or None
        elif entry.count(":") == 1:
            name, entry_port = entry.split(":")
        if entry_port is not None and entry_port != str(port):
            continue
        if "/" in name:
            if in_network(host, name):
                return True
            continue
        name = name.removeprefix("*").removeprefix(".")
        if host == name or host.endswith(f".{name}"):
            return True
    return False


def in_network(host: str, network: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False
