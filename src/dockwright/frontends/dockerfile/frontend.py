"""Dockerfile -> BuildPlan, with Docker's (BuildKit's) semantics, for one target platform. Pure: no
network, no files read (the caller reads the Dockerfile and .dockerignore).

Only the stages the target needs are translated, dependencies first (FROM an earlier stage, COPY
--from a stage, RUN --mount from=a stage): stages the target does not need never run. Not known here: the base
image's Env, WorkingDir, User, Shell and ONBUILD triggers. Values that need the base Env are
deferred (plan.ConfigEdit.deferred); COPY/ADD/EXPOSE/VOLUME/STOPSIGNAL words may not use a
variable this Dockerfile does not define when the base is an image (an error says so).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dockwright.frontends.dockerfile import runflags
from dockwright.frontends.dockerfile.config import ConfigInstructions
from dockwright.frontends.dockerfile.contexts import NamedContexts
from dockwright.frontends.dockerfile.scope import Scope, Var, as_text, clean
from dockwright.frontends.dockerfile.shell import (
    Expansion,
    ShellError,
    UndefinedError,
    Unknown,
    expand,
    expand_words,
)
from dockwright.frontends.dockerfile.stages import (
    RawStage,
    Source,
    escape_character,
    find_stage,
    parse_commands,
    platform_args,
    split_arg,
    split_stages,
    target_stage,
)
from dockwright.frontends.dockerfile.workdir import CopyMark, Item, finish_workdirs
from dockwright.model.errors import InvalidReferenceError
from dockwright.model.platform import Platform, refuse_windows
from dockwright.model.reference import SCRATCH, parse_reference
from dockwright.plan import (
    BuildPlan,
    ConfigEdit,
    ConfigStep,
    CopyStep,
    NamedContext,
    RunMount,
    RunStep,
    Stage,
    is_octal_mode,
)

_HEREDOC_WORD = re.compile(r"^<<(-?)(['\"]?)([^'\"]+)\2$")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# BuildKit's predefined ARGs: a --build-arg of these reaches RUN without an ARG line, and no history shows it
_PROXY_ARGS = frozenset(name for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
                        for name in (base, base.lower()))


@dataclass
class _Translated:
    stage: Stage
    scope: Scope


class _Frontend(ConfigInstructions):
    def __init__(self, text: str, source: Source, build_args: Mapping[str, str], platform: Platform,
                 build_platform: Platform, contexts: Sequence[NamedContext] = ()) -> None:
        self.source = source
        self.contexts = NamedContexts(contexts)
        self.escape = escape_character(text)
        self.build_args = dict(build_args)
        commands = parse_commands(text, source)
        self.stages, self.meta = split_stages(commands, source, self.escape, self.build_args,
                                              platform_args(platform, build_platform))
        self.done: dict[int, _Translated] = {}
        self.active: set[int] = set()
        self.order: list[int] = []
        self.line: int | None = None  # the instruction being translated, for messages

    # ------------------------------------------------------------------ stages

    def translate(self, raw: RawStage) -> None:
        """Translate `raw` after everything it needs; appends to self.order (build order)."""
        if raw.index in self.done:
            return
        if raw.index in self.active:
            self.error(f"circular dependency between stages, at stage {raw.name or raw.index}")
        self.active.add(raw.index)
        outer_line = self.line
        replaced = self.contexts.get(raw.name)  # the whole stage is that context
        commands = [] if replaced is not None else raw.commands
        base_raw = None if replaced is not None else find_stage(self.stages, raw.base, before=raw.index)
        base = raw.base
        items: list[Item] = []
        if base_raw is not None:
            self.translate(base_raw)
            scope = self.done[base_raw.index].scope.inherit()
        elif (named := replaced or self.contexts.get(raw.base)) is not None:
            base, scope = self.context_base(named, items)
        else:
            self.line = raw.line
            self.image_reference(raw.base, "FROM")
            if raw.platform and raw.platform.lower().startswith("windows/"):
                self.error(f"FROM --platform={raw.platform}: Windows images are not supported yet",
                           "dockwright builds Linux images; build this one with docker buildx on Windows")
            scope = self.initial_scope(raw.base == SCRATCH, items)
        for command in commands:
            self.line = command.start_line
            items.extend(self.instruction(command, scope))
        self.active.discard(raw.index)
        self.line = outer_line
        stage = Stage(base=base, steps=finish_workdirs(items), name=raw.name,
                      base_stage=base_raw.index if base_raw is not None else None,
                      platform=raw.platform, line=raw.line)
        self.done[raw.index] = _Translated(stage, scope)
        self.order.append(raw.index)

    def initial_scope(self, scratch: bool, items: list[Item]) -> Scope:
        """The scope a stage starts with; adds BuildKit's stage set-up to `items`: scratch gets PATH and
        WorkingDir / (emptyImage), a base without PATH the default PATH."""
        if scratch:
            env = {"PATH": Var(DEFAULT_PATH)}
            items.append(ConfigStep(ConfigEdit(env=tuple((k, v.value) for k, v in env.items()), workdir="/")))
            return Scope(env=env)
        items.append(ConfigStep(ConfigEdit(env=(("PATH", f"${{PATH-{DEFAULT_PATH}}}"),), deferred=True)))
        return Scope(env_complete=False, workdir=None)

    def context_base(self, named: NamedContext, items: list[Item]) -> tuple[str, Scope]:
        """A stage's base when it is a named context: its image, or for a directory an empty image (as
        BuildKit's emptyImage) holding the directory's files."""
        if not named.directory:
            return named.source, self.initial_scope(False, items)
        scope = self.initial_scope(True, items)
        items.append(CopyStep((".",), "/", from_context=named.name, created_by=f"[context {named.name}] COPY . /"))
        return SCRATCH, scope

    def plan(self, target: str | None) -> list[Stage]:
        self.translate(target_stage(self.stages, target, self.source))
        new_index = {old: new for new, old in enumerate(self.order)}
        stages = []
        for old in self.order:
            stage = self.done[old].stage
            steps = tuple(_renumbered(step, new_index) for step in stage.steps)
            base_stage = new_index[stage.base_stage] if stage.base_stage is not None else None
            stages.append(replace(stage, steps=steps, base_stage=base_stage))
        return stages

    # ------------------------------------------------------------------ helpers

    def image_reference(self, text: str, what: str) -> None:
        """Reject a malformed image reference now, naming the line (oci-layout:// etc. are read later)."""
        if text == SCRATCH or "://" in text:
            return
        try:
            parse_reference(text)
        except InvalidReferenceError as exc:
            self.error(f"{what}: {exc.message}", exc.hint)

    def error(self, message: str, hint: str | None = None) -> Any:
        self.source.error(self.line, message, hint)

    def word(self, text: str, scope: Scope, unknown: Unknown = Unknown.ERROR) -> Expansion:
        try:
            return expand(text, scope.lookup, escape=self.escape, unknown=unknown)
        except UndefinedError as exc:
            if exc.name in scope.valueless:
                line = scope.valueless[exc.name]
                return self.error(f"{text}: ARG {exc.name}{f' (line {line})' if line else ''} has no value",
                                  f"pass --build-arg {exc.name}=..., or give it a default: ARG {exc.name}=...")
            return self.error(f"{text}: {exc}", "define it with ARG or ENV in this stage (dockwright does not "
                                                "read the base image's Env for this instruction)")
        except ShellError as exc:
            return self.error(f"{text}: {exc}")

    def words(self, text: str, scope: Scope) -> list[str]:
        try:
            return expand_words(text, scope.lookup, escape=self.escape)
        except ShellError as exc:
            return self.error(f"{text}: {exc}")

    def flags(self, command: Any, kinds: Mapping[str, str]) -> dict[str, Any]:
        """`--name=value` flags; kinds: "str", "bool" (`--x` or `--x=true|false`) or "list" (repeatable)."""
        values: dict[str, Any] = {name: [] for name, kind in kinds.items() if kind == "list"}
        for flag in command.flags:
            name, eq, value = flag.removeprefix("--").partition("=")
            kind = kinds.get(name)
            if kind is None:
                self.error(f"{command.cmd.upper()}: unknown flag: --{name}",
                           hint=f"{command.cmd.upper()} takes: {', '.join('--' + k for k in kinds) or 'no flags'}")
            if kind == "bool":
                if eq and value.lower() not in ("true", "false"):
                    self.error(f"expecting boolean value for flag --{name}, not: {value}")
                values[name] = not eq or value.lower() == "true"
            elif not eq:
                self.error(f"missing a value on flag: --{name}")
            elif kind == "list":
                values[name].append(value)
            else:
                values[name] = value
        return values

    # ------------------------------------------------------------------ instructions

    def instruction(self, command: Any, scope: Scope) -> list[Item]:
        cmd = command.cmd.upper()
        if cmd not in ("COPY", "ADD", "HEALTHCHECK", "RUN") and command.flags:
            self.error(f"{cmd}: unknown flag: {command.flags[0]}")
        handler = getattr(self, f"do_{cmd.lower()}")
        return handler(command, scope)

    def do_run(self, command: Any, scope: Scope) -> list[Item]:
        flags = self.flags(command, {"mount": "list", "network": "str", "security": "str"})
        if "security" in flags:
            self.error(f"RUN --security={flags['security']}: not supported (dockwright runs no privileged steps)")
        network = flags.get("network", "default")
        if network not in runflags.NETWORKS:
            self.error(f"RUN --network={network}: not supported", hint="use default, none or host")
        mounts = tuple(self.run_mount(text, scope) for text in flags["mount"])
        files: tuple[tuple[str, bytes], ...] = ()
        if command.json:  # (BuildKit's parser reads no heredoc after a JSON array)
            run: str | tuple[str, ...] = tuple(command.value)
            if not run:
                self.error("RUN requires at least one argument")
        else:
            run, files = self.run_text(command)
        args = {**scope.inherited_values(), **scope.arg_values()}
        deferred = any(var.template is not None for var in args.values())
        proxies = tuple((key, value) for key, value in self.build_args.items() if key in _PROXY_ARGS
                        and key not in scope.args and key not in scope.env and key not in scope.inherited)
        return [RunStep(run, shell=scope.shell, files=files, network=network, mounts=mounts, line=self.line,
                        args=tuple((key, as_text(Expansion(var.value, var.template), deferred))
                                   for key, var in args.items()),
                        deferred=deferred, proxies=proxies, arg_names=tuple(scope.declared),
                        env_order=tuple(scope.last_set))]

    def run_text(self, command: Any) -> tuple[str, tuple[tuple[str, bytes], ...]]:
        """A shell-form RUN's command text (and its /dev/pipes script), heredocs done as BuildKit does them:
        a RUN that is one heredoc runs its content (a script with #! is run as a file); any other RUN with
        heredocs hands the shell the command line with the heredocs appended, for the shell to read."""
        text = " ".join(command.value)
        if not text.strip():
            self.error("RUN requires at least one argument")
        heredocs = list(command.heredocs)
        if not heredocs:
            return text, ()
        only = _HEREDOC_WORD.match(text.strip())
        if len(heredocs) == 1 and only is not None and only.group(3) == heredocs[0].name:
            content = heredocs[0].content
            if only.group(1):  # <<-: strip leading tabs
                content = re.sub(r"(?m)^\t+", "", content)
            if content.startswith("#!"):
                name = heredocs[0].name
                return f"/dev/pipes/{name}", ((name, content.encode()),)
            return content, ()
        return text + "".join(f"\n{heredoc.content}{heredoc.name}" for heredoc in heredocs), ()

    def run_mount(self, text: str, scope: Scope) -> RunMount:
        try:
            pairs = [(key, self.word(value, scope).value if value is not None else None)
                     for key, value in runflags.split_mount(text)]
            return runflags.parse_mount(pairs, lambda value: self.copy_from(value, scope))
        except runflags.MountError as exc:
            return self.error(f"RUN --mount={text}: {exc}")

    def do_arg(self, command: Any, scope: Scope) -> list[Item]:
        shown = []
        for word in command.value:
            key, default = split_arg(word)
            if not key:
                self.error(f"ARG names can not be blank: {word!r}")
            var = None
            if key in self.build_args:
                var = Var(self.build_args[key])
            elif default is not None:
                expanded = self.word(default, scope, Unknown.DEFER)
                var = Var(expanded.value, expanded.template)
            elif key in self.meta:
                var = Var(self.meta[key])
            scope.set_arg(key, var, self.line)
            shown.append(key if var is None else f"{key}={var.template or var.value}")
        return [ConfigStep(ConfigEdit(), "ARG " + " ".join(shown))]

    def do_copy(self, command: Any, scope: Scope) -> list[Item]:
        return self.copy(command, scope, add=False)

    def do_add(self, command: Any, scope: Scope) -> list[Item]:
        return self.copy(command, scope, add=True)

    def copy(self, command: Any, scope: Scope, *, add: bool) -> list[Item]:
        name = "ADD" if add else "COPY"
        # --link and ADD --keep-git-dir are accepted as BuildKit accepts them, and change nothing here: --link
        # tells BuildKit how to cache and rebase the layer (dockwright's layer is the same either way), and
        # --keep-git-dir is for git sources, which ADD refuses
        kinds = {"chown": "str", "chmod": "str", "link": "bool", "exclude": "list"}
        kinds.update({"checksum": "str", "keep-git-dir": "bool"} if add else {"from": "str", "parents": "bool"})
        flags = self.flags(command, kinds)
        words = list(command.value)
        if len(words) < 2:
            self.error(f"{name} requires at least two arguments, but only {len(words)} was provided. "
                       "Destination could not be determined.")
        heredocs = list(command.heredocs)
        sources: list[str] = []
        inline: list[tuple[str, bytes]] = []
        for word in words[:-1]:
            match = _HEREDOC_WORD.match(word) if heredocs else None
            if match and match.group(3) == heredocs[0].name:
                inline.append((heredocs[0].name, self.heredoc(heredocs.pop(0).content, match, scope)))
                continue
            source = self.word(word, scope).value
            if not add and re.match(r"^https?://", source):
                self.error(f"COPY {source}: source can't be a URL for COPY", hint="use ADD for URLs")
            sources.append(source)
        dest = self.word(words[-1], scope).value
        chown = self.word(flags["chown"], scope).value if "chown" in flags else None
        chmod = self.word(flags["chmod"], scope).value if "chmod" in flags else None
        if chmod is not None and not is_octal_mode(chmod):
            self.error(f"invalid chmod parameter: {chmod!r}. it should be octal string and between 0 and 07777")
        checksum = self.word(flags["checksum"], scope).value if "checksum" in flags else None
        if checksum is not None and (len(sources) != 1 or not re.match(r"^https?://", sources[0])):
            self.error("ADD --checksum needs exactly one http(s) URL source")
        from_stage, from_image, from_context = self.copy_from(flags.get("from"), scope)
        shown = [name, *(["--parents"] if flags.get("parents") else []),
                 *([f"--chown={chown}"] if chown else []), *([f"--chmod={chmod}"] if chmod else []),
                 *sources, *(f"<<{n}" for n, _ in inline), dest]
        step = CopyStep(
            sources=tuple(sources), dest=dest, chown=chown or None, chmod=chmod or None, from_stage=from_stage,
            from_image=from_image, from_context=from_context, parents=bool(flags.get("parents")),
            excludes=tuple(self.word(e, scope).value for e in flags["exclude"]), add=add, checksum=checksum,
            inline_files=tuple(inline),
            created_by=" ".join(shown) + " # buildkit", line=self.line,
        )
        target = clean(dest) if dest.startswith("/") else (
            clean(f"{scope.workdir}/{dest}") if scope.workdir is not None else None)
        return [CopyMark(step, target, relative=not dest.startswith("/"))]

    def heredoc(self, content: str, match: re.Match[str], scope: Scope) -> bytes:
        if match.group(1):  # <<-: strip leading tabs
            content = re.sub(r"(?m)^\t+", "", content)
        if not match.group(2):  # unquoted delimiter: expand variables, keep quotes and escapes
            try:
                content = expand(content, scope.lookup, unknown=Unknown.UNSET, quotes=False,
                                 raw_escapes=True).value
            except ShellError as exc:
                self.error(f"heredoc {match.group(3)}: {exc}")
        return content.encode()

    def copy_from(self, text: str | None, scope: Scope) -> tuple[int | None, str | None, str | None]:
        """COPY --from and RUN --mount from=: (stage index, image, named context directory) for a named
        context, a stage index, a stage name, or else an image reference."""
        if text is None:
            return None, None, None
        value = self.word(text, scope).value
        if not value:
            self.error(f"COPY --from={text}: empty after expansion")
        if value.isdigit():
            index = int(value)
            if index >= len(self.stages):
                self.error(f"COPY --from={value}: invalid stage index {index}")
            raw: RawStage | None = self.stages[index]
        else:
            raw = find_stage(self.stages, value)
        named = self.contexts.get(value if raw is None else raw.name)
        if named is not None and named.directory:
            return None, None, named.name
        if raw is None:
            if named is not None:
                return None, named.source, None
            self.image_reference(value, "COPY --from")
            return None, value, None
        self.translate(raw)
        return raw.index, None, None


def _renumbered(step: Any, new_index: Mapping[int, int]) -> Any:
    """`step` with its stage indexes (COPY --from, RUN --mount from=) in the plan's numbering."""
    if isinstance(step, CopyStep) and step.from_stage is not None:
        return replace(step, from_stage=new_index[step.from_stage])
    if isinstance(step, RunStep) and any(m.from_stage is not None for m in step.mounts):
        return replace(step, mounts=tuple(replace(m, from_stage=new_index[m.from_stage])
                                          if m.from_stage is not None else m for m in step.mounts))
    return step


def plan_from_dockerfile(context: Path, dockerfile_text: str, *, dockerfile_name: str = "Dockerfile",
                         build_args: Mapping[str, str] | None = None, target: str | None = None,
                         platform: Platform, build_platform: Platform | None = None,
                         labels: Mapping[str, str] | None = None,
                         dockerignore: Sequence[str] = (), contexts: Sequence[NamedContext] = ()) -> BuildPlan:
    """The BuildPlan for building `target` (default: the last stage) of a Dockerfile for `platform`.
    `contexts`: named contexts (--build-context), in place of the stages and images of their names.
    Raises DockerfileError (`NAME:LINE: message`) for anything Docker would reject."""
    refuse_windows(platform, "the target platform")
    frontend = _Frontend(dockerfile_text, Source(dockerfile_name), build_args or {}, platform,
                         build_platform or Platform.host(), contexts)
    stages = frontend.plan(target)
    if labels:
        last = stages[-1]
        stages[-1] = replace(last, steps=(*last.steps, ConfigStep(ConfigEdit(labels=tuple(labels.items())))))
    return BuildPlan(context=context, stages=tuple(stages), platform=str(platform),
                     dockerignore=tuple(dockerignore), source=dockerfile_name,
                     contexts=tuple(frontend.contexts.used.values()))
