"""Reproducible builds: the same inputs give the same image digest and the same archive bytes,
whatever the cache, the context's location or its files' timestamps; SOURCE_DATE_EPOCH sets
`created` and so the digest."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from build_checks import EPOCH, EPOCH_ENV, cache_args, digest_lines, image_config, make_app
from conftest import RunDockwright
from images import BusyboxBase


def _push(dockwright: RunDockwright, context: Path, base: BusyboxBase, tag: str, *args: str,
          epoch: str = EPOCH) -> str:
    proc = dockwright(
        "build", context, "--from", base.docker_ref, "--copy", "app:/app", "--copy", "app/hello.sh:/usr/bin/",
        "--env", "GREETING=same", "--entrypoint", "/app/hello.sh", "-t", tag, "--push", *args,
        env={"SOURCE_DATE_EPOCH": epoch},
    )  # fmt: skip
    ((_, digest),) = digest_lines(proc.stdout)
    return digest


def test_same_inputs_give_the_same_digest(dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path) -> None:
    context = make_app(tmp_path / "context")
    moved = tmp_path / "elsewhere" / "context"
    shutil.copytree(context, moved)
    for path in moved.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))  # different mtimes on disk must not matter
    repo = f"{busybox_base.host}/apps/repro"

    first = _push(dockwright, context, busybox_base, f"{repo}:a", *cache_args(tmp_path, "cache-1"))
    fresh_cache = _push(dockwright, moved, busybox_base, f"{repo}:b", *cache_args(tmp_path, "cache-2"))
    no_cache = _push(dockwright, context, busybox_base, f"{repo}:c", "--no-cache")
    warm_cache = _push(dockwright, context, busybox_base, f"{repo}:d", *cache_args(tmp_path, "cache-1"))

    assert first == fresh_cache == no_cache == warm_cache


def test_archives_of_the_same_build_are_byte_identical(
    dockwright: RunDockwright, busybox_files: BusyboxBase, tmp_path: Path
) -> None:
    context = make_app(tmp_path / "context")
    archives = [tmp_path / "one.tar", tmp_path / "two.tar"]
    for number, archive in enumerate(archives):
        dockwright(
            "build", context, "--from", f"oci-layout://{busybox_files.layout}:latest", "--copy", "app:/app",
            "-t", "example.com/repro:1", "-o", f"type=docker,dest={archive}",
            *cache_args(tmp_path, f"cache-{number}"), env=EPOCH_ENV,
        )  # fmt: skip

    assert archives[0].read_bytes() == archives[1].read_bytes()


def test_source_date_epoch_sets_created_and_changes_the_digest(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    context = make_app(tmp_path / "context")
    repo = f"{busybox_base.host}/apps/epoch"

    old = _push(dockwright, context, busybox_base, f"{repo}:old", *cache_args(tmp_path), epoch=EPOCH)
    new = _push(dockwright, context, busybox_base, f"{repo}:new", *cache_args(tmp_path), epoch="1800000000")

    assert old != new
    assert image_config(f"{repo}:old")["created"] == "2023-11-14T22:13:20Z"
    config = image_config(f"{repo}:new")
    assert config["created"] == "2027-01-15T08:00:00Z"
    assert [h["created"] for h in config["history"][-2:]] == ["2027-01-15T08:00:00Z"] * 2
