"""HTTP/1.1 for the registry client, the engine loader and `ADD <url>`: the standard library's
http.client plus what it lacks for that job: a keep-alive pool shared by threads, separate connect
and read timeouts, HTTP(S)_PROXY / NO_PROXY from the environment, and redirects that drop the
Authorization header when they leave the origin.

Why not httpx or urllib3: importing httpx costs ~70 ms here and urllib3 ~40 ms, against ~16 ms for
http.client, in a warm rebuild that takes ~350 ms in all. The distribution API needs nothing they add
on top (no HTTP/2, cookies, content decoding or async); the protocol itself is http.client's.
"""

from dockwright.httpclient.client import Client, Transport
from dockwright.httpclient.messages import (
    CertificateError,
    Headers,
    PlainHTTPError,
    RefusedError,
    Request,
    Response,
    Timeout,
    TransportError,
    UnknownHostError,
    add_query,
)

__all__ = [
    "CertificateError", "Client", "Headers", "PlainHTTPError", "RefusedError", "Request", "Response", "Timeout",
    "Transport", "TransportError", "UnknownHostError", "add_query",
]
