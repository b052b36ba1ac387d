"""Real registries for integration tests: CNCF distribution (`docker-registry`) on a free loopback
port, optionally behind htpasswd basic auth or behind a bearer-token server that works like the
ones of Docker Hub, GHCR and MCR (RS256 JWTs with the signing certificate in the `x5c` header).
A registry can also serve HTTPS (`start_registry(..., tls=(cert, key))`) on another address
(`address=`); `make_ca` / `make_server_certificate` make the certificates for it."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TOKEN_SERVICE = "dockwright-test-registry"
TOKEN_ISSUER = "dockwright-test-token-issuer"
_START_TIMEOUT = 30.0


def free_port(address: str = "127.0.0.1") -> int:
    """A currently free TCP port on `address` (bind to port 0 and let the kernel choose)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class CertificateAuthority:
    """A self-signed CA: `cert` is its PEM certificate (what SSL_CERT_FILE takes), alone in
    `cert_dir` (what `skopeo --cert-dir` takes: a `.key` there would be read as a client key),
    `key` its PEM private key."""

    cert: Path
    key: Path

    @property
    def cert_dir(self) -> Path:
        return self.cert.parent


def _new_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: Any, path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _certificate(subject: str, issuer: Any, key: Any) -> Any:
    """An X.509 builder for `key`'s public key, named `subject`, from `issuer` (a Name; None: itself),
    valid from yesterday for 30 days: each caller adds its extensions and signs."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
    )


def make_ca(directory: Path, name: str = "dockwright test CA") -> CertificateAuthority:
    """A new CA: certificate `directory/certs/ca.crt`, key `directory/ca.key`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    (directory / "certs").mkdir(parents=True, exist_ok=True)
    key = _new_key()
    cert = (
        _certificate(name, None, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    ca = CertificateAuthority(cert=directory / "certs/ca.crt", key=directory / "ca.key")
    ca.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, ca.key)
    return ca


def make_server_certificate(ca: CertificateAuthority, directory: Path, *names: str) -> tuple[Path, Path]:
    """A server certificate signed by `ca` for `names` (IP addresses become IPAddress
    subjectAltNames, anything else DNSName); returns (certificate, key) paths in `directory`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    if not names:
        raise ValueError("a server certificate needs at least one name")
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key: Any = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    key = _new_key()
    cert = (
        _certificate(names[0], ca_cert.subject, key)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return cert_path, key_path


@dataclass
class TokenServer:
    """A bearer-token endpoint (`GET /token?service=..&scope=..`) in a background thread.

    With correct Basic credentials every requested action is granted; anonymous requests get only
    `anonymous_actions` (pull, like a public repository on Docker Hub); wrong credentials get 401.
    Every request is appended to `token_requests` as
    `{"service", "scopes", "account", "granted"}` so tests can assert what a client asked for.
    """

    username: str | None
    password: str | None
    ttl: int
    cert_pem: Path
    anonymous_actions: tuple[str, ...] = ("pull",)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _key: Any = None
    _cert_der: bytes = b""
    _httpd: ThreadingHTTPServer | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def start(self) -> None:
        self._make_certificate()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, name="token-server", daemon=True).start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def _make_certificate(self) -> None:
        from cryptography.hazmat.primitives import hashes, serialization

        self._key = _new_key()
        cert = _certificate(TOKEN_ISSUER, None, self._key).sign(self._key, hashes.SHA256())
        self.cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._cert_der = cert.public_bytes(serialization.Encoding.DER)

    def _account(self, header: str | None) -> tuple[bool, str | None]:
        """(credentials acceptable, account name) for an Authorization header."""
        if not header:
            return True, None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return False, None
        ok = self.username is not None and (user, password) == (self.username, self.password)
        return ok, user if ok else None

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(request.path)
        if url.path != "/token":
            request.send_error(404)
            return
        query = urllib.parse.parse_qs(url.query)
        service = query.get("service", [""])[0]
        scopes = query.get("scope", [])
        ok, account = self._account(request.headers.get("Authorization"))
        granted = self._grant(scopes, account) if ok else []
        self.token_requests.append({"service": service, "scopes": scopes, "account": account, "granted": granted})
        if not ok:
            body = b'{"details":"incorrect username or password"}'
            request.send_response(401)
            request.send_header("WWW-Authenticate", 'Basic realm="dockwright-test"')
        else:
            body = json.dumps(self._token_response(service, account, granted)).encode()
            request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def _grant(self, scopes: list[str], account: str | None) -> list[dict[str, Any]]:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a]
            allowed = wanted if account else [a for a in wanted if a in self.anonymous_actions]
            if kind == "repository" and name and allowed:
                access.append({"type": "repository", "name": name, "actions": allowed})
        return access

    def _token_response(self, service: str, account: str | None, access: list[dict[str, Any]]) -> dict[str, Any]:
        import jwt

        now = int(time.time())
        claims = {
            "iss": TOKEN_ISSUER,
            "sub": account or "",
            "aud": service,
            "exp": now + self.ttl,
            "nbf": now - 5,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        headers = {"x5c": [base64.b64encode(self._cert_der).decode()]}
        token = jwt.encode(claims, self._key, algorithm="RS256", headers=headers)
        issued = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"token": token, "access_token": token, "expires_in": self.ttl, "issued_at": issued}


@dataclass
class RegistryServer:
    """A running `docker-registry` process. `log` holds its output including the access log
    (`"GET /v2/<repo>/blobs/sha256:... HTTP/1.1" 200`), so tests can assert which requests were made."""

    host: str
    root: Path
    log: Path
    username: str | None
    password: str | None
    auth: str | None = None
    token_server: TokenServer | None = None
    config: Path | None = None
    tls: bool = False
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def blob_data_path(self, digest: str) -> Path:
        algorithm, _, hex_ = digest.partition(":")
        return self.root / "docker/registry/v2/blobs" / algorithm / hex_[:2] / hex_ / "data"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self) -> None:
        """Start (or restart after `stop`) the registry process on the same port and storage."""
        assert self.config is not None
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                ["docker-registry", "serve", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_ready()

    def stop(self) -> None:
        """Stop the registry process (storage stays). The token server stays up until `close`."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the registry and its token server for good."""
        self.stop()
        if self.token_server is not None:
            self.token_server.stop()

    def _wait_ready(self) -> None:
        assert self._process is not None
        # the readiness probe only: whether the registry answers, not whether its certificate is good
        context = None
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited with {self._process.returncode}:\n{self.log_text()[-3000:]}"
                )
            try:
                urllib.request.urlopen(f"{self.url}/v2/", timeout=2, context=context).close()
                return
            except urllib.error.HTTPError:  # 401 from an auth-protected registry: it is up
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.host}:\n{self.log_text()[-3000:]}")


def start_registry(
    tmp: Path,
    auth: str | None = None,
    *,
    username: str = "tester",
    password: str = "s3cret",
    token_ttl: int = 300,
    tls: tuple[Path, Path] | None = None,
    address: str = "127.0.0.1",
) -> RegistryServer:
    """Start a registry storing under `tmp/storage`. auth: None | "htpasswd" | "token".

    tls: (certificate, key) PEM files: serve HTTPS with them (`.url` is then https://).
    address: the IP address to listen on (a free port on it is chosen); `.host` is `ADDRESS:PORT`
    (`[ADDRESS]:PORT` for IPv6). Call `.close()` when done (the fixtures do)."""
    if auth not in (None, "htpasswd", "token"):
        raise ValueError(f"unknown auth mode {auth!r}")
    ipaddress.ip_address(address)  # an IP address, not a name: the port is probed by binding it
    if shutil.which("docker-registry") is None:
        raise FileNotFoundError("docker-registry is not installed (apt-get install docker-registry)")
    tmp.mkdir(parents=True, exist_ok=True)
    root = tmp / "storage"
    root.mkdir(exist_ok=True)
    token_server = None
    auth_config: dict[str, Any] = {}
    if auth == "htpasswd":
        htpasswd = tmp / "htpasswd"
        line = subprocess.run(
            ["htpasswd", "-Bbn", username, password], check=True, capture_output=True, text=True
        ).stdout.strip()
        htpasswd.write_text(line + "\n")
        auth_config = {"htpasswd": {"realm": "dockwright-test", "path": str(htpasswd)}}
    elif auth == "token":
        token_server = TokenServer(username, password, token_ttl, tmp / "token-cert.pem")
        token_server.start()
        auth_config = {
            "token": {
                "realm": token_server.realm,
                "service": TOKEN_SERVICE,
                "issuer": TOKEN_ISSUER,
                "rootcertbundle": str(token_server.cert_pem),
            }
        }
    last_error: RuntimeError | None = None
    for attempt in range(3):  # a freed port can be taken again before the registry binds it
        port = free_port(address)
        host = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        config = tmp / "config.yml"
        settings: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True}},
            "http": {"addr": host, "secret": secrets.token_hex(16)},
        }
        if tls is not None:
            settings["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
        if auth_config:
            settings["auth"] = auth_config
        config.write_text(json.dumps(settings, indent=2))  # JSON is YAML
        server = RegistryServer(
            host=host,
            root=root,
            log=tmp / f"registry-{attempt}.log",
            username=username if auth else None,
            password=password if auth else None,
            auth=auth,
            token_server=token_server,
            config=config,
            tls=tls is not None,
        )
        try:
            server.start()
            return server
        except RuntimeError as error:
            last_error = error
    if token_server is not None:
        token_server.stop()
    assert last_error is not None
    raise last_error
