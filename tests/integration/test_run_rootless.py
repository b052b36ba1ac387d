"""Rootless RUN: an unprivileged user (made for the session, with subordinate ids) builds the same
Dockerfile as root, through a user namespace of its own; the images must hold the same files (owners,
modes, whiteouts) and config. Without subordinate ids (root asking for --isolation rootless maps only
its own id) a chown to another id fails, as the README says."""

from __future__ import annotations

from pathlib import Path

import pytest
from build_checks import EPOCH_ENV
from conftest import RunDockwright
from debian import DebianBase
from dockerfile_compare import dockerfile_config, file_tree, read_config, tree_differences
from images import BusyboxBase, pull_to_layout, run_oci_image
from rootless import Unprivileged

pytestmark = pytest.mark.requires("runc", "umoci", "skopeo", "docker-registry", "newuidmap", "newgidmap")

DOCKERFILE = """\
FROM {base}
RUN echo dev:x:2001:2000:dev:/home/dev:/bin/sh >> /etc/passwd && echo team:x:2000: >> /etc/group \\
    && mkdir -p /home/dev /srv/data && chown 2001:2000 /home/dev && chown 65000:65001 /srv/data \\
    && cp /bin/busybox /srv/tool && chgrp 2000 /srv/tool && chmod 4750 /srv/tool \\
    && ln /srv/tool /srv/tool-link && rm /bin/vi && rm -rf /home/app && mkdir -m 1777 /srv/shared
USER dev
WORKDIR /home/dev/work
RUN id -u > uid && echo made by dev > note && touch /srv/shared/by-dev
USER root
RUN rm -r /srv/data && mkdir /srv/data && echo replaced > /srv/data/file
"""


def _build(run: object, context: Path, layout: Path, cache: Path, *extra: str) -> None:
    run("build", context, "-t", "rootless:1", "-o", f"type=oci,dest={layout},tar=false", "--cache-dir", cache,
        *extra, env=EPOCH_ENV)  # type: ignore[operator]


def test_rootless_build_makes_the_files_root_makes(dockwright: RunDockwright, unprivileged: Unprivileged,
                                                   busybox_base: BusyboxBase, tmp_path: Path) -> None:
    assert unprivileged.subids("uid") and unprivileged.subids("gid")
    work = unprivileged.workdir()
    context = work / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=busybox_base.oci_ref))
    unprivileged.give(context)

    _build(dockwright, context, tmp_path / "root-layout", tmp_path / "root-cache")
    _build(unprivileged.dockwright, context, work / "layout", work / "cache")

    assert dockerfile_config(read_config(work / "layout", "1")) == dockerfile_config(
        read_config(tmp_path / "root-layout", "1"))
    ours = file_tree(work / "layout", "1", tmp_path)
    assert ours["/srv/data"].owner == "0:0" and ours["/srv/tool"].mode == "0o4750"
    assert "/bin/vi" not in ours and "/home/app" not in ours
    assert tree_differences(ours, file_tree(tmp_path / "root-layout", "1", tmp_path)) == []


@pytest.mark.requires("debootstrap")
def test_rootless_apt_get_install(unprivileged: Unprivileged, debian: DebianBase, tmp_path: Path) -> None:
    """apt-get drops to its _apt user (uid 42) to download: a subordinate id in the namespace."""
    work = unprivileged.workdir()
    context = work / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {debian.ref}\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends hello && rm -rf /var/lib/apt/lists/*\n"
        'CMD ["hello", "--greeting=hello from a rootless build"]\n')
    unprivileged.give(context)
    ref = f"{debian.host}/apps/rootless-apt:1"
    unprivileged.dockwright("build", context, "-t", ref, "--push", "--cache-dir", work / "cache", env=EPOCH_ENV)
    layout = pull_to_layout(ref, tmp_path / "pulled", "app")
    assert run_oci_image(layout, "app", tmp_path).splitlines() == ["hello from a rootless build"]


def test_rootless_without_subordinate_ids_maps_one_id(dockwright: RunDockwright, busybox_base: BusyboxBase,
                                                      tmp_path: Path) -> None:
    """root has no /etc/subuid range here: --isolation rootless maps only its own id; files it makes are
    fine, a chown to another id is not."""
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {busybox_base.oci_ref}\nRUN mkdir /made && echo ok > /made/f\n")
    _build(dockwright, context, tmp_path / "layout", tmp_path / "cache", "--isolation", "rootless")
    tree = file_tree(tmp_path / "layout", "1", tmp_path)
    assert tree["/made/f"].owner == "0:0" and tree["/home/app"].owner == "1000:1000"  # base layers stay as they are

    (context / "Dockerfile").write_text(f"FROM {busybox_base.oci_ref}\nRUN touch /x && chown 5:5 /x\n")
    proc = dockwright("build", context, "-t", "rootless:2", "-o", f"type=oci,dest={tmp_path / 'l2'},tar=false",
                      "--cache-dir", tmp_path / "cache", "--isolation", "rootless", check=False)
    assert proc.returncode != 0
    assert "maps only uid 0" in proc.stderr
    assert "Dockerfile:2: RUN touch /x && chown 5:5 /x: exit code 1" in proc.stderr
