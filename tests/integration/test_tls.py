"""TLS against a real registry: `docker-registry` serving HTTPS on this machine's non-loopback address
(loopback hosts are exempt from certificate checks, so only such an address tests them). The
certificates come from a CA made here; SSL_CERT_FILE trusts it, --insecure-registry skips the check,
and a certificate for another address is refused even from the trusted CA."""

from __future__ import annotations

import ipaddress
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from build_checks import EPOCH_ENV, assert_user_error, cache_args, digest_lines, make_app, requests, skopeo_json
from conftest import RunDockwright
from images import BusyboxBase
from servers import CertificateAuthority, RegistryServer, make_ca, make_server_certificate, start_registry

pytestmark = pytest.mark.requires("docker-registry", "skopeo", "umoci", "/bin/busybox")

OTHER_ADDRESS = "10.9.9.9"  # what the wrong certificate is made out to (never this machine's address)
_HANDSHAKE_ERROR = re.compile(r"http: TLS handshake error from (\S+):\d+: ")
_ACCESS_LINE = re.compile(r'"[A-Z]+ /v2/\S* HTTP/[0-9.]+" \d+ \d+ "[^"]*" "([^"]*)"')


def _usable(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not (ip.is_loopback or ip.is_unspecified or ip.is_multicast)


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine that is not loopback: the source address of the route to
    TEST-NET-1 (a UDP connect sends nothing), else the first such address `ip -4 addr` lists."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))
            address = sock.getsockname()[0]
        except OSError:
            address = ""
    if address and _usable(address):
        return address
    try:
        listing = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return None
    for candidate in re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", listing):
        if _usable(candidate):
            return candidate
    return None


@pytest.fixture(scope="session")
def host_address() -> str:
    address = non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address: certificates are only checked for such hosts")
    return address


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return make_ca(tmp_path / "ca")


def _tls_registry(tmp: Path, ca: CertificateAuthority, address: str, cert_for: str) -> Iterator[RegistryServer]:
    cert, key = make_server_certificate(ca, tmp / "tls", cert_for)
    server = start_registry(tmp, tls=(cert, key), address=address)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def tls_registry(tmp_path: Path, ca: CertificateAuthority, host_address: str) -> Iterator[RegistryServer]:
    """HTTPS on HOST_ADDRESS:PORT with a certificate for HOST_ADDRESS from `ca`."""
    yield from _tls_registry(tmp_path / "tls-registry", ca, host_address, host_address)


@pytest.fixture
def wrong_name_registry(tmp_path: Path, ca: CertificateAuthority, host_address: str) -> Iterator[RegistryServer]:
    """HTTPS on HOST_ADDRESS:PORT with a certificate from `ca` that is made out to OTHER_ADDRESS."""
    yield from _tls_registry(tmp_path / "wrong-name-registry", ca, host_address, OTHER_ADDRESS)


def _build(
    dockwright: RunDockwright, tmp_path: Path, base: BusyboxBase, target: str, *extra: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    context = make_app(tmp_path / "context")
    return dockwright(
        "build", context, "--from", base.docker_ref, "--copy", "app:/app", "-t", target, "--push",
        *cache_args(tmp_path), *extra, env={**EPOCH_ENV, **env}, check=False,
    )  # fmt: skip


def _pushed_digest(proc: subprocess.CompletedProcess[str], target: str) -> str:
    assert proc.returncode == 0, f"the build failed:\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    ((ref, digest),) = digest_lines(proc.stdout)
    assert ref == target
    return digest


def _hint(proc: subprocess.CompletedProcess[str]) -> str:
    hints = [line for line in proc.stderr.splitlines() if line.strip().startswith("hint:")]
    assert len(hints) == 1, f"expected one hint line:\n{proc.stderr}"
    return hints[0]


def _dockwright_lines(log: str) -> list[str]:
    """Access-log lines of requests dockwright made (the seeding skopeo's are left out)."""
    return [m[0] for m in _ACCESS_LINE.finditer(log) if m[1].startswith("dockwright/")]


def _handshake_failures(server: RegistryServer, since: int, address: str) -> int:
    """How many TLS handshakes from `address` the registry saw fail after log offset `since`. Go logs
    one a moment after the client hung up, so wait (up to a few seconds) for the first to appear."""
    deadline = time.monotonic() + 5
    while True:
        found = [m[1] for m in _HANDSHAKE_ERROR.finditer(server.log_text()[since:]) if m[1] == address]
        if found or time.monotonic() > deadline:
            return len(found)
        time.sleep(0.05)


def _assert_refused_fast(
    proc: subprocess.CompletedProcess[str], server: RegistryServer, since: int, host_address: str, hint_says: str,
    *needles: str,
) -> str:
    """The build failed on the certificate as a user should see it, and without retrying: the registry
    answered no request of dockwright's and saw exactly one failed handshake (the first connection)."""
    error = assert_user_error(proc, server.host, "certificate verify failed", *needles)
    hint = _hint(proc)
    assert hint_says in hint, hint
    assert f"--insecure-registry {server.host}" in hint, hint
    failed_handshakes = _handshake_failures(server, since, host_address)  # waits for the log to catch up
    log = server.log_text()[since:]
    assert _dockwright_lines(log) == [], log
    assert failed_handshakes == 1, log
    return error


def test_ca_in_ssl_cert_file_pulls_and_pushes_over_verified_tls(
    dockwright: RunDockwright,
    busybox_files: BusyboxBase,
    tls_registry: RegistryServer,
    ca: CertificateAuthority,
    tmp_path: Path,
) -> None:
    base = busybox_files.seed(tls_registry)
    target = f"{tls_registry.host}/apps/tls:1"

    proc = _build(dockwright, tmp_path, base, target, env={"SSL_CERT_FILE": str(ca.cert)})

    digest = _pushed_digest(proc, target)
    # skopeo verifies the certificate against the same CA and reads back what dockwright printed
    inspected = skopeo_json("inspect", "--tls-verify=true", "--cert-dir", str(ca.cert_dir), f"docker://{target}")
    assert inspected["Digest"] == digest
    # and dockwright itself talked to this registry for both the base and the push
    assert requests(tls_registry, "GET", "/base/busybox/manifests/docker")
    assert requests(tls_registry, "PUT", "/apps/tls/manifests/1")


def test_untrusted_certificate_fails_fast_with_a_hint(
    dockwright: RunDockwright,
    busybox_files: BusyboxBase,
    tls_registry: RegistryServer,
    host_address: str,
    tmp_path: Path,
) -> None:
    base = busybox_files.seed(tls_registry)
    since = len(tls_registry.log_text())

    # the CA is in no trust store: SSL_CERT_FILE / SSL_CERT_DIR stay as the environment has them
    proc = _build(dockwright, tmp_path, base, f"{tls_registry.host}/apps/tls:1", env={})

    _assert_refused_fast(proc, tls_registry, since, host_address, "SSL_CERT_FILE")
    assert "not trusted" in proc.stderr, proc.stderr


def test_insecure_registry_skips_the_certificate_check(
    dockwright: RunDockwright,
    busybox_files: BusyboxBase,
    tls_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    base = busybox_files.seed(tls_registry)
    target = f"{tls_registry.host}/apps/insecure:1"

    proc = _build(dockwright, tmp_path, base, target, "--insecure-registry", tls_registry.host, env={})

    digest = _pushed_digest(proc, target)
    inspected = skopeo_json("inspect", "--tls-verify=false", f"docker://{target}")
    assert inspected["Digest"] == digest


def test_certificate_for_another_address_is_refused_even_from_a_trusted_ca(
    dockwright: RunDockwright,
    busybox_files: BusyboxBase,
    wrong_name_registry: RegistryServer,
    ca: CertificateAuthority,
    host_address: str,
    tmp_path: Path,
) -> None:
    base = busybox_files.seed(wrong_name_registry)
    since = len(wrong_name_registry.log_text())

    proc = _build(
        dockwright, tmp_path, base, f"{wrong_name_registry.host}/apps/tls:1", env={"SSL_CERT_FILE": str(ca.cert)}
    )

    _assert_refused_fast(proc, wrong_name_registry, since, host_address, "made out to another name",
                         f"not valid for '{host_address}'")
