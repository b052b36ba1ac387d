"""Image formats, one module each, reading and writing it: `registry` (pull and push), `layout` (OCI layout
directory and OCI archive), `docker_archive`, `engine` (load into Docker/Podman), and `resolve`, which opens a
base image from any of them.

Every writer is an `Output`. Publishing is two-phase so that several outputs are all or nothing: each output
first `prepare`s what can still be undone (a file output writes a temporary file beside its destination), then,
once every output has prepared, `commit` makes it visible (renames the file, pushes the tags), and on a failure
`discard` removes what was prepared."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from dockwright.model.image import BuildResult
    from dockwright.model.reference import Reference
    from dockwright.progress import Progress
    from dockwright.registry import Registries


@dataclass
class PublishContext:
    """What outputs share: the tags, the registry clients, the epoch for archive mtimes, progress, scratch space."""

    tags: list[Reference]
    registries: Registries | None
    workdir: Path
    progress: Progress
    jobs: int = 4
    mtime: int = 0
    cancel: threading.Event | None = None
    notes: list[str] = field(default_factory=list)  # pushed references, for the caller


class Output(Protocol):
    """One destination of a built image."""

    needs_blobs: bool  # writes the blobs' bytes locally: registry blobs are fetched first, in parallel
    visible_last: bool  # a file that appears by rename: committed after the outputs that cannot be undone

    def prepare(self, result: BuildResult, context: PublishContext) -> None: ...

    def commit(self, result: BuildResult, context: PublishContext) -> None: ...

    def discard(self) -> None: ...


def write_all(result: BuildResult, outputs: Sequence[Output], context: PublishContext) -> None:
    """Prepare every output, then commit them (files last); on any failure discard them all."""
    from dockwright.parallel import check_cancelled

    try:
        if any(output.needs_blobs for output in outputs):
            from dockwright.formats.layout import prefetch

            prefetch(result, context.jobs, context.progress, context.cancel)
        for output in outputs:
            check_cancelled(context.cancel)
            output.prepare(result, context)
        for output in sorted(outputs, key=lambda o: o.visible_last):
            check_cancelled(context.cancel)
            output.commit(result, context)
    except BaseException:
        for output in outputs:
            output.discard()
        raise
