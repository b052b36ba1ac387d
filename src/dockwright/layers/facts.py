"""What a build learns about layers, by layer digest, kept in the cache so that the next build knows it
for free: a layer's directory index (layers/dirindex.py: read from a base layer's tar headers, which
costs a download the first time only) and the machines of the ELF binaries in a layer this build wrote
(layers/elf.py: recorded by the writer, compared with each platform the layer goes into)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dockwright.parallel import KeyedLocks

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from dockwright.cache import Cache
    from dockwright.layers.dirindex import LayerIndex
    from dockwright.model.image import Layer
    from dockwright.model.platform import Platform

log = logging.getLogger("dockwright")


@dataclass
class LayerFacts:
    """Used by the stages of a build at once: a layer's index is read once (per-digest locks)."""

    cache: Cache
    # how a layer's blob is read when its index is made (the executor's shows a download as a transfer and
    # stops at the next chunk once the build stops)
    open_layer: Callable[[Layer], Callable[[], Iterable[bytes]]] | None = None
    _indexes: dict[str, LayerIndex] = field(default_factory=dict)
    _machines: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    _warned: set[tuple[str, str]] = field(default_factory=set)
    _reading: KeyedLocks = field(default_factory=KeyedLocks)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def index(self, layer: Layer) -> LayerIndex:
        """The layer's directory index: from this build, the cache, or read from the blob (then cached)."""
        from dockwright.layers.dirindex import LayerIndex

        digest = layer.descriptor.digest
        with self._reading(digest):
            known = self._indexes.get(digest)
            if known is None:
                known = LayerIndex.from_json(self.cache.lookup_json(self.cache.indexes, digest))
            if known is None:
                log.info("reading the directories of layer %s", digest[:19])
                chunks = self.open_layer(layer)() if self.open_layer is not None else layer.source.open()
                known = LayerIndex.read(chunks, f"layer {digest}")
                self.cache.store_json(self.cache.indexes, digest, known.to_json())
            self._indexes[digest] = known
        return known

    def record_machines(self, digest: str, machines: dict[str, list[str]]) -> None:
        """The ELF machines the writer found in a layer it wrote (kept for the layer's cache hits)."""
        self._machines[digest] = machines
        if machines:
            self.cache.store_json(self.cache.machines, digest, machines)

    def warn_foreign_binaries(self, layer: Layer, platform: Platform) -> None:
        """Warn, once per layer and platform, about ELF binaries of a layer we made that do not run on
        `platform`. A layer from the cache has its record there (no record: no ELF binaries)."""
        digest = layer.descriptor.digest
        with self._lock:
            if (digest, str(platform)) in self._warned:
                return
            self._warned.add((digest, str(platform)))
        machines = self._machines.get(digest)
        if machines is None:
            stored = self.cache.lookup_json(self.cache.machines, digest)
            machines = stored if isinstance(stored, dict) else {}
            self._machines[digest] = machines
        if machines:
            from dockwright.layers.elf import warnings

            for line in warnings(machines, str(platform), platform.architecture):
                log.warning("%s", line)
