"""`dockwright build`: arguments -> a planner and outputs -> the library (dockwright.api) -> results on stdout."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from dockwright.model.errors import DockwrightError, UsageError
from dockwright.model.reference import Reference, parse_reference
from dockwright.model.units import plural

if TYPE_CHECKING:
    from dockwright.api.plans import Planner
    from dockwright.formats import Output
    from dockwright.model.image import BuildResult
    from dockwright.plan import BuildPlan, Secret

log = logging.getLogger("dockwright")


_MAKERS = {"registry": ("registry", "RegistryPush"), "load": ("engine", "Engine"), "oci": ("layout", "OciArchive"),
           "oci-dir": ("layout", "OciLayoutDir"), "docker": ("docker_archive", "DockerArchive")}


class OutputSpec(NamedTuple):
    """One `-o`, `--push` or `--load`, as written: type registry | docker | oci | oci-dir | load."""

    type: str
    dest: str | None = None

    @property
    def is_oci(self) -> bool:
        return self.type in ("oci", "oci-dir")

    def output(self) -> Output:
        import importlib

        module, name = _MAKERS[self.type]  # only that output's module is loaded
        maker = getattr(importlib.import_module(f"dockwright.formats.{module}"), name)
        return maker(Path(self.dest)) if self.dest is not None else maker()


def parse_output(spec: str) -> OutputSpec:
    fields: dict[str, str] = {}
    for item in spec.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"-o {spec!r}: expected key=value pairs, e.g. type=oci,dest=app.tar")
        fields[key.strip()] = value.strip()
    kind = fields.pop("type", None)
    dest = fields.pop("dest", None)
    tar = fields.pop("tar", "true").lower()
    fields.pop("push", None)
    if fields:
        raise UsageError(f"-o {spec!r}: unknown option(s) {', '.join(sorted(fields))}")
    if kind in ("registry", "image"):
        return OutputSpec("registry")
    if kind not in ("docker", "oci"):
        problem = "no type= given" if kind is None else f"unknown type {kind!r}"
        raise UsageError(f"-o {spec!r}: {problem}", hint="use type=registry, type=docker or type=oci")
    if not dest:
        raise UsageError(f"-o {spec!r}: type={kind} needs dest=PATH")
    if tar not in ("true", "false"):
        raise UsageError(f"-o {spec!r}: tar must be true or false")
    if tar == "false":
        if kind != "oci":
            raise UsageError(f"-o {spec!r}: tar=false is only for type=oci (an OCI layout directory)")
        return OutputSpec("oci-dir", dest)
    return OutputSpec(kind, dest)


def output_specs(args: argparse.Namespace, tags: list[Reference]) -> list[OutputSpec]:
    specs = [parse_output(spec) for spec in args.output]
    if args.push and not any(o.type == "registry" for o in specs):
        specs.append(OutputSpec("registry"))
    if args.load:
        specs.append(OutputSpec("load"))
    if any(o.type == "registry" for o in specs) and not tags:
        raise UsageError("--push needs at least one -t/--tag REF to push to")
    dests = [os.path.abspath(o.dest) for o in specs if o.dest]
    if len(dests) != len(set(dests)):
        raise UsageError("two outputs write to the same destination", hint="give each -o its own dest=")
    multi = args.platform is not None and (args.platform.strip() == "all" or "," in args.platform)
    if multi and any(o.type in ("docker", "load") for o in specs):
        raise UsageError("docker archives and --load hold one platform, but --platform asks for several",
                         hint="use -o type=oci or --push for a multi-platform image")
    return specs


def choose_format(requested: str | None, specs: list[OutputSpec], annotations: list[str]) -> str | None:
    """--format, else OCI when an OCI archive or layout is written (skopeo, umoci and containerd
    skip Docker-typed manifests in an OCI layout) or when --annotation is given (Docker manifests
    cannot carry annotations; BuildKit switches to OCI too), else None: follow the base."""
    if requested == "docker" and annotations:
        log.warning("warning: --format docker manifests cannot carry annotations; --annotation is ignored")
    if requested is None and (annotations or any(o.is_oci for o in specs)):
        return "oci"
    return requested


def planner(args: argparse.Namespace, context: Path) -> Planner:
    """The flags frontend with --from, else the Dockerfile frontend."""
    import sys

    from dockwright.api.plans import dockerfile_planner, flags_planner, named_contexts
    from dockwright.frontends import flags

    if args.base:
        if args.file or args.target or args.build_arg or args.build_context:
            raise UsageError("--from (flags mode) cannot be combined with -f/--target/--build-arg/--build-context "
                             "(Dockerfile mode)")
        edit = flags.config_edit(entrypoint=args.entrypoint, cmd=args.cmd, env=args.env, workdir=args.workdir,
                                 user=args.user, expose=args.expose, volumes=args.volume, labels=args.label,
                                 stop_signal=args.stop_signal)
        return flags_planner(context, args.base, args.copy, edit, chown=args.chown, chmod=args.chmod,
                             annotations=args.annotation, layering=args.layering == "auto",
                             layer_steps=getattr(args, "layer_steps", None), ignore_file=args.ignore_file)
    if args.copy or args.run:
        flag, instruction = ("--copy", "COPY") if args.copy else ("--run", "RUN")
        raise UsageError(f"{flag} needs --from (flags mode); in Dockerfile mode use {instruction} in the Dockerfile")
    from dockwright.frontends.dockerfile import parse_build_args

    overlay = flags.config_edit(entrypoint=args.entrypoint, cmd=args.cmd, env=args.env, workdir=args.workdir,
                                user=args.user, expose=args.expose, volumes=args.volume, stop_signal=args.stop_signal)
    return dockerfile_planner(
        context, dockerfile=None if args.file in (None, "-") else args.file,
        text=sys.stdin.read() if args.file == "-" else None, target=args.target,
        build_args=parse_build_args(args.build_arg),
        labels=dict(flags.key_value("--label", label) for label in args.label), overlay=overlay,
        annotations=[flags.key_value("--annotation", a) for a in args.annotation], ignore_file=args.ignore_file,
        contexts=named_contexts(args.build_context))


def _secrets(texts: list[str]) -> tuple[Secret, ...]:
    if not texts:
        return ()  # RUN's mount code is not loaded for builds without secrets
    from dockwright.run.mounts import parse_secret

    return tuple(parse_secret(text) for text in texts)


def run_build(args: argparse.Namespace) -> int:
    from dockwright.api.session import Settings, epoch_from_env
    from dockwright.model.platform import Platform, parse_platforms

    context = Path(args.context)
    if not context.is_dir():
        raise UsageError(f"build context {context} is not a directory")
    tags = [parse_reference(t) for t in args.tag]
    specs = output_specs(args, tags)
    wanted = parse_platforms(args.platform)  # validate before anything else
    settings = Settings(
        source_date_epoch=epoch_from_env(),  # read once, and a bad value fails before anything is built
        cache_dir=Path(args.cache_dir) if args.cache_dir else None, use_cache=not args.no_cache,
        insecure_registries=tuple(args.insecure_registry), compression=args.compression,
        compression_level=args.compression_level, jobs=max(1, args.jobs),
        format=choose_format(args.format, specs, args.annotation),  # type: ignore[arg-type]
        isolation=args.isolation, runtime=args.runtime, pull=args.pull,
        secrets=_secrets(args.secret))
    plans = planner(args, context)
    if args.dry_run:
        from dockwright.cli.describe import describe_json, describe_text

        describe = describe_json if args.dry_run == "json" else describe_text
        print(describe([plans(p) for p in (wanted if wanted != "all" else [Platform.host()])],
                       [(spec.type, spec.dest) for spec in specs], args.tag))
        return 0
    if _needs_user_namespace(args.isolation, plans(Platform.host() if wanted == "all" else wanted[0])):
        from dockwright.run.userns import reexec

        return reexec(args.argv)
    if not specs:
        log.warning("no output given (-t with --push, -o, --load): the image is built but not saved")
    from dockwright.api import publish, release, run_planner
    from dockwright.progress import make_progress

    with make_progress(args.progress) as progress:
        result, image = run_planner(plans, settings, args.platform, progress=progress)
        try:
            lines = publish(image, [spec.output() for spec in specs], tags=args.tag, progress=progress)
        finally:
            release(image)
    top = result.top.descriptor
    log.info("built %s (%s built, %d from cache)", top.digest, plural(result.layers_built, "layer"),
             result.layers_cached)
    pushed = lines if any(spec.type == "registry" for spec in specs) else []
    write_metadata(args, result, tags, pushed)
    for line in lines:
        print(line)
    return 0


def write_metadata(args: argparse.Namespace, result: BuildResult, tags: list[Reference], pushed: list[str]) -> None:
    from dockwright.files import atomic_write_text

    top = result.top.descriptor
    config_digest = result.images[0].config.descriptor.digest if len(result.images) == 1 else None
    if args.metadata_file:
        data = {
            "digest": top.digest,
            "media_type": top.media_type,
            "size": top.size,
            "config_digest": config_digest,
            "platforms": [str(img.platform) for img in result.images],
            "manifests": [{"platform": str(img.platform), "digest": img.manifest.descriptor.digest,
                           "config_digest": img.config.descriptor.digest} for img in result.images],
            "tags": [str(t) for t in tags],
            "pushed": pushed,
            # the keys `docker buildx build --metadata-file` writes, for scripts that read those
            "containerimage.digest": top.digest,
            "containerimage.descriptor": top.to_json(),
            "image.name": ",".join(str(t) for t in tags),
        }
        if config_digest:
            data["containerimage.config.digest"] = config_digest
        _write(Path(args.metadata_file), json.dumps(data, indent=2) + "\n", atomic_write_text)
    if args.iidfile:
        _write(Path(args.iidfile), config_digest or top.digest, atomic_write_text)


def _write(path: Path, text: str, writer: Any) -> None:
    try:
        writer(path, text)
    except OSError as exc:
        raise DockwrightError(f"cannot write {path}: {exc.strerror}") from None


def _needs_user_namespace(isolation: str, plan: BuildPlan) -> bool:
    """Whether RUN steps need this build started again in a user namespace (rootless RUN)."""
    from dockwright.plan import RunStep
    from dockwright.run.userns import in_user_namespace

    if (os.geteuid() == 0 and isolation != "rootless") or isolation == "chroot" or in_user_namespace():
        return False
    return any(isinstance(step, RunStep) for stage in plan.stages for step in stage.steps)
