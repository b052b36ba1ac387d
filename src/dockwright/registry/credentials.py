"""Registry credentials as Docker keeps them: config.json `auths`, `credsStore` and `credHelpers`.

Lookup follows the Docker CLI: a `credHelpers` entry for the host wins, then `credsStore`, then the
`auths` entry in the file. Docker Hub's credentials live under "https://index.docker.io/v1/" whatever
name the user typed (docker.io, index.docker.io, registry-1.docker.io).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockwright.model.errors import AuthError
from dockwright.model.reference import is_docker_hub

log = logging.getLogger("dockwright.registry")

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HELPER_TIMEOUT = 60.0
_IDENTITY_TOKEN_USER = "<token>"  # what helpers return as Username when Secret is an identity token


@dataclass(frozen=True)
class Credential:
    """A username with a password, or (identity_token=True) an OAuth2 refresh token."""

    username: str
    secret: str = field(repr=False)
    identity_token: bool = False


def config_dir(docker_config: Path | None = None) -> Path:
    """The directory holding config.json: explicit, else $DOCKER_CONFIG, else ~/.docker."""
    if docker_config is not None:
        return docker_config
    env = os.environ.get("DOCKER_CONFIG")
    return Path(env) if env else Path.home() / ".docker"


def hostname_of(key: str) -> str:
    """The host[:port] part of a config key or registry name ("https://host/v1/" -> "host")."""
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    return key.split("/", 1)[0]


def config_key(registry: str) -> str:
    """The key Docker stores `registry`'s credentials under."""
    host = hostname_of(registry)
    return DOCKER_HUB_KEY if is_docker_hub(host) else host


def same_registry(key: str, registry: str) -> bool:
    """True when config key `key` names `registry` (any key form; Docker Hub's aliases are one)."""
    a, b = hostname_of(key), hostname_of(registry)
    return a == b or (is_docker_hub(a) and is_docker_hub(b))


def read_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise AuthError(
            f"cannot read Docker config {path}: {exc}", hint="fix or remove the file"
        ) from None
    if not isinstance(data, dict):
        raise AuthError(f"cannot read Docker config {path}: not a JSON object", hint="fix or remove the file")
    return data


def helper_name(config: dict[str, Any], registry: str) -> str | None:
    """The credential helper for `registry` (credHelpers entry, else credsStore), if any."""
    helpers = config.get("credHelpers")
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if isinstance(name, str) and name and same_registry(key, registry):
                return name
    store = config.get("credsStore")
    return store if isinstance(store, str) and store else None


def _auth_entry(config: dict[str, Any], registry: str) -> dict[str, Any] | None:
    """The `auths` entry for `registry`, matching any key form (host, https://host, https://host/v1/)."""
    auths = config.get("auths")
    if not isinstance(auths, dict):
        return None
    exact = auths.get(config_key(registry))
    if isinstance(exact, dict):
        return exact
    for key, entry in auths.items():
        if isinstance(entry, dict) and same_registry(key, registry):
            return entry
    return None


def _credential_from_entry(entry: dict[str, Any], where: str) -> Credential | None:
    username, password = str(entry.get("username") or ""), str(entry.get("password") or "")
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError(
                f"invalid base64 'auth' value for {where}", hint="run `dockwright login` again"
            ) from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise AuthError(f"'auth' value for {where} is not user:password", hint="run `dockwright login` again")
    if entry.get("identitytoken"):
        return Credential(username, str(entry["identitytoken"]), identity_token=True)
    return Credential(username, password) if username and password else None


def run_helper(name: str, action: str, payload: str) -> str | None:
    """Run `docker-credential-NAME ACTION` with `payload` on stdin. None when it has no credentials."""
    program = f"docker-credential-{name}"
    path = shutil.which(program)
    if path is None:
        raise FileNotFoundError(program)
    try:
        done = subprocess.run(
            [path, action], input=payload, capture_output=True, text=True, timeout=_HELPER_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise AuthError(f"credential helper {program} {action} did not answer within {_HELPER_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        message = (done.stdout.strip() or done.stderr.strip())[:300]
        if "credentials not found" in message.lower():
            return None
        raise AuthError(
            f"credential helper {program} {action} failed (exit {done.returncode}): {message}",
            hint="check the helper's own setup, or remove it from config.json",
        )
    return done.stdout


def _credential_from_helper(name: str, registry: str) -> Credential | None:
    key = config_key(registry)
    try:
        output = run_helper(name, "get", key)
    except FileNotFoundError:
        log.warning("credential helper docker-credential-%s is not on PATH; using no credentials for %s",
                    name, registry)
        return None
    if output is None:
        return None
    try:
        data = json.loads(output)
        username, secret = str(data.get("Username") or ""), str(data.get("Secret") or "")
    except (ValueError, AttributeError):
        raise AuthError(f"credential helper docker-credential-{name} returned invalid JSON for {key}") from None
    if not secret:
        return None
    if username == _IDENTITY_TOKEN_USER:
        return Credential("", secret, identity_token=True)
    return Credential(username, secret)


class CredentialStore:
    """Credentials per registry from one Docker config directory. Looked up once per host; thread-safe."""

    def __init__(self, docker_config: Path | None = None) -> None:
        self.directory = config_dir(docker_config)
        self._cache: dict[str, Credential | None] = {}
        self._lock = threading.Lock()

    def get(self, registry: str) -> Credential | None:
        key = config_key(registry)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._lookup(registry)
            return self._cache[key]

    def remember(self, registry: str, credential: Credential | None) -> None:
        """Use `credential` for `registry` instead of the config (login checks new credentials so)."""
        with self._lock:
            self._cache[config_key(registry)] = credential

    def _lookup(self, registry: str) -> Credential | None:
        config = read_config(self.directory)
        helper = helper_name(config, registry)
        if helper:
            return _credential_from_helper(helper, registry)
        entry = _auth_entry(config, registry)
        return _credential_from_entry(entry, config_key(registry)) if entry else None
