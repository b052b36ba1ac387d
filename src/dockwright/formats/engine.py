"""Load a built image into a local Docker or Podman engine through the Engine API (POST /images/load),
at DOCKER_HOST (default unix:///var/run/docker.sock). No docker CLI needed."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from dockwright.model.errors import DockwrightError

if TYPE_CHECKING:
    from dockwright.formats import PublishContext
    from dockwright.model.image import BuildResult

log = logging.getLogger("dockwright")
DEFAULT_HOST = "unix:///var/run/docker.sock"


def load_archive(archive: Path) -> str:
    """Send a docker-archive to the engine; returns the engine's message (e.g. 'Loaded image: ...')."""
    from dockwright.httpclient import Client, Timeout, TransportError

    host = os.environ.get("DOCKER_HOST") or DEFAULT_HOST
    if host.startswith("unix://"):
        socket_path: str | None = host[len("unix://"):]
        base = "http://docker"
    elif host.startswith(("tcp://", "http://")):
        socket_path = None
        base = "http://" + host.split("://", 1)[1].rstrip("/")
    else:
        raise DockwrightError(f"DOCKER_HOST={host!r} is not supported", hint="use unix:///path.sock or tcp://host:port")
    try:
        with Client(timeout=Timeout(30, 600), unix_socket=socket_path) as client, \
                archive.open("rb") as body:
            request = client.build_request(
                "POST", f"{base}/images/load", params={"quiet": "1"},
                headers={"Content-Type": "application/x-tar", "Content-Length": str(os.fstat(body.fileno()).st_size)},
                body=iter(lambda: body.read(1 << 20), b""))
            response = client.send(request)
    except TransportError as exc:
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


class Engine:
    """`--load`: into the Docker or Podman engine at DOCKER_HOST (a docker-archive sent to POST /images/load)."""

    needs_blobs = True
    visible_last = False

    def prepare(self, result: BuildResult, context: PublishContext) -> None:
        from dockwright.formats.docker_archive import docker_manifest_json
        from dockwright.formats.layout import write_archive

        self.archive = context.workdir / "load.tar"
        write_archive(result, self.archive, context.tags, mtime=context.mtime, progress=context.progress,
                      extra={"manifest.json": docker_manifest_json(result, context.tags)})

    def commit(self, result: BuildResult, context: PublishContext) -> None:
        log.info("loaded into the engine: %s", load_archive(self.archive))

    def discard(self) -> None:
        pass
