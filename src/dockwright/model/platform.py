"""Platforms: OS/architecture/variant, parsed and matched as Docker does."""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass
from typing import Any, Literal

from dockwright.model.errors import ImageFormatError, UsageError

_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm",
                 "i386": "386", "i686": "386"}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT], e.g. linux/amd64")
        os_, arch = parts[0], _ARCH_ALIASES.get(parts[1], parts[1])
        variant = parts[2] if len(parts) == 3 else None
        known_os = {"linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "illumos",
                    "aix", "plan9", "js", "wasip1", "android", "ios", "dragonfly", "zos"}
        known_arch = {"amd64", "arm64", "arm", "386", "ppc64le", "ppc64", "s390x", "riscv64", "mips64le",
                      "mips64", "mipsle", "mips", "loong64", "wasm"}
        if os_ not in known_os or arch not in known_arch:
            raise UsageError(f"unknown platform {text!r}", hint="e.g. linux/amd64, linux/arm64/v8, linux/arm/v7")
        return cls(os_, arch, variant)

    @classmethod
    def from_json(cls, data: Any, where: str = "document") -> Platform:
        if not isinstance(data, dict) or not isinstance(data.get("os"), str) or not isinstance(
            data.get("architecture"), str
        ):
            raise ImageFormatError(f"invalid platform object {str(data)[:200]} in {where}")
        return cls(data["os"], data["architecture"], data.get("variant") or None, data.get("os.version"))

    @classmethod
    def host(cls) -> Platform:
        machine = _platform.machine().lower()
        if machine.startswith("armv"):
            return cls("linux", "arm", "v" + machine[4])
        return cls("linux", _ARCH_ALIASES.get(machine, machine))

    def normalized(self) -> tuple[str, str, str | None]:
        variant = self.variant
        if self.architecture == "arm64" and variant in (None, "v8"):
            variant = None
        if self.architecture == "arm" and variant is None:
            variant = "v7"
        return (self.os, self.architecture, variant)

    def matches(self, other: Platform) -> bool:
        return self.normalized() == other.normalized()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            data["os.version"] = self.os_version
        if self.variant:
            data["variant"] = self.variant
        return data

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def refuse_windows(platform: Platform, what: str) -> None:
    """Windows images need Windows layers (Files/, Hives/, their own PAX records): until dockwright writes
    them, a build for Windows stops here rather than make a Linux-shaped image."""
    if platform.os == "windows":
        raise UsageError(f"Windows images are not supported yet: {what} is {platform}",
                         hint="dockwright builds Linux images; build this one with docker buildx on Windows")


def parse_platforms(text: str | None) -> list[Platform] | Literal["all"]:
    """`--platform` value for a build: comma-separated list, or `all`. None means the host's platform."""
    if text is None:
        return [Platform.host()]
    if text.strip() == "all":
        return "all"
    platforms: list[Platform] = []
    for item in text.split(","):
        parsed = Platform.parse(item)
        refuse_windows(parsed, f"--platform {item.strip()}")
        if not any(parsed.matches(p) for p in platforms):
            platforms.append(parsed)
    return platforms
