"""Several outputs are all or nothing: a file output appears only when every output, the push included,
succeeded (issue 12 item 3)."""

from __future__ import annotations

from pathlib import Path

from build_checks import EPOCH_ENV, assert_user_error, cache_args, make_app, tag_exists
from conftest import RunDockwright
from faultproxy import FaultProxy
from images import BusyboxBase


def test_a_failed_push_leaves_no_archive_and_no_layout(
    dockwright: RunDockwright, busybox_base: BusyboxBase, proxy: FaultProxy, tmp_path: Path
) -> None:
    context = make_app(tmp_path / "context")
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.tar").write_text("an older archive stays as it was\n")
    proxy.fail("PUT", r"/manifests/1$", 503, times=None)
    base = busybox_base.oci_ref.replace(busybox_base.host, proxy.host)

    proc = dockwright("build", context, "--from", base, "--copy", "app:/app", "-t", f"{proxy.host}/app/aon:1",
                      "--push", "-o", f"type=oci,dest={out / 'app.oci.tar'}",
                      "-o", f"type=docker,dest={out / 'kept.tar'}", "-o", f"type=oci,dest={out / 'layout'},tar=false",
                      *cache_args(tmp_path), env=EPOCH_ENV,
                      check=False)

    assert_user_error(proc, "HTTP 503")
    assert sorted(p.name for p in out.iterdir()) == ["kept.tar"]  # no new file, no temporary file, no layout
    assert (out / "kept.tar").read_text() == "an older archive stays as it was\n"
    assert not tag_exists(proxy.upstream, "app/aon")


def test_when_every_output_succeeds_all_of_them_are_there(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    context = make_app(tmp_path / "context")
    out = tmp_path / "out"
    proc = dockwright("build", context, "--from", busybox_base.oci_ref, "--copy", "app:/app",
                      "-t", f"{busybox_base.host}/app/aon:1", "--push", "-o", f"type=oci,dest={out}.tar",
                      "-o", f"type=oci,dest={out},tar=false", *cache_args(tmp_path), env=EPOCH_ENV)
    assert proc.stdout.startswith(f"{busybox_base.host}/app/aon:1@sha256:")
    assert (tmp_path / "out.tar").is_file()
    assert (out / "index.json").is_file()
