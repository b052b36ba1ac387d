"""ADD: like COPY, but local tar archives (plain, gzip, bzip2, xz) are unpacked into the destination,
and an http(s) URL is downloaded (verified against --checksum when given)."""

from __future__ import annotations

import hashlib
import posixpath
import tarfile
from dataclasses import replace
from pathlib import Path

from dockwright.layers.copy import CopySettings, collect_copy
from dockwright.layers.dockerignore import IgnoreMatcher, clean_path
from dockwright.layers.tar import TarEntry
from dockwright.model.errors import ContextError, DockwrightError
from dockwright.plan import CopyStep

_ARCHIVE_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
MAX_DOWNLOAD = 8 * 1024**3


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _is_git(source: str) -> bool:
    """A git source as BuildKit recognises one: git@host:..., git://..., or an http(s) URL ending in .git."""
    return source.startswith(("git@", "git://")) or (_is_url(source) and source.split("#")[0].endswith(".git"))


def _is_archive(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(512)
    except OSError:
        return False
    if head.startswith(_ARCHIVE_MAGIC):
        return True
    return len(head) == 512 and head[257:262] == b"ustar"


def collect_add(context: Path, step: CopyStep, dest: str, settings: CopySettings, *, ignore: IgnoreMatcher | None,
                workdir: Path) -> list[TarEntry]:
    """Entries for an ADD step (`settings` and `ignore` as for collect_copy)."""
    for source in step.sources:
        if _is_git(source):
            raise ContextError(f"ADD {source}: adding a git repository is not supported",
                               hint="clone it in your CI step before dockwright, then COPY the checkout")
    urls = [s for s in step.sources if _is_url(s)]
    archives = [s for s in step.sources if not _is_url(s) and _local_archive(context, s)]
    plain = [s for s in step.sources if s not in urls and s not in archives]
    several = len(step.sources) > 1
    if several and not dest.endswith("/"):
        raise ContextError(f"{step.created_by}: with more than one source the destination must end with /")
    merged: dict[str, TarEntry] = {}
    if plain:
        for entry in collect_copy(context, plain, dest, settings, ignore=ignore):
            merged[entry.path] = entry
    for index, archive in enumerate(archives):
        unpacked = workdir / f"archive-{index}"
        _unpack(context / clean_path(archive), unpacked, archive)
        directory = dest if dest.endswith("/") else dest + "/"
        for entry in collect_copy(unpacked, ["."], directory, settings):
            merged[entry.path] = entry
    for index, url in enumerate(urls):
        downloaded = workdir / f"url-{index}"
        downloaded.mkdir(parents=True, exist_ok=True)
        name = posixpath.basename(url.split("?", 1)[0].rstrip("/")) or "download"
        _download(url, downloaded / name, step.checksum)
        target = dest + name if dest.endswith("/") else dest
        for entry in collect_copy(downloaded, [name], target, replace(settings, chmod=settings.chmod or 0o600)):
            merged[entry.path] = entry
    return [merged[path] for path in sorted(merged)]


def _local_archive(context: Path, source: str) -> bool:
    path = context / clean_path(source)
    return path.is_file() and not path.is_symlink() and _is_archive(path)


def _unpack(archive: Path, target: Path, shown: str) -> None:
    """Unpack with the standard library's `data` filter: no absolute paths, no `..`, no links out of
    the target, no devices; a hostile archive fails with the member's name."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise ContextError(f"ADD {shown}: cannot unpack the archive: {exc}") from None


def _download(url: str, target: Path, checksum: str | None) -> None:
    from dockwright.httpclient import Client, Timeout, TransportError

    digest = hashlib.sha256()
    received = 0
    try:
        with Client(timeout=Timeout(30, 120)) as client, \
                client.send(client.build_request("GET", url), stream=True, follow_redirects=True) as response:
            if response.status_code != 200:
                raise DockwrightError(f"ADD {url}: HTTP {response.status_code}")
            with target.open("wb") as handle:
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received > MAX_DOWNLOAD:
                        raise DockwrightError(f"ADD {url}: larger than {MAX_DOWNLOAD} bytes")
                    digest.update(chunk)
                    handle.write(chunk)
    except TransportError as exc:
        raise DockwrightError(f"ADD {url}: download failed: {exc}") from None
    if checksum and checksum != f"sha256:{digest.hexdigest()}":
        raise DockwrightError(f"ADD {url}: checksum mismatch: got sha256:{digest.hexdigest()}, expected {checksum}")
