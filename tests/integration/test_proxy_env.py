"""HTTP(S)_PROXY and NO_PROXY are honoured: with a proxy set, registry traffic goes through it; a host
named in NO_PROXY is reached directly."""

from __future__ import annotations

import http.client
import http.server
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from build_checks import EPOCH_ENV, cache_args, digest_lines, make_app
from conftest import RunDockwright
from images import BusyboxBase


class _ForwardProxy(http.server.BaseHTTPRequestHandler):
    """A minimal forward proxy for plain-HTTP absolute-form requests; records each request line."""

    seen: list[str]

    def _forward(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        target = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        try:
            path = target.path + (f"?{target.query}" if target.query else "")
            upstream.request(self.command, path, body=body, headers=headers)
            reply = upstream.getresponse()
            data = reply.read()
            self.send_response(reply.status)
            for key, value in reply.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            upstream.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def forward_proxy() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (_ForwardProxy,), {"seen": seen})
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _push(dockwright: RunDockwright, base: BusyboxBase, tmp_path: Path, env: dict[str, str]) -> str:
    context = make_app(tmp_path / "ctx")
    proc = dockwright("build", str(context), "--from", base.docker_ref, "--copy", "app:/app",
                      "-t", f"{base.host}/apps/proxied:1", "--push", *cache_args(tmp_path),
                      env={**EPOCH_ENV, **env})
    ((_, digest),) = digest_lines(proc.stdout)
    return digest


@pytest.mark.requires("docker-registry", "skopeo")
def test_registry_traffic_goes_through_the_proxy(dockwright: RunDockwright, busybox_base: BusyboxBase,
                                                 forward_proxy: tuple[str, list[str]], tmp_path: Path) -> None:
    url, seen = forward_proxy
    _push(dockwright, busybox_base, tmp_path, {"HTTP_PROXY": url, "http_proxy": url, "NO_PROXY": "", "no_proxy": ""})
    assert any(line.startswith(f"PUT http://{busybox_base.host}/v2/apps/proxied/manifests/1") for line in seen)


@pytest.mark.requires("docker-registry", "skopeo")
def test_no_proxy_hosts_are_reached_directly(dockwright: RunDockwright, busybox_base: BusyboxBase,
                                             forward_proxy: tuple[str, list[str]], tmp_path: Path) -> None:
    url, seen = forward_proxy
    _push(dockwright, busybox_base, tmp_path,
          {"HTTP_PROXY": url, "http_proxy": url, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    assert seen == []
