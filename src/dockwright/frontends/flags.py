"""The flags frontend: `dockwright build --from BASE --copy SRC:DEST ...` -> BuildPlan."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from dockwright.model.errors import UsageError
from dockwright.model.reference import DOCKER_ARCHIVE_PREFIX, OCI_LAYOUT_PREFIX, SCRATCH, parse_reference
from dockwright.plan import BuildPlan, ConfigEdit, ConfigStep, CopyStep, Stage

DEFAULT_SHELL = ("/bin/sh", "-c")
_OCTAL_MODE = re.compile(r"0*[0-7]{1,4}")  # 0..7777, as COPY --chmod


def command_form(flag: str, value: str) -> tuple[str, ...]:
    """A JSON array is the exec form; any other string is the shell form (`/bin/sh -c STRING`)."""
    text = value.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
            raise UsageError(f"{flag} {value!r}: looks like a JSON array but is not a list of strings",
                             hint='write it as \'["/app/server", "--port", "8080"]\' or as a plain shell string')
        return tuple(parsed)
    if not text:
        return ()
    return (*DEFAULT_SHELL, value)


def key_value(flag: str, value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise UsageError(f"{flag} {value!r}: expected KEY=VALUE")
    return key, val


def ports(value: str) -> list[str]:
    """`--expose` as Dockerfile EXPOSE reads it: PORT[/PROTO] or a range START-END[/PROTO]."""
    from dockwright.frontends.dockerfile.formats import parse_port_specs

    try:
        result = parse_port_specs([value])
        if any(p.startswith("0/") for p in result):
            raise ValueError("port 0 cannot be exposed")
        return result
    except ValueError as exc:
        raise UsageError(f"--expose {value!r}: {exc}", hint="e.g. --expose 8080, 53/udp, 8000-8002/tcp") from None


def parse_copy(value: str) -> tuple[str, str]:
    source, sep, dest = value.rpartition(":")
    if not sep or not source or not dest:
        raise UsageError(f"--copy {value!r}: expected SRC:DEST, e.g. --copy dist:/app")
    return source, dest


def config_edit(*, entrypoint: str | None = None, cmd: str | None = None, env: Sequence[str] = (),
                workdir: str | None = None, user: str | None = None, expose: Sequence[str] = (),
                volumes: Sequence[str] = (), labels: Sequence[str] = (), stop_signal: str | None = None) -> ConfigEdit:
    if workdir is not None and not workdir.startswith("/"):
        raise UsageError(f"--workdir {workdir!r}: must be an absolute path")
    return ConfigEdit(
        entrypoint=command_form("--entrypoint", entrypoint) if entrypoint is not None else None,
        cmd=command_form("--cmd", cmd) if cmd is not None else None,
        env=tuple(key_value("--env", e) for e in env),
        workdir=workdir,
        user=user,
        exposed_ports=tuple(p for spec in expose for p in ports(spec)),
        volumes=tuple(volumes),
        labels=tuple(key_value("--label", label) for label in labels),
        stop_signal=stop_signal,
    )


def check_chmod(flag: str, value: str) -> None:
    if not _OCTAL_MODE.fullmatch(value):
        raise UsageError(f"{flag} {value!r}: expected an octal mode from 0 to 7777, such as 755")


def plan_from_flags(context: Path, base: str, copies: Sequence[str], edit: ConfigEdit, *,
                    chown: str | None = None, chmod: str | None = None,
                    annotations: Sequence[str] = (), dockerignore: Sequence[str] = (),
                    layering: bool = False) -> BuildPlan:
    """The config edit comes first so that relative --copy destinations resolve against --workdir."""
    if chmod is not None:
        check_chmod("--chmod", chmod)
    if base != SCRATCH and not base.startswith((OCI_LAYOUT_PREFIX, DOCKER_ARCHIVE_PREFIX)):
        parse_reference(base)  # a malformed --from fails now, before anything is built
    steps: list[ConfigStep | CopyStep] = []
    if edit != ConfigEdit():
        steps.append(ConfigStep(edit))
    for value in copies:
        source, dest = parse_copy(value)
        step = CopyStep((source,), dest, chown=chown, chmod=chmod, created_by=f"dockwright --copy {value}")
        if layering:
            from dockwright.frontends.layering import split_copy

            steps.extend(split_copy(context, step))
        else:
            steps.append(step)
    return BuildPlan(
        context=context,
        stages=(Stage(base=base, steps=tuple(steps)),),
        annotations=tuple(key_value("--annotation", a) for a in annotations),
        dockerignore=tuple(dockerignore),
    )
