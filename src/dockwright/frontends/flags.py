"""The flags frontend: `dockwright build --from BASE --copy SRC:DEST --run CMD ...` -> BuildPlan."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from dockwright.model.errors import UsageError
from dockwright.model.reference import LOCAL_PREFIXES, SCRATCH, parse_reference
from dockwright.plan import BuildPlan, ConfigEdit, ConfigStep, CopyStep, RunStep, Stage, is_octal_mode

DEFAULT_SHELL = ("/bin/sh", "-c")


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


def run_step(value: str) -> RunStep:
    """`--run CMD`: a shell string (through /bin/sh -c) or a JSON array (exec form), as a Dockerfile RUN."""
    command = command_form("--run", value)
    if not command:
        raise UsageError("--run '': expected a command, e.g. --run 'apt-get update && apt-get install -y curl'")
    return RunStep(value if command[:2] == DEFAULT_SHELL and command[2:] == (value,) else command,
                   created_by=f"dockwright --run {value}")


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


def entrypoint_resets_cmd(edit: ConfigEdit, *, cmd_given: bool) -> ConfigEdit:
    """Docker's rule: setting ENTRYPOINT resets an inherited CMD unless this build gives a CMD
    (`cmd_given`: an earlier step of the build set one)."""
    if edit.entrypoint is not None and edit.cmd is None and not cmd_given:
        return replace(edit, cmd=())
    return edit


def check_chmod(flag: str, value: str) -> None:
    if not is_octal_mode(value):
        raise UsageError(f"{flag} {value!r}: expected an octal mode from 0 to 7777, such as 755")


def plan_from_flags(context: Path, base: str, copies: Sequence[str], edit: ConfigEdit, *,
                    chown: str | None = None, chmod: str | None = None,
                    annotations: Sequence[str] = (), dockerignore: Sequence[str] = (),
                    layering: bool = False, layer_steps: Sequence[tuple[str, str]] | None = None) -> BuildPlan:
    """--entrypoint without --cmd clears the base's Cmd, as ENTRYPOINT does in a Dockerfile.
    The config edit comes first so that relative --copy destinations resolve against --workdir and
    --run commands see --env and --workdir; --user applies after the --run commands (which run as the
    base's user, so that they may create it). `layer_steps`: ("copy", SRC:DEST) and ("run", CMD) in
    command-line order; without it, `copies`."""
    if chmod is not None:
        check_chmod("--chmod", chmod)
    edit = entrypoint_resets_cmd(edit, cmd_given=False)
    if base != SCRATCH and not base.startswith(LOCAL_PREFIXES):
        parse_reference(base)  # a malformed --from fails now, before anything is built
    ordered = list(layer_steps) if layer_steps is not None else [("copy", value) for value in copies]
    runs = any(kind == "run" for kind, _ in ordered)
    first = replace(edit, user=None) if runs else edit
    steps: list[ConfigStep | CopyStep | RunStep] = []
    if first != ConfigEdit():
        steps.append(ConfigStep(first))
    for kind, value in ordered:
        if kind == "run":
            steps.append(run_step(value))
            continue
        source, dest = parse_copy(value)
        step = CopyStep((source,), dest, chown=chown, chmod=chmod, created_by=f"dockwright --copy {value}")
        if layering:
            from dockwright.frontends.layering import split_copy

            steps.extend(split_copy(context, step))
        else:
            steps.append(step)
    if runs and edit.user is not None:
        steps.append(ConfigStep(ConfigEdit(user=edit.user)))
    return BuildPlan(
        context=context,
        stages=(Stage(base=base, steps=tuple(steps)),),
        annotations=tuple(key_value("--annotation", a) for a in annotations),
        dockerignore=tuple(dockerignore),
    )
