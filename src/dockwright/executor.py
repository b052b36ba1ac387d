"""Execute a build plan: resolve bases per platform, make layers, compose configs and manifests.

Data flows one way: plan -> BaseImage (per stage and platform) -> FinalImage(s) [+ index] -> outputs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from dockwright import mutate
from dockwright.cache import Cache
from dockwright.formats.resolve import resolve_base
from dockwright.layers.cachepolicy import LayerCache
from dockwright.layers.facts import LayerFacts
from dockwright.model.errors import ContextError, DockwrightError, UsageError
from dockwright.model.image import BaseImage, BuildResult, Layer
from dockwright.model.mediatypes import Format
from dockwright.model.platform import Platform, parse_platforms, refuse_windows
from dockwright.parallel import KeyedLocks, StopEvent, cancellable, check_cancelled
from dockwright.plan import BuildOptions, BuildPlan, ConfigEdit, ConfigStep, CopyStep, MkdirStep, RunStep, Stage
from dockwright.progress import Progress

if TYPE_CHECKING:
    from dockwright.layers.compress import Compression
    from dockwright.layers.copy import CopySettings
    from dockwright.layers.dirindex import ImageDirs
    from dockwright.layers.dockerignore import IgnoreMatcher
    from dockwright.layers.rootfs import RootFS
    from dockwright.layers.tar import TarEntry
    from dockwright.registry import Registries
    from dockwright.run.mounts import MountSources
    from dockwright.run.steps import RunSteps

log = logging.getLogger("dockwright")

Planner = Callable[[Platform], BuildPlan]


@dataclass
class _StageState:
    image: BaseImage
    rootfs: RootFS | None = None  # the whole file system, for COPY --from
    accounts: RootFS | None = None  # just /etc/passwd and /etc/group, for --chown names
    known_dirs: set[str] = field(default_factory=set)  # exist, as this stage's steps made them (relative paths)
    dirs: ImageDirs | None = None  # the image's directories, from its layers' indexes (when asked)
    dirs_layers: int = 0  # how many of image.layers `dirs` holds
    lock: threading.Lock = field(default_factory=threading.Lock)  # stages copying from this one extract it once


Done = Mapping[int, _StageState]  # the finished stages a stage needs (and may read), by index


@dataclass
class Builder:
    options: BuildOptions
    cache: Cache
    registries: Registries | None
    workdir: Path  # scratch space for extracted file systems; removed by the caller
    cancel: threading.Event | None = None  # set by an embedding program: the build stops at its next file or step
    progress: Progress = field(default_factory=Progress)  # told of each step and each layer packed
    _bases: dict[tuple[str, str], BaseImage] = field(default_factory=dict)
    _resolving: KeyedLocks = field(default_factory=KeyedLocks)  # stages on one base resolve it once
    _running: KeyedLocks = field(default_factory=KeyedLocks)  # a RUN in two stages at once runs once
    _result: BuildResult = field(default_factory=lambda: BuildResult([]))
    _runs: RunSteps | None = None
    _runs_lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: StopEvent = field(init=False)  # `cancel`, or a stage failed: every stage stops (stages.py)
    _facts: LayerFacts = field(init=False)
    _layers: LayerCache = field(init=False)  # the layer cache policy: which layer each step gets

    def __post_init__(self) -> None:
        self._compression().resolved_level()  # a bad level is the build's, not its first layer's
        self._stop = StopEvent(self.cancel)
        self._facts = LayerFacts(self.cache, self._opener)  # its reads stop with the build (_opener)
        self._layers = LayerCache(self.cache, self._compression(), use_cache=self.options.use_cache,
                                  facts=self._facts, cancel=self._stop, progress=self.progress)

    @property
    def created(self) -> str:
        return mutate.timestamp(self.options.source_date_epoch)

    def build(self, planner: Planner) -> BuildResult:
        try:
            return self._build(planner)
        finally:
            if self._runs is not None:
                self._runs.close()

    def _build(self, planner: Planner) -> BuildResult:
        wanted = parse_platforms(self.options.platforms)
        explicit = self.options.platforms is not None
        if wanted == "all":
            wanted = self._platforms_of_target(planner)
        plans = [(platform, planner(platform)) for platform in wanted]
        self._start_walks([plan for _, plan in plans])  # they run while the bases are resolved
        self._prefetch_bases(plans, explicit)
        finals = []
        for platform, plan in plans:
            target = self._build_plan(plan, platform, explicit)
            fmt = self._format_for(target.image)
            finals.append(mutate.finish(target.image, fmt, self.created, dict(plan.annotations)))
            self._result.targets.append(target.image)
        self._result.images = finals
        if len(finals) > 1:
            formats = {f.format for f in finals}
            if len(formats) > 1:
                raise UsageError("the platforms' base images mix Docker and OCI formats",
                                 hint="choose one with --format oci or --format docker")
            self._result.index = mutate.make_index(finals, finals[0].format, dict(plans[0][1].annotations))
        self._result.annotations = dict(plans[0][1].annotations)
        self._result.layers_built, self._result.layers_cached = self._layers.built, self._layers.cached
        return self._result

    # ------------------------------------------------------------------ bases

    def _platforms_of_target(self, planner: Planner) -> list[Platform]:
        plan = planner(Platform.host())
        stage = _root_stage(plan, plan.target)
        bases = self._resolve(stage.base, "all", explicit=True)
        for base in bases:
            self._bases[(stage.base, str(base.platform))] = base
        return [base.platform for base in bases]

    def _prefetch_bases(self, plans: list[tuple[Platform, BuildPlan]], explicit: bool) -> None:
        """Resolve the target's root base for all platforms at once (one index fetch)."""
        if not plans:
            return
        stage = _root_stage(plans[0][1], plans[0][1].target)
        if stage.platform or any(_root_stage(p, p.target).base != stage.base for _, p in plans):
            return
        missing = [platform for platform, _ in plans if (stage.base, str(platform)) not in self._bases]
        if missing:
            bases = self._resolve(stage.base, missing, explicit=explicit)
            for platform, base in zip(missing, bases, strict=True):
                self._bases[(stage.base, str(platform))] = base

    def _base(self, spec: str, platform: Platform, explicit: bool) -> BaseImage:
        key = (spec, str(platform))
        with self._resolving(key):
            if key not in self._bases:
                (self._bases[key],) = self._resolve(spec, [platform], explicit=explicit)
        return self._bases[key].clone()

    def _resolve(self, spec: str, wanted: list[Platform] | Literal["all"], *, explicit: bool) -> list[BaseImage]:
        bases = resolve_base(spec, wanted, explicit=explicit, registries=self.registries, workdir=self.workdir,
                             default_format=self.options.format, cache=self.cache,  # type: ignore[arg-type]
                             pull=self.options.pull)
        for base in bases:
            refuse_windows(base.platform, f"base {spec}")
        return bases

    def _format_for(self, img: BaseImage) -> Format:
        return self.options.format or img.format  # type: ignore[return-value]

    # ------------------------------------------------------------------ stages

    def run_steps(self, img: BaseImage, plan: BuildPlan) -> BaseImage:
        """Apply the steps of `plan`'s one stage to a copy of `img` (the library's Image.append): the base is
        already resolved, and the layers are made and cached as a build makes them."""
        self._start_walks([plan])
        return self._run_stage(plan, plan.stages[0], img.clone(), {}).image

    def _start_walks(self, plans: list[BuildPlan]) -> None:
        """Start the quick keys' walks of the plans' plain directory copies, in the background."""
        from dockwright.layers.cachepolicy import step_tree_source

        self._layers.start_walks(
            tree for plan in plans for stage in plan.stages for step in stage.steps
            if isinstance(step, CopyStep) and (tree := step_tree_source(plan, step)))

    def _build_plan(self, plan: BuildPlan, platform: Platform, explicit: bool) -> _StageState:
        """Run the plan's stages, those that need none of the others at once (stages.py)."""
        from dockwright.stages import run_stages, stage_jobs

        def run(index: int, states: Done) -> _StageState:
            stage = plan.stages[index]
            if stage.base_stage is not None:
                img = states[stage.base_stage].image.clone()
            elif stage.platform:
                img = self._base(stage.base, Platform.parse(stage.platform), True)
            else:
                img = self._base(stage.base, platform, explicit)
            return self._run_stage(plan, stage, img, states)

        return run_stages(plan.stages, run, stage_jobs(), self._stop)[len(plan.stages) - 1]

    def _run_stage(self, plan: BuildPlan, stage: Stage, img: BaseImage, states: Done) -> _StageState:
        """The stage's steps on `img`; `states`: the finished stages it needs, by index."""
        mutate.pad_history(img.config, len(img.layers), self.created)
        state = _StageState(img)
        for step in stage.steps:
            check_cancelled(self._stop)
            try:
                # a ConfigStep is metadata only: instant, not worth a progress line
                with contextlib.nullcontext() if isinstance(step, ConfigStep) else self.progress.step(_step_name(step)):
                    self._apply(plan, step, state, states)
            except DockwrightError as exc:
                line = getattr(step, "line", None)
                where = getattr(step, "created_by", "").removesuffix(" # buildkit") or type(step).__name__
                prefix = f"{plan.source}:{line}: " if line else f"{plan.source}: {where}: "
                if isinstance(step, RunStep) and not line:
                    raise  # flags mode: the message names the --run
                raise exc.with_context(prefix) from exc
        return state

    def _apply(self, plan: BuildPlan, step: object, state: _StageState, states: Done) -> None:
        config = state.image.config
        match step:
            case ConfigStep():
                edit = step.edit
                if edit.deferred:
                    from dockwright.deferred import resolve_deferred

                    inherited = config.get("config") or {}
                    edit = resolve_deferred(edit, inherited.get("Env") or [], inherited.get("WorkingDir") or "/")
                mutate.apply_edit(config, edit)
                if step.created_by:
                    mutate.add_history(config, self.created, step.created_by, empty_layer=True)
            case CopyStep():
                created_by = step.created_by or f"COPY {' '.join(step.sources)} {step.dest}"
                self._append_layer(state, self._copy_layer(plan, step, state, states), created_by)
                dest = self._absolute(step.dest, state)  # it exists now, with its parents
                state.known_dirs.update(_ancestors(dest.strip("/") if dest.endswith("/") else
                                                   posixpath.dirname(dest).strip("/")))
            case MkdirStep():
                self._mkdir(step, state)
            case RunStep():
                self._run(plan, step, state, states)

    def _run(self, plan: BuildPlan, step: RunStep, state: _StageState, states: Done) -> None:
        """A RUN (run/steps.py): its layer from this build or the cache when its inputs are unchanged, else run."""
        from dockwright.run.steps import EMPTY_DIFF_ID, RunSteps

        args = step.args
        if step.deferred:
            from dockwright.deferred import resolve_deferred

            env = (state.image.config.get("config") or {}).get("Env") or []
            args = resolve_deferred(ConfigEdit(env=args, deferred=True), env).env
        with self._runs_lock:
            if self._runs is None:
                compression = self._compression()
                self._runs = RunSteps(self.cache.root, self.options.isolation, self.options.runtime,
                                      self.options.source_date_epoch,
                                      f"{compression.algorithm}:{compression.resolved_level()}", self._opener)
            runs = self._runs
        sources = self._mount_sources(plan, state, states) if step.mounts else None
        inputs = runs.prepare(step, state.image, args, flag=plan.source == "flags", sources=sources)
        fmt = self._format_for(state.image)
        with self._running(inputs.key):  # the same RUN in two stages: run once, as when they run one by one
            layer = self._layers.lookup(inputs.key, fmt)
            if layer is not None:
                log.info("%s cached", inputs.label)
            else:
                layer = runs.run(inputs, state.image, lambda entries: self._layers.write(entries, fmt, inputs.key),
                                 self._stop, lambda pack: self._layers.packed(pack, fmt, inputs.key))
        state.known_dirs.clear()  # the command may have removed some; the layers' indexes know
        if layer.diff_id == EMPTY_DIFF_ID:  # it changed no file: no layer (as BuildKit)
            mutate.add_history(state.image.config, self.created, inputs.created_by, empty_layer=True)
        else:
            self._append_layer(state, layer, inputs.created_by)

    def _mount_sources(self, plan: BuildPlan, state: _StageState, states: Done) -> MountSources:
        """What this stage's RUN --mount may read: the context, earlier stages, images, the secrets."""
        from dockwright.cache import default_cache_dir
        from dockwright.run.mounts import MountSources

        platform = state.image.platform
        return MountSources(self.options.cache_dir or default_cache_dir(), plan.context,
                            lambda index: states[index].image, lambda ref: self._base(ref, platform, True),
                            {secret.id: secret for secret in self.options.secrets},
                            {named.name: Path(named.source) for named in plan.contexts if named.directory},
                            {"": plan.dockerignore, **{named.name: named.dockerignore for named in plan.contexts}})

    def _mkdir(self, step: MkdirStep, state: _StageState) -> None:
        """WORKDIR, as BuildKit: mkdir -p owned by the stage's current USER (the base's included), mode
        0755; nothing for directories that exist. A directory a later COPY of the stage creates anyway
        (step.covered) needs no layer when root owns it."""
        path = self._absolute(step.path, state).strip("/")
        user = (state.image.config.get("config") or {}).get("User") or ""
        uid, gid = self._owner(user, state) if user else (0, 0)
        missing = [] if step.covered and (uid, gid) == (0, 0) else self._missing_dirs(state, path)
        state.known_dirs.update(_ancestors(path))
        created_by = step.created_by or f"WORKDIR /{path}"
        if not missing:
            mutate.add_history(state.image.config, self.created, created_by, empty_layer=True)
            return
        from dockwright.layers.tar import TarEntry

        mtime = self.options.source_date_epoch
        self._add_layer(state, [TarEntry(p, "dir", 0o755, uid, gid, mtime=mtime) for p in missing], created_by)

    def _missing_dirs(self, state: _StageState, path: str) -> list[str]:
        """The directories mkdir -p would create for `path` (relative) in the image as it is now, parents
        first, leaving out those this stage's steps made. The image's own directories come from its
        layers' indexes: read once per layer digest and cached, so only the first build that needs to
        know downloads a base layer for it (and only its tar headers are kept)."""
        if not path or path in state.known_dirs:
            return []
        missing = self._image_dirs(state).missing(path) if state.image.layers else _ancestors(path)
        return [p for p in missing if p not in state.known_dirs]

    def _image_dirs(self, state: _StageState) -> ImageDirs:
        """The merged layer indexes of the image so far (see _missing_dirs)."""
        from dockwright.layers.dirindex import ImageDirs

        if state.dirs is None:
            state.dirs = ImageDirs()
        layers = state.image.layers
        for layer in layers[state.dirs_layers:]:
            state.dirs.apply(self._facts.index(layer))
        state.dirs_layers = len(layers)
        return state.dirs

    def _absolute(self, dest: str, state: _StageState) -> str:
        """Resolve a COPY destination against the WorkingDir in force, keeping a trailing slash."""
        workdir = (state.image.config.get("config") or {}).get("WorkingDir") or "/"
        joined = posixpath.normpath(posixpath.join(workdir, dest))  # an absolute dest ignores workdir
        return joined.rstrip("/") + "/" if dest.endswith(("/", "/.")) or dest == "." else joined

    def _owner(self, chown: str | None, state: _StageState) -> tuple[int, int]:
        if not chown:
            return 0, 0
        from dockwright.layers.rootfs import resolve_chown

        if all(part in ("root", "0") for part in chown.split(":", 1)):
            return 0, 0  # no need to read /etc/passwd (and download the base's layers) for it
        numeric = all(part.isdigit() for part in chown.split(":", 1))
        if numeric:
            return resolve_chown(chown, None)
        if state.accounts is None:  # from the layer indexes: cached by digest, no extraction
            from dockwright.layers.rootfs import AccountFiles

            state.accounts = state.rootfs or AccountFiles(dict(self._image_dirs(state).accounts),
                                                          state.image.name or "the base image")
        return resolve_chown(chown, state.accounts)

    def _rootfs(self, state: _StageState) -> RootFS:
        """The merged file system of an image so far (downloads its layers: only when needed)."""
        with state.lock:
            if state.rootfs is None:
                state.rootfs = self._extract(state)
            return state.rootfs

    def _extract(self, state: _StageState) -> RootFS:
        from dockwright.layers.rootfs import RootFS

        layers = state.image.layers
        return RootFS.from_layers([self._opener(layer) for layer in layers], Path(self._mkdtemp("rootfs-")),
                                  names=[layer.descriptor.digest for layer in layers],
                                  where=state.image.name or "the base image")

    def _opener(self, layer: Layer) -> Callable[[], Iterable[bytes]]:
        """How an extraction reads a layer: a download (a registry blob not in the cache) shows as a transfer,
        `pull DIGEST`, as the blobs an output needs do; it stops at the next chunk once the build stops."""
        from dockwright.formats.registry import RegistryBlob

        source = layer.source
        if not isinstance(source, RegistryBlob) or (source.cache and source.cache.has_blob(source.digest, source.size)):
            return lambda: cancellable(source.open(), self._stop)
        return lambda: cancellable(self.progress.track(f"pull {source.digest[7:19]}", source.size, source.open()),
                                   self._stop)

    def _mkdtemp(self, prefix: str) -> str:
        import tempfile

        return tempfile.mkdtemp(prefix=prefix, dir=self.workdir)

    def _copy_settings(self, step: CopyStep, state: _StageState) -> tuple[str, CopySettings]:
        """(absolute destination, how the copy writes its entries) for a COPY step."""
        from dockwright.layers.copy import CopySettings

        uid, gid = self._owner(step.chown, state)
        dest = self._absolute(step.dest, state)
        dest_exists, make_dirs = self._destination_dirs(dest, step, (uid, gid), state)
        keep_owners = step.chown is None and (step.from_stage is not None or step.from_image is not None)
        return dest, CopySettings(uid, gid, int(step.chmod, 8) if step.chmod else None, tuple(step.excludes),
                                  step.parents, self.options.source_date_epoch, dest_exists, tuple(make_dirs),
                                  keep_owners)

    def _destination_dirs(self, dest: str, step: CopyStep, owner: tuple[int, int],
                          state: _StageState) -> tuple[bool, list[str]]:
        """(whether the destination directory exists, the missing parents the copy makes for its --chown
        user). Only a COPY with --chown or --chmod needs to know (and may read the image's directories):
        without them, what it would write is what a runtime makes of a missing directory (root, 0755)."""
        if step.chmod is None and owner == (0, 0):
            return dest.strip("/") in state.known_dirs, []
        path = dest.strip("/")
        parents = self._missing_dirs(state, posixpath.dirname(path)) if owner != (0, 0) else []
        return not self._missing_dirs(state, path), parents

    def _copy_entries(self, plan: BuildPlan, step: CopyStep, dest: str, settings: CopySettings,
                      states: Done) -> list[TarEntry]:
        if step.inline_files:
            made = list(settings.make_dirs)
            if dest.endswith("/") and not settings.dest_exists and (settings.uid, settings.gid) != (0, 0):
                made.append(dest.strip("/"))  # the directory the files go into, made for the --chown user
            return self._inline_entries(step, dest, settings.uid, settings.gid, settings.chmod, made)
        if step.from_stage is not None:
            return self._rootfs(states[step.from_stage]).collect(step.sources, dest, settings)
        if step.from_image is not None:
            source_image = _StageState(self._base(step.from_image, Platform.parse(plan.platform)
                                                  if plan.platform else Platform.host(), False))
            return self._rootfs(source_image).collect(step.sources, dest, settings)
        from dockwright.layers import copy

        context, ignore = self._context(plan, step)
        if step.add:
            from dockwright.layers.add import collect_add

            return collect_add(context, step, dest, settings, ignore=ignore, workdir=Path(self._mkdtemp("add-")))
        return copy.collect_copy(context, step.sources, dest, settings, ignore=ignore)

    def _inline_entries(self, step: CopyStep, dest: str, uid: int, gid: int, chmod: int | None,
                        made: list[str]) -> list[TarEntry]:
        from dockwright.layers.tar import TarEntry

        if len(step.inline_files) > 1 and not dest.endswith("/"):
            raise ContextError(f"{step.created_by}: several heredoc files need a destination ending in /")
        entries = {path: TarEntry(path, "dir", 0o755, uid, gid, mtime=self.options.source_date_epoch)
                   for path in made}
        for name, data in step.inline_files:
            path = posixpath.join(dest, name) if dest.endswith("/") else dest
            entries[path.strip("/")] = TarEntry(path.strip("/"), "file", chmod if chmod is not None else 0o644,
                                                uid, gid, size=len(data), data=data,
                                                mtime=self.options.source_date_epoch)
        return [entries[k] for k in sorted(entries)]

    # ------------------------------------------------------------------ layers

    def _compression(self) -> Compression:
        from dockwright.layers.compress import Compression

        return Compression(self.options.compression, self.options.compression_level)  # type: ignore[arg-type]

    def _add_layer(self, state: _StageState, entries: list[TarEntry], created_by: str) -> None:
        self._append_layer(state, self._layers.for_entries(entries, self._format_for(state.image)), created_by)

    def _append_layer(self, state: _StageState, layer: Layer, created_by: str) -> None:
        mutate.append_layer(state.image, layer, self.created, created_by)
        self._facts.warn_foreign_binaries(layer, state.image.platform)
        state.rootfs = state.accounts = None  # the file system changed; a later lookup looks again

    def _copy_layer(self, plan: BuildPlan, step: CopyStep, state: _StageState, states: Done) -> Layer:
        """A COPY/ADD layer, as the layer cache policy (layers/cachepolicy.py) finds or makes it: a plain
        COPY of one context directory by its cheap keys, any other by the fingerprint of its entries."""
        fmt = self._format_for(state.image)
        dest, settings = self._copy_settings(step, state)
        tree = self._layers.tree_copy(plan, step, dest, settings)
        if tree is None:
            return self._layers.for_entries(self._copy_entries(plan, step, dest, settings, states), fmt)

        def stream() -> Iterable[TarEntry]:
            from dockwright.layers import copy

            context, ignore = self._context(plan, step)
            return copy.stream_copy(context, step.sources[0], dest, settings, ignore=ignore)

        return self._layers.for_tree(tree, fmt, lambda: self._copy_entries(plan, step, dest, settings, states), stream)

    @staticmethod
    def _context(plan: BuildPlan, step: CopyStep) -> tuple[Path, IgnoreMatcher | None]:
        """The directory a context COPY reads (the build context or a named one) and its ignore matcher."""
        from dockwright.layers.dockerignore import compiled

        context, patterns = plan.context_of(step)
        return context, compiled(patterns)


def _ancestors(path: str) -> list[str]:
    """"a/b/c" -> ["a", "a/b", "a/b/c"]; "" -> []."""
    parts = path.split("/") if path else []
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _root_stage(plan: BuildPlan, stage: Stage) -> Stage:
    while stage.base_stage is not None:
        stage = plan.stages[stage.base_stage]
    return stage


def _step_name(step: CopyStep | MkdirStep | RunStep) -> str:
    """A step as progress shows it: its Dockerfile text (shortened), as BuildKit's progress does."""
    name = step.created_by.removesuffix(" # buildkit")
    if not name:
        match step:
            case CopyStep():
                name = f"{'ADD' if step.add else 'COPY'} {' '.join(step.sources)} {step.dest}"
            case MkdirStep():
                name = f"WORKDIR {step.path}"
            case RunStep():
                name = "RUN " + (step.command if isinstance(step.command, str) else json.dumps(list(step.command)))
    name = " ".join(name.split())
    return name if len(name) <= 100 else name[:99] + "…"
