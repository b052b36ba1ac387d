"""Network faults between dockwright and a real registry (issue 5), injected by faultproxy.FaultProxy.

Every test builds the small app onto the busybox base through the proxy and checks what a user would:
the build succeeds and the pushed image reads back with verified digests (skopeo) or runs (runc), or it
fails with one `error:` line naming host, status, repository and digest, and no tag and no file is left.
Each test also checks that its fault really fired."""

from __future__ import annotations

import email.utils
import hashlib
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from build_checks import EPOCH_ENV, assert_user_error, cache_args, digest_lines, make_app, tag_exists
from conftest import DockerConfig, RunDockwright
from faultproxy import FaultProxy
from images import BusyboxBase, pull_to_layout, run_oci_image, sh
from servers import RegistryServer

FAST_RETRIES = {"DOCKWRIGHT_RETRY_BASE_DELAY": "0.05"}  # keeps backoff short; Retry-After is still honoured
APP = "apps/hello"



def build(dockwright: RunDockwright, host: str, tmp_path: Path, *extra: str, check: bool = True,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Build the app onto HOST/base/busybox:docker and push it to HOST/apps/hello:1 (plus `extra`)."""
    context = tmp_path / "context"
    if not context.exists():
        make_app(context)
    return dockwright(
        "build", context, "--from", f"{host}/base/busybox:docker", "--copy", "app:/app",
        "--entrypoint", '["/app/hello.sh"]', "--cmd", '["faults"]', "--env", "GREETING=through faults",
        "-t", f"{host}/{APP}:1", "--push", *cache_args(tmp_path), *extra,
        env={**EPOCH_ENV, **FAST_RETRIES, **(env or {})}, check=check,
    )  # fmt: skip


def assert_pushed(proc: subprocess.CompletedProcess[str], registry: RegistryServer, tmp_path: Path) -> Path:
    """The tag exists on the real registry, names the digest dockwright printed, and every blob reads
    back verified (skopeo checks digests on copy). Returns the pulled OCI layout (tag `app`)."""
    [(_, digest)] = digest_lines(proc.stdout)
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/{APP}:1"],
                         capture_output=True, check=True).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    return pull_to_layout(f"{registry.host}/{APP}:1", tmp_path / "pulled", "app")


def assert_nothing_pushed(registry: RegistryServer) -> None:
    assert not tag_exists(registry, APP), "a failed build must not push a tag"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------------------------------------- 5xx


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", r"/base/busybox/manifests/", 500),
        ("HEAD", r"/apps/hello/blobs/sha256:", 502),
        ("GET", r"/base/busybox/blobs/sha256:", 503),
        ("POST", r"/blobs/uploads/$", 500),
        ("PATCH", r"/blobs/uploads/", 502),
        ("PUT", r"/blobs/uploads/", 503),
        ("HEAD", r"/apps/hello/manifests/1$", 500),
        ("PUT", r"/manifests/1$", 503),
    ],
    ids=["manifest-get", "blob-head", "blob-get", "upload-post", "upload-patch", "upload-put", "tag-head",
         "tag-put"],
)
def test_one_server_error_is_retried_and_the_build_succeeds(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path,
    method: str, path: str, status: int,
) -> None:
    rule = proxy.fail(method, path, status)

    proc = build(dockwright, proxy.host, tmp_path)

    assert rule.hits == 1
    assert_pushed(proc, proxy.upstream, tmp_path)
    if method in ("PATCH", "PUT") and "uploads" in path:  # the upload restarted with a fresh session
        broken = next(s for s in proxy.requests if s.rule == "status")
        retried = [s for s in proxy.seen(method, "/blobs/uploads/") if s.time > broken.time]
        assert retried and all(s.path.split("?")[0] != broken.path.split("?")[0] for s in retried)


@pytest.mark.parametrize(
    ("method", "path", "status", "repository"),
    [
        ("HEAD", r"/apps/hello/blobs/sha256:", 503, APP),
        ("GET", r"/base/busybox/blobs/sha256:", 502, "base/busybox"),
        ("POST", r"/blobs/uploads/$", 503, APP),
        ("PATCH", r"/blobs/uploads/", 500, APP),
    ],
    ids=["blob-head", "blob-get", "upload-post", "upload-patch"],
)
def test_persistent_server_errors_fail_after_bounded_retries_with_one_line(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path,
    method: str, path: str, status: int, repository: str,
) -> None:
    proxy.fail(method, path, status, times=None)

    proc = build(dockwright, proxy.host, tmp_path, check=False)

    line = assert_user_error(proc, proxy.host, f"{proxy.host}/{repository}", f"HTTP {status}", "sha256:")
    assert proc.returncode == 1
    assert "try again later" in proc.stderr  # the hint line
    assert_nothing_pushed(proxy.upstream)
    tries: dict[str, int] = {}  # per blob; upload sessions have no digest in their path: per build
    for seen in proxy.requests:
        if seen.rule == "status":
            key = seen.path.split("?")[0] if method not in ("POST", "PATCH") else "uploads"
            tries[key] = tries.get(key, 0) + 1
    bound = 4 * (2 if method in ("POST", "PATCH") else 1)  # two blobs (app layer, config) upload at once
    assert tries and max(tries.values()) <= bound, f"retries must be bounded: {tries}\n{line}"


def test_persistent_errors_on_the_manifest_put_push_no_tag(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path,
) -> None:
    rule = proxy.fail("PUT", r"/manifests/1$", 503, times=None)

    proc = build(dockwright, proxy.host, tmp_path, check=False)

    assert_user_error(proc, f"{proxy.host}/{APP}", "HTTP 503", "pushing manifest")
    assert rule.hits == 4
    assert not proxy.seen("PUT", "/manifests/sha256:")  # a tagged manifest goes up under its tag only
    assert_nothing_pushed(proxy.upstream)


# ---------------------------------------------------------------------------------------------- 429


def _http_date_in(seconds: int) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_waits_at_least_the_retry_after_hint(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path, form: str,
) -> None:
    hint = "1" if form == "seconds" else (lambda: _http_date_in(2))
    rule = proxy.fail("GET", r"/base/busybox/manifests/docker", 429, headers={"Retry-After": hint})

    proc = build(dockwright, proxy.host, tmp_path)

    assert rule.hits == 1
    limited, retried = proxy.seen("GET", "/base/busybox/manifests/docker")[:2]
    assert limited.status == 429 and retried.status == 200
    if form == "seconds":
        assert retried.time - limited.answered >= 1.0
    else:  # no retry before the date named (it has one-second resolution, so it is 1-2 s ahead)
        named = email.utils.parsedate_to_datetime(limited.reply["Retry-After"]).timestamp()
        assert named - limited.answered >= 1.0
        assert retried.time >= named
    assert_pushed(proc, proxy.upstream, tmp_path)


def test_429_on_a_blob_upload_waits_for_the_retry_after_hint(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path,
) -> None:
    rule = proxy.fail("PATCH", rf"/{APP}/blobs/uploads/", 429, headers={"Retry-After": "1"})

    proc = build(dockwright, proxy.host, tmp_path, "--jobs", "1")  # one upload at a time: the next POST is the retry

    assert rule.hits == 1
    limited = proxy.seen("PATCH", f"/{APP}/blobs/uploads/")[0]
    restarted = [r for r in proxy.seen("POST", f"/{APP}/blobs/uploads/") if r.time > limited.answered]
    assert limited.status == 429 and restarted, "the upload restarts with a new session"
    assert restarted[0].time - limited.answered >= 1.0
    assert_pushed(proc, proxy.upstream, tmp_path)


def test_429_asking_for_too_long_a_wait_fails_with_advice(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path,
) -> None:
    rule = proxy.fail("GET", r"/base/busybox/manifests/", 429, times=None, headers={"Retry-After": "3600"})

    proc = build(dockwright, proxy.host, tmp_path, check=False)

    assert_user_error(proc, proxy.host, "base/busybox", "HTTP 429", "retry after 3600 s")
    assert "dockwright login" in proc.stderr and "mirror" in proc.stderr
    assert rule.hits == 1  # no point in retrying sooner than asked
    assert_nothing_pushed(proxy.upstream)


# ---------------------------------------------------------------------------------------------- broken downloads


@pytest.mark.parametrize("fault", ["reset", "truncate"])
def test_broken_blob_download_resumes_with_range_and_verifies(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path, fault: str,
) -> None:
    # an archive output downloads the base layers (a push would only mount them)
    layer = _largest_layer(busybox_base)
    rule = getattr(proxy, fault)("GET", rf"/blobs/{layer}", after=200_000)
    archive = tmp_path / "out" / "app.tar"
    archive.parent.mkdir()

    build(dockwright, proxy.host, tmp_path, "-o", f"type=oci,dest={archive}")

    assert rule.hits == 1
    _broken, again = proxy.seen("GET", f"/blobs/{layer}")
    resumed_at = int(again.headers.get("range", "bytes=0-")[len("bytes="):-1])
    assert 0 < resumed_at <= 200_000 and again.status == 206  # a reset loses what was in flight
    assert leftovers(archive.parent) == ["app.tar"]
    layout = pull_to_layout(f"oci-archive:{archive}", tmp_path / "from-archive", "app")  # verifies every digest
    assert run_oci_image(layout, "app", tmp_path, ["/bin/busybox", "echo", "ok"]) == "ok\n"


def _largest_layer(base: BusyboxBase) -> str:
    import json

    manifest = json.loads(sh("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{base.docker_ref}"))
    return max(manifest["layers"], key=lambda layer: layer["size"])["digest"]


def test_wrong_bytes_in_a_blob_fail_with_digest_mismatch_and_leave_no_file(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path,
) -> None:
    layer = _largest_layer(busybox_base)
    rule = proxy.corrupt("GET", rf"/blobs/{layer}", after=5000, times=None)
    out = tmp_path / "out"
    out.mkdir()

    proc = build(dockwright, proxy.host, tmp_path, "-o", f"type=oci,dest={out / 'app.tar'}", check=False)

    assert_user_error(proc, layer, "content digest is")
    assert rule.hits >= 1
    assert leftovers(out) == []
    assert_nothing_pushed(proxy.upstream)


@pytest.mark.parametrize(
    ("method", "path", "needle"),
    [
        ("GET", r"/base/busybox/manifests/docker", "Docker-Content-Digest"),
        ("PUT", r"/apps/hello/blobs/uploads/", "the registry stored sha256:0000"),
    ],
    ids=["manifest-get", "blob-put"],
)
def test_a_false_docker_content_digest_is_an_error(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path,
    method: str, path: str, needle: str,
) -> None:
    rule = proxy.false_digest(method, path)

    proc = build(dockwright, proxy.host, tmp_path, check=False)

    assert_user_error(proc, needle)
    assert rule.hits == 1
    assert_nothing_pushed(proxy.upstream)


# ---------------------------------------------------------------------------------------------- auth and redirects


@pytest.fixture
def token_proxy(token_registry: RegistryServer, busybox_files: BusyboxBase,
                docker_config: DockerConfig) -> Iterator[FaultProxy]:
    """A proxy in front of the bearer-token registry (busybox seeded), logged in as its user."""
    busybox_files.seed(token_registry)
    server = FaultProxy(token_registry)
    docker_config.login(server.host, token_registry.username, token_registry.password)
    try:
        yield server
    finally:
        server.close()


def test_401_mid_push_refreshes_the_token_once(dockwright: RunDockwright, token_proxy: FaultProxy,
                                               tmp_path: Path) -> None:
    rule = token_proxy.unauthorized("PUT", r"/apps/hello/manifests/1$")
    tokens = token_proxy.upstream.token_server
    assert tokens is not None

    proc = build(dockwright, token_proxy.host, tmp_path)

    assert rule.hits == 1
    after = tokens.token_requests[rule.tokens_before:]
    assert [r["scopes"] for r in after] == [[f"repository:{APP}:pull,push"]]
    assert after[0]["account"] == token_proxy.upstream.username
    creds = f"{token_proxy.upstream.username}:{token_proxy.upstream.password}"
    [(_, digest)] = digest_lines(proc.stdout)
    pull_to_layout(f"{token_proxy.upstream.host}/{APP}@{digest}", tmp_path / "pulled", creds=creds)


def test_blob_redirect_to_another_host_is_followed_without_authorization(
    dockwright: RunDockwright, token_proxy: FaultProxy, tmp_path: Path,
) -> None:
    rule = token_proxy.redirect("GET", r"/blobs/sha256:")
    archive = tmp_path / "app.tar"

    build(dockwright, token_proxy.host, tmp_path, "-o", f"type=oci,dest={archive}")

    blob_server = token_proxy.blob_server
    assert blob_server is not None and rule.hits >= 3  # the config and both base layers
    assert len(blob_server.paths) == rule.hits
    assert blob_server.authorizations == [None] * rule.hits
    redirected = [s for s in token_proxy.requests if s.rule == "redirect"]
    assert all(s.headers.get("authorization", "").startswith("Bearer ") for s in redirected)
    layout = pull_to_layout(f"oci-archive:{archive}", tmp_path / "from-archive", "app")
    assert run_oci_image(layout, "app", tmp_path, ["/bin/busybox", "echo", "ok"]) == "ok\n"


# ---------------------------------------------------------------------------------------------- slow registries


def test_a_slow_response_within_the_timeout_is_waited_for(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path,
) -> None:
    rule = proxy.delay("GET", r"/base/busybox/manifests/docker", 2.0)

    proc = build(dockwright, proxy.host, tmp_path, env={"DOCKWRIGHT_HTTP_TIMEOUT": "10"})

    assert rule.hits == 1
    assert len(proxy.seen("GET", "/base/busybox/manifests/docker")) == 1  # waited, did not give up
    assert_pushed(proc, proxy.upstream, tmp_path)


def test_a_hanging_registry_times_out_after_bounded_retries(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path,
) -> None:
    rule = proxy.delay("GET", r"/base/busybox/manifests/docker", 30.0, times=None)

    proc = build(dockwright, proxy.host, tmp_path, check=False, env={"DOCKWRIGHT_HTTP_TIMEOUT": "1"})

    assert_user_error(proc, proxy.host, "base/busybox", "timed out")
    assert rule.hits == 4
    assert_nothing_pushed(proxy.upstream)


# ---------------------------------------------------------------------------------------------- uploads


@pytest.mark.requires("runc")
def test_a_declined_mount_falls_back_to_an_upload(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path,
) -> None:
    rule = proxy.decline_mounts()

    proc = build(dockwright, proxy.host, tmp_path)

    assert rule.hits == 2  # both base layers
    assert all(s.status == 202 for s in proxy.seen("POST", "mount="))
    assert len(proxy.seen("DELETE", "/apps/hello/blobs/uploads/")) == 2  # the unwanted sessions, cancelled
    assert len(proxy.seen("PUT", "/apps/hello/blobs/uploads/")) == 4  # 2 base layers + app layer + config
    layout = assert_pushed(proc, proxy.upstream, tmp_path)
    assert run_oci_image(layout, "app", tmp_path) == (
        "greeting=through faults\nuid=0 gid=0\npwd=/\nargs=faults\n"
    )


@pytest.mark.parametrize("form", ["relative", "absolute"])
def test_relative_and_absolute_upload_locations_both_work(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path, form: str,
) -> None:
    proxy.locations(form)

    proc = build(dockwright, proxy.host, tmp_path)

    locations = [s.location for s in proxy.seen("POST", "/blobs/uploads/") if s.status == 202]
    assert locations
    if form == "relative":
        assert all(loc and loc.startswith("/v2/") for loc in locations)
    else:
        assert all(loc and loc.startswith(f"http://{proxy.host}/v2/") for loc in locations)
    assert proxy.seen("PATCH") and all(s.status == 202 for s in proxy.seen("PATCH"))
    assert_pushed(proc, proxy.upstream, tmp_path)


# ------------------------------------------------------------------------ registries that bend uploads


def test_a_patch_answered_201_as_ecr_does_still_pushes(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path,
) -> None:
    rule = proxy.restatus("PATCH", r"/blobs/uploads/", 201)

    proc = build(dockwright, proxy.host, tmp_path)

    assert rule.hits >= 2  # the app layer and the config
    assert [s.status for s in proxy.seen("PATCH")] == [201] * rule.hits
    run_oci_image(assert_pushed(proc, proxy.upstream, tmp_path), "app", tmp_path / "bundle")


def _big_app(tmp_path: Path) -> None:
    """The app plus 20 MiB that do not compress: its layer takes two 16 MiB chunks."""
    make_app(tmp_path / "context")
    (tmp_path / "context" / "app" / "blob.bin").write_bytes(random.Random(12).randbytes(20 << 20))


def test_a_range_that_stops_advancing_in_a_chunked_upload_falls_back_to_one_put(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path,
) -> None:
    _big_app(tmp_path)
    proxy.fail("PATCH", r"/blobs/uploads/", 416, times=None, header="!content-range")  # chunks only, please
    stall = proxy.stall_range(passed=1)

    proc = build(dockwright, proxy.host, tmp_path, "--jobs", "1")

    assert_pushed(proc, proxy.upstream, tmp_path)
    stalled = [s for s in proxy.seen("PATCH") if s.rule == "stall-range"]
    assert stall.hits >= 2 and stalled[0].headers["content-range"].startswith(f"{16 << 20}-")
    whole = [s for s in proxy.seen("PUT", "/blobs/uploads/") if s.headers.get("content-length", "0") != "0"]
    assert len(whole) == stall.hits and all(s.status == 201 for s in whole)


def test_a_stalled_upload_whose_monolithic_put_fails_says_what_the_registry_did(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path,
) -> None:
    _big_app(tmp_path)
    proxy.fail("PATCH", r"/blobs/uploads/", 416, times=None, header="!content-range")
    proxy.stall_range(passed=1)
    proxy.fail("PUT", r"/blobs/uploads/", 413, times=None)

    proc = build(dockwright, proxy.host, tmp_path, "--jobs", "1", check=False)

    assert_user_error(proc, f"did not keep bytes {16 << 20}-", f"Range header said '0-{(16 << 20) - 1}'",
                      "monolithic upload after it failed", "HTTP 413", f"{proxy.host}/{APP}")
    assert_nothing_pushed(proxy.upstream)
