"""A real Debian base image for RUN tests: `debootstrap --variant=minbase` from the mirror apt is
configured with here, made into a one-layer OCI image with umoci (Env PATH, Cmd bash, as the
official image has them).

debootstrap takes minutes, so the finished OCI layout is cached outside the repository, under
`${XDG_CACHE_HOME:-~/.cache}/dockwright-tests/`, keyed by suite, mirror and architecture: a second
run (CI's next job on this machine, a local rerun) only copies it into the registry. A file lock
keeps concurrent test sessions from bootstrapping twice; the layout is renamed into place only once
complete. `DOCKWRIGHT_TEST_DEBIAN_MIRROR` overrides the mirror.

As the official image (debuerreotype) does, /dev, /proc and /sys are left empty (the runtime
mounts them) and apt's package lists are removed: a Dockerfile runs `apt-get update` first.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from images import BASE_PATH_ENV, sh
from servers import RegistryServer

SUITE = "bookworm"
TAG = "latest"
_SOURCES = Path("/etc/apt")
_DEBOOTSTRAP_TIMEOUT = 1800  # a guard against a stalled mirror, not an assertion


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dockwright-tests"


def apt_mirror(suite: str = SUITE) -> str:
    """The Debian mirror apt uses here for `suite` (deb822 .sources or one-line .list files)."""
    override = os.environ.get("DOCKWRIGHT_TEST_DEBIAN_MIRROR")
    if override:
        return override.rstrip("/")
    files = [_SOURCES / "sources.list", *sorted((_SOURCES / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for uri in _deb822_uris(text, suite) if path.suffix == ".sources" else _one_line_uris(text, suite):
            return uri.rstrip("/")
    return "http://deb.debian.org/debian"


def _deb822_uris(text: str, suite: str) -> list[str]:
    uris = []
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(
            (m[1].lower(), m[2].strip()) for m in re.finditer(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE)
        )
        if "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split():
            uris += fields.get("uris", "").split()
    return uris


def _one_line_uris(text: str, suite: str) -> list[str]:
    uris = []
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
            uris.append(words[1])
    return uris


def _host_arch() -> str:
    return sh("dpkg", "--print-architecture").strip()


@dataclass(frozen=True)
class DebianBase:
    """The Debian base: an OCI layout (tag `latest`), the mirror its apt points at, and, once
    seeded, its reference `HOST/base/debian:bookworm` in a registry."""

    layout: Path
    mirror: str
    host: str = ""
    repository: str = "base/debian"

    @property
    def ref(self) -> str:
        return f"{self.host}/{self.repository}:{SUITE}"

    def seed(self, registry: RegistryServer) -> DebianBase:
        creds = ["--dest-creds", f"{registry.username}:{registry.password}"] if registry.username else []
        seeded = DebianBase(self.layout, self.mirror, registry.host, self.repository)
        sh("skopeo", "copy", "--dest-tls-verify=false", *creds, "--format", "oci",
           f"oci:{self.layout}:{TAG}", f"docker://{seeded.ref}")  # fmt: skip
        return seeded


def debian_base() -> DebianBase:
    """The cached Debian layout, bootstrapped first if this machine has none yet."""
    mirror = apt_mirror()
    arch = _host_arch()
    key = hashlib.sha256(f"{SUITE} {mirror} {arch} minbase".encode()).hexdigest()[:16]
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    layout = root / f"debian-{SUITE}-{arch}-{key}"
    with open(root / f"{layout.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be bootstrapping right now
        if not (layout / "index.json").is_file():
            _bootstrap(layout, mirror)
    return DebianBase(layout, mirror)


def _bootstrap(layout: Path, mirror: str) -> None:
    """debootstrap into an umoci bundle and repack it as the image's only layer; rename into place."""
    work = layout.with_name(layout.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        staging = work / "oci"
        bundle = work / "bundle"
        image = f"{staging}:{TAG}"
        sh("umoci", "init", "--layout", staging)
        sh("umoci", "new", "--image", image)
        sh("umoci", "unpack", "--image", image, bundle)
        rootfs = bundle / "rootfs"
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", SUITE, str(rootfs), mirror],
            capture_output=True, text=True, timeout=_DEBOOTSTRAP_TIMEOUT, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise AssertionError(f"debootstrap {SUITE} from {mirror} failed:\n{proc.stdout[-3000:]}\n{proc.stderr}")
        _trim(rootfs)
        sh("umoci", "repack", "--history.created_by", f"debootstrap --variant=minbase {SUITE} {mirror}",
           "--image", image, bundle)  # fmt: skip
        sh("umoci", "config", "--image", image, "--history.created_by", "base config",
           "--config.env", BASE_PATH_ENV, "--config.cmd", "bash")  # fmt: skip
        sh("umoci", "gc", "--layout", staging)
        staging.rename(layout)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _trim(rootfs: Path) -> None:
    """What debuerreotype leaves out of the official image: device nodes and other contents of the
    runtime's mount points, apt's package lists and caches, the bootstrap's host files."""
    for directory in ("dev", "proc", "sys", "tmp"):
        for child in (rootfs / directory).iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb"):
        for path in rootfs.glob(pattern):
            if path.is_file():
                path.unlink()
    for name in ("etc/hostname", "etc/resolv.conf"):
        (rootfs / name).unlink(missing_ok=True)
