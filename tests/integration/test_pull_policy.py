"""Docker Hub's pull budget (issue 12 item 5): a rebuild whose base tag still points where it did makes no
manifest GET (a HEAD asks, the cache answers), and `--pull missing|never` build with the base registry down.
Requests are counted by the fault proxy in front of a real registry."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from build_checks import EPOCH_ENV, assert_user_error, cache_args, make_app
from conftest import RunDockwright
from faultproxy import FaultProxy
from images import BusyboxBase, sh


def build(dockwright: RunDockwright, tmp_path: Path, base: str, name: str, *extra: str,
          check: bool = True) -> subprocess.CompletedProcess[str]:
    """Build the app onto `base` into the OCI archive `name` (a file output: base layers are read, and cached)."""
    context = tmp_path / "context"
    if not context.exists():
        make_app(context)
    return dockwright("build", context, "--from", base, "--copy", "app:/app", "-o",
                      f"type=oci,dest={tmp_path / name}", *cache_args(tmp_path), *extra,
                      env={**EPOCH_ENV, "DOCKWRIGHT_RETRY_BASE_DELAY": "0.05"}, check=check)


def manifest_requests(proxy: FaultProxy, method: str, since: int) -> list[str]:
    return [s.path for s in proxy.requests[since:] if s.method == method and "/manifests/" in s.path]


@pytest.mark.parametrize("tag", ["docker", "multi"])
def test_a_rebuild_on_an_unchanged_tag_makes_no_manifest_get(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path, tag: str,
) -> None:
    base = f"{proxy.host}/base/busybox:{tag}"
    first = build(dockwright, tmp_path, base, "one.tar")
    assert manifest_requests(proxy, "GET", 0), "the first build fetched the base"
    before = len(proxy.requests)

    second = build(dockwright, tmp_path, base, "two.tar")

    assert second.stdout == first.stdout  # the same image
    assert manifest_requests(proxy, "GET", before) == []
    assert manifest_requests(proxy, "HEAD", before) == [f"/v2/base/busybox/manifests/{tag}"]
    assert [s.path for s in proxy.requests[before:] if s.method == "GET" and "/blobs/" in s.path] == []


def test_a_moved_tag_is_fetched_again(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path,
) -> None:
    base = f"{proxy.host}/base/busybox:docker"
    first = build(dockwright, tmp_path, base, "one.tar")
    sh("skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
       f"docker://{busybox_base.oci_ref}", f"docker://{busybox_base.docker_ref}")  # same files, OCI types
    before = len(proxy.requests)

    second = build(dockwright, tmp_path, base, "two.tar")

    assert second.stdout != first.stdout
    assert manifest_requests(proxy, "GET", before) == ["/v2/base/busybox/manifests/docker"]


def test_a_head_without_a_digest_falls_back_to_get(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path,
) -> None:
    rule = proxy.no_digest("HEAD", r"/manifests/")
    base = f"{proxy.host}/base/busybox:docker"
    first = build(dockwright, tmp_path, base, "one.tar")
    before = len(proxy.requests)

    second = build(dockwright, tmp_path, base, "two.tar")

    assert rule.hits == 2 and second.stdout == first.stdout
    assert manifest_requests(proxy, "GET", before) == ["/v2/base/busybox/manifests/docker"]


@pytest.mark.parametrize("policy", ["missing", "never"])
def test_a_cached_base_builds_with_its_registry_down(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path, policy: str,
) -> None:
    base = f"{proxy.host}/base/busybox:multi"
    first = build(dockwright, tmp_path, base, "one.tar")
    before = len(proxy.requests)
    proxy.upstream.stop()

    second = build(dockwright, tmp_path, base, "two.tar", "--pull", policy)

    assert second.stdout == first.stdout
    assert proxy.requests[before:] == []
    assert (tmp_path / "two.tar").stat().st_size == (tmp_path / "one.tar").stat().st_size


def test_pull_never_without_a_cached_base_says_so(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path,
) -> None:
    proc = build(dockwright, tmp_path, f"{proxy.host}/base/busybox:docker", "one.tar", "--pull", "never",
                 check=False)

    assert_user_error(proc, "--pull never", f"{proxy.host}/base/busybox:docker is not in the cache")
    assert proxy.requests == [] and not (tmp_path / "one.tar").exists()
