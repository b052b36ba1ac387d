"""Image references: parse and normalise as Docker does (`nginx` is `docker.io/library/nginx:latest`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from dockwright.model.digest import is_digest
from dockwright.model.errors import InvalidReferenceError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_DOCKER_HUB_LEGACY = "index.docker.io"  # what a reference names as docker.io (Docker's legacyDefaultDomain)
DOCKER_HUB_ALIASES = frozenset({DOCKER_HUB, _DOCKER_HUB_LEGACY, DOCKER_HUB_API})  # one registry, one login


def is_docker_hub(host: str) -> bool:
    """Whether `host` is one of Docker Hub's names (for credentials and the names shown to a user)."""
    return host in DOCKER_HUB_ALIASES
DEFAULT_TAG = "latest"
# Image sources that are not registry references
SCRATCH = "scratch"
OCI_LAYOUT_PREFIX = "oci-layout://"
DOCKER_ARCHIVE_PREFIX = "docker-archive://"
OCI_ARCHIVE_PREFIX = "oci-archive://"
LOCAL_PREFIXES = (OCI_LAYOUT_PREFIX, OCI_ARCHIVE_PREFIX, DOCKER_ARCHIVE_PREFIX)  # images in local files

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)  # Docker's \w is ASCII only
_HOST_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"^(?:{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$"
)


@dataclass(frozen=True)
class Reference:
    """A normalised reference: registry (docker.io for Hub), repository path, tag and/or digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        """The host[:port] the distribution API is served from."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What goes after /manifests/: the digest when pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=digest)

    def with_tag(self, tag: str | None) -> Reference:
        return replace(self, tag=tag, digest=None)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def familiar(self) -> str:
        """Short form as Docker prints it (nginx:latest)."""
        name = self.repository if self.registry == DOCKER_HUB else self.name
        if self.registry == DOCKER_HUB and name.startswith("library/"):
            name = name[len("library/") :]
        return name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def _split_domain(name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if slash and (any(c in first for c in ".:") or first == "localhost" or first.lower() != first):
        domain, path = first, rest
    else:
        domain, path = DOCKER_HUB, name
    if domain == _DOCKER_HUB_LEGACY:
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return domain, path


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    """Parse `[registry/]path[:tag][@digest]`. Adds `latest` when neither tag nor digest is given."""
    original = text
    problem = ("it is empty" if not text else "it is too long (over 512 characters)" if len(text) > 512
               else "it contains spaces or other white space" if any(c.isspace() for c in text) else None)
    if problem:
        raise InvalidReferenceError(f"invalid image reference {original[:100]!r}: {problem}",
                                    hint="e.g. nginx:1.27, localhost:5000/app:1, ghcr.io/owner/app@sha256:...")
    digest = None
    if "@" in text:
        text, _, digest = text.partition("@")
        if not is_digest(digest):
            raise InvalidReferenceError(
                f"invalid image reference {original!r}: {digest!r} is not a sha256:<64 hex> digest"
            )
    tag = None
    last = text.rfind(":")
    if last > text.rfind("/"):
        text, tag = text[:last], text[last + 1 :]
        if not _TAG_RE.match(tag):
            raise InvalidReferenceError(f"invalid image reference {original!r}: bad tag {tag!r}")
    domain, path = _split_domain(text)
    if not _DOMAIN_RE.match(domain):
        raise InvalidReferenceError(f"invalid image reference {original!r}: bad registry host {domain!r}")
    if not _PATH_RE.match(path):
        hint = "repository names must be lowercase" if path.lower() != path else None
        raise InvalidReferenceError(
            f"invalid image reference {original!r}: bad repository name {path!r}", hint=hint
        )
    if len(domain) + 1 + len(path) > 255:
        raise InvalidReferenceError(f"invalid image reference {original!r}: name longer than 255 characters")
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and [::1], with or without a port."""
    import ipaddress

    if host.startswith("["):
        bare = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        bare = host.split(":", 1)[0]
    else:
        bare = host
    if bare.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False
