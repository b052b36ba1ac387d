"""What each CLI command does, once its arguments are parsed (kept apart from cli.py so that
`dockwright --help` imports nothing heavy)."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockwright.model.errors import UsageError
from dockwright.model.platform import Platform
from dockwright.model.reference import Reference, parse_reference
from dockwright.plan import BuildOptions, BuildPlan, ConfigStep, Output

log = logging.getLogger("dockwright")
DEFAULT_EPOCH = 0  # when SOURCE_DATE_EPOCH is unset: 1970-01-01T00:00:00Z, so digests are reproducible


def _parse_output(spec: str) -> Output:
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
        return Output("registry")
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
        return Output("oci-dir", dest)
    return Output(kind, dest)


def _outputs(args: argparse.Namespace, tags: list[Reference]) -> list[Output]:
    outputs = [_parse_output(spec) for spec in args.output]
    if args.push and not any(o.kind == "registry" for o in outputs):
        outputs.append(Output("registry"))
    if args.load:
        outputs.append(Output("load"))
    if any(o.kind == "registry" for o in outputs) and not tags:
        raise UsageError("--push needs at least one -t/--tag REF to push to")
    dests = [os.path.abspath(o.dest) for o in outputs if o.dest]
    if len(dests) != len(set(dests)):
        raise UsageError("two outputs write to the same destination", hint="give each -o its own dest=")
    multi = args.platform is not None and (args.platform.strip() == "all" or "," in args.platform)
    if multi and any(o.kind in ("docker", "load") for o in outputs):
        raise UsageError("docker archives and --load hold one platform, but --platform asks for several",
                         hint="use -o type=oci or --push for a multi-platform image")
    return outputs


def _format(requested: str | None, outputs: list[Output], annotations: list[str]) -> str | None:
    """--format, else OCI when an OCI archive or layout is written (skopeo, umoci and containerd
    skip Docker-typed manifests in an OCI layout) or when --annotation is given (Docker manifests
    cannot carry annotations; BuildKit switches to OCI too), else None: follow the base."""
    if requested == "docker" and annotations:
        log.warning("warning: --format docker manifests cannot carry annotations; --annotation is ignored")
    if requested is None and (annotations or any(o.kind in ("oci", "oci-dir") for o in outputs)):
        return "oci"
    return requested


def _source_date_epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return DEFAULT_EPOCH
    if not value.isdigit():
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds")
    return int(value)


def _planner(args: argparse.Namespace, context: Path) -> Callable[[Platform], BuildPlan]:
    """A function platform -> BuildPlan, for the flags or the Dockerfile frontend."""
    from dockwright.frontends import flags
    from dockwright.layers.dockerignore import read_dockerignore

    if args.base:
        if args.file or args.target or args.build_arg:
            raise UsageError("--from (flags mode) cannot be combined with -f/--target/--build-arg (Dockerfile mode)")
        edit = flags.config_edit(entrypoint=args.entrypoint, cmd=args.cmd, env=args.env, workdir=args.workdir,
                                 user=args.user, expose=args.expose, volumes=args.volume, labels=args.label,
                                 stop_signal=args.stop_signal)
        ignore = read_dockerignore(context, None)
        plan = flags.plan_from_flags(context, args.base, args.copy, edit, chown=args.chown, chmod=args.chmod,
                                     annotations=args.annotation, dockerignore=ignore,
                                     layering=args.layering == "auto")
        return lambda platform: plan
    if args.copy:
        raise UsageError("--copy needs --from (flags mode); in Dockerfile mode use COPY in the Dockerfile")
    if args.file == "-":
        text, path = sys.stdin.read(), None
        name = "Dockerfile"
    else:
        path = Path(args.file) if args.file else context / "Dockerfile"
        name = str(path) if args.file else "Dockerfile"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"no --from given and no Dockerfile at {path}",
                             hint="give a base with --from REF, or a Dockerfile with -f PATH") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from None
    from dockwright.frontends.dockerfile import parse_build_args, plan_from_dockerfile

    ignore = read_dockerignore(context, path)
    build_args = parse_build_args(args.build_arg)
    labels = dict(flags.key_value("--label", label) for label in args.label)
    overlay = flags.config_edit(entrypoint=args.entrypoint, cmd=args.cmd, env=args.env, workdir=args.workdir,
                                user=args.user, expose=args.expose, volumes=args.volume, stop_signal=args.stop_signal)

    def plan_for(platform: Platform) -> BuildPlan:
        plan = plan_from_dockerfile(context, text, dockerfile_name=name, build_args=build_args, target=args.target,
                                    platform=platform, labels=labels, dockerignore=ignore)
        return _with_overlay(plan, overlay, args.annotation)

    plan_for(Platform.host())  # parse errors surface now, before any network access
    return plan_for


def _with_overlay(plan: BuildPlan, edit: Any, annotations: list[str]) -> BuildPlan:
    from dataclasses import replace

    from dockwright.frontends.flags import key_value
    from dockwright.plan import ConfigEdit

    target = plan.target
    if edit != ConfigEdit():
        target = replace(target, steps=(*target.steps, ConfigStep(edit)))
    return replace(plan, stages=(*plan.stages[:-1], target),
                   annotations=(*plan.annotations, *(key_value("--annotation", a) for a in annotations)))


@dataclass
class _Summary:
    stdout: list[str]
    pushed: list[str]


def run_build(args: argparse.Namespace) -> int:
    context = Path(args.context)
    if not context.is_dir():
        raise UsageError(f"build context {context} is not a directory")
    tags = [parse_reference(t) for t in args.tag]
    outputs = _outputs(args, tags)
    from dockwright.model.platform import parse_platforms

    wanted = parse_platforms(args.platform)  # validate before anything else
    fmt = _format(args.format, outputs, args.annotation)
    options = BuildOptions(
        tags=args.tag, outputs=outputs, platforms=args.platform, format=fmt,
        insecure_registries=tuple(args.insecure_registry), compression=args.compression,
        compression_level=args.compression_level, jobs=max(1, args.jobs),
        cache_dir=Path(args.cache_dir) if args.cache_dir else None, use_cache=not args.no_cache,
        metadata_file=Path(args.metadata_file) if args.metadata_file else None,
        iidfile=Path(args.iidfile) if args.iidfile else None, source_date_epoch=_source_date_epoch(),
    )
    planner = _planner(args, context)
    if args.dry_run:
        for platform in wanted if wanted != "all" else [Platform.host()]:
            print(planner(platform).describe())
        return 0
    if not outputs:
        log.warning("no output given (-t with --push, -o, --load): the image is built but not saved")
    from dockwright.build.executor import Builder
    from dockwright.cache import Cache, default_cache_dir
    from dockwright.progress import Progress

    registries = _LazyRegistries(insecure=options.insecure_registries, jobs=options.jobs)
    cache = Cache(None if not options.use_cache else (options.cache_dir or default_cache_dir()))
    try:
        with tempfile.TemporaryDirectory(prefix="dockwright-build-") as workdir, \
                Progress.for_stderr(args.quiet) as progress:
            result = Builder(options, cache, registries, Path(workdir)).build(planner)
            summary = _write_outputs(result, outputs, tags, registries, options, Path(workdir), progress)
    finally:
        cache.close()
        registries.close()
    top = result.top.descriptor
    log.info("built %s (%d layers built, %d from cache)", top.digest, result.layers_built, result.layers_cached)
    _write_metadata(options, result, tags, summary.pushed)
    for line in summary.stdout:
        print(line)
    return 0


class _LazyRegistries:
    """The registry client, made on first use: a build from scratch or a local base to a local output
    never imports the HTTP stack (~0.1 s)."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._registries: Any = None

    def client(self, host: str) -> Any:
        if self._registries is None:
            from dockwright.registry import Registries

            self._registries = Registries(**self._options)
        return self._registries.client(host)

    def close(self) -> None:
        if self._registries is not None:
            self._registries.close()


def _write_outputs(result: Any, outputs: list[Output], tags: list[Reference], registries: Any,
                   options: BuildOptions, workdir: Path, progress: Any) -> _Summary:
    from dockwright.formats import layout

    summary = _Summary([], [])
    if any(output.kind in ("docker", "oci", "oci-dir", "load") for output in outputs):
        layout.prefetch(result, options.jobs, progress)
    for output in outputs:
        if output.kind in ("docker", "oci"):
            layout.write_archive(result, Path(output.dest or ""), tags, docker=output.kind == "docker",
                                 mtime=options.source_date_epoch, progress=progress)
            log.info("wrote %s archive %s", output.kind, output.dest)
        elif output.kind == "oci-dir":
            layout.write_layout_dir(result, Path(output.dest or ""), tags, progress)
            log.info("wrote OCI layout %s", output.dest)
    for output in outputs:
        if output.kind == "registry":
            from dockwright.formats.registry import push

            lines, stats = push(result, tags, registries, options.jobs, progress)
            log.info("pushed: %d blobs uploaded (%d bytes), %d mounted, %d already there",
                     stats.uploaded, stats.bytes_uploaded, stats.mounted, stats.existing)
            summary.pushed.extend(lines)
        elif output.kind == "load":
            from dockwright.formats.engine import load_archive

            archive = workdir / "load.tar"
            layout.write_archive(result, archive, tags, docker=True, mtime=options.source_date_epoch,
                                 progress=progress)
            message = load_archive(archive)
            log.info("loaded into the engine: %s", message)
    summary.stdout = summary.pushed or [result.top.descriptor.digest]
    return summary


def _write_metadata(options: BuildOptions, result: Any, tags: list[Reference], pushed: list[str]) -> None:
    top = result.top.descriptor
    config_digest = result.images[0].config.descriptor.digest if len(result.images) == 1 else None
    if options.metadata_file:
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
        _atomic_text(options.metadata_file, json.dumps(data, indent=2) + "\n")
    if options.iidfile:
        _atomic_text(options.iidfile, config_digest or top.digest)


def _atomic_text(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        temp.write_text(text)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None


def run_login(args: argparse.Namespace) -> int:
    from dockwright.registry.login import login

    username = args.username
    if args.password_stdin:
        if args.password:
            raise UsageError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.read().rstrip("\r\n")
    elif args.password is not None:
        log.warning("warning: --password on the command line is visible to other users; use --password-stdin")
        password = args.password
    else:
        if not sys.stdin.isatty():
            raise UsageError("no password given", hint="use --password-stdin or -p")
        username = username or input("Username: ")
        password = getpass.getpass("Password: ")
    if not username:
        raise UsageError("no username given", hint="use -u USER")
    login(args.registry, username, password, None, insecure=args.insecure_registry)
    print(f"Login Succeeded ({args.registry})", file=sys.stderr)
    return 0


def run_logout(args: argparse.Namespace) -> int:
    from dockwright.registry.login import logout

    if logout(args.registry, None):
        print(f"Removed login credentials for {args.registry}", file=sys.stderr)
    else:  # as `docker logout` says it, with status 0: the wanted state holds
        print(f"Not logged in to {args.registry}", file=sys.stderr)
    return 0


def run_cache(args: argparse.Namespace) -> int:
    from dockwright.cache import default_cache_dir, disk_usage, prune

    root = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if args.cache_command == "du":
        print(disk_usage(root))
        return 0
    keep = _parse_size(args.keep_storage) if args.keep_storage else 0
    removed, freed = prune(root, keep)
    print(f"removed {removed} entries, freed {freed} bytes")
    return 0


def _parse_size(text: str) -> int:
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "K": 2**10, "M": 2**20, "G": 2**30}
    value = text.strip().upper()
    number = value.rstrip("KMGTIB")
    unit = value[len(number):]
    try:
        return int(float(number) * units[unit])
    except (ValueError, KeyError):
        raise UsageError(f"--keep-storage {text!r}: expected a size such as 500MB or 2GiB") from None
