"""Real images and real runtimes for integration tests.

- `build_busybox_layout`: a tiny but real two-layer base image (Debian's busybox-static) made with
  umoci, plus an OCI image index (linux/amd64 + linux/arm64/v8) in the same OCI layout.
- `BusyboxBase.seed`: push it to a registry with skopeo as Docker schema 2, OCI, and OCI index.
- `cross_layer_link_layout`: a copy of that layout with a hard link to a file of a layer below.
- `run_oci_image`: unpack with umoci and run with runc; returns what the container printed.
- `Podman`: podman on the vfs driver with its own state directory (load, images, Engine API).

runc: as root in this sandbox (cgroup v1, no systemd) `runc run --no-pivot` works with the config
umoci generates; only `process.terminal` must be false (no TTY here). `--no-pivot` is needed because
the root filesystem is not a mount point that pivot_root accepts.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from servers import RegistryServer

BUSYBOX = Path("/bin/busybox")
BASE_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_LABEL = ("base", "busybox")
APP_UID = 1000
_TIMEOUT = 300  # a guard against hangs, not an assertion
_SKOPEO_TRANSPORTS = ("docker://", "docker-archive:", "oci:", "oci-archive:", "dir:")


def sh(*args: str | Path) -> str:
    """Run a tool; on failure raise with its command line and both output streams."""
    cmd = [str(a) for a in args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited with {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return proc.stdout


# ---------------------------------------------------------------------------------------------
# The busybox base image


def _write_layer_one(rootfs: Path) -> None:
    """busybox and its applets as absolute symlinks, like the official busybox image."""
    (rootfs / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin/busybox")
    for applet in sh(BUSYBOX, "--list-full").split():
        target = rootfs / applet
        if target.exists() or target.is_symlink():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to("/bin/busybox")


def _write_layer_two(rootfs: Path) -> None:
    """Users, groups, /tmp and a home directory owned by the unprivileged `app` user."""
    etc = rootfs / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        f"app:x:{APP_UID}:{APP_UID}:app:/home/app:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (etc / "group").write_text(f"root:x:0:\napp:x:{APP_UID}:\nnogroup:x:65534:\n")
    for directory, mode in (("tmp", 0o1777), ("root", 0o700), ("home/app", 0o755)):
        path = rootfs / directory
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
    os.chown(rootfs / "home/app", APP_UID, APP_UID)


def _blob_path(layout: Path, digest: str) -> Path:
    algorithm, _, hex_ = digest.partition(":")
    return layout / "blobs" / algorithm / hex_


def _read_json_blob(layout: Path, digest: str) -> dict[str, Any]:
    return json.loads(_blob_path(layout, digest).read_bytes())


def _write_json_blob(layout: Path, document: dict[str, Any], media_type: str) -> dict[str, Any]:
    data = json.dumps(document, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _blob_path(layout, digest).write_bytes(data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def _tag_descriptor(layout: Path, tag: str) -> dict[str, Any]:
    index = json.loads((layout / "index.json").read_text())
    for descriptor in index["manifests"]:
        if descriptor.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return descriptor
    raise KeyError(f"tag {tag!r} not in {layout}")


def _add_index(layout: Path, tag: str) -> None:
    """Write `tag` as an OCI index of the `latest` image (linux/amd64) and an arm64/v8 twin
    (same layers, config architecture arm64 variant v8): a real multi-platform layout."""
    amd64 = _tag_descriptor(layout, "latest")
    manifest = _read_json_blob(layout, amd64["digest"])
    config = _read_json_blob(layout, manifest["config"]["digest"])
    arm_config = {**config, "architecture": "arm64", "variant": "v8"}
    arm_manifest = {
        **manifest,
        "config": _write_json_blob(layout, arm_config, manifest["config"]["mediaType"]),
    }
    arm = _write_json_blob(layout, arm_manifest, amd64["mediaType"])
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": amd64["mediaType"],
                "digest": amd64["digest"],
                "size": amd64["size"],
                "platform": {"architecture": config["architecture"], "os": config["os"]},
            },
            {**arm, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        ],
    }
    descriptor = _write_json_blob(layout, index, index["mediaType"])
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
    layout_index = json.loads((layout / "index.json").read_text())
    layout_index["manifests"].append(descriptor)
    (layout / "index.json").write_text(json.dumps(layout_index))


def build_busybox_layout(work: Path) -> Path:
    """Build the base image into the OCI layout `work/busybox-oci`: tag `latest` (linux/amd64,
    two layers: busybox; /etc + /tmp + /home/app) and tag `multi` (an index: amd64 + arm64/v8)."""
    layout = work / "busybox-oci"
    bundle = work / "busybox-bundle"
    image = f"{layout}:latest"
    sh("umoci", "init", "--layout", layout)
    sh("umoci", "new", "--image", image)
    for write_layer, created_by in (
        (_write_layer_one, "busybox-static applets"),
        (_write_layer_two, "users, groups, /tmp, /home/app"),
    ):
        sh("umoci", "unpack", "--image", image, bundle)
        write_layer(bundle / "rootfs")
        sh("umoci", "repack", "--history.created_by", created_by, "--image", image, bundle)
        shutil.rmtree(bundle)
    sh(
        "umoci", "config", "--image", image, "--history.created_by", "base config",
        "--config.env", BASE_PATH_ENV, "--config.cmd", "sh", "--config.workingdir", "/",
        "--config.label", "=".join(BASE_LABEL),
    )  # fmt: skip
    sh("umoci", "gc", "--layout", layout)
    _add_index(layout, "multi")
    return layout


def cross_layer_link_layout(busybox_layout: Path, work: Path, tag: str = "cross-link") -> Path:
    """A copy of the busybox layout (in `work`) with tag `tag`: `latest` plus a layer with /data/a ("hello")
    and one holding only /data/b, a hard link to /data/a: a link to a file of a lower layer (tools that
    diff a root file system write such layers; overlay storage drivers cannot extract them, buildah's vfs
    driver can)."""
    layout = work / "cross-link-oci"
    shutil.copytree(busybox_layout, layout)

    def entry(name: str, **fields: Any) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        for key, value in fields.items():
            setattr(info, key, value)
        return info

    def layer(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> tuple[dict[str, Any], str]:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for info, data in members:
                archive.addfile(info, io.BytesIO(data) if data is not None else None)
        blob = gzip.compress(raw.getvalue(), mtime=0)
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        _blob_path(layout, digest).write_bytes(blob)
        descriptor = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest,
                      "size": len(blob)}
        return descriptor, "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()

    latest = _tag_descriptor(layout, "latest")
    manifest = _read_json_blob(layout, latest["digest"])
    config = _read_json_blob(layout, manifest["config"]["digest"])
    for members in ([(entry("data", type=tarfile.DIRTYPE, mode=0o755), None),
                     (entry("data/a", size=6, mode=0o644), b"hello\n")],
                    [(entry("data/b", type=tarfile.LNKTYPE, linkname="data/a", mode=0o644), None)]):
        descriptor, diff_id = layer(members)
        manifest["layers"].append(descriptor)
        config["rootfs"]["diff_ids"].append(diff_id)
        config["history"].append({"created_by": "cross-layer hard link"})
    manifest["config"] = _write_json_blob(layout, config, manifest["config"]["mediaType"])
    descriptor = _write_json_blob(layout, manifest, latest["mediaType"])
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
    index = json.loads((layout / "index.json").read_text())
    index["manifests"].append(descriptor)
    (layout / "index.json").write_text(json.dumps(index))
    return layout


@dataclass(frozen=True)
class BusyboxBase:
    """The busybox base as seeded into a registry and as local files.

    `docker_ref` (schema 2), `oci_ref` (OCI manifest), `multi_ref` (OCI index amd64 + arm64/v8)
    are plain references (`HOST/base/busybox:TAG`); `layout` is an OCI layout with tags `latest`
    and `multi` (`oci-layout://{layout}:latest`); `archive` is a docker-archive of `latest`."""

    layout: Path
    archive: Path
    host: str = ""
    repository: str = "base/busybox"

    @property
    def docker_ref(self) -> str:
        return f"{self.host}/{self.repository}:docker"

    @property
    def oci_ref(self) -> str:
        return f"{self.host}/{self.repository}:oci"

    @property
    def multi_ref(self) -> str:
        return f"{self.host}/{self.repository}:multi"

    def seed(self, registry: RegistryServer, repository: str = "base/busybox") -> BusyboxBase:
        """Push the three tags to `registry` (with its credentials if it has any)."""
        creds = ["--dest-creds", f"{registry.username}:{registry.password}"] if registry.username else []
        seeded = replace(self, host=registry.host, repository=repository)
        copy = ["skopeo", "copy", "--dest-tls-verify=false", *creds]
        sh(*copy, "--format", "v2s2", f"oci:{self.layout}:latest", f"docker://{seeded.docker_ref}")
        sh(*copy, "--format", "oci", f"oci:{self.layout}:latest", f"docker://{seeded.oci_ref}")
        sh(*copy, "--all", f"oci:{self.layout}:multi", f"docker://{seeded.multi_ref}")
        return seeded


def make_busybox_base(work: Path) -> BusyboxBase:
    """Build the layout and its docker-archive (not yet in any registry: use `.seed`)."""
    layout = build_busybox_layout(work)
    archive = work / "busybox-docker.tar"
    sh("skopeo", "copy", f"oci:{layout}:latest", f"docker-archive:{archive}:base/busybox:latest")
    return BusyboxBase(layout=layout, archive=archive)


# ---------------------------------------------------------------------------------------------
# Reading images back and running them


def pull_to_layout(
    ref: str, layout_dir: Path, tag: str = "latest", *, creds: str | None = None, all: bool = False
) -> Path:
    """Copy `ref` (`HOST/REPO:TAG`, or any skopeo transport like `docker-archive:FILE`) into the
    OCI layout `layout_dir` under `tag`. `all` keeps every platform of an index."""
    source = ref if ref.startswith(_SKOPEO_TRANSPORTS) else f"docker://{ref}"
    options = ["--src-tls-verify=false", *(["--src-creds", creds] if creds else [])]
    sh("skopeo", "copy", *options, *(["--all"] if all else []), source, f"oci:{layout_dir}:{tag}")
    return layout_dir


def run_oci_image(layout_dir: Path, tag: str, tmp: Path, args: list[str] | None = None) -> str:
    """Run image `tag` of an OCI layout with runc and return its stdout (stdin is /dev/null).

    The process is the image's Entrypoint + Cmd, as User, in WorkingDir, with Env (umoci turns the
    image config into the runtime spec), or `args` instead of Entrypoint + Cmd."""
    container = f"dw-{uuid.uuid4().hex[:12]}"
    bundle = tmp / container
    sh("umoci", "unpack", "--image", f"{layout_dir}:{tag}", bundle)
    try:
        spec_path = bundle / "config.json"
        spec = json.loads(spec_path.read_text())
        spec["process"]["terminal"] = False
        if args is not None:
            spec["process"]["args"] = args
        spec_path.write_text(json.dumps(spec))
        with open(os.devnull) as devnull:
            proc = subprocess.run(
                ["runc", "run", "--no-pivot", "--bundle", str(bundle), container],
                stdin=devnull,
                capture_output=True,
                text=True,
                timeout=_TIMEOUT,
                check=False,
            )
        if proc.returncode != 0:
            raise AssertionError(
                f"runc run of {layout_dir}:{tag} exited with {proc.returncode}\n"
                f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
            )
        return proc.stdout
    finally:
        subprocess.run(["runc", "delete", "-f", container], capture_output=True, check=False)
        shutil.rmtree(bundle, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# podman


class Podman:
    """podman with the vfs driver (no overlay or fuse needed) and all state in its own directories,
    so tests neither see nor touch the machine's images. Call `close` when done."""

    def __init__(self, state: Path) -> None:
        self.state = state
        # podman refuses a runroot longer than 50 characters and unix socket paths are limited
        # to 108 bytes: both live in a short directory of their own
        self.short = Path(tempfile.mkdtemp(prefix="dw-pod-"))
        self._service: subprocess.Popen[bytes] | None = None

    def command(self, *args: str | Path) -> list[str]:
        return [
            "podman", "--storage-driver", "vfs",
            "--root", str(self.state / "root"), "--runroot", str(self.short / "run"),
            "--tmpdir", str(self.state / "tmp"),
            "--cgroup-manager", "cgroupfs", "--events-backend", "file",
            *(str(a) for a in args),
        ]  # fmt: skip

    def __call__(self, *args: str | Path) -> str:
        """Run a podman command; return stdout; raise with both streams on failure."""
        return sh(*self.command(*args))

    def start_service(self) -> Path:
        """Serve the Docker Engine API (`system service`); return the socket path
        (use `DOCKER_HOST=unix://<path>`). Stopped by `stop_service`."""
        if self._service is not None:
            raise RuntimeError("podman service already running")
        socket = self.short / "engine.sock"
        self.state.mkdir(parents=True, exist_ok=True)
        log = (self.state / "service.log").open("ab")
        self._service = subprocess.Popen(
            self.command("system", "service", "--time=0", f"unix://{socket}"),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 60
        while not socket.exists():
            if self._service.poll() is not None or time.monotonic() > deadline:
                self.stop_service()
                raise RuntimeError(
                    "podman system service did not start:\n"
                    + (self.state / "service.log").read_text(errors="replace")[-3000:]
                )
            time.sleep(0.05)
        return socket

    def stop_service(self) -> None:
        if self._service is not None:
            self._service.terminate()
            try:
                self._service.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._service.kill()
                self._service.wait()
            self._service = None
        (self.short / "engine.sock").unlink(missing_ok=True)

    def close(self) -> None:
        """Stop the service and remove the short-path directory (storage stays under `state`)."""
        self.stop_service()
        shutil.rmtree(self.short, ignore_errors=True)
