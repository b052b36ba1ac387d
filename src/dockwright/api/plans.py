"""From what a caller asks for to a planner (platform -> BuildPlan), for the Dockerfile and the flags frontends."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from dockwright.model.errors import UsageError
from dockwright.model.platform import Platform
from dockwright.plan import BuildPlan, ConfigEdit, ConfigStep, NamedContext, Stage

Planner = Callable[[Platform], BuildPlan]


def dockerfile_planner(context: Path, *, dockerfile: str | Path | None = None, text: str | None = None,
                       target: str | None = None, build_args: Mapping[str, str] | None = None,
                       labels: Mapping[str, str] | None = None, overlay: ConfigEdit | None = None,
                       annotations: Sequence[tuple[str, str]] = (), ignore_file: str | Path | None = None,
                       contexts: Sequence[NamedContext] = ()) -> Planner:
    """The Dockerfile at `dockerfile` (default CONTEXT/Dockerfile), or `text`; `overlay`: config changes on top
    of the target stage (the command line's --entrypoint etc. in Dockerfile mode); `ignore_file` replaces
    CONTEXT/.dockerignore (`<Dockerfile>.dockerignore` still comes first); `contexts`: named build contexts
    (see named_contexts). Parse errors surface here, before anything is fetched."""
    from dockwright.frontends.dockerfile import plan_from_dockerfile
    from dockwright.layers.dockerignore import read_dockerignore

    path = None
    if text is None:
        path = Path(dockerfile) if dockerfile is not None else context / "Dockerfile"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"no --from given and no Dockerfile at {path}",
                             hint="give a base with --from REF, or a Dockerfile with -f PATH") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from None
    name = str(path) if dockerfile is not None else "Dockerfile"
    ignore = read_dockerignore(context, path, Path(ignore_file) if ignore_file is not None else None)
    source = text

    def plan_for(platform: Platform) -> BuildPlan:
        plan = plan_from_dockerfile(context, source, dockerfile_name=name, build_args=dict(build_args or {}),
                                    target=target, platform=platform, labels=dict(labels or {}), dockerignore=ignore,
                                    contexts=contexts)
        return with_overlay(plan, overlay, annotations)

    plan_for(Platform.host())
    return plan_for


def named_contexts(values: Sequence[str]) -> list[NamedContext]:
    """`--build-context NAME=VALUE` values, as buildx reads them: VALUE `docker-image://REF`, `oci-layout://DIR[:TAG]`,
    `oci-archive://FILE[:TAG]` (an image), or a local directory (read like the build context, with its own
    .dockerignore)."""
    from dockwright.layers.dockerignore import read_dockerignore
    from dockwright.model.reference import OCI_ARCHIVE_PREFIX, OCI_LAYOUT_PREFIX, parse_reference

    found: dict[str, NamedContext] = {}
    for value in values:
        name, eq, source = value.partition("=")
        if not eq or not name or not source:
            raise UsageError(f"--build-context {value!r}: expected NAME=DIR, NAME=docker-image://REF or "
                             "NAME=oci-layout://DIR[:TAG]")
        if name in found:
            raise UsageError(f"--build-context {value!r}: {name!r} is named twice")
        if source.startswith("docker-image://"):
            reference = source.removeprefix("docker-image://")
            parse_reference(reference)
            found[name] = NamedContext(name, reference)
        elif source.startswith((OCI_LAYOUT_PREFIX, OCI_ARCHIVE_PREFIX)):
            found[name] = NamedContext(name, source)
        elif "://" in source or source.startswith(("target:", "input:", "git@")):
            raise UsageError(f"--build-context {value!r}: this kind of context is not supported",
                             hint="use a directory, docker-image://REF, oci-layout://DIR[:TAG] or oci-archive://FILE")
        elif not Path(source).is_dir():
            raise UsageError(f"--build-context {value!r}: {source} is not a directory")
        else:
            found[name] = NamedContext(name, str(Path(source).resolve()), directory=True,
                                       dockerignore=tuple(read_dockerignore(Path(source), None)))
    return list(found.values())


def flags_planner(context: Path, base: str, copies: Sequence[str], edit: ConfigEdit, *, chown: str | None = None,
                  chmod: str | None = None, annotations: Sequence[str] = (), layering: bool = False,
                  layer_steps: Sequence[tuple[str, str]] | None = None,
                  ignore_file: str | Path | None = None) -> Planner:
    """`--from BASE --copy SRC:DEST --run CMD ...`: one plan, whatever the platform. `layer_steps`: ("copy",
    SRC:DEST) and ("run", CMD) in order (default: `copies`); `ignore_file` replaces CONTEXT/.dockerignore."""
    from dockwright.frontends import flags
    from dockwright.layers.dockerignore import read_dockerignore

    ignore = read_dockerignore(context, None, Path(ignore_file) if ignore_file is not None else None)
    plan = flags.plan_from_flags(context, base, copies, edit, chown=chown, chmod=chmod, annotations=annotations,
                                 dockerignore=ignore, layering=layering, layer_steps=layer_steps)
    return lambda platform: plan


def with_overlay(plan: BuildPlan, edit: ConfigEdit | None, annotations: Sequence[tuple[str, str]]) -> BuildPlan:
    """`edit` on top of the target stage; an --entrypoint resets the Cmd unless the Dockerfile sets one."""
    from dockwright.frontends.flags import entrypoint_resets_cmd

    target = plan.target
    if edit is not None and edit != ConfigEdit():
        edit = entrypoint_resets_cmd(edit, cmd_given=_sets_cmd(plan, target))
        target = replace(target, steps=(*target.steps, ConfigStep(edit)))
    return replace(plan, stages=(*plan.stages[:-1], target), annotations=(*plan.annotations, *annotations))


def _sets_cmd(plan: BuildPlan, stage: Stage) -> bool:
    """Whether `stage` or a stage it starts from sets CMD (or clears it, with ENTRYPOINT)."""
    while True:
        if any(isinstance(step, ConfigStep) and step.edit.cmd is not None for step in stage.steps):
            return True
        if stage.base_stage is None:
            return False
        stage = plan.stages[stage.base_stage]
