"""Which layer a step gets: one this build already made, one the cache holds, or a new one written.

Keys, cheapest first:
- memo: a COPY's settings and source directory; the same step twice in one build (several
  platforms) is one layer, without a second walk;
- quick key (quickkey.py): the settings and the source tree's names, modes, sizes and mtimes, looked
  up in the cache before anything is collected;
- fingerprint (tar.fingerprint): what the layer holds, from its collected entries.
A layer is filed in the cache under the key it was looked up by. The media type depends on the
image's format only, so a layer found for one format serves the other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dockwright.cache import Cache, CachedLayer
from dockwright.layers.dockerignore import IgnoreMatcher, compiled, has_wildcards
from dockwright.model.blobs import FileBlob
from dockwright.model.documents import Descriptor
from dockwright.model.image import Layer
from dockwright.model.mediatypes import Format
from dockwright.model.units import human_size, plural
from dockwright.parallel import KeyedLocks, cancellable
from dockwright.plan import BuildPlan, CopyStep
from dockwright.progress import Progress

if TYPE_CHECKING:
    from pathlib import Path

    from dockwright.layers.compress import Compression, LayerBlob
    from dockwright.layers.copy import CopySettings
    from dockwright.layers.facts import LayerFacts
    from dockwright.layers.quickkey import BackgroundWalks
    from dockwright.layers.tar import TarEntry

log = logging.getLogger("dockwright")


@dataclass(frozen=True)
class TreeCopy:
    """A plain COPY of one context directory: what its memo and quick key are made of."""

    root: str  # the source directory (real path)
    skip: frozenset[str]  # names right below it the layer leaves out (plain --exclude names)
    settings: str  # everything else the layer depends on, as text
    counts_excluded: bool  # the quick key counts files the layer leaves out (see counts_excluded)


class LayerCache:
    """Layers by key for one build: `_known` holds what this build made or found, the cache the rest.
    `built` and `cached` count the layers written and the ones the cache gave. Stages use it at once: a
    step's layer is looked up and made under its key's lock, so the same layer wanted by two stages is
    made (and counted) once, as when they run one after another."""

    def __init__(self, cache: Cache, compression: Compression, *, use_cache: bool,
                 facts: LayerFacts | None = None, cancel: threading.Event | None = None,
                 progress: Progress | None = None) -> None:
        self.cache = cache
        self.progress = progress or Progress()
        self.compression = compression
        self.use_cache = use_cache
        self.facts = facts
        self.cancel = cancel
        self.built = 0
        self.cached = 0
        self._known: dict[str, Layer] = {}
        self._walks: BackgroundWalks | None = None
        self._keys = KeyedLocks()
        self._counting = threading.Lock()

    def start_walks(self, trees: Iterable[tuple[str, frozenset[str]]]) -> None:
        """Start walking the quick keys' source trees in the background (nothing without the cache)."""
        if self.use_cache:
            from dockwright.layers.quickkey import BackgroundWalks

            self._walks = BackgroundWalks(dict.fromkeys(trees))

    def tree_copy(self, plan: BuildPlan, step: CopyStep, dest: str, settings: CopySettings) -> TreeCopy | None:
        """The memo and quick-key inputs of `step` when it is a plain COPY of one context directory (absolute
        destination `dest`, written with `settings`); None for any other step."""
        tree = step_tree_source(plan, step)
        if tree is None:
            return None
        context, patterns = plan.context_of(step)
        from dockwright.layers.tar import FORMAT_VERSION

        compression = self.compression
        text = json.dumps([FORMAT_VERSION, compression.algorithm, compression.resolved_level(), step.sources, dest,
                           (settings.dest_exists, list(settings.make_dirs)), step.chown, (settings.uid, settings.gid),
                           step.chmod, step.excludes, step.parents, patterns, settings.mtime])
        root, skip = tree
        return TreeCopy(root, skip, text,
                        counts_excluded(str(context), root, step.excludes, skip, compiled(patterns)))

    def for_tree(self, tree: TreeCopy, fmt: Format, collect: Callable[[], list[TarEntry]],
                 stream: Callable[[], Iterable[TarEntry]]) -> Layer:
        """The layer of a plain directory COPY: by memo, then by quick key; on a miss its entries
        `stream` into the writer as the tree is walked (the fingerprint could only repeat what the quick
        key said), unless the quick key counts files the layer leaves out: then a miss may be a change to
        an excluded file only, and the layer is looked up by the fingerprint of what `collect` gives."""
        memo = "step:" + hashlib.sha256(f"{tree.root}\0{tree.settings}".encode()).hexdigest()
        with self._keys(memo):
            layer = self._this_build(memo, fmt)
            quick = None
            if layer is None and self._walks is not None:
                from dockwright.layers.quickkey import key_of

                quick = key_of(tree.settings, self._walks.digest(tree.root, tree.skip))
                layer = self.lookup(quick, fmt)
            if layer is None and tree.counts_excluded:
                layer = self.for_entries(collect(), fmt, also_key=quick)
            elif layer is None:
                layer = self.write(stream(), fmt, quick)
            self._known[memo] = layer
        return layer

    def for_entries(self, entries: list[TarEntry], fmt: Format, also_key: str | None = None) -> Layer:
        """The layer of `entries`: from this build or the cache when its fingerprint is known, else written.
        `also_key`: another key to file it under (a step's quick key)."""
        from dockwright.layers.tar import fingerprint

        key = fingerprint(entries, self.compression)
        with self._keys(key):  # taken after a step's memo lock, never before one: no lock order to cross
            layer = self.lookup(key, fmt) or self.write(entries, fmt, key)
        if also_key is not None and self.use_cache:
            source = layer.source
            assert isinstance(source, FileBlob)
            self.cache.record_layer(also_key, CachedLayer(layer.descriptor.digest, layer.descriptor.size,
                                                          layer.diff_id, self.compression.algorithm, source.path))
            self._known[also_key] = layer
        return layer

    def lookup(self, key: str, fmt: Format) -> Layer | None:
        """The layer filed under `key` in this build or in the cache, with the media type for `fmt`."""
        known = self._this_build(key, fmt)
        if known is not None or not self.use_cache:
            return known
        hit = self.cache.lookup_layer(key)
        if hit is None:
            return None
        with self._counting:
            self.cached += 1
        log.info("cached layer %s", hit.digest[:19])
        layer = Layer(Descriptor(self._media_type(fmt), hit.digest, hit.size), hit.diff_id,
                      FileBlob(hit.path, hit.digest, hit.size, "cached layer"))
        self._known[key] = layer
        return layer

    def write(self, entries: Iterable[TarEntry], fmt: Format, key: str | None) -> Layer:
        """Write a new layer into the cache, filed under `key` (None: kept for this build only)."""
        from dockwright.layers.tar import PackCounters, write_layer

        def pack(temp: Path, compression: Compression) -> LayerBlob:
            counters = PackCounters()
            with self.progress.packing("layer", counters):
                return write_layer(cancellable(entries, self.cancel), temp, compression, counters)

        return self.packed(pack, fmt, key)

    def packed(self, pack: Callable[[Path, Compression], LayerBlob], fmt: Format, key: str | None) -> Layer:
        """A new layer that `pack` writes to the temporary file it is given, with this cache's compression
        (write_layer, here or in another process), filed under `key` as `write` files it."""
        compression = self.compression
        temp = self.cache.temp_path(".layer")
        try:
            blob = pack(temp, compression)
            if key is None:
                path = self.cache.adopt_blob(temp, blob.digest)
            else:
                path = self.cache.store_layer(key, temp, blob.digest, blob.size, blob.diff_id,
                                              compression.algorithm).path
        finally:
            temp.unlink(missing_ok=True)
        with self._counting:
            self.built += 1
        if self.facts is not None:
            self.facts.record_machines(blob.digest, blob.machines)
        log.info("built layer %s (%s, %s)", blob.digest[:19], plural(blob.entries, "entry", "entries"),
                 human_size(blob.size))
        layer = Layer(Descriptor(self._media_type(fmt), blob.digest, blob.size), blob.diff_id,
                      FileBlob(path, blob.digest, blob.size, "built layer", fresh=True))
        if key is not None:
            self._known[key] = layer
        return layer

    def _this_build(self, key: str, fmt: Format) -> Layer | None:
        """The layer this build made or found under `key`, with the media type for `fmt`."""
        known = self._known.get(key)
        if known is None:
            return None
        return Layer(Descriptor(self._media_type(fmt), known.descriptor.digest, known.descriptor.size),
                     known.diff_id, known.source)

    def _media_type(self, fmt: Format) -> str:
        from dockwright.layers.compress import layer_media_type

        return layer_media_type(self.compression.algorithm, fmt)


def step_tree_source(plan: BuildPlan, step: CopyStep) -> tuple[str, frozenset[str]] | None:
    """tree_source for a step of `plan`, in the context it reads (the build context or a named one)."""
    context, patterns = plan.context_of(step)
    return tree_source(str(context), step, patterns)


def tree_source(context: str, step: CopyStep, dockerignore: tuple[str, ...]) -> tuple[str, frozenset[str]] | None:
    """(source directory, names below it to skip) when `step` is a plain COPY of one context directory,
    the step's quick key applies; None otherwise. Known from the plan alone, before any base is resolved."""
    if (len(step.sources) != 1 or step.add or step.inline_files
            or step.from_stage is not None or step.from_image is not None):
        return None
    from dockwright.layers.quickkey import tree_root

    root = tree_root(context, step.sources[0])
    if root is None:
        return None
    outright = any(p.startswith("!") for p in (*step.excludes, *dockerignore))
    skip = frozenset() if outright else frozenset(p for p in step.excludes if "/" not in p and not has_wildcards(p))
    return root, skip


def counts_excluded(context: str, root: str, excludes: Iterable[str], skip: frozenset[str],
                    ignore: IgnoreMatcher | None) -> bool:
    """Whether files a COPY of `root` leaves out count in its quick key: .dockerignore patterns that may
    match below the source, or --exclude patterns the walk does not skip. Then a quick-key miss may be a
    change to an excluded file only, and the fingerprint of what the layer holds is worth a look."""
    if not set(excludes) <= skip:
        return True
    if ignore is None:
        return False
    below = os.path.relpath(root, os.path.realpath(context))
    return ignore.may_match_below("" if below == "." else below)


