"""HTTP plumbing shared by the registry client and the token flow: bounded retries with backoff and
Retry-After, registry error decoding, and redaction of secrets in anything we log or print."""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dockwright.httpclient import CertificateError, PlainHTTPError, RefusedError, TransportError, UnknownHostError
from dockwright.model.errors import AuthError, NotFoundError, RegistryError, UsageError
from dockwright.model.reference import DOCKER_HUB, is_docker_hub

if TYPE_CHECKING:
    from dockwright.httpclient import Client, Request, Response

log = logging.getLogger("dockwright.registry")

MAX_ATTEMPTS = 4
REFUSED_ATTEMPTS = 2  # a refused connection is tried once more (a registry restarting), then it is down
_FINAL = (CertificateError, UnknownHostError, PlainHTTPError)  # trying again cannot help
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
RETRY_AFTER_CAP = 60.0
_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 8.0
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 60.0
# Environment knobs: the first backoff step, and how long one read may stall before it is retried
RETRY_BASE_DELAY_ENV = "DOCKWRIGHT_RETRY_BASE_DELAY"
HTTP_TIMEOUT_ENV = "DOCKWRIGHT_HTTP_TIMEOUT"

Sleep = Callable[[float], None]


def login_name(host: str) -> str:
    """The name a user passes to `dockwright login` for `host` (docker.io for Docker Hub's API host)."""
    return DOCKER_HUB if is_docker_hub(host) else host


@dataclass(frozen=True)
class Op:
    """What an HTTP exchange is for, so that every error names the action, registry, repository, digest."""

    action: str
    registry: str
    repository: str | None = None
    digest: str | None = None

    def error(self, detail: str, *, status: int | None = None, hint: str | None = None,
              cls: type[RegistryError] = RegistryError) -> RegistryError:
        return cls(f"{self.action}: {detail}", registry=self.registry, repository=self.repository,
                   status=status, digest=self.digest, hint=hint)

    def failed(self, response: Response) -> RegistryError:
        """The error for an unexpected response, with the registry's own `errors[0]` code and message."""
        status = response.status_code
        detail = registry_message(response) or response.reason_phrase or "unexpected response"
        login = f"run `dockwright login {login_name(self.registry)}`"
        if status == 401:
            return self.error(detail, status=status, cls=AuthError,
                              hint=f"{login}, or check the credentials in your Docker config")
        if status == 403:
            return self.error(detail, status=status, cls=AuthError,
                              hint=f"check that your account may access this repository ({login})")
        if status == 404:
            return self.error(detail, status=status, cls=NotFoundError,
                              hint="check the registry, repository and tag or digest")
        if status == 429:
            return self.error(detail, status=status,
                              hint=f"too many requests: {login} for a higher limit, or use a mirror")
        if status >= 500:
            return self.error(detail, status=status, hint="the registry is failing; try again later")
        return self.error(detail, status=status)

    def failed_with_hint(self, response: Response) -> RegistryError:
        """failed(), carrying the registry's Retry-After hint for callers that retry on their own."""
        error = self.failed(response)
        error.retry_after = _asked_wait(response)
        return error


def registry_message(response: Response) -> str:
    """`CODE: message` from a distribution error body, or '' when the body has none."""
    try:
        body = response.read()[:65536]
        errors = json.loads(body).get("errors")
        first = errors[0]
        text = ": ".join(str(part) for part in (first.get("code"), first.get("message")) if part)
    except Exception:  # any body that is not the distribution error JSON
        return ""
    return redact(text)[:500]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def seconds_from_env(name: str, default: float) -> float:
    """A duration in seconds from the environment variable `name` (unset or empty: `default`)."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or seconds < 0:
        raise UsageError(f"{name}={value!r} is not a number of seconds")
    return seconds


def read_timeout() -> float:
    """Seconds a connection may stay silent before the exchange is retried ($DOCKWRIGHT_HTTP_TIMEOUT)."""
    return seconds_from_env(HTTP_TIMEOUT_ENV, READ_TIMEOUT) or READ_TIMEOUT


def backoff_delay(attempt: int) -> float:
    """Exponential backoff for retry number `attempt` (1-based), capped, jittered to 50-100 % of the step.
    The first step is $DOCKWRIGHT_RETRY_BASE_DELAY seconds (default 0.5)."""
    base = seconds_from_env(RETRY_BASE_DELAY_ENV, _BACKOFF_BASE)
    return random.uniform(0.5, 1.0) * min(_BACKOFF_CAP, base * 2 ** (attempt - 1))


def retry_delay(response: Response, attempt: int, op: Op) -> float:
    """How long to wait before retrying `response`; raises when the registry asks for too long a wait."""
    return wait_before_retry(response.status_code, _asked_wait(response), attempt, op)


def _asked_wait(response: Response) -> float | None:
    """The Retry-After hint of a 429 or 503, in seconds."""
    if response.status_code in (429, 503):
        return parse_retry_after(response.headers.get("retry-after"))
    return None


def wait_before_retry(status: int | None, asked: float | None, attempt: int, op: Op) -> float:
    """The registry's Retry-After hint when it gave one (failing when it is beyond the cap), else backoff."""
    if asked is None:
        return backoff_delay(attempt)
    if asked > RETRY_AFTER_CAP:
        raise op.error(
            f"registry asks to retry after {asked:.0f} s",
            status=status,
            hint=f"rate limited: run `dockwright login {login_name(op.registry)}` for a higher limit, "
            "or use a mirror",
        )
    return asked


def send_with_retries(
    client: Client,
    build: Callable[[], Request],
    op: Op,
    *,
    sleep: Sleep,
    stream: bool = False,
    follow_redirects: bool = False,
    attempts: int = MAX_ATTEMPTS,
) -> Response:
    """Send the request `build()` makes, retrying connection errors, timeouts and RETRY_STATUSES.

    `build` is called for each attempt so that bodies and auth headers are fresh. The last response is
    returned whatever its status; on repeated connection failures, RegistryError is raised.
    """
    attempt = 0
    while True:
        attempt += 1
        request = build()
        try:
            response = client.send(request, stream=stream, follow_redirects=follow_redirects)
        except TransportError as exc:
            log.debug("%s %s: %s (attempt %d)", request.method, redact_url(request.url), exc, attempt)
            if give_up(exc, attempt, attempts):
                raise ConnectionFailed(op, exc) from None
            sleep(backoff_delay(attempt))
            continue
        log.debug("%s %s -> %d", request.method, redact_url(request.url), response.status_code)
        if response.status_code not in RETRY_STATUSES or attempt >= attempts:
            return response
        try:
            delay = retry_delay(response, attempt, op)
        finally:
            response.close()
        sleep(delay)


def give_up(exc: TransportError, attempt: int, attempts: int) -> bool:
    """Whether a request that failed below HTTP on its `attempt`-th try should not be tried again."""
    limit = min(attempts, REFUSED_ATTEMPTS) if isinstance(exc, RefusedError) else attempts
    return attempt >= limit or isinstance(exc, _FINAL)


class ConnectionFailed(RegistryError):
    """The registry could not be reached, or the connection broke, after all retries."""

    def __init__(self, op: Op, exc: TransportError) -> None:
        self.transport_error = exc
        name = login_name(op.registry)
        if isinstance(exc, PlainHTTPError):  # one line: the user's next step is in it
            super().__init__(f"{name} speaks plain HTTP; if you trust this network, pass --insecure-registry {name}")
            self.registry, self.repository, self.digest = op.registry, op.repository, op.digest
            return
        if isinstance(exc, UnknownHostError):
            hint = f"check the registry name {name!r}, your DNS, and HTTPS_PROXY/NO_PROXY"
        elif isinstance(exc, RefusedError):
            hint = "nothing accepts connections there: check the registry's address and port, and that it runs"
        elif isinstance(exc, CertificateError) and exc.wrong_name:
            hint = (f"{op.registry}'s certificate is made out to another name: use the name it was issued for, "
                    f"or pass --insecure-registry {op.registry} (no certificate check)")
        elif isinstance(exc, CertificateError):
            hint = (f"{op.registry}'s certificate is not trusted here: add its CA to the system's trust store or "
                    f"to SSL_CERT_FILE, or pass --insecure-registry {op.registry} (no certificate check)")
        else:
            hint = "check the registry address, your network and HTTPS_PROXY/NO_PROXY"
        super().__init__(
            f"{op.action}: cannot talk to {op.registry}: {redact(str(exc)) or type(exc).__name__}",
            registry=op.registry,
            repository=op.repository,
            digest=op.digest,
            hint=hint,
        )


_SECRET_PATTERNS = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 <redacted>"),
    (re.compile(r'(?i)("(?:token|access_token|refresh_token|identitytoken|password|secret|auth)"\s*:\s*)"[^"]*"'),
     r'\1"<redacted>"'),
    (re.compile(r"(?i)(\b(?:token|access_token|refresh_token|password|secret)=)[^&\s]+"), r"\1<redacted>"),
    (re.compile(r"(://)[^/@\s:]+:[^/@\s]+@"), r"\1<redacted>@"),
)
_SECRET_PARAM = re.compile(r"(?i)(sig|signature|token|credential|secret|password|key)")


def redact(text: str) -> str:
    """`text` with bearer/basic credentials, token fields and URL userinfo masked."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_url(url: str) -> str:
    """`url` with userinfo and secret-looking query parameters (presigned signatures, tokens) masked."""
    base, sep, query = url.partition("?")
    base = redact(base)
    if not sep:
        return base
    params = []
    for part in query.split("&"):
        name, eq, _value = part.partition("=")
        params.append(f"{name}=<redacted>" if eq and _SECRET_PARAM.search(name) else part)
    return f"{base}?{'&'.join(params)}"
