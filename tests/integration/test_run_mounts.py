"""RUN mounts as BuildKit has them, through the CLI: `type=cache` (persistent in dockwright's cache
directory, never in the image; `sharing=locked` runs one build at a time), `type=secret` (reaches the
command, appears in no blob, no output and not in the cache directory), `type=bind` (from a stage, an
image or the context; read-only unless `rw`, whose changes are discarded) and `type=tmpfs`.

Each image is pushed to a real registry, pulled back with skopeo and unpacked with umoci; the tests
read what the commands wrote."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from build_checks import EPOCH_ENV, cache_args, dockerfile_context, pushed_rootfs
from conftest import SRC, RunDockwright
from images import BusyboxBase

pytestmark = pytest.mark.requires("runc", "umoci", "skopeo", "docker-registry")


def _blobs(layout: Path) -> list[bytes]:
    """Every blob of an OCI layout, gzip layers decompressed."""
    found = []
    for path in (layout / "blobs" / "sha256").iterdir():
        data = path.read_bytes()
        found.append(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    return found


def test_cache_mount_persists_across_builds_and_stays_out_of_the_image(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    context = dockerfile_context(tmp_path, (
        f"FROM {busybox_base.oci_ref}\n"
        "RUN --mount=type=cache,id=runs,target=/var/cache/runs \\\n"
        "    echo run >> /var/cache/runs/log && wc -l < /var/cache/runs/log > /runs\n"
        "RUN --mount=type=cache,target=/owned,uid=1000,gid=1000,mode=0750 \\\n"
        "    stat -c '%u:%g %a' /owned > /owned-stat && touch /owned/inside\n"
    ))  # fmt: skip
    ref = f"{busybox_base.host}/apps/cache-mount:1"
    dockwright("build", context, "-t", ref, "--push", *cache_args(tmp_path), env=EPOCH_ENV)
    first = pushed_rootfs(ref, tmp_path, "first")
    assert (first / "runs").read_text().strip() == "1"
    assert (first / "owned-stat").read_text() == "1000:1000 750\n"

    dockwright("build", context, "-t", ref, "--push", "--no-cache", *cache_args(tmp_path), env=EPOCH_ENV)
    second = pushed_rootfs(ref, tmp_path, "second")
    assert (second / "runs").read_text().strip() == "2"  # the cache kept the first build's line
    for rootfs in (first, second):
        assert not (rootfs / "var/cache/runs/log").exists()
        assert not (rootfs / "owned/inside").exists()


def test_cache_mount_sharing_locked_lets_one_build_at_a_time_use_it(
    busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    """Two builds at once share one cache directory; with sharing=locked neither sees the other's
    `busy` marker, which each holds for a second."""
    context = dockerfile_context(tmp_path, (
        f"FROM {busybox_base.oci_ref}\n"
        "ARG WHO\n"
        "RUN --mount=type=cache,id=locked,target=/c,sharing=locked \\\n"
        "    if [ -e /c/busy ]; then echo clash > /result; else touch /c/busy; sleep 1; rm /c/busy;"
        " echo \"alone $WHO\" > /result; fi\n"
    ))  # fmt: skip
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def build(who: str) -> None:
        results[who] = subprocess.run(
            [sys.executable, "-m", "dockwright", "build", str(context), "-t", f"{busybox_base.host}/apps/{who}:1",
             "--push", "--build-arg", f"WHO={who}", *cache_args(tmp_path)],
            env={"PYTHONPATH": str(SRC), "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 **EPOCH_ENV},
            capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip

    threads = [threading.Thread(target=build, args=(who,)) for who in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for who, proc in results.items():
        assert proc.returncode == 0, proc.stderr
        rootfs = pushed_rootfs(f"{busybox_base.host}/apps/{who}:1", tmp_path, who)
        assert (rootfs / "result").read_text() == f"alone {who}\n"


SECRET = "s3cr3t-value-that-must-never-leak-7f1c"


def test_secret_reaches_the_command_and_nothing_else(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    secret_file = tmp_path / "token.txt"
    secret_file.write_text(SECRET)
    context = dockerfile_context(tmp_path, (
        f"FROM {busybox_base.oci_ref}\n"
        "RUN --mount=type=secret,id=token sha256sum /run/secrets/token > /token.sha256 \\\n"
        "    && echo \"the command printed $(cat /run/secrets/token)\"\n"
        "RUN --mount=type=secret,id=apikey,target=/etc/apikey,required=true wc -c < /etc/apikey > /apikey.length\n"
    ))  # fmt: skip
    ref = f"{busybox_base.host}/apps/secret:1"
    proc = dockwright(
        "build", context, "-t", ref, "--push", *cache_args(tmp_path),
        "--secret", f"id=token,src={secret_file}", "--secret", "id=apikey,env=API_KEY",
        env={**EPOCH_ENV, "API_KEY": SECRET + "-api"},
    )  # fmt: skip

    assert "the command printed" in proc.stdout + proc.stderr  # the line streamed, its secret masked
    assert "#1 the command printed ****" in proc.stderr.splitlines()
    assert SECRET not in proc.stdout + proc.stderr
    rootfs = pushed_rootfs(ref, tmp_path)
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    assert (rootfs / "token.sha256").read_text() == f"{digest}  /run/secrets/token\n"
    assert (rootfs / "apikey.length").read_text().strip() == str(len(SECRET) + 4)
    assert not (rootfs / "run/secrets/token").exists() and not (rootfs / "etc/apikey").exists()
    for blob in _blobs(tmp_path / "image-layout"):
        assert SECRET.encode() not in blob
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"the secret is in the cache: {path}"


def test_a_changed_secret_is_no_reason_to_run_again(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    """Secrets are not part of a step's cache key (BuildKit's rule): the second build reuses the step."""
    context = dockerfile_context(tmp_path, (
        f"FROM {busybox_base.oci_ref}\n"
        "RUN --mount=type=secret,id=token,env=TOKEN echo \"length ${#TOKEN}\" > /length\n"
    ))  # fmt: skip
    ref = f"{busybox_base.host}/apps/secret-cache:1"
    digests = []
    for value in ("first-value", "second-longer-value"):
        proc = dockwright("build", context, "-t", ref, "--push", *cache_args(tmp_path),
                          "--secret", "id=token,env=TOKEN", env={**EPOCH_ENV, "TOKEN": value})  # fmt: skip
        digests.append(proc.stdout.strip())
        assert value not in proc.stdout + proc.stderr
    assert digests[0] == digests[1]
    assert "#1 cached" in proc.stderr
    assert (pushed_rootfs(ref, tmp_path) / "length").read_text() == "length 11\n"  # the first build's run


def test_bind_mounts_from_a_stage_an_image_and_thedockerfile_context(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    context = dockerfile_context(tmp_path, (
        f"FROM {busybox_base.oci_ref} AS tools\n"
        "RUN mkdir /out && echo 'from the tools stage' > /out/msg \\\n"
        "    && printf '#!/bin/sh\\necho \"tool ran: $1\"\\n' > /out/tool && chmod 755 /out/tool\n"
        f"FROM {busybox_base.oci_ref}\n"
        "RUN --mount=type=bind,from=tools,source=/out,target=/mnt/tools \\\n"
        "    /mnt/tools/tool \"$(cat /mnt/tools/msg)\" > /result \\\n"
        "    && (touch /mnt/tools/new 2>/dev/null && echo writable || echo read-only) >> /result\n"
        f"RUN --mount=type=bind,from={busybox_base.oci_ref},source=/etc,target=/base-etc \\\n"
        "    grep -c : /base-etc/passwd > /base-passwd-lines\n"
        "RUN --mount=type=bind,source=data,target=/ctx,rw echo changed > /ctx/file.txt && cat /ctx/file.txt > /rw\n"
        "RUN --mount=type=bind,source=data,target=/ctx cat /ctx/file.txt > /ro\n"
    ), {"data/file.txt": "from the context\n"})  # fmt: skip
    ref = f"{busybox_base.host}/apps/bind:1"
    dockwright("build", context, "-t", ref, "--push", *cache_args(tmp_path), env=EPOCH_ENV)

    rootfs = pushed_rootfs(ref, tmp_path)
    assert (rootfs / "result").read_text() == "tool ran: from the tools stage\nread-only\n"
    assert (rootfs / "base-passwd-lines").read_text() == "3\n"
    assert (rootfs / "rw").read_text() == "changed\n"
    assert (rootfs / "ro").read_text() == "from the context\n"  # the rw mount's change was discarded
    assert (context / "data/file.txt").read_text() == "from the context\n"
    for leftover in ("mnt/tools/msg", "mnt/tools/new", "base-etc/passwd", "ctx/file.txt"):
        assert not (rootfs / leftover).exists(), leftover


def test_tmpfs_mount(dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path) -> None:
    context = dockerfile_context(tmp_path, (
        f"FROM {busybox_base.oci_ref}\n"
        "RUN --mount=type=tmpfs,target=/scratch,size=1m \\\n"
        "    echo x > /scratch/f && df -k /scratch | tail -n 1 | awk '{print $2}' > /scratch-size \\\n"
        "    && (dd if=/dev/zero of=/scratch/big bs=1k count=2048 2>/dev/null && echo fits || echo full) > /fill\n"
    ))  # fmt: skip
    ref = f"{busybox_base.host}/apps/tmpfs:1"
    dockwright("build", context, "-t", ref, "--push", *cache_args(tmp_path), env=EPOCH_ENV)
    rootfs = pushed_rootfs(ref, tmp_path)
    assert (rootfs / "scratch-size").read_text() == "1024\n"
    assert (rootfs / "fill").read_text() == "full\n"
    assert not (rootfs / "scratch/f").exists()
