"""Retry-After parsing, backoff, retries, registry error messages and redaction."""

from __future__ import annotations

import email.utils

import pytest

from dockwright.httpclient import Client, Request, Response, Timeout, TransportError
from dockwright.model.errors import AuthError, NotFoundError, RegistryError
from dockwright.registry.transport import (
    MAX_ATTEMPTS,
    ConnectionFailed,
    Op,
    backoff_delay,
    parse_retry_after,
    redact,
    redact_url,
    send_with_retries,
)

OP = Op("pushing blob", "localhost:5000", "app", "sha256:" + "ab" * 32)


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("17") == 17.0
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5e3"])
def test_unusable_retry_after_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value) is None


def test_backoff_grows_and_is_capped() -> None:
    assert 0.25 <= backoff_delay(1) <= 0.5
    assert 1.0 <= backoff_delay(3) <= 2.0
    assert backoff_delay(50) <= 8.0


def sender(*responses: Response | Exception) -> tuple[Client, list[Request]]:
    seen: list[Request] = []
    queue = list(responses)

    def handler(request: Request) -> Response:
        seen.append(request)
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return Client(timeout=Timeout(5, 5), transport=handler), seen


def send(client: Client, sleeps: list[float]) -> Response:
    return send_with_retries(client, lambda: client.build_request("GET", "https://r.example/v2/"), OP,
                             sleep=sleeps.append)


def test_transient_failures_are_retried_with_retry_after_honoured() -> None:
    client, seen = sender(TransportError("refused"), Response(503, headers={"Retry-After": "3"}),
                          Response(429, headers={"Retry-After": "0"}), Response(200))
    sleeps: list[float] = []
    assert send(client, sleeps).status_code == 200
    assert len(seen) == 4
    assert sleeps[1:] == [3.0, 0.0]


def test_retries_are_bounded() -> None:
    client, seen = sender(*[Response(502)] * 10)
    assert send(client, []).status_code == 502
    assert len(seen) == MAX_ATTEMPTS


def test_connection_failures_end_in_a_registry_error() -> None:
    client, seen = sender(*[TransportError("connection refused")] * 10)
    with pytest.raises(ConnectionFailed, match=r"pushing blob: cannot talk to localhost:5000: connection refused"):
        send(client, [])
    assert len(seen) == MAX_ATTEMPTS


def test_retry_after_beyond_the_cap_fails_with_a_hint() -> None:
    client, seen = sender(Response(429, headers={"Retry-After": "3600"}))
    with pytest.raises(RegistryError, match=r"retry after 3600 s") as info:
        send(client, [])
    assert "mirror" in str(info.value) and len(seen) == 1


def test_client_errors_are_not_retried() -> None:
    client, seen = sender(Response(403), Response(200))
    assert send(client, []).status_code == 403
    assert len(seen) == 1


def test_error_message_carries_the_registry_error_code_and_a_login_hint() -> None:
    body = {"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]}
    error = OP.failed(Response(403, json=body))
    assert isinstance(error, AuthError)
    assert str(error).splitlines() == [
        f"pushing blob: DENIED: requested access to the resource is denied (localhost:5000/app HTTP 403 {OP.digest})",
        "  hint: check that your account may access this repository (run `dockwright login localhost:5000`)",
    ]
    assert error.status == 403 and error.registry == "localhost:5000" and error.repository == "app"


def test_not_found_and_docker_hub_login_name() -> None:
    op = Op("fetching manifest", "registry-1.docker.io", "library/nope")
    assert isinstance(op.failed(Response(404, content=b"not json")), NotFoundError)
    assert "dockwright login docker.io" in str(op.failed(Response(401)))


def test_redaction_of_headers_bodies_and_urls() -> None:
    text = redact('Authorization: Bearer eyJhbGciOi.x.y; {"token": "abc", "access_token":"def"} Basic dXNlcjpwdw==')
    assert "eyJ" not in text and "abc" not in text and "def" not in text and "dXNlcjpwdw" not in text
    url = redact_url("https://u:pw@s3.example/blob?X-Amz-Signature=deadbeef&X-Amz-Expires=300&digest=sha256:1")
    assert url == "https://<redacted>@s3.example/blob?X-Amz-Signature=<redacted>&X-Amz-Expires=300&digest=sha256:1"
