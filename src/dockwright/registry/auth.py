"""Registry authentication: WWW-Authenticate challenges, Basic auth, and the Bearer token flow
(anonymous, basic credentials, or an OAuth2 refresh token), with tokens cached per host and scope set."""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from dockwright.model.errors import AuthError
from dockwright.model.reference import is_loopback
from dockwright.registry.credentials import Credential, CredentialStore
from dockwright.registry.transport import Op, Sleep, login_name, send_with_retries

if TYPE_CHECKING:
    from dockwright.httpclient import Client, Request, Response

log = logging.getLogger("dockwright")
DEFAULT_TOKEN_TTL = 60.0
_WARNED: set[str] = set()  # hosts warned about credentials over plain HTTP in this process
_WARNED_LOCK = threading.Lock()
_CLIENT_ID = "dockwright"

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SEPARATORS = re.compile(r"[\s,]*")
_SCHEME = re.compile(_TOKEN)
# Unquoted values are read leniently (up to a comma or space): some registries send realm=https://...
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))')
_TOKEN68 = re.compile(r"\s+([A-Za-z0-9._~+/-]+=*)\s*(?=,|$)")
_ESCAPE = re.compile(r"\\(.)")


@dataclass
class Challenge:
    scheme: str  # lower case: "bearer", "basic"
    params: dict[str, str] = field(default_factory=dict)  # lower-case names; token68 under ""


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate value (RFC 7235): several challenges, quoted values with commas/escapes."""
    challenges: list[Challenge] = []
    pos = 0
    while True:
        pos = _SEPARATORS.match(header, pos).end()  # type: ignore[union-attr]
        if pos >= len(header):
            return challenges
        param = _PARAM.match(header, pos) if challenges else None
        if param:
            quoted, plain = param.group(2), param.group(3)
            value = _ESCAPE.sub(r"\1", quoted) if quoted is not None else plain
            challenges[-1].params.setdefault(param.group(1).lower(), value)
            pos = param.end()
            continue
        scheme = _SCHEME.match(header, pos)
        if not scheme:
            return challenges  # not a challenge: ignore the rest rather than guess
        challenges.append(Challenge(scheme.group(0).lower()))
        pos = scheme.end()
        token68 = _TOKEN68.match(header, pos)
        if token68:
            challenges[-1].params[""] = token68.group(1)
            pos = token68.end()


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _atoms(scopes: Iterable[str]) -> frozenset[str]:
    """Scopes as single actions ("repository:a:pull,push" -> two atoms), to compare scope sets."""
    atoms = set()
    for scope in scopes:
        resource, _, actions = scope.rpartition(":")
        atoms.update(f"{resource}:{action}" for action in actions.split(",") if action)
    return frozenset(atoms)


class TokenCache:
    """Bearer tokens per (host, scope set) until they expire; a token for more scopes serves fewer."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[tuple[str, frozenset[str]], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, host: str, scopes: Iterable[str]) -> str | None:
        wanted, now = _atoms(scopes), self._clock()
        with self._lock:
            for (token_host, atoms), (token, expires) in list(self._tokens.items()):
                if expires <= now:
                    del self._tokens[token_host, atoms]
                elif token_host == host and wanted <= atoms:
                    return token
        return None

    def put(self, host: str, scopes: Iterable[str], token: str, ttl: float) -> None:
        margin = min(10.0, ttl / 5)
        with self._lock:
            self._tokens[host, _atoms(scopes)] = (token, self._clock() + ttl - margin)

    def discard(self, host: str, token: str) -> None:
        with self._lock:
            for key in [key for key, (value, _) in self._tokens.items() if key[0] == host and value == token]:
                del self._tokens[key]


class HostAuth:
    """The Authorization header for requests to one registry host, from its challenge and credentials.

    `plain_http` is set when the registry is spoken to over http: credentials (basic or bearer) then go
    only to a loopback host, or to one the user named with --insecure-registry (`insecure`), as Docker
    does for its insecure registries, with a warning.
    """

    def __init__(self, host: str, credentials: CredentialStore, tokens: TokenCache,
                 http_for: Callable[[str], Client], sleep: Sleep, *, insecure: bool = False) -> None:
        self.host = host
        self.plain_http = False
        self._insecure = insecure
        self._credentials = credentials
        self._tokens = tokens
        self._http_for = http_for
        self._sleep = sleep
        self._challenge: Challenge | None = None
        self._lock = threading.Lock()

    @property
    def may_send_credentials(self) -> bool:
        return not self.plain_http or is_loopback(self.host) or self._insecure

    def _warn_plain_http(self) -> None:
        """Once per host and process (a CLI build): credentials are about to cross the network unencrypted."""
        if not self.plain_http or is_loopback(self.host):
            return
        with _WARNED_LOCK:
            if self.host in _WARNED:
                return
            _WARNED.add(self.host)
        log.warning("warning: sending credentials for %s over plain HTTP (--insecure-registry %s)",
                    login_name(self.host), login_name(self.host))

    @property
    def scheme(self) -> str | None:
        return self._challenge.scheme if self._challenge else None

    def set_challenge(self, response: Response) -> None:
        """Remember the challenge of a 401 (Bearer preferred over Basic)."""
        challenges = [c for value in response.headers.get_list("www-authenticate") for c in parse_challenges(value)]
        chosen = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None
        )
        if chosen is None:
            raise AuthError(
                f"{self.host} asks for authentication with an unsupported scheme "
                f"({', '.join(c.scheme for c in challenges) or 'no WWW-Authenticate header'})",
                registry=self.host, status=response.status_code,
            )
        with self._lock:
            self._challenge = chosen

    def header(self, scopes: Iterable[str]) -> str | None:
        """The Authorization value for a request needing `scopes`, or None to go anonymous."""
        challenge = self._challenge
        if challenge is None or not self.may_send_credentials:
            return None
        if challenge.scheme == "basic":
            credential = self._credentials.get(self.host)
            if credential is None or credential.identity_token:
                return None
            self._warn_plain_http()
            return basic_header(credential)
        scopes = sorted(set(scopes))
        token = self._tokens.get(self.host, scopes)
        if token is None:
            with self._lock:  # one token request per host at a time; another thread may have fetched it
                token = self._tokens.get(self.host, scopes)
                if token is None:
                    token, ttl = self._fetch_token(challenge, scopes)
                    self._tokens.put(self.host, scopes, token, ttl)
        if self._credentials.get(self.host) is not None:
            self._warn_plain_http()
        return f"Bearer {token}"

    def forget(self, authorization: str | None) -> None:
        """Drop a token the registry refused, so that the next header() fetches a fresh one."""
        if authorization and authorization.startswith("Bearer "):
            self._tokens.discard(self.host, authorization[len("Bearer ") :])

    def _fetch_token(self, challenge: Challenge, scopes: list[str]) -> tuple[str, float]:
        realm = challenge.params.get("realm", "")
        parts = urlsplit(realm)
        op = Op(f"authenticating to {self.host}", self.host)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise op.error(f"invalid token realm {realm!r} in the registry's challenge", cls=AuthError)
        same_host = self._insecure and parts.hostname == urlsplit(f"//{self.host}").hostname
        if parts.scheme == "http" and not (is_loopback(parts.netloc) or same_host):
            raise op.error(f"refusing to request a token over plain HTTP from {realm}", cls=AuthError,
                           hint="the registry's token service must use HTTPS")
        credential = self._credentials.get(self.host)
        service = challenge.params.get("service")
        client = self._http_for(parts.netloc)

        def build() -> Request:
            if credential is not None and credential.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": credential.secret,
                        "client_id": _CLIENT_ID, "scope": " ".join(scopes)}
                if service:
                    form["service"] = service
                return client.build_request("POST", realm, form=form)
            params: list[tuple[str, str]] = [("service", service)] if service else []
            params += [("scope", scope) for scope in scopes]
            headers = {}
            if credential is not None:
                params.append(("account", credential.username))
                headers["Authorization"] = basic_header(credential)
            return client.build_request("GET", realm, params=params, headers=headers)

        response = send_with_retries(client, build, op, sleep=self._sleep)
        if response.status_code in (401, 403):
            name = login_name(self.host)
            if credential is None:
                raise op.error(f"the token service {parts.netloc} refused to authenticate anonymously",
                               status=response.status_code, cls=AuthError, hint=f"run `dockwright login {name}`")
            raise op.error(f"wrong username or password for {name}: the token service {parts.netloc} refused "
                           f"to authenticate as {credential.username!r}", status=response.status_code, cls=AuthError,
                           hint=f"`dockwright login {name}` replaces the stored credentials")
        if response.status_code != 200:
            raise op.failed(response)
        return _parse_token(response, op)


def _parse_token(response: Response, op: Op) -> tuple[str, float]:
    try:
        body = json.loads(response.read())
        token = body.get("token") or body.get("access_token")
        ttl = body.get("expires_in")
    except (ValueError, AttributeError):
        token, ttl = None, None
    if not isinstance(token, str) or not token:
        raise op.error("the token service answered without a token", status=response.status_code, cls=AuthError)
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl <= 0:
        ttl = DEFAULT_TOKEN_TTL
    return token, float(ttl)


def basic_header(credential: Credential) -> str:
    raw = f"{credential.username}:{credential.secret}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")
