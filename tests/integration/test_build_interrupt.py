"""Ctrl-C in the middle of a transfer: the build stops with exit 130, pushes no tag and leaves no
output file, finished or half-written. A fault proxy holds the transfer open until the signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from build_checks import EPOCH, cache_args, make_app, raw_manifest, tag_exists
from conftest import SRC, DockerConfig
from faultproxy import FaultProxy
from images import BusyboxBase
from servers import RegistryServer

_GUARD = 120  # seconds: a guard against a hang, not an assertion



def _start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    context = make_app(tmp_path / "context")
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(
        [sys.executable, "-m", "dockwright", "build", str(context), "--copy", "app:/app", *args,
         *cache_args(tmp_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _interrupt(proc: subprocess.Popen[str], proxy: FaultProxy, held: str) -> None:
    """Ctrl-C now: exit 130 with one line, without waiting for the held transfer to time out and
    be retried (the user asked to stop)."""
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=_GUARD)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stdout == ""
    assert "interrupted" in stderr
    assert len(proxy.seen("GET", f"/blobs/{held}")) == 1


def test_ctrl_c_during_an_archive_download_leaves_no_file(
    busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path
) -> None:
    layer = raw_manifest(busybox_base.docker_ref)["layers"][0]["digest"]
    hold = proxy.delay("GET", f"/blobs/{layer}", seconds=_GUARD)
    out = tmp_path / "out"
    out.mkdir()
    base = f"{proxy.host}/{busybox_base.repository}:docker"

    proc = _start(tmp_path, "--from", base, "-t", "example.com/app:1", "-o", f"type=docker,dest={out / 'app.tar'}")
    try:
        assert hold.fired.wait(_GUARD), "the base layer was never requested"
        _interrupt(proc, proxy, layer)
    finally:
        proc.kill()

    assert list(out.iterdir()) == []


def test_ctrl_c_during_a_push_pushes_no_tag(
    busybox_base: BusyboxBase,
    proxy: FaultProxy,
    htpasswd_registry: RegistryServer,
    docker_config: DockerConfig,
    tmp_path: Path,
) -> None:
    """The base layer streams from the proxied registry to another one; its download is held."""
    docker_config.login(htpasswd_registry.host, htpasswd_registry.username, htpasswd_registry.password)
    layer = raw_manifest(busybox_base.docker_ref)["layers"][0]["digest"]
    hold = proxy.delay("GET", f"/blobs/{layer}", seconds=_GUARD)
    tag = f"{htpasswd_registry.host}/team/app:1"

    proc = _start(tmp_path, "--from", f"{proxy.host}/{busybox_base.repository}:docker", "-t", tag, "--push")
    try:
        assert hold.fired.wait(_GUARD), "the base layer was never requested"
        _interrupt(proc, proxy, layer)
    finally:
        proc.kill()

    assert not tag_exists(htpasswd_registry, "team/app")
