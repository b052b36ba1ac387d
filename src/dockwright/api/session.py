"""What library calls share besides their arguments: the settings an image is made with, and the resources behind
it (the cache, registry clients, a scratch directory) for as long as an image that uses them exists."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dockwright.model.errors import UsageError
from dockwright.model.mediatypes import Format
from dockwright.plan import BuildOptions, PullPolicy, Secret

if TYPE_CHECKING:
    from dockwright.cache import Cache
    from dockwright.registry import Registries, RegistryClient

DEFAULT_EPOCH = 0  # without SOURCE_DATE_EPOCH: 1970-01-01T00:00:00Z, so digests are reproducible
DEFAULT_JOBS = min(8, (os.cpu_count() or 2) * 2)


def epoch_from_env() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return DEFAULT_EPOCH
    if not value.isdigit():
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds")
    return int(value)


@dataclass(frozen=True)
class Settings:
    """How images are made and moved; the keyword options of `pull` and `build`.

    cache_dir: where layers and blobs are cached (default $XDG_CACHE_HOME/dockwright); use_cache=False neither
    reads nor writes it. insecure_registries: hosts (HOST[:PORT]) reached without certificate checks, plain HTTP
    allowed (loopback always is). source_date_epoch: the time written into configs and layers (default
    $SOURCE_DATE_EPOCH, else 0). format: "oci" or "docker" media types (default: the base's). isolation: how RUN
    steps run ("oci": an OCI runtime on an overlay root; "rootless": the same in a user namespace; "chroot": no
    runtime and no namespace, for unprivileged CI pods running as root); runtime: that runtime's path (default:
    runc or crun). pull: how much a registry base may be asked: "always" (HEAD the tag; cached documents are
    reused), "missing" (a tag's cached digest is used without asking), "never" (only the cache).
    secrets: plan.Secret values (id and a file or variable) that RUN --mount=type=secret may read."""

    cache_dir: Path | None = None
    use_cache: bool = True
    insecure_registries: tuple[str, ...] = ()
    compression: str = "gzip"
    compression_level: int | None = None
    source_date_epoch: int | None = None
    jobs: int = DEFAULT_JOBS
    format: Format | None = None
    isolation: str = "oci"
    runtime: str | None = None
    pull: PullPolicy = "always"
    secrets: tuple[Secret, ...] = ()

    @classmethod
    def of(cls, options: dict[str, Any]) -> Settings:
        """Settings from keyword arguments, with a clear error for an unknown one."""
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(cls.__dataclass_fields__)}")
        if "insecure_registries" in options:
            options = {**options, "insecure_registries": tuple(options["insecure_registries"])}
        if options.get("cache_dir") is not None:
            options = {**options, "cache_dir": Path(options["cache_dir"])}
        return cls(**options)

    @property
    def epoch(self) -> int:
        return epoch_from_env() if self.source_date_epoch is None else self.source_date_epoch

    def build_options(self, platforms: str | None = None) -> BuildOptions:
        return BuildOptions(platforms=platforms, format=self.format, insecure_registries=self.insecure_registries,
                            compression=self.compression, compression_level=self.compression_level,
                            jobs=max(1, self.jobs), cache_dir=self.cache_dir, use_cache=self.use_cache,
                            source_date_epoch=self.epoch, isolation=self.isolation, runtime=self.runtime,
                            pull=self.pull, secrets=self.secrets)


class LazyRegistries:
    """Registry clients, made on first use: a build from scratch or a local base to a local output never
    imports the HTTP stack (~0.1 s)."""

    def __init__(self, *, insecure: tuple[str, ...], jobs: int, cancel: threading.Event | None = None) -> None:
        self._options = {"insecure": insecure, "jobs": jobs, "cancel": cancel}
        self._registries: Registries | None = None
        self._lock = threading.Lock()

    @property
    def cancel(self) -> threading.Event | None:
        return self._options["cancel"]  # type: ignore[return-value]

    def get(self) -> Registries:
        with self._lock:
            if self._registries is None:
                from dockwright.registry import Registries

                self._registries = Registries(**self._options)  # type: ignore[arg-type]
            return self._registries

    def client(self, host: str) -> RegistryClient:
        return self.get().client(host)

    def close(self) -> None:
        with self._lock:
            if self._registries is not None:
                self._registries.close()


class Store:
    """The cache, registry clients and scratch directory behind a family of images (an image and those made
    from it). Images hold it; when the last one is gone, its scratch directory (and a private cache made for
    use_cache=False) is removed."""

    def __init__(self, settings: Settings, cancel: threading.Event | None = None) -> None:
        from dockwright.cache import Cache, default_cache_dir

        self.settings = settings
        self.cache: Cache = Cache((settings.cache_dir or default_cache_dir()) if settings.use_cache else None)
        self.workdir = Path(tempfile.mkdtemp(prefix="dockwright-build-"))
        self.registries = LazyRegistries(insecure=settings.insecure_registries, jobs=settings.jobs, cancel=cancel)
        self._finalizer = weakref.finalize(self, _close, self.cache, self.workdir, self.registries)

    def close(self) -> None:
        self._finalizer()


def _close(cache: Cache, workdir: Path, registries: LazyRegistries) -> None:
    registries.close()
    cache.close()
    shutil.rmtree(workdir, ignore_errors=True)
