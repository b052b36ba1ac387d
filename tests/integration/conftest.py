"""Fixtures for integration tests: real registries (plain, htpasswd, bearer token), a seeded busybox
base image, a DOCKER_CONFIG directory, podman, and the `dockwright` command itself.

Missing tools skip the tests that need them, with the reason; on CI (`CI=true`) they fail instead,
so a broken CI machine cannot pass by skipping everything. `./scripts/test` installs them."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from debian import DebianBase, debian_base
from dockerfile_compare import Buildah
from faultproxy import FaultProxy
from images import BusyboxBase, Podman, make_busybox_base
from rootless import Unprivileged, unprivileged_user
from servers import RegistryServer, start_registry

SRC = Path(__file__).resolve().parents[2] / "src"
DEBIAN_PACKAGES = {
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "umoci": "umoci",
    "runc": "runc",
    "podman": "podman",
    "buildah": "buildah",
    "htpasswd": "apache2-utils",
    "debootstrap": "debootstrap",
    "newuidmap": "uidmap",
    "useradd": "passwd",
    "fuse-overlayfs": "fuse-overlayfs",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires(*tools): skip (fail on CI) unless these programs are installed")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.integration)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("requires"):
        require(*mark.args)


def require(*tools: str) -> None:
    """Skip (fail on CI) unless every tool is on PATH; `/bin/busybox` counts as a tool too."""
    missing = [t for t in tools if not (Path(t).exists() if "/" in t else shutil.which(t))]
    if not missing:
        return
    packages = sorted({DEBIAN_PACKAGES.get(t, "busybox-static") for t in missing})
    reason = f"missing {', '.join(missing)} (apt-get install {' '.join(packages)}, or ./scripts/test)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _registry(tmp: Path, auth: str | None) -> Iterator[RegistryServer]:
    require("docker-registry", *(["htpasswd"] if auth == "htpasswd" else []))
    server = start_registry(tmp, auth)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """A fresh anonymous registry for this test (its log only holds this test's requests)."""
    yield from _registry(tmp_path / "registry", None)


@pytest.fixture
def htpasswd_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """A fresh registry with basic auth: `.username` / `.password`."""
    yield from _registry(tmp_path / "htpasswd-registry", "htpasswd")


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """A fresh registry behind a bearer-token server (`.token_server.token_requests`). Credentials
    `.username` / `.password` get every action; anonymous clients get pull only."""
    yield from _registry(tmp_path / "token-registry", "token")


@pytest.fixture(scope="session")
def busybox_files(tmp_path_factory: pytest.TempPathFactory) -> BusyboxBase:
    """The busybox base as local files only (OCI layout + docker-archive), built once per session."""
    require("umoci", "skopeo", "/bin/busybox")
    return make_busybox_base(tmp_path_factory.mktemp("busybox-base"))


@pytest.fixture
def busybox_base(busybox_files: BusyboxBase, registry: RegistryServer) -> BusyboxBase:
    """The busybox base seeded into `registry` as `base/busybox:{docker,oci,multi}`.
    For an auth registry: `busybox_files.seed(token_registry)`."""
    return busybox_files.seed(registry)


@pytest.fixture(scope="session")
def debian_files() -> DebianBase:
    """A Debian bookworm minbase image as an OCI layout, debootstrapped once per machine (cached
    under ~/.cache/dockwright-tests, see debian.py)."""
    require("debootstrap", "umoci", "skopeo")
    return debian_base()


@pytest.fixture
def debian(debian_files: DebianBase, registry: RegistryServer) -> DebianBase:
    """The Debian base seeded into `registry` as `base/debian:bookworm` (`.ref`)."""
    return debian_files.seed(registry)


@pytest.fixture(scope="session")
def unprivileged() -> Iterator[Unprivileged]:
    """A user of this session's own (made with useradd, subordinate ids in /etc/subuid and
    /etc/subgid, removed at the end) to run dockwright rootless: `unprivileged.dockwright(...)`."""
    require("useradd", "setpriv")
    yield from unprivileged_user(SRC)


@dataclass
class DockerConfig:
    """A DOCKER_CONFIG directory for this test. `login` writes an `auths` entry like
    `docker login` does; write `path / "config.json"` yourself for credHelpers/credsStore."""

    path: Path

    @property
    def file(self) -> Path:
        return self.path / "config.json"

    def read(self) -> dict[str, Any]:
        return json.loads(self.file.read_text()) if self.file.exists() else {}

    def write(self, data: dict[str, Any]) -> None:
        self.file.write_text(json.dumps(data, indent=2))

    def login(self, host: str, user: str | None, password: str | None) -> None:
        data = self.read()
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        data.setdefault("auths", {})[host] = {"auth": auth}
        self.write(data)


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DockerConfig:
    path = tmp_path / "docker-config"
    path.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(path))
    return DockerConfig(path)


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    """podman (vfs driver, private state). `podman("images")`; `podman.start_service()` serves
    the Engine API and is stopped at teardown."""
    require("podman")
    instance = Podman(tmp_path / "podman")
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def podman_service(podman: Podman) -> Path:
    """Socket path of a podman Engine API service (`DOCKER_HOST=unix://<path>`)."""
    return podman.start_service()


RunDockwright = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def dockwright() -> RunDockwright:
    """`dockwright(*args, input=None, env=None, cwd=None, check=True, timeout=None)` runs `python -m dockwright`
    from this checkout (text mode, stdout/stderr captured). `env` adds to the current environment.
    With check=True a non-zero exit raises AssertionError showing both streams; a run longer than `timeout`
    seconds is killed and raises subprocess.TimeoutExpired (a guard against hangs)."""

    def run(
        *args: str | Path,
        input: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), full_env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "dockwright", *(str(a) for a in args)]
        proc = subprocess.run(cmd, input=input, env=full_env, cwd=cwd, capture_output=True, text=True, check=False,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"dockwright {' '.join(cmd[3:])} exited with {proc.returncode}\n"
                f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
            )
        return proc

    return run


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the test's registry (which holds the seeded busybox base)."""
    instance = FaultProxy(registry)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture(scope="module")
def buildah() -> Iterator[Buildah]:
    """buildah with private state, for a module's differential builds (dockerfile_compare.py)."""
    instance = Buildah()
    try:
        yield instance
    finally:
        instance.close()
