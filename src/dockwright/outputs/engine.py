"""Load a built image into a local Docker or Podman engine through the Engine API (POST /images/load),
at DOCKER_HOST (default unix:///var/run/docker.sock). No docker CLI needed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dockwright.errors import DockwrightError

DEFAULT_HOST = "unix:///var/run/docker.sock"


def load_archive(archive: Path) -> str:
    """Send a docker-archive to the engine; returns the engine's message (e.g. 'Loaded image: ...')."""
    from dockwright.httpimport import httpx as _load_httpx

    httpx = _load_httpx()

    host = os.environ.get("DOCKER_HOST") or DEFAULT_HOST
    if host.startswith("unix://"):
        transport = httpx.HTTPTransport(uds=host[len("unix://"):])
        base = "http://docker"
    elif host.startswith(("tcp://", "http://")):
        transport = httpx.HTTPTransport()
        base = "http://" + host.split("://", 1)[1]
    else:
        raise DockwrightError(f"DOCKER_HOST={host!r} is not supported", hint="use unix:///path.sock or tcp://host:port")
    try:
        with httpx.Client(transport=transport, base_url=base, timeout=httpx.Timeout(30, read=600)) as client, \
                archive.open("rb") as body:
            response = client.post("/images/load", params={"quiet": "1"}, content=body,
                                   headers={"Content-Type": "application/x-tar"})
    except httpx.HTTPError as exc:
        raise DockwrightError(f"cannot reach the engine at {host}: {exc}",
                              hint="start Docker or `podman system service`, or set DOCKER_HOST") from None
    messages = []
    for line in response.text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            messages.append(line)
            continue
        if item.get("error") or item.get("errorDetail"):
            raise DockwrightError(f"the engine at {host} refused the image: {item.get('error') or item['errorDetail']}")
        if item.get("stream"):
            messages.append(str(item["stream"]).strip())
    if response.status_code >= 400:
        raise DockwrightError(f"the engine at {host} answered HTTP {response.status_code}: {response.text[:300]}")
    return "; ".join(m for m in messages if m)
