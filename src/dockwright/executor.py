"""Execute a build plan: resolve bases per platform, make layers, compose configs and manifests.

Data flows one way: plan -> BaseImage (per stage and platform) -> FinalImage(s) [+ index] -> outputs.
"""

from __future__ import annotations

import functools
import logging
import posixpath
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dockwright import mutate
from dockwright.cache import Cache
from dockwright.formats.resolve import resolve_base
from dockwright.layers.facts import LayerFacts
from dockwright.model.blobs import FileBlob
from dockwright.model.documents import Descriptor
from dockwright.model.errors import ContextError, DockwrightError, UsageError
from dockwright.model.image import BaseImage, BuildResult, Layer
from dockwright.model.mediatypes import Format
from dockwright.model.platform import Platform, parse_platforms
from dockwright.parallel import check_cancelled
from dockwright.plan import BuildOptions, BuildPlan, ConfigEdit, ConfigStep, CopyStep, MkdirStep, RunStep, Stage

if TYPE_CHECKING:
    from dockwright.layers.dirindex import ImageDirs
    from dockwright.layers.dockerignore import IgnoreMatcher
    from dockwright.layers.quickkey import BackgroundWalks
    from dockwright.layers.rootfs import RootFS
    from dockwright.layers.tar import Compression, TarEntry
    from dockwright.registry import Registries
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


@dataclass
class Builder:
    options: BuildOptions
    cache: Cache
    registries: Registries | None
    workdir: Path  # scratch space for extracted file systems; removed by the caller
    cancel: threading.Event | None = None  # set by an embedding program: the build stops at its next file or step
    _bases: dict[tuple[str, str], BaseImage] = field(default_factory=dict)
    _layers: dict[str, Layer] = field(default_factory=dict)
    _result: BuildResult = field(default_factory=lambda: BuildResult([]))
    _walks: BackgroundWalks | None = None
    _runs: RunSteps | None = None
    _facts: LayerFacts = field(init=False)

    def __post_init__(self) -> None:
        self._facts = LayerFacts(self.cache)

    @property
    def created(self) -> str:
        return mutate.timestamp(self.options.source_date_epoch)

    def build(self, planner: Planner) -> BuildResult:
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
        if key not in self._bases:
            (self._bases[key],) = self._resolve(spec, [platform], explicit=explicit)
        return self._bases[key].clone()

    def _resolve(self, spec: str, wanted: list[Platform] | Literal["all"], *, explicit: bool) -> list[BaseImage]:
        return resolve_base(spec, wanted, explicit=explicit, registries=self.registries, workdir=self.workdir,
                            default_format=self.options.format, cache=self.cache,  # type: ignore[arg-type]
                            pull=self.options.pull)

    def _format_for(self, img: BaseImage) -> Format:
        return self.options.format or img.format  # type: ignore[return-value]

    # ------------------------------------------------------------------ stages

    def run_steps(self, img: BaseImage, plan: BuildPlan) -> BaseImage:
        """Apply the steps of `plan`'s one stage to a copy of `img` (the library's Image.append): the base is
        already resolved, and the layers are made and cached as a build makes them."""
        self._start_walks([plan])
        return self._run_stage(plan, plan.stages[0], img.clone(), []).image

    def _start_walks(self, plans: list[BuildPlan]) -> None:
        """Start the quick keys' walks of the plans' plain directory copies, in the background."""
        if self.options.use_cache:
            from dockwright.layers.quickkey import BackgroundWalks

            self._walks = BackgroundWalks(dict.fromkeys(
                tree for plan in plans for stage in plan.stages for step in stage.steps
                if isinstance(step, CopyStep) and (tree := _tree_source(plan, step)) is not None))

    def _build_plan(self, plan: BuildPlan, platform: Platform, explicit: bool) -> _StageState:
        states: list[_StageState] = []
        for stage in plan.stages:
            if stage.base_stage is not None:
                img = states[stage.base_stage].image.clone()
            elif stage.platform:
                img = self._base(stage.base, Platform.parse(stage.platform), True)
            else:
                img = self._base(stage.base, platform, explicit)
            states.append(self._run_stage(plan, stage, img, states))
        return states[-1]

    def _run_stage(self, plan: BuildPlan, stage: Stage, img: BaseImage, states: list[_StageState]) -> _StageState:
        mutate.pad_history(img.config, len(img.layers), self.created)
        state = _StageState(img)
        for step in stage.steps:
            check_cancelled(self.cancel)
            try:
                self._apply(plan, step, state, states)
            except DockwrightError as exc:
                line = getattr(step, "line", None)
                where = getattr(step, "created_by", "").removesuffix(" # buildkit") or type(step).__name__
                prefix = f"{plan.source}:{line}: " if line else f"{plan.source}: {where}: "
                if isinstance(step, RunStep) and not line:
                    prefix = ""  # flags mode: the message names the --run
                exc.message = f"{prefix}{exc.message}"
                raise
        return state

    def _apply(self, plan: BuildPlan, step: object, state: _StageState, states: list[_StageState]) -> None:
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
                self._run(plan, step, state)

    def _run(self, plan: BuildPlan, step: RunStep, state: _StageState) -> None:
        """A RUN (run/steps.py): its layer from this build or the cache when its inputs are unchanged, else run."""
        from dockwright.run.steps import EMPTY_DIFF_ID, RunSteps

        args = step.args
        if step.deferred:
            from dockwright.deferred import resolve_deferred

            env = (state.image.config.get("config") or {}).get("Env") or []
            args = resolve_deferred(ConfigEdit(env=args, deferred=True), env).env
        if self._runs is None:
            compression = self._compression()
            self._runs = RunSteps(self.cache.root, self.options.isolation, self.options.runtime,
                                  self.options.source_date_epoch,
                                  f"{compression.algorithm}:{compression.resolved_level()}")
        inputs = self._runs.prepare(step, state.image, args, flag=plan.source == "flags")
        fmt = self._format_for(state.image)
        layer = self._layer_from_cache(inputs.key, fmt)
        if layer is not None:
            log.info("%s cached", inputs.label)
        else:
            layer = self._runs.run(inputs, state.image, lambda entries: self._write_layer(entries, fmt, inputs.key))
        state.known_dirs.clear()  # the command may have removed some; the layers' indexes know
        if layer.diff_id == EMPTY_DIFF_ID:  # it changed no file: no layer (as BuildKit)
            mutate.add_history(state.image.config, self.created, inputs.created_by, empty_layer=True)
        else:
            self._append_layer(state, layer, inputs.created_by)

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
        layers = state.image.layers
        if not layers:
            missing = _ancestors(path)
        else:
            from dockwright.layers.dirindex import ImageDirs

            if state.dirs is None:
                state.dirs = ImageDirs()
            for layer in layers[state.dirs_layers:]:
                state.dirs.apply(self._facts.index(layer))
            state.dirs_layers = len(layers)
            missing = state.dirs.missing(path)
        return [p for p in missing if p not in state.known_dirs]

    def _absolute(self, dest: str, state: _StageState) -> str:
        """Resolve a COPY destination against the WorkingDir in force, keeping a trailing slash."""
        workdir = (state.image.config.get("config") or {}).get("WorkingDir") or "/"
        joined = posixpath.normpath(posixpath.join(workdir, dest))  # an absolute dest ignores workdir
        return joined.rstrip("/") + "/" if dest.endswith(("/", "/.")) or dest == "." else joined

    def _owner(self, chown: str | None, state: _StageState) -> tuple[int, int]:
        if not chown:
            return 0, 0
        from dockwright.layers.rootfs import resolve_chown

        numeric = all(part.isdigit() for part in chown.split(":", 1))
        if numeric:
            return resolve_chown(chown, None)
        if state.accounts is None:
            state.accounts = state.rootfs or self._extract(state, ("etc/passwd", "etc/group"))
        return resolve_chown(chown, state.accounts)

    def _rootfs(self, state: _StageState) -> RootFS:
        """The merged file system of an image so far (downloads its layers: only when needed)."""
        if state.rootfs is None:
            state.rootfs = self._extract(state, None)
        return state.rootfs

    def _extract(self, state: _StageState, paths: tuple[str, ...] | None) -> RootFS:
        from dockwright.layers.rootfs import RootFS

        layers = state.image.layers
        return RootFS.from_layers([layer.source.open for layer in layers], Path(self._mkdtemp("rootfs-")),
                                  names=[layer.descriptor.digest for layer in layers], paths=paths,
                                  where=state.image.name or "the base image")

    def _mkdtemp(self, prefix: str) -> str:
        import tempfile

        return tempfile.mkdtemp(prefix=prefix, dir=self.workdir)

    def _copy_args(self, step: CopyStep, state: _StageState) -> tuple[str, dict[str, Any]]:
        """(absolute destination, the keyword arguments of collect_copy and its kin) for a COPY step."""
        uid, gid = self._owner(step.chown, state)
        dest = self._absolute(step.dest, state)
        dest_exists, make_dirs = self._destination_dirs(dest, step, (uid, gid), state)
        return dest, {"uid": uid, "gid": gid, "chmod": int(step.chmod, 8) if step.chmod else None,
                      "extra_excludes": step.excludes, "parents": step.parents,
                      "mtime": self.options.source_date_epoch, "dest_exists": dest_exists, "make_dirs": make_dirs}

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

    def _copy_entries(self, plan: BuildPlan, step: CopyStep, state: _StageState,
                      states: list[_StageState]) -> list[TarEntry]:
        dest, common = self._copy_args(step, state)
        if step.inline_files:
            made = list(common["make_dirs"])
            if dest.endswith("/") and not common["dest_exists"] and (common["uid"], common["gid"]) != (0, 0):
                made.append(dest.strip("/"))  # the directory the files go into, made for the --chown user
            return self._inline_entries(step, dest, common["uid"], common["gid"], common["chmod"], made)
        if step.from_stage is not None:
            return self._rootfs(states[step.from_stage]).collect(step.sources, dest, **common)
        if step.from_image is not None:
            source_image = _StageState(self._base(step.from_image, Platform.parse(plan.platform)
                                                  if plan.platform else Platform.host(), False))
            return self._rootfs(source_image).collect(step.sources, dest, **common)
        from dockwright.layers.copy import collect_copy

        ignore = self._ignore(plan)
        if step.add:
            from dockwright.layers.add import collect_add

            return collect_add(plan.context, step, dest, ignore=ignore, workdir=Path(self._mkdtemp("add-")),
                               **common)
        return collect_copy(plan.context, step.sources, dest, excludes=ignore, **common)

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
        from dockwright.layers.tar import Compression

        return Compression(self.options.compression, self.options.compression_level)  # type: ignore[arg-type]

    def _add_layer(self, state: _StageState, entries: list[TarEntry], created_by: str) -> None:
        self._append_layer(state, self._make_layer(entries, self._format_for(state.image)), created_by)

    def _append_layer(self, state: _StageState, layer: Layer, created_by: str) -> None:
        mutate.append_layer(state.image, layer, self.created, created_by)
        self._facts.warn_foreign_binaries(layer, state.image.platform)
        state.rootfs = state.accounts = None  # the file system changed; a later lookup re-extracts

    def _copy_layer(self, plan: BuildPlan, step: CopyStep, state: _StageState, states: list[_StageState]) -> Layer:
        """A COPY/ADD layer: from this build or the cache when its inputs are known, else written.

        A plain COPY of one context directory is looked up by cheap keys before anything is collected:
        its settings within this build, its quick key (quickkey.py) in the cache. On a miss its entries
        stream into the writer as the tree is walked: the fingerprint could only repeat what the quick
        key said. Unless the quick key counts files the layer leaves out (.dockerignore or --exclude
        patterns reaching into the source): then a miss may be a change to an ignored file only, and the
        layer is looked up by fingerprint first."""
        fmt = self._format_for(state.image)
        tree = self._tree_step(plan, step, state)
        if tree is None:
            return self._make_layer(self._copy_entries(plan, step, state, states), fmt)
        root, settings, skip = tree
        import hashlib

        # the same step twice in one build (several platforms) is one layer: no second walk
        memo = "step:" + hashlib.sha256(f"{root}\0{settings}".encode()).hexdigest()
        layer = self._known_layer(memo, fmt)
        quick = None
        if layer is None and self._walks is not None:
            from dockwright.layers.quickkey import key_of

            quick = key_of(settings, self._walks.digest(root, skip))
            layer = self._layer_from_cache(quick, fmt)
        if layer is None and self._quick_key_sees_excluded_files(plan, step, root, skip):
            layer = self._make_layer(self._copy_entries(plan, step, state, states), fmt, also_key=quick)
        elif layer is None:
            from dockwright.layers.copy import stream_copy

            dest, common = self._copy_args(step, state)
            layer = self._write_layer(stream_copy(plan.context, step.sources[0], dest, excludes=self._ignore(plan),
                                                  **common), fmt, quick)
        self._layers[memo] = layer
        return layer

    def _quick_key_sees_excluded_files(self, plan: BuildPlan, step: CopyStep, root: str,
                                       skip: frozenset[str]) -> bool:
        """Whether files the layer leaves out count in the step's quick key: .dockerignore patterns that
        may match below the source, or --exclude patterns it does not skip. Then a quick-key miss may be
        a change to an excluded file only, and the fingerprint of what the layer holds is worth a look."""
        if not set(step.excludes) <= skip:
            return True
        ignore = self._ignore(plan)
        if ignore is None:
            return False
        import os

        below = os.path.relpath(root, os.path.realpath(plan.context))
        return ignore.may_match_below("" if below == "." else below)

    @staticmethod
    def _ignore(plan: BuildPlan) -> IgnoreMatcher | None:
        return _ignore_matcher(plan.dockerignore) if plan.dockerignore else None

    def _tree_step(self, plan: BuildPlan, step: CopyStep, state: _StageState) -> tuple[str, str, frozenset[str]] | None:
        """(source directory, settings, names to skip) for a plain COPY of one context directory, the
        inputs of its quick key; None for any other step."""
        tree = _tree_source(plan, step)
        if tree is None:
            return None
        import json

        from dockwright.layers.tar import FORMAT_VERSION

        dest = self._absolute(step.dest, state)
        compression = self._compression()
        settings = json.dumps([FORMAT_VERSION, compression.algorithm, compression.resolved_level(), step.sources,
                               dest, self._destination_dirs(dest, step, self._owner(step.chown, state), state),
                               step.chown, self._owner(step.chown, state),
                               step.chmod, step.excludes, step.parents, plan.dockerignore,
                               self.options.source_date_epoch])
        root, skip = tree
        return root, settings, skip

    def _known_layer(self, key: str, fmt: Format) -> Layer | None:
        """The layer this build made or found under `key`, with the media type for `fmt`."""
        known = self._layers.get(key)
        if known is None:
            return None
        from dockwright.layers.tar import layer_media_type

        media_type = layer_media_type(self._compression().algorithm, fmt)
        return Layer(Descriptor(media_type, known.descriptor.digest, known.descriptor.size), known.diff_id,
                     known.source)

    def _layer_from_cache(self, key: str, fmt: Format) -> Layer | None:
        """The layer filed under `key` in this build or in the cache, with the media type for `fmt`."""
        known = self._known_layer(key, fmt)
        if known is not None or not self.options.use_cache:
            return known
        hit = self.cache.lookup_layer(key)
        if hit is None:
            return None
        from dockwright.layers.tar import layer_media_type

        self._result.layers_cached += 1
        log.info("cached layer %s", hit.digest[:19])
        layer = Layer(Descriptor(layer_media_type(self._compression().algorithm, fmt), hit.digest, hit.size),
                      hit.diff_id, FileBlob(hit.path, hit.digest, hit.size, "cached layer"))
        self._layers[key] = layer
        return layer

    def _make_layer(self, entries: list[TarEntry], fmt: Format, also_key: str | None = None) -> Layer:
        """The layer of `entries`: from this build or the cache when its fingerprint is known, else written.
        `also_key`: another key to file it under (the step's quick key)."""
        from dockwright.layers.tar import fingerprint

        key = fingerprint(entries, self._compression())
        layer = self._layer_from_cache(key, fmt) or self._write_layer(entries, fmt, key)
        if also_key is not None and self.options.use_cache:
            from dockwright.cache import CachedLayer

            source = layer.source
            assert isinstance(source, FileBlob)
            self.cache.record_layer(also_key, CachedLayer(layer.descriptor.digest, layer.descriptor.size,
                                                          layer.diff_id, self._compression().algorithm, source.path))
            self._layers[also_key] = layer
        return layer

    def _write_layer(self, entries: Iterable[TarEntry], fmt: Format, key: str | None) -> Layer:
        """Write a new layer into the cache, filed under `key` (None: kept for this build only)."""
        from dockwright.layers.tar import layer_media_type, write_layer

        compression = self._compression()
        temp = self.cache.temp_path(".layer")
        try:
            blob = write_layer(entries if self.cancel is None else _checked(entries, self.cancel), temp, compression)
            if key is None:
                path = self.cache.adopt_blob(temp, blob.digest)
            else:
                path = self.cache.store_layer(key, temp, blob.digest, blob.size, blob.diff_id,
                                              compression.algorithm).path
        finally:
            temp.unlink(missing_ok=True)
        self._result.layers_built += 1
        self._facts.record_machines(blob.digest, blob.machines)
        log.info("built layer %s (%d entries, %s bytes)", blob.digest[:19], blob.entries, blob.size)
        layer = Layer(Descriptor(layer_media_type(compression.algorithm, fmt), blob.digest, blob.size),
                      blob.diff_id, FileBlob(path, blob.digest, blob.size, "built layer", fresh=True))
        if key is not None:
            self._layers[key] = layer
        return layer


@functools.lru_cache(maxsize=8)
def _ignore_matcher(patterns: tuple[str, ...]) -> IgnoreMatcher:
    """Compiled once per build, not once per COPY step and use (a matcher holds no state)."""
    from dockwright.layers.dockerignore import IgnoreMatcher

    return IgnoreMatcher.from_patterns(list(patterns))


def _tree_source(plan: BuildPlan, step: CopyStep) -> tuple[str, frozenset[str]] | None:
    """(source directory, names below it to skip) when `step` is a plain COPY of one context directory,
    the step's quick key applies; None otherwise. Known from the plan alone, before any base is resolved."""
    if (len(step.sources) != 1 or step.add or step.inline_files
            or step.from_stage is not None or step.from_image is not None):
        return None
    from dockwright.layers.quickkey import tree_root

    root = tree_root(str(plan.context), step.sources[0])
    if root is None:
        return None
    outright = any(p.startswith("!") for p in (*step.excludes, *plan.dockerignore))
    skip = frozenset() if outright else frozenset(p for p in step.excludes if "/" not in p
                                                  and not any(c in p for c in "*?[\\"))
    return root, skip


def _ancestors(path: str) -> list[str]:
    """"a/b/c" -> ["a", "a/b", "a/b/c"]; "" -> []."""
    parts = path.split("/") if path else []
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _checked(entries: Iterable[TarEntry], cancel: threading.Event) -> Iterator[TarEntry]:
    for entry in entries:
        check_cancelled(cancel)
        yield entry


def _root_stage(plan: BuildPlan, stage: Stage) -> Stage:
    while stage.base_stage is not None:
        stage = plan.stages[stage.base_stage]
    return stage
