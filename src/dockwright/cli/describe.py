"""`--dry-run`: a build plan and its outputs for people (Dockerfile-like lines, every flag of every step) and,
with `--dry-run=json`, for tools (one JSON document; its "version" changes only when fields change meaning)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from dockwright.plan import BuildPlan, ConfigEdit, ConfigStep, CopyStep, MkdirStep, RunMount, RunStep, Stage

JSON_VERSION = 1
_OUTPUT_TEXT = {"registry": "push to every tag", "docker": "docker-archive", "oci": "OCI archive",
                "oci-dir": "OCI layout directory", "load": "load into the engine at DOCKER_HOST"}


def describe_text(plans: Sequence[BuildPlan], outputs: Sequence[tuple[str, str | None]], tags: Sequence[str]) -> str:
    """The plans (one per platform) and where the image goes; `outputs` are (type, dest) pairs."""
    lines: list[str] = []
    for plan in plans:
        lines.extend(plan_lines(plan))
        lines.append("")
    lines.append("tags: " + (" ".join(tags) if tags else "none"))
    lines.append("outputs:" if outputs else "outputs: none (the image is built but not saved)")
    lines.extend(f"  {_OUTPUT_TEXT.get(kind, kind)}" + (f" {dest}" if dest else "") for kind, dest in outputs)
    return "\n".join(lines)


def describe_json(plans: Sequence[BuildPlan], outputs: Sequence[tuple[str, str | None]], tags: Sequence[str]) -> str:
    document = {
        "version": JSON_VERSION,
        "plans": [plan_json(plan) for plan in plans],
        "tags": list(tags),
        "outputs": [{"type": kind, "dest": dest} for kind, dest in outputs],
    }
    return json.dumps(document, indent=2)


# ---------------------------------------------------------------------------------------------- text


def plan_lines(plan: BuildPlan) -> list[str]:
    lines = [f"# plan ({plan.source}) for {plan.platform or 'the host platform'}, context {plan.context}"]
    if plan.dockerignore:
        lines.append(f"# ignore file patterns: {' '.join(plan.dockerignore)}")
    lines.extend(f"# --build-context {c.name}={c.source}" + (" (a directory)" if c.directory else "")
                 for c in plan.contexts)
    for index, stage in enumerate(plan.stages):
        lines.append(_from_line(plan, index, stage))
        for step in stage.steps:
            lines.extend("  " + line for line in step_lines(plan, step))
    lines.extend(f"# annotation {key}={value}" for key, value in plan.annotations)
    return lines


def _stage_name(plan: BuildPlan, index: int) -> str:
    return plan.stages[index].name or str(index)


def _from_line(plan: BuildPlan, index: int, stage: Stage) -> str:
    base = _stage_name(plan, stage.base_stage) if stage.base_stage is not None else stage.base
    platform = f"--platform={stage.platform} " if stage.platform else ""
    name = f" AS {stage.name}" if stage.name else ""
    return f"FROM {platform}{base}{name}  # stage {index}"


def step_lines(plan: BuildPlan, step: object) -> list[str]:
    match step:
        case CopyStep():
            return _copy_lines(plan, step)
        case RunStep():
            return _run_lines(plan, step)
        case MkdirStep():
            return [f"#   {step.path} is made, owned by the USER, unless it exists"]
        case ConfigStep():
            lines = edit_lines(step.edit)
            return lines or ([step.created_by] if step.created_by else [])
    raise TypeError(f"unknown step {type(step).__name__}")


def _copy_lines(plan: BuildPlan, step: CopyStep) -> list[str]:
    flags = []
    if step.from_stage is not None:
        flags.append(f"--from={_stage_name(plan, step.from_stage)}")
    elif step.from_image is not None:
        flags.append(f"--from={step.from_image}")
    elif step.from_context is not None:
        flags.append(f"--from={step.from_context}")
    flags += ["--parents"] if step.parents else []
    flags += [f"--chown={step.chown}"] if step.chown else []
    flags += [f"--chmod={step.chmod}"] if step.chmod else []
    flags += [f"--exclude={pattern}" for pattern in step.excludes]
    flags += [f"--checksum={step.checksum}"] if step.checksum else []
    sources = [*(_quoted(s) for s in step.sources), *(f"<<{name}" for name, _ in step.inline_files)]
    lines = [" ".join(["ADD" if step.add else "COPY", *flags, *sources, _quoted(step.dest)])]
    for name, content in step.inline_files:
        lines.extend(content.decode(errors="replace").splitlines())
        lines.append(name)
    return lines


def _run_lines(plan: BuildPlan, step: RunStep) -> list[str]:
    flags = [f"--network={step.network}"] if step.network != "default" else []
    flags += [f"--mount={_mount_text(plan, mount)}" for mount in step.mounts]
    command = step.command if isinstance(step.command, str) else json.dumps(list(step.command))
    head, *rest = command.splitlines() or [""]
    lines = [" ".join(["RUN", *flags, head]), *rest]
    if step.shell:
        lines.append(f"# through SHELL {json.dumps(list(step.shell))}")
    for name, content in step.files:
        lines.append(f"# /dev/pipes/{name}:")
        lines.extend(content.decode(errors="replace").splitlines())
    if step.args:
        lines.append("# build args: " + " ".join(f"{key}={_quoted(value)}" for key, value in step.args))
    return lines


def _mount_text(plan: BuildPlan, mount: RunMount) -> str:
    defaults = RunMount(type=mount.type)
    fields = [f"type={mount.type}"]
    for field in dataclasses.fields(RunMount):
        value = getattr(mount, field.name)
        if field.name == "type" or value == getattr(defaults, field.name):
            continue
        if field.name == "from_stage":
            fields.append(f"from={_stage_name(plan, value)}")
        elif field.name in ("from_image", "from_context"):
            fields.append(f"from={value}")
        elif field.name == "mode":
            fields.append(f"mode={value:o}")
        elif isinstance(value, bool):
            fields.append(field.name if value else f"{field.name}=false")
        else:
            fields.append(f"{field.name}={value}")
    return ",".join(fields)


def edit_lines(edit: ConfigEdit) -> list[str]:
    """Dockerfile-like lines for a config change; `CMD []` is a reset (ENTRYPOINT clears an inherited CMD)."""
    from dockwright.frontends.dockerfile.formats import format_duration

    lines = []
    if edit.entrypoint is not None:
        lines.append(f"ENTRYPOINT {json.dumps(list(edit.entrypoint))}")
    if edit.cmd is not None:
        lines.append(f"CMD {json.dumps(list(edit.cmd))}")
    lines += [f"ENV {key}={_quoted(value)}" for key, value in edit.env]
    if edit.workdir is not None:
        lines.append(f"WORKDIR {edit.workdir}")
    if edit.user is not None:
        lines.append(f"USER {edit.user}")
    if edit.exposed_ports:
        lines.append("EXPOSE " + " ".join(edit.exposed_ports))
    if edit.volumes:
        lines.append(f"VOLUME {json.dumps(list(edit.volumes))}")
    lines += [f"LABEL {_quoted(key)}={_quoted(value)}" for key, value in edit.labels]
    if edit.stop_signal is not None:
        lines.append(f"STOPSIGNAL {edit.stop_signal}")
    if edit.healthcheck is not None:
        test = list(edit.healthcheck.get("Test") or [])  # type: ignore[call-overload]
        flags = [f"--{flag}={format_duration(int(edit.healthcheck[key]))}"  # type: ignore[call-overload]
                 for flag, key in (("interval", "Interval"), ("timeout", "Timeout"),
                                   ("start-period", "StartPeriod"), ("start-interval", "StartInterval"))
                 if edit.healthcheck.get(key)]
        flags += [f"--retries={edit.healthcheck['Retries']}"] if edit.healthcheck.get("Retries") else []
        body = ("NONE" if test == ["NONE"] else f"CMD {test[1]}" if test[:1] == ["CMD-SHELL"]
                else f"CMD {json.dumps(test[1:])}")
        lines.append(" ".join(["HEALTHCHECK", *flags, body]))
    lines += [f"ONBUILD {trigger}" for trigger in edit.onbuild]
    if edit.shell is not None:
        lines.append(f"SHELL {json.dumps(list(edit.shell))}")
    if edit.author is not None:
        lines.append(f"MAINTAINER {edit.author}")
    if edit.deferred:
        lines = [f"{line}  # expanded with the base image's Env" for line in lines]
    return lines


def _quoted(text: str) -> str:
    """`text` as written, or as a JSON string when spaces or quotes would make it ambiguous."""
    if text and not any(ch.isspace() or ch in "\"'\\" for ch in text):
        return text
    return json.dumps(text)


# ---------------------------------------------------------------------------------------------- JSON


def plan_json(plan: BuildPlan) -> dict[str, Any]:
    return {
        "platform": plan.platform,
        "source": plan.source,
        "context": str(plan.context),
        "ignore_patterns": list(plan.dockerignore),
        "annotations": dict(plan.annotations),
        "contexts": [_plain(dataclasses.asdict(c)) for c in plan.contexts],
        "stages": [{"index": index, "name": stage.name, "base": stage.base, "base_stage": stage.base_stage,
                    "platform": stage.platform, "steps": [step_json(step) for step in stage.steps]}
                   for index, stage in enumerate(plan.stages)],
    }


_STEP_TYPES = {CopyStep: "copy", RunStep: "run", MkdirStep: "workdir", ConfigStep: "config"}


def step_json(step: object) -> dict[str, Any]:
    data = _plain(dataclasses.asdict(step))  # type: ignore[call-overload]
    if isinstance(step, CopyStep):
        data["type"] = "add" if step.add else "copy"
    else:
        data["type"] = _STEP_TYPES[type(step)]
    if isinstance(step, ConfigStep):
        data["dockerfile"] = edit_lines(step.edit)
    if isinstance(step, RunStep):  # a proxy URL may hold credentials: its name only, as BuildKit's history
        data["proxies"] = [key for key, _ in step.proxies]
    return data


def _plain(value: Any) -> Any:
    """JSON-ready: tuples as lists, bytes (heredoc contents) as text."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value
