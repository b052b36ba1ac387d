"""Images as values: `Image` (one platform) and `ImageIndex` (several), immutable; `Layer`, a layer to append.

An Image is its resolved base state plus the changes asked of it (layers to append, config edits), applied
lazily and once, when its digest, manifest, config or bytes are first needed. Layers are made by the same
executor and cache as `dockwright build`, so the same inputs give the same digests through the library and
the command line."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dockwright import mutate
from dockwright.model.errors import UsageError
from dockwright.plan import BuildPlan, ConfigEdit, CopyStep, Stage

if TYPE_CHECKING:
    from dockwright.api.session import Store
    from dockwright.model.image import BaseImage, BuildResult, Document, FinalImage


@dataclass(frozen=True)
class Layer:
    """Files to add as one layer, with Dockerfile COPY semantics (the command line's `--copy SRC:DEST`)."""

    step: CopyStep
    context: Path
    dockerignore: tuple[str, ...] = ()

    @classmethod
    def from_directory(cls, src: str | Path, dest: str, *, chown: str | None = None, chmod: str | None = None,
                       exclude: Sequence[str] = (), context: str | Path | None = None) -> Layer:
        """The contents of `src` (a directory, or a file) at `dest` in the image, as `--copy SRC:DEST`.

        chown: "UID[:GID]" or names from the image's /etc/passwd and /etc/group; chmod: an octal mode such
        as "755"; exclude: patterns as `COPY --exclude`. With `context`, `src` is relative to it and the
        context's .dockerignore applies, exactly as on the command line; without it, nothing is ignored.
        The image's history records `src` relative to the context (default: the directory holding `src`)."""
        from dockwright.frontends.flags import check_chmod
        from dockwright.layers.dockerignore import read_dockerignore

        if chmod is not None:
            check_chmod("chmod", chmod)
        if not dest:
            raise UsageError("Layer.from_directory: dest is empty")
        if context is None:
            path = Path(src).absolute()
            root, source, ignore = path.parent, path.name, ()
        else:
            root, source = Path(context), str(src)
            if not root.is_dir():
                raise UsageError(f"Layer.from_directory: context {root} is not a directory")
            ignore = tuple(read_dockerignore(root, None))
        if not (root / source).exists():
            raise UsageError(f"Layer.from_directory: {root / source} does not exist")
        step = CopyStep((source,), dest, chown=chown, chmod=chmod, excludes=tuple(exclude),
                        created_by=f"dockwright --copy {source}:{dest}")
        return cls(step, root, ignore)


Change = Layer | ConfigEdit


class Image:
    """One platform's image. Immutable: `append`, `with_config`, `with_annotations` and `with_format` return new
    images. `digest`, `manifest` and `config` finish it (making its new layers, once) without writing anything
    but the layer cache."""

    def __init__(self, state: BaseImage, store: Store, *, changes: tuple[Change, ...] = (),
                 annotations: Mapping[str, str] | None = None, format: Literal["oci", "docker"] | None = None,
                 final: FinalImage | None = None) -> None:
        self._state = state
        self._store = store
        self._changes = changes
        self._annotations = dict(annotations or {})
        self._format = format
        self._final = final
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<dockwright.Image {self.platform} {self._state.name or 'built'}{' (unfinished)' * (not self._final)}>"

    # ------------------------------------------------------------------ derive

    def _with(self, **changes: Any) -> Image:
        fields = {"changes": self._changes, "annotations": self._annotations, "format": self._format} | changes
        return Image(self._state, self._store, **fields)

    def append(self, *layers: Layer) -> Image:
        """This image with `layers` on top, in order (each one layer, as one `--copy`)."""
        for layer in layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"append() takes dockwright.Layer objects, not {type(layer).__name__}")
        return self._with(changes=(*self._changes, *layers))

    def with_config(self, *, entrypoint: str | Sequence[str] | None = None, cmd: str | Sequence[str] | None = None,
                    env: Mapping[str, str] | None = None, workdir: str | None = None, user: str | None = None,
                    labels: Mapping[str, str] | None = None, exposed_ports: Iterable[str | int] = (),
                    volumes: Iterable[str] = (), stop_signal: str | None = None) -> Image:
        """This image with config changes, by the rules of the command line's flags: a list is the exec form of
        entrypoint/cmd, a string the shell form; env and labels merge into the inherited ones; exposed ports are
        "PORT[/PROTO]" (or ints); setting entrypoint resets an inherited cmd unless cmd is given too."""
        from dockwright.frontends import flags

        edit = flags.config_edit(
            entrypoint=_command(entrypoint), cmd=_command(cmd), env=_pairs("env", env),
            workdir=workdir, user=user, expose=[str(port) for port in exposed_ports], volumes=list(volumes),
            labels=_pairs("labels", labels), stop_signal=stop_signal)
        cmd_given = any(isinstance(change, ConfigEdit) and change.cmd is not None for change in self._changes)
        edit = flags.entrypoint_resets_cmd(edit, cmd_given=cmd_given)  # as --entrypoint does
        return self._with(changes=(*self._changes, edit))

    def with_annotations(self, annotations: Mapping[str, str] | None = None, **more: str) -> Image:
        """This image with manifest annotations added (an OCI manifest: a Docker one cannot carry them, so the
        image becomes OCI unless `with_format("docker")` chose otherwise)."""
        merged = {**self._annotations, **(annotations or {}), **more}
        if not all(isinstance(v, str) for v in merged.values()):
            raise UsageError("annotation values must be strings")
        return self._with(annotations=merged, format=self._format or "oci")

    def with_format(self, format: Literal["oci", "docker"]) -> Image:
        """This image written with OCI or Docker media types (same layers; another digest)."""
        if format not in ("oci", "docker"):
            raise UsageError(f"format {format!r}: expected 'oci' or 'docker'")
        return self._with(format=format)

    # ------------------------------------------------------------------ read

    @property
    def platform(self) -> str:
        return str(self._state.platform)

    @property
    def format(self) -> str:
        return self._format or self._state.format

    @property
    def digest(self) -> str:
        """The manifest digest, "sha256:..."."""
        return self._finished().manifest.descriptor.digest

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self._finished().manifest.data)

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self._finished().config.data)

    # ------------------------------------------------------------------ finish

    def _finished(self, cancel: threading.Event | None = None) -> FinalImage:
        with self._lock:
            if self._final is None:
                state = self._apply_changes(cancel)
                fmt = self._format or state.format
                self._final = mutate.finish(state, fmt, mutate.timestamp(self._store.settings.epoch),
                                            self._annotations)
            return self._final

    def _apply_changes(self, cancel: threading.Event | None = None) -> BaseImage:
        state = self._state.clone()
        mutate.pad_history(state.config, len(state.layers), mutate.timestamp(self._store.settings.epoch))
        builder = None  # one for all the layers: they share its memo of layers made in this call
        for change in self._changes:
            if isinstance(change, ConfigEdit):
                mutate.apply_edit(state.config, change)
            else:
                builder = builder or self._builder(cancel)
                state = builder.run_steps(state, BuildPlan(
                    context=change.context, stages=(Stage(base="", steps=(change.step,)),),
                    dockerignore=change.dockerignore, source="dockwright.Layer"))
        return state

    def _builder(self, cancel: threading.Event | None) -> Any:
        from dockwright.executor import Builder

        store = self._store
        return Builder(store.settings.build_options(), store.cache, store.registries, store.workdir, cancel)

    def _result(self, cancel: threading.Event | None = None) -> BuildResult:
        from dockwright.model.image import BuildResult

        return BuildResult([self._finished(cancel)])


class ImageIndex:
    """Several platforms' images under one index (an OCI image index, or a Docker manifest list)."""

    def __init__(self, images: Sequence[Image], annotations: Mapping[str, str] | None = None,
                 index: Document | None = None) -> None:
        if not images:
            raise UsageError("an image index needs at least one image")
        self.images = tuple(images)
        self._annotations = dict(annotations or {})
        self._index = index
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<dockwright.ImageIndex {', '.join(image.platform for image in self.images)}>"

    @property
    def digest(self) -> str:
        return self._document().descriptor.digest

    @property
    def manifest(self) -> dict[str, Any]:
        """The index document."""
        return json.loads(self._document().data)

    def _document(self, cancel: threading.Event | None = None) -> Document:
        with self._lock:
            if self._index is None:
                finals = [image._finished(cancel) for image in self.images]
                if len({final.format for final in finals}) > 1:
                    raise UsageError("the images of an index mix Docker and OCI formats",
                                     hint="make them one format with Image.with_format")
                self._index = mutate.make_index(finals, finals[0].format, self._annotations)
            return self._index

    def _result(self, cancel: threading.Event | None = None) -> BuildResult:
        from dockwright.model.image import BuildResult

        index = self._document(cancel)
        return BuildResult([image._finished() for image in self.images], index)


def _command(value: str | Sequence[str] | None) -> str | None:
    """entrypoint/cmd as the command line takes them: a JSON array (exec form) or a string (shell form)."""
    if value is None or isinstance(value, str):
        return value
    items = list(value)
    if not all(isinstance(item, str) for item in items):
        raise UsageError(f"expected a list of strings, got {value!r}")
    return json.dumps(items)


def _pairs(what: str, mapping: Mapping[str, str] | None) -> list[str]:
    pairs = []
    for key, value in (mapping or {}).items():
        if not isinstance(key, str) or not key or "=" in key or not isinstance(value, str):
            raise UsageError(f"{what}: {key!r}={value!r} is not a NAME (no '=') with a string value")
        pairs.append(f"{key}={value}")
    return pairs
