"""The library: pull an image, append layers and change its config, build from a Dockerfile, and push, save
or load the result. The command line is one client of these functions (see docs/api.md).

Every function may be called from any thread; two calls in two threads do not interfere, also when they share
a cache directory. None prints to stdout, exits the process or installs a signal handler; logs go to the
"dockwright" logger. `cancel`, a threading.Event the caller sets, stops the call promptly (transfers stop at
their next chunk, layer writing at its next file) with `Cancelled`, leaving no output behind."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dockwright.api.image import Image, ImageIndex, Layer
from dockwright.api.session import Settings, Store
from dockwright.model.errors import UsageError

if TYPE_CHECKING:
    from dockwright.api.plans import Planner
    from dockwright.formats import Output
    from dockwright.model.image import BuildResult
    from dockwright.progress import Progress

__all__ = ["Image", "ImageIndex", "Layer", "build", "load", "publish", "pull", "push", "save"]


def pull(ref: str, *, platform: str | None = None, cancel: threading.Event | None = None, **options: Any) -> Image:
    """The image `ref` names: a registry reference, `scratch`, `oci-layout://DIR[:TAG]`,
    `oci-archive://FILE[:TAG]` or `docker-archive://FILE`.
    Only manifests and the config are fetched; layers stay where they are until an output needs their bytes.
    For an index, `platform` ("linux/arm64") picks the image (default: this machine's, as Docker picks it).
    `options`: the fields of Settings (cache_dir, insecure_registries, use_cache, ...)."""
    from dockwright.formats.resolve import resolve_base
    from dockwright.model.platform import Platform

    settings = Settings.of(options)
    store = Store(settings, cancel)
    wanted = Platform.parse(platform) if platform else Platform.host()
    (state,) = resolve_base(ref, [wanted], explicit=platform is not None, registries=store.registries,  # type: ignore[arg-type]
                            workdir=store.workdir, default_format=settings.format, cache=store.cache,
                            pull=settings.pull)
    return Image(state, store, format=settings.format)


def build(context: str | Path = ".", *, dockerfile: str | Path | None = None, target: str | None = None,
          build_args: Mapping[str, str] | None = None, platforms: str | Sequence[str] | None = None,
          labels: Mapping[str, str] | None = None, build_contexts: Mapping[str, str] | None = None,
          ignore_file: str | Path | None = None, cancel: threading.Event | None = None,
          progress: Progress | None = None, **options: Any) -> Image | ImageIndex:
    """Build the Dockerfile in `context` (or `dockerfile`) as `docker buildx build` would. One platform gives an
    Image; several (a list, "linux/amd64,linux/arm64" or "all") an ImageIndex. `options`: Settings fields.
    `build_contexts`: named contexts as buildx's --build-context ({"build": "./out"}, a directory,
    "docker-image://REF", "oci-layout://DIR[:TAG]" or "oci-archive://FILE"); `ignore_file`: ignore patterns in
    place of CONTEXT/.dockerignore. `progress` (dockwright.progress.make_progress("plain"), for one) is told of
    each step and layer."""
    from dockwright.api.plans import dockerfile_planner, named_contexts

    context = Path(context)
    if not context.is_dir():
        raise UsageError(f"build context {context} is not a directory")
    planner = dockerfile_planner(context, dockerfile=dockerfile, target=target, build_args=build_args,
                                 labels=labels, ignore_file=ignore_file,
                                 contexts=named_contexts([f"{k}={v}" for k, v in (build_contexts or {}).items()]))
    text = platforms if platforms is None or isinstance(platforms, str) else ",".join(platforms)
    return run_planner(planner, Settings.of(options), text, cancel, progress)[1]


def run_planner(planner: Planner, settings: Settings, platforms: str | None, cancel: threading.Event | None = None,
                progress: Progress | None = None) -> tuple[BuildResult, Image | ImageIndex]:
    """Build what `planner` plans: the build's result (with its counts) and the image or index it made."""
    from dockwright.executor import Builder
    from dockwright.model.platform import parse_platforms
    from dockwright.progress import Progress

    parse_platforms(platforms)  # a bad platform fails before anything is fetched
    store = Store(settings, cancel)
    builder = Builder(settings.build_options(platforms), store.cache, store.registries, store.workdir,  # type: ignore[arg-type]
                      cancel, progress or Progress())
    try:
        result = builder.build(planner)
    except BaseException:
        store.close()
        raise
    images = [Image(state, store, annotations=result.annotations, format=settings.format, final=final)
              for state, final in zip(result.targets, result.images, strict=True)]
    return result, ImageIndex(images, result.annotations, result.index) if result.index else images[0]


def push(image: Image | ImageIndex, ref: str, *, cancel: threading.Event | None = None,
         progress: Progress | None = None, **options: Any) -> str:
    """Push to `ref` (a tag or repository reference); returns "REF@sha256:...". Blobs the registry already has
    are not sent; blobs in another repository of the same registry are mounted; the tag is written last."""
    (line,) = publish(image, [_registry()], tags=[ref], cancel=cancel, progress=progress, **options)
    return line


def save(image: Image | ImageIndex, path: str | Path, *, format: Literal["oci", "docker"] = "oci",
         tags: Sequence[str] = (), tar: bool = True, cancel: threading.Event | None = None,
         progress: Progress | None = None) -> None:
    """Write an OCI archive (format="oci"), an OCI layout directory (format="oci", tar=False) or a docker-archive
    for `docker load` (format="docker"; RepoTags from `tags`). The file appears only when complete. An OCI
    output holds OCI media types: an image in Docker's format is converted (its digest then differs)."""
    from dockwright.formats.docker_archive import DockerArchive
    from dockwright.formats.layout import OciArchive, OciLayoutDir

    if format == "oci":
        output: Output = OciArchive(Path(path)) if tar else OciLayoutDir(Path(path))
        image = _as_oci(image)
    elif format == "docker":
        if not tar:
            raise UsageError("tar=False is only for format='oci' (an OCI layout directory)")
        output = DockerArchive(Path(path))
    else:
        raise UsageError(f"format {format!r}: expected 'oci' or 'docker'")
    publish(image, [output], tags=tags, cancel=cancel, progress=progress)


def load(image: Image, *, tags: Sequence[str] = (), cancel: threading.Event | None = None) -> None:
    """Load into the Docker or Podman engine at DOCKER_HOST (default unix:///var/run/docker.sock)."""
    from dockwright.formats.engine import Engine

    publish(image, [Engine()], tags=tags, cancel=cancel)


def publish(image: Image | ImageIndex, outputs: Sequence[Output], *, tags: Sequence[str] = (),
            cancel: threading.Event | None = None, progress: Progress | None = None,
            insecure_registries: Sequence[str] = (), jobs: int | None = None) -> list[str]:
    """Write `image` to several outputs, all or nothing: file outputs are written under temporary names and
    appear only once every output (pushes included) has succeeded; on any failure nothing new is left.
    Returns the pushed "REF@DIGEST" lines, or the image's digest when nothing was pushed."""
    from dockwright.api.session import LazyRegistries
    from dockwright.formats import PublishContext, write_all
    from dockwright.model.reference import parse_reference
    from dockwright.progress import Progress

    refs = [parse_reference(tag) for tag in tags]
    settings = _settings_of(image)
    jobs = jobs or settings.jobs
    progress = progress or Progress()
    result = image._result(cancel)
    registries = LazyRegistries(insecure=(*settings.insecure_registries, *insecure_registries), jobs=jobs,
                                cancel=cancel)
    try:
        with tempfile.TemporaryDirectory(prefix="dockwright-publish-") as workdir:
            context = PublishContext(refs, registries, Path(workdir), progress, jobs,  # type: ignore[arg-type]
                                     settings.epoch, cancel)
            write_all(result, outputs, context)
    finally:
        registries.close()
    return context.notes or [result.top.descriptor.digest]


def release(image: Image | ImageIndex) -> None:
    """Remove the scratch space behind `image` and the images made with it now, not when they are collected
    (the command line does this before it exits). They can still be read and written, but not appended to."""
    for item in image.images if isinstance(image, ImageIndex) else [image]:
        item._store.close()


def _registry() -> Output:
    from dockwright.formats.registry import RegistryPush

    return RegistryPush()


def _settings_of(image: Image | ImageIndex) -> Settings:
    first = image.images[0] if isinstance(image, ImageIndex) else image
    return first._store.settings


def _as_oci(image: Image | ImageIndex) -> Image | ImageIndex:
    if isinstance(image, ImageIndex):
        if all(item.format == "oci" for item in image.images):
            return image
        return ImageIndex([item.with_format("oci") for item in image.images], image._annotations)
    return image if image.format == "oci" else image.with_format("oci")
