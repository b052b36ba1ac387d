"""Reading a Dockerfile into stages: parsing with BuildKit's grammar, the escape directive, global
ARGs (with the predefined platform ARGs), FROM lines, stage names and the --target choice."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from dockwright.frontends.dockerfile.shell import ShellError, Unknown, expand
from dockwright.model.errors import DockerfileError, InvalidReferenceError, UsageError
from dockwright.model.platform import Platform
from dockwright.model.reference import parse_reference

INSTRUCTIONS = frozenset({"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
                          "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
                          "WORKDIR"})
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")


class Source:
    """The Dockerfile's name, for messages: every error is `NAME:LINE: message`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def error(self, line: int | None, message: str, hint: str | None = None) -> NoReturn:
        where = f"{self.name}:{line}" if line else self.name
        raise DockerfileError(f"{where}: {message}", hint)


@dataclass
class RawStage:
    index: int
    line: int
    base: str  # expanded FROM image text, "scratch" or an earlier stage's name
    name: str | None
    platform: str | None
    commands: list[Any] = field(default_factory=list)  # dockerfile.Command


def escape_character(text: str) -> str:
    """The `# escape=` parser directive (only in the leading directive lines); default backslash."""
    for line in text.splitlines():
        match = _DIRECTIVE.match(line.strip())
        if not match:
            break
        if match.group(1).lower() == "escape":
            return match.group(2) if match.group(2) in ("\\", "`") else "\\"
    return "\\"


def parse_commands(text: str, source: Source) -> list[Any]:
    """Parse with BuildKit's own parser. Its errors carry no line, so on failure find the first line
    at which the text stops parsing and name it."""
    import dockerfile

    if "\0" in text:  # the wheel passes strings through C: a NUL cuts the rest of its line off silently
        source.error(text.count("\n", 0, text.index("\0")) + 1, "NUL byte (\\0) in the Dockerfile",
                     hint="is this a binary file? a Dockerfile is text")
    # The wheel raises UnicodeDecodeError when BuildKit's error message cuts a non-ASCII character.
    failures = (dockerfile.GoParseError, UnicodeDecodeError)
    try:
        commands = list(dockerfile.parse_string(text))
    except failures as exc:
        message = str(exc) if isinstance(exc, dockerfile.GoParseError) else "this line cannot be parsed"
        lines = text.splitlines(keepends=True)
        for count in range(1, len(lines) + 1):
            try:
                dockerfile.parse_string("".join(lines[:count]))
            except failures as partial:
                if type(partial) is type(exc) and (str(partial) == str(exc)
                                                   or isinstance(exc, UnicodeDecodeError)):
                    source.error(count, message)
        source.error(None, message)
    for command in commands:
        if command.cmd.upper() not in INSTRUCTIONS:
            source.error(command.start_line, f"unknown instruction: {command.cmd.upper()}",
                         hint="check the spelling; instructions are FROM, COPY, ADD, ENV, WORKDIR, ...")
    return commands


def platform_args(target: Platform, build: Platform) -> dict[str, str]:
    """BuildKit's predefined ARGs (TARGETPLATFORM, BUILDARCH, ...), normalised as BuildKit does."""
    values: dict[str, str] = {}
    for prefix, platform in (("TARGET", target), ("BUILD", build)):
        os_, arch, variant = platform.normalized()
        values[f"{prefix}PLATFORM"] = "/".join(p for p in (os_, arch, variant) if p)
        values[f"{prefix}OS"] = os_
        values[f"{prefix}ARCH"] = arch
        values[f"{prefix}VARIANT"] = variant or ""
    return values


def split_arg(word: str) -> tuple[str, str | None]:
    key, eq, default = word.partition("=")
    return key, default if eq else None


def split_stages(commands: Sequence[Any], source: Source, escape: str, build_args: Mapping[str, str],
                 predefined: Mapping[str, str]) -> tuple[list[RawStage], dict[str, str]]:
    """Group commands into stages; returns them and the global (meta) ARG values used by FROM."""
    meta: dict[str, str] = dict(predefined)
    stages: list[RawStage] = []
    names: dict[str, int] = {}
    valueless: dict[str, int] = {}  # global ARGs declared without a value: their lines
    for command in commands:
        cmd = command.cmd.upper()
        if cmd == "FROM":
            stages.append(_from(command, len(stages), source, escape, meta, names, valueless))
        elif stages:
            stages[-1].commands.append(command)
        elif cmd == "ARG":
            for word in command.value:
                key, default = split_arg(word)
                if not key:
                    source.error(command.start_line, f"ARG names can not be blank: {word!r}")
                valueless.pop(key, None)
                if key in build_args:
                    meta[key] = build_args[key]
                elif default is not None:
                    meta[key] = _expand_meta(default, meta, command.start_line, source, escape)
                else:
                    valueless[key] = command.start_line
        else:
            source.error(command.start_line, f"{cmd} before the first FROM: only ARG may come before FROM")
    if not stages:
        source.error(None, "no FROM instruction: a Dockerfile must start a stage with FROM")
    return stages, meta


def _expand_meta(word: str, meta: Mapping[str, str], line: int, source: Source, escape: str) -> str:
    try:
        return expand(word, meta.get, escape=escape, unknown=Unknown.UNSET).value
    except ShellError as exc:
        source.error(line, f"{word}: {exc}")


def _from(command: Any, index: int, source: Source, escape: str, meta: Mapping[str, str],
          names: dict[str, int], valueless: Mapping[str, int]) -> RawStage:
    line = command.start_line
    platform = None
    for flag in command.flags:
        name, eq, value = flag.removeprefix("--").partition("=")
        if name != "platform" or not eq:
            source.error(line, f"FROM: unknown flag {flag!r}" if name != "platform"
                         else "FROM: missing a value on flag --platform")
        platform = _expand_meta(value, meta, line, source, escape) or None
    words = list(command.value)
    if len(words) not in (1, 3) or (len(words) == 3 and words[1].upper() != "AS"):
        source.error(line, f"FROM takes IMAGE [AS NAME], got {' '.join(words)!r}")
    base = _expand_meta(words[0], meta, line, source, escape)
    if not base:
        source.error(line, f"base name ({words[0]}) should not be blank",
                     hint="pass the ARG it uses with --build-arg, or give the ARG a default")
    _check_valueless(words[0], base, valueless, line, source)
    name = words[2] if len(words) == 3 else None
    if name is not None:
        if not _STAGE_NAME.match(name.lower()):
            source.error(line, f"invalid name for build stage: {name!r}, name can't start with a number "
                               "or contain symbols")
        if name.lower() in names:
            source.error(line, f"duplicate stage name {name!r}")
        names[name.lower()] = index
    return RawStage(index, line, base, name, platform)


def _check_valueless(word: str, base: str, valueless: Mapping[str, int], line: int, source: Source) -> None:
    """A FROM image that is no valid reference because an ARG it uses has no value: say so."""
    missing = [name for name in valueless if re.search(rf"\$\{{?{re.escape(name)}\b", word)]
    if not missing or base == "scratch" or "://" in base:
        return
    try:
        parse_reference(base)
    except InvalidReferenceError:
        name = missing[0]
        source.error(line, f"FROM {word}: ARG {name} (line {valueless[name]}) has no value, which leaves {base!r}",
                     hint=f"pass --build-arg {name}=..., or give it a default: ARG {name}=...")


def find_stage(stages: Sequence[RawStage], name: str, before: int | None = None) -> RawStage | None:
    """The stage called `name` (case-insensitive), optionally only among stages before `before`."""
    for stage in stages[:before]:
        if stage.name is not None and stage.name.lower() == name.lower():
            return stage
    return None


def target_stage(stages: Sequence[RawStage], target: str | None, source: Source) -> RawStage:
    if target is None:
        return stages[-1]
    found = find_stage(stages, target)
    if found is None:
        named = ", ".join(s.name for s in stages if s.name) or "none (add AS NAME to a FROM line)"
        source.error(None, f"target stage {target!r} could not be found; stages: {named}")
    return found


def parse_build_args(items: Sequence[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`--build-arg K=V` values; `K` alone takes the value from the environment, skipped if unset."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid --build-arg {item!r}: expected KEY=VALUE or KEY")
        if eq:
            values[key] = value
        elif key in environ:
            values[key] = environ[key]
    return values
