"""`dockwright login` / `logout`: check credentials against the registry, then keep them where Docker
does (config.json `auths`, or the configured credential helper), so docker, skopeo and podman share them."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from dockwright.files import atomic_write_text
from dockwright.model.errors import AuthError
from dockwright.model.reference import DOCKER_HUB_API, is_docker_hub
from dockwright.registry.credentials import (
    Credential,
    config_dir,
    config_key,
    helper_name,
    hostname_of,
    read_config,
    run_helper,
    same_registry,
)


def api_host(registry: str) -> str:
    """The host serving the API for a registry as the user names it (docker.io -> registry-1.docker.io)."""
    host = hostname_of(registry)
    return DOCKER_HUB_API if is_docker_hub(host) else host


def login(registry: str, username: str, password: str, docker_config: Path | None = None, *,
          insecure: bool = False) -> None:
    """Verify `username`/`password` against `registry`, then store them (helper or config.json)."""
    from dockwright.registry.client import Registries

    if not username or not password:
        raise AuthError(f"logging in to {registry}: username and password must not be empty")
    host = api_host(registry)
    credential = Credential(username, password)
    with Registries(insecure=[host] if insecure else (), docker_config=docker_config) as registries:
        registries.credentials.remember(host, credential)
        registries.client(host).verify_access()
    directory = config_dir(docker_config)
    config = read_config(directory)
    key = config_key(registry)
    auths = _auths(config)
    helper = helper_name(config, registry)
    if helper:
        _run_helper_or_fail(helper, "store", json.dumps({"ServerURL": key, "Username": username, "Secret": password}))
        auths[key] = {}
    else:
        auths[key] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode("ascii")}
    write_config(directory, config)


def logout(registry: str, docker_config: Path | None = None) -> bool:
    """Forget the credentials for `registry` (every key form). False when there were none."""
    directory = config_dir(docker_config)
    config = read_config(directory)
    key = config_key(registry)
    removed = False
    helper = helper_name(config, registry)
    if helper:
        removed = _run_helper_or_fail(helper, "erase", key) is not None
    auths = _auths(config)
    for name in [name for name in auths if same_registry(name, registry)]:
        del auths[name]
        removed = True
    if removed:
        write_config(directory, config)
    return removed


def _auths(config: dict[str, Any]) -> dict[str, Any]:
    auths = config.get("auths")
    if not isinstance(auths, dict):
        auths = config["auths"] = {}
    return auths


def _run_helper_or_fail(helper: str, action: str, payload: str) -> str | None:
    try:
        return run_helper(helper, action, payload)
    except FileNotFoundError:
        raise AuthError(
            f"credential helper docker-credential-{helper} is not on PATH",
            hint="install it, or remove credsStore/credHelpers from your Docker config.json",
        ) from None


def write_config(directory: Path, config: dict[str, Any]) -> None:
    """Write config.json atomically (temp file + rename), mode 0600, following a symlinked config."""
    path = directory / "config.json"
    if path.is_symlink():
        path = path.resolve()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(config, indent="\t") + "\n", durable=True)  # mode 0600
