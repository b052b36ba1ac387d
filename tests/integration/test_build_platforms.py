"""`dockwright build --platform` onto a two-platform base (OCI index linux/amd64 + linux/arm64/v8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from build_checks import (
    EPOCH_ENV,
    OCI_INDEX,
    OCI_MANIFEST,
    assert_user_error,
    cache_args,
    digest_lines,
    image_config,
    make_app,
    raw_manifest,
    requests,
    tag_exists,
)
from conftest import RunDockwright
from images import BusyboxBase, pull_to_layout, run_oci_image
from servers import RegistryServer
from validate import validate_registry

BOTH = [("linux", "amd64", None), ("linux", "arm64", "v8")]


def _platforms(index: dict) -> list[tuple[str, str, str | None]]:
    return sorted((m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant"))
                  for m in index["manifests"])


def _build(dockwright: RunDockwright, tmp_path: Path, base: str, tag: str, platform: str, *, check: bool = True):
    context = make_app(tmp_path / "context")
    return dockwright(
        "build", context, "--from", base, "--platform", platform, "--copy", "app:/app",
        "--cmd", '["/app/hello.sh"]', "--env", "GREETING=multi", "-t", tag, "--push", *cache_args(tmp_path),
        "--metadata-file", tmp_path / "metadata.json", env=EPOCH_ENV, check=check,
    )  # fmt: skip


@pytest.mark.parametrize("platform", ["linux/amd64,linux/arm64", "all"])
def test_two_platforms_push_an_index(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path, platform: str
) -> None:
    tag = f"{busybox_base.host}/apps/multi:1"

    ((ref, digest),) = digest_lines(_build(dockwright, tmp_path, busybox_base.multi_ref, tag, platform).stdout)

    assert ref == tag
    index = raw_manifest(tag)
    assert index["mediaType"] == OCI_INDEX
    assert raw_manifest(f"{busybox_base.host}/apps/multi@{digest}") == index
    assert _platforms(index) == BOTH
    assert {m["mediaType"] for m in index["manifests"]} == {OCI_MANIFEST}
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    assert (metadata["digest"], metadata["media_type"], metadata["pushed"]) == (digest, OCI_INDEX, [f"{tag}@{digest}"])
    assert sorted(metadata["platforms"]) == ["linux/amd64", "linux/arm64/v8"]
    assert {m["digest"] for m in metadata["manifests"]} == {m["digest"] for m in index["manifests"]}
    for arch, variant in (("amd64", None), ("arm64", "v8")):
        config = image_config(tag, "--override-arch", arch, *(["--override-variant", variant] if variant else []))
        assert (config["architecture"], config.get("variant")) == (arch, variant)
        assert "GREETING=multi" in config["config"]["Env"]
        assert len(config["rootfs"]["diff_ids"]) == 3
    checked = validate_registry(f"http://{busybox_base.host}", "apps/multi", "1").images
    assert checked == {m["digest"].removeprefix("sha256:"): 3 for m in index["manifests"]}


@pytest.mark.requires("runc")
def test_the_host_platform_of_the_index_runs(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    tag = f"{busybox_base.host}/apps/multi:run"
    _build(dockwright, tmp_path, busybox_base.multi_ref, tag, "linux/amd64,linux/arm64/v8")

    layout = pull_to_layout(tag, tmp_path / "pulled", "app")  # skopeo picks the host's (amd64) image
    assert run_oci_image(layout, "app", tmp_path).splitlines()[0] == "greeting=multi"


def test_missing_platform_lists_the_bases_platforms_and_pushes_nothing(
    dockwright: RunDockwright, busybox_base: BusyboxBase, registry: RegistryServer, tmp_path: Path
) -> None:
    proc = _build(dockwright, tmp_path, busybox_base.multi_ref, f"{registry.host}/apps/nope:1", "linux/s390x",
                  check=False)

    assert_user_error(proc, "linux/s390x", "linux/amd64", "linux/arm64/v8", busybox_base.multi_ref)
    assert not (tmp_path / "metadata.json").exists()
    assert not tag_exists(registry, "apps/nope")
    assert requests(registry, "PUT", "/v2/apps/") == requests(registry, "POST", "/v2/apps/") == []
