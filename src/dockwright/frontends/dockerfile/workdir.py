"""WORKDIR directory steps: BuildKit creates every WORKDIR but / (mkdir -p, owned by the current USER,
nothing when it exists). Whether it exists, and who the USER is, are known at build time only; the plan
records whether a later COPY/ADD of the stage writes into the directory (which then creates it
anyway, when root would own it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dockwright.plan import ConfigEdit, ConfigStep, CopyStep, MkdirStep, Step


@dataclass
class Workdir:
    """A WORKDIR whose directory layer is decided at the end of the stage."""

    edit: ConfigEdit
    created_by: str
    path: str | None  # absolute, or None when not known here
    covered: bool = False  # a later COPY/ADD creates the directory


@dataclass
class CopyMark:
    """A CopyStep and where it writes, for deciding WORKDIR directory layers."""

    step: CopyStep
    target: str | None  # absolute destination when known here
    relative: bool


def finish_workdirs(items: Sequence[Step | Workdir | CopyMark]) -> tuple[Step, ...]:
    """The stage's steps, with a MkdirStep after each WORKDIR but /."""
    workdirs: list[Workdir] = []
    for item in items:
        if isinstance(item, Workdir):
            workdirs.append(item)
        elif isinstance(item, CopyMark):
            for workdir in workdirs:
                if workdir.path is not None and item.target is not None and (
                        item.target == workdir.path or item.target.startswith(workdir.path.rstrip("/") + "/")):
                    workdir.covered = True
            if item.relative and item.target is None and workdirs:
                workdirs[-1].covered = True  # relative to a directory only known at build time
    steps: list[Step] = []
    for item in items:
        if isinstance(item, CopyMark):
            steps.append(item.step)
        elif not isinstance(item, Workdir):
            steps.append(item)
        elif item.path == "/":
            steps.append(ConfigStep(item.edit, item.created_by))
        else:
            steps.append(ConfigStep(item.edit))
            steps.append(MkdirStep(item.path or ".", covered=item.covered, created_by=item.created_by))
    return tuple(steps)


Item = Step | Workdir | CopyMark
