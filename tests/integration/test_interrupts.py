"""Builds that cannot finish (issue 5): SIGINT/SIGTERM mid-push and mid-write, and a full disk under the
cache and under the outputs. Whatever stops a build, no tag is pushed, no partial file is left in the
output directory, in the cache or in TMPDIR, and the cache still serves the next build."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from build_checks import EPOCH_ENV, assert_user_error, digest_lines, tag_exists
from conftest import SRC, RunDockwright
from faultproxy import FaultProxy
from images import BusyboxBase, pull_to_layout, sh
from servers import RegistryServer

APP = "apps/big"
_GUARD = 60  # seconds: a hung build fails the test instead of hanging it (not a performance claim)
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}



def big_context(root: Path, megabytes: int) -> Path:
    """A context with `app/blob.bin`: random (incompressible) bytes."""
    (root / "app").mkdir(parents=True)
    with (root / "app" / "blob.bin").open("wb") as handle:
        for _ in range(megabytes):
            handle.write(os.urandom(1 << 20))
    return root


def start_build(*args: str | Path, tmpdir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, **EPOCH_ENV, "TMPDIR": str(tmpdir), "PYTHONPATH": str(SRC)}
    return subprocess.Popen([sys.executable, "-m", "dockwright", "build", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


# ---------------------------------------------------------------------------------------------- signals


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", ["push", "archive"])
def test_a_signal_stops_the_build_promptly_and_leaves_nothing(
    busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path, signum: signal.Signals, phase: str,
) -> None:
    context = big_context(tmp_path / "context", 48)
    out, tmpdir, cache = tmp_path / "out", tmp_path / "tmp", tmp_path / "cache"
    out.mkdir()
    tmpdir.mkdir()
    if phase == "push":  # a slow uplink: 48 MB at 4 MB/s, interrupted while the layer is on the wire
        proxy.throttle("PATCH", r"/apps/big/blobs/uploads/", 4 << 20, times=None)
        outputs = ["--push"]

        def reached() -> bool:  # both uploads (config and the big layer) started
            return len(proxy.seen("PATCH", "/apps/big/")) == 2
    else:  # a stalled download of a base layer (not of the config) while the archive is being written
        layers = rf"/base/busybox/blobs/(?!{_config_digest(busybox_base)})"
        rule = proxy.delay("GET", layers, 120.0, times=None)
        outputs = ["-o", f"type=oci,dest={out / 'app.tar'}", "--push"]
        reached = rule.fired.is_set

    build = start_build(context, "--from", f"{proxy.host}/base/busybox:oci", "--copy", "app:/app",
                        "--compression", "none", "-t", f"{proxy.host}/{APP}:1", *outputs,
                        "--cache-dir", cache, tmpdir=tmpdir)
    try:
        while not reached():
            time.sleep(0.1)
            if build.poll() is not None:
                pytest.fail(f"the build ended before the slow exchange:\n{build.communicate()[1]}")
        before = len(proxy.requests)
        build.send_signal(signum)
        _, stderr = build.communicate(timeout=_GUARD)
        after = proxy.requests[before:]
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()

    assert build.returncode == EXIT_CODES[signum], stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stderr.splitlines()[-1]
    earlier = {(s.method, s.path) for s in proxy.requests[:before]}
    retried = [(s.method, s.path) for s in after if (s.method, s.path) in earlier or s.method in ("PUT", "PATCH")]
    assert retried == []  # stopped at once: no retry, no upload started after the signal
    assert not tag_exists(proxy.upstream, APP)
    assert files_under(out) == []
    assert files_under(tmpdir) == []
    assert files_under(cache / "tmp") == []


def _config_digest(base: BusyboxBase) -> str:
    import json

    manifest = json.loads(sh("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{base.oci_ref}"))
    return manifest["config"]["digest"]


# ---------------------------------------------------------------------------------------------- disk full


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs root and mount; skipped with the reason otherwise). `remount(size)` grows it."""
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _grow(mountpoint: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=64m", str(mountpoint)], check=True)


def test_a_full_cache_disk_gives_one_error_and_no_torn_entry(
    dockwright: RunDockwright, busybox_base: BusyboxBase, registry: RegistryServer, small_disk: Path,
    tmp_path: Path,
) -> None:
    context = big_context(tmp_path / "context", 4)
    args = ["build", context, "--from", busybox_base.oci_ref, "--copy", "app:/app", "--compression", "none",
            "-t", f"{busybox_base.host}/{APP}:1", "--push", "--cache-dir", small_disk]

    proc = dockwright(*args, env={**EPOCH_ENV, "TMPDIR": str(tmp_path)}, check=False)

    assert_user_error(proc, str(small_disk), "No space left on device")
    assert not tag_exists(registry, APP)
    assert files_under(small_disk / "tmp") == []
    assert files_under(small_disk / "layers") == []
    _grow(small_disk)
    again = dockwright(*args, env=EPOCH_ENV)
    [(_, digest)] = digest_lines(again.stdout)
    pull_to_layout(f"{busybox_base.host}/{APP}@{digest}", tmp_path / "pulled")  # every digest verified
    records = [json.loads((small_disk / "layers" / name).read_text()) for name in files_under(small_disk / "layers")]
    blobs = {"sha256:" + name.rsplit("/", 1)[-1] for name in files_under(small_disk / "blobs")}
    assert records and {r["digest"] for r in records} <= blobs
    assert len({r["digest"] for r in records}) == 1  # one layer, filed under its fingerprint and quick key


@pytest.mark.parametrize("kind", ["oci", "docker", "oci-dir"])
def test_a_full_output_disk_gives_one_error_and_no_partial_file(
    dockwright: RunDockwright, busybox_base: BusyboxBase, small_disk: Path, tmp_path: Path, kind: str,
) -> None:
    context = big_context(tmp_path / "context", 4)
    spec = f"type=oci,dest={small_disk / 'layout'},tar=false" if kind == "oci-dir" else \
        f"type={kind},dest={small_disk / 'app.tar'}"

    proc = dockwright("build", context, "--from", busybox_base.oci_ref, "--copy", "app:/app",
                      "--compression", "none", "-o", spec, "--cache-dir", tmp_path / "cache",
                      env=EPOCH_ENV, check=False)

    assert_user_error(proc, str(small_disk), "No space left on device")
    if kind == "oci-dir":  # complete blobs may stay (content-addressed), but no index and no temp file
        layout = small_disk / "layout"
        assert not (layout / "index.json").exists()
        assert not [name for name in files_under(small_disk) if ".tmp-" in name]
    else:
        assert files_under(small_disk) == []
