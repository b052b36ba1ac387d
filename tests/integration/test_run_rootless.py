"""Rootless RUN: an unprivileged user (made for the session, with subordinate ids) builds the same
Dockerfile as root, through a user namespace of its own; the images must hold the same files (owners,
modes, whiteouts) and config. Without subordinate ids (root asking for --isolation rootless maps only
its own id) a chown to another id fails, as the README says."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from build_checks import EPOCH_ENV, assert_user_error, hint_of, run_pushed
from conftest import RunDockwright
from debian import DebianBase
from dockerfile_compare import dockerfile_config, file_tree, read_config, tree_differences
from images import BusyboxBase, run_oci_image
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


def _build(run: object, context: Path, layout: Path, cache: Path, *extra: str,
           env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("build", context, "-t", "rootless:1", "-o", f"type=oci,dest={layout},tar=false",  # type: ignore[operator]
               "--cache-dir", cache, *extra, env={**EPOCH_ENV, **(env or {})}, check=check)


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
    assert run_pushed(ref, tmp_path) == ["hello from a rootless build"]


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
    assert_user_error(proc, "Dockerfile:2: RUN touch /x && chown 5:5 /x: exit code 1")  # the one error line


def _manifest_digest(layout: Path) -> str:
    return json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]


def _layer_differences(layout: Path, other: Path) -> list[str]:
    """The tar members that differ between the layers of two layouts' images (what a failure shows)."""
    lines = []
    for one, two in zip(_layer_members(layout), _layer_members(other), strict=True):
        lines += [f"{layout.name}: {member}" for member in one if member not in two]
        lines += [f"{other.name}: {member}" for member in two if member not in one]
    return lines


def _layer_members(layout: Path) -> list[list[tuple[object, ...]]]:
    manifest = json.loads((layout / "blobs/sha256" / _manifest_digest(layout)[7:]).read_text())
    layers = []
    for layer in manifest["layers"]:
        with tarfile.open(layout / "blobs/sha256" / layer["digest"][7:]) as archive:
            layers.append([(m.name, oct(m.mode), m.uid, m.gid, m.mtime, m.type, m.linkname, m.size,
                            sorted(m.pax_headers.items())) for m in archive])
    return layers


def _fuse_daemons() -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines() if "fuse-overlayfs" in line] + [
        pid for pid in os.listdir("/proc") if pid.isdigit() and _comm(pid) == "fuse-overlayfs"]


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@pytest.mark.requires("fuse-overlayfs")
@pytest.mark.parametrize("who", ["unprivileged", "root"])
def test_fuse_overlayfs_makes_the_layers_the_kernel_overlay_makes(
        who: str, dockwright: RunDockwright, unprivileged: Unprivileged, busybox_base: BusyboxBase,
        tmp_path: Path) -> None:
    """DOCKWRIGHT_OVERLAY=fuse (what happens by itself where the kernel's overlayfs cannot be mounted):
    whiteouts, opaque directories, owners of other ids, a read-only RUN --mount and copied-up parent
    directories give the same image, digest for digest; no mount and no daemon is left."""
    work = unprivileged.workdir()
    context = work / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=busybox_base.oci_ref) + (
        f"RUN --mount=type=bind,from={busybox_base.oci_ref},target=/base cp /base/bin/busybox /usr/bin/copied\n"
        "RUN echo changed >> /etc/passwd && rm -r /srv/shared && mkdir -p /usr/share/new/deep\n"))
    unprivileged.give(context)
    run = unprivileged.dockwright if who == "unprivileged" else dockwright
    where = work if who == "unprivileged" else tmp_path
    _build(run, context, where / "kernel", where / "kernel-cache")
    assert not _fuse_daemons()
    with unprivileged.fuse_device():
        proc = _build(run, context, where / "fuse", where / "fuse-cache", env={"DOCKWRIGHT_OVERLAY": "fuse"})
    assert "RUN uses fuse-overlayfs" in proc.stderr
    assert not _fuse_daemons()
    assert _manifest_digest(where / "fuse") == _manifest_digest(where / "kernel"), _layer_differences(
        where / "kernel", where / "fuse")
    tree = file_tree(where / "fuse", "1", tmp_path)
    assert "/bin/vi" not in tree and "/srv/shared" not in tree and tree["/srv/data/file"].owner == "0:0"
    assert tree["/home/dev"].owner == "2001:2000" and tree["/usr/bin/copied"].mode == "0o755"


@pytest.mark.requires("fuse-overlayfs")
def test_fuse_overlayfs_without_dev_fuse_says_what_to_do(unprivileged: Unprivileged, busybox_base: BusyboxBase,
                                                         tmp_path: Path) -> None:
    """/dev/fuse is 0600 here (no udev): the user cannot open it, and the one error line says so."""
    if os.stat("/dev/fuse").st_mode & 0o006 == 0o006:
        pytest.skip("/dev/fuse is open to every user here")
    work = unprivileged.workdir()
    context = work / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {busybox_base.oci_ref}\nRUN true\n")
    unprivileged.give(context)
    proc = _build(unprivileged.dockwright, context, work / "layout", work / "cache", check=False,
                  env={"DOCKWRIGHT_OVERLAY": "fuse"})
    assert_user_error(proc, "Dockerfile:2:", "fuse-overlayfs", "/dev/fuse: Permission denied")
    assert "chmod 666 /dev/fuse" in proc.stderr
    hint = hint_of(proc)
    assert "chmod 666 /dev/fuse" in hint and "--device /dev/fuse" in hint, hint
    assert not _fuse_daemons()


LIBRARY_PROGRAM = """\
import json, sys
import dockwright
from dockwright.plan import Secret

context, layout, cache = sys.argv[1:4]
image = dockwright.build(context, cache_dir=cache, secrets=[Secret("token", env="TOKEN")])
dockwright.save(image, layout, tags=["rootless:1"], tar=False)
"""


def test_the_library_builds_rootless_as_the_command_does(unprivileged: Unprivileged, busybox_base: BusyboxBase,
                                                          tmp_path: Path) -> None:
    """dockwright.build() in a program of a user who is not root: each RUN runs in a child in a user
    namespace (run/worker.py). The image is the command's rootless build, digest for digest (owners of
    other ids, whiteouts, opaque directories, a bind mount of an image, a cache mount, a secret), and runs."""
    work = unprivileged.workdir()
    context = work / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=busybox_base.oci_ref) + (
        f"RUN --mount=type=bind,from={busybox_base.oci_ref},target=/base cp /base/bin/busybox /usr/bin/copied\n"
        "RUN --mount=type=cache,target=/cache,uid=2001 --mount=type=secret,id=token,required=true "
        "echo cached >> /cache/log && wc -c < /run/secrets/token > /srv/token-size\n"
        'CMD ["cat", "/home/dev/work/note", "/srv/token-size"]\n'))
    unprivileged.give(context)
    (work / "build.py").write_text(LIBRARY_PROGRAM)
    unprivileged.give(work / "build.py")
    secret = {**EPOCH_ENV, "TOKEN": "s3cret-value"}

    unprivileged.dockwright("build", context, "-t", "rootless:1", "-o", f"type=oci,dest={work / 'cli'},tar=false",
                            "--cache-dir", work / "cli-cache", "--secret", "id=token,env=TOKEN", env=secret)
    proc = unprivileged.run(unprivileged.python, work / "build.py", context, work / "library", work / "lib-cache",
                            env=secret)
    assert "s3cret-value" not in proc.stdout + proc.stderr
    assert _manifest_digest(work / "library") == _manifest_digest(work / "cli"), _layer_differences(
        work / "cli", work / "library")
    assert run_oci_image(work / "library", "1", tmp_path).splitlines() == ["made by dev", "12"]
    assert not [p for p in (work / "lib-cache").glob("**/tmp-*")]  # no temporary directory left
