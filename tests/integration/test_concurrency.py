"""Concurrency (issue 5): eight builds at once sharing one cache directory and one registry all succeed
with verifiable digests and leave no torn cache entry; a build killed with SIGKILL mid-write leaves
the cache usable by the next build."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from build_checks import EPOCH_ENV, digest_lines, make_app
from conftest import SRC
from images import BusyboxBase, pull_to_layout

_GUARD = 300  # seconds: a hang fails instead of blocking the suite


def _start(context: Path, base: str, tag: str, cache: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, **EPOCH_ENV, "PYTHONPATH": str(SRC)}
    return subprocess.Popen([sys.executable, "-m", "dockwright", "build", str(context), "--from", base,
                             "--copy", "app:/app", "-t", tag, "--push", "--cache-dir", str(cache), "--jobs", "2",
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_cache_sound(cache: Path) -> None:
    """Every layer record parses and points at a blob of its size; every blob hashes to its name."""
    for record in (cache / "layers").iterdir():
        data = json.loads(record.read_text())
        blob = cache / "blobs" / "sha256" / data["digest"].split(":", 1)[1]
        assert blob.stat().st_size == data["size"], record
    for blob in (cache / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, f"torn blob {blob}"


def test_eight_builds_share_one_cache_and_one_registry(busybox_base: BusyboxBase, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    contexts = []
    for variant in range(4):  # pairs of builds race on the same layer; the pairs differ
        context = make_app(tmp_path / f"context-{variant}")
        (context / "app" / "variant.txt").write_text(f"variant {variant}\n" * 10_000)
        contexts.append(context)
    tags = [f"{busybox_base.host}/apps/c{n}:1" for n in range(8)]

    builds = [_start(contexts[n % 4], busybox_base.docker_ref, tags[n], cache) for n in range(8)]
    results = [build.communicate(timeout=_GUARD) for build in builds]

    for build, (_, stderr) in zip(builds, results, strict=True):
        assert build.returncode == 0, stderr
    digests = [digest_lines(stdout)[0][1] for stdout, _ in results]
    assert digests[:4] == digests[4:]  # same input, same image, whoever won the race
    assert len(set(digests)) == 4
    for n, tag in enumerate(tags):  # skopeo verifies every blob against its digest on copy
        pull_to_layout(f"{tag.rsplit(':', 1)[0]}@{digests[n]}", tmp_path / f"pulled-{n}")
    assert_cache_sound(cache)
    assert list((cache / "tmp").iterdir()) == []


def test_a_build_killed_mid_write_leaves_the_cache_usable(busybox_base: BusyboxBase, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    context = make_app(tmp_path / "context")
    with (context / "app" / "big.bin").open("wb") as handle:
        for _ in range(64):
            handle.write(os.urandom(1 << 20))
    tag = f"{busybox_base.host}/apps/killed:1"

    victim = _start(context, busybox_base.docker_ref, tag, cache)
    deadline = time.monotonic() + _GUARD
    while not any(p.stat().st_size > 0 for p in (cache / "tmp").glob("*.layer")):
        assert victim.poll() is None, "the build ended before it was killed"
        assert time.monotonic() < deadline, "no layer was ever being written"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=_GUARD)

    assert list((cache / "layers").iterdir()) == []  # no record for the half-written layer
    assert_cache_sound(cache)
    survivor = _start(context, busybox_base.docker_ref, tag, cache)
    stdout, stderr = survivor.communicate(timeout=_GUARD)
    assert survivor.returncode == 0, stderr
    [(_, digest)] = digest_lines(stdout)
    pull_to_layout(f"{busybox_base.host}/apps/killed@{digest}", tmp_path / "pulled")
    assert_cache_sound(cache)
