"""The Dockerfile instructions that only change the image config (ENV, LABEL, MAINTAINER, WORKDIR, USER,
EXPOSE, VOLUME, STOPSIGNAL, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD), with BuildKit's checks and
history texts. A mixin of the frontend, which provides word(), words(), error() and flags()."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from dockwright.frontends.dockerfile import formats
from dockwright.frontends.dockerfile.scope import Scope, Var, as_text, clean
from dockwright.frontends.dockerfile.shell import Expansion, Unknown, escape_template
from dockwright.frontends.dockerfile.workdir import Item, Workdir
from dockwright.plan import ConfigEdit, ConfigStep

_MIN_DURATION_NS = 1_000_000  # HEALTHCHECK durations below 1ms are rejected, as Docker does


class ConfigInstructions:
    """The config instructions' handlers (`do_env` ...), each returning the stage's new steps."""

    if TYPE_CHECKING:
        def word(self, text: str, scope: Scope, unknown: Unknown = Unknown.ERROR) -> Expansion: ...
        def words(self, text: str, scope: Scope) -> list[str]: ...
        def error(self, message: str, hint: str | None = None) -> Any: ...
        def flags(self, command: Any, kinds: Mapping[str, str]) -> dict[str, Any]: ...

    def run_form(self, command: Any, scope: Scope) -> tuple[str, ...]:
        """CMD / ENTRYPOINT arguments: JSON form as written, shell form through the SHELL."""
        if command.json:
            return tuple(command.value)
        if not command.value:
            self.error(f"{command.cmd.upper()} requires at least one argument")
        return (*(scope.shell or ("/bin/sh", "-c")), " ".join(command.value))

    def pairs(self, command: Any, scope: Scope) -> tuple[list[tuple[str, Expansion]], bool]:
        """ENV / LABEL key-value pairs, keys and values expanded; True when any value is deferred."""
        values = list(command.value)
        if not values:
            self.error(f"{command.cmd.upper()} requires at least one argument")
        pairs = []
        for key_text, value_text in zip(values[::2], values[1::2], strict=True):
            key = self.word(key_text, scope, Unknown.UNSET).value
            if not key:
                self.error(f"{command.cmd.upper()} names can not be blank")
            pairs.append((key, self.word(value_text, scope, Unknown.DEFER)))
        return pairs, any(value.template is not None for _, value in pairs)

    def do_env(self, command: Any, scope: Scope) -> list[Item]:
        pairs, deferred = self.pairs(command, scope)
        env = tuple((key, as_text(value, deferred)) for key, value in pairs)
        for key, value in pairs:
            scope.set_env(key, Var(value.value, value.template))
        return [ConfigStep(ConfigEdit(env=env, deferred=deferred),
                               "ENV " + " ".join(f"{key}={value}" for key, value in env))]

    def do_label(self, command: Any, scope: Scope) -> list[Item]:
        pairs, deferred = self.pairs(command, scope)
        labels = tuple((key, as_text(value, deferred)) for key, value in pairs)
        return [ConfigStep(ConfigEdit(labels=labels, deferred=deferred),
                               "LABEL " + " ".join(f"{key}={value}" for key, value in labels))]

    def do_maintainer(self, command: Any, scope: Scope) -> list[Item]:
        author = " ".join(command.value)
        return [ConfigStep(ConfigEdit(author=author), f"MAINTAINER {author}")]

    def do_workdir(self, command: Any, scope: Scope) -> list[Item]:
        if not command.value or not command.value[0]:
            self.error("WORKDIR requires exactly one argument")
        expanded = self.word(command.value[0], scope, Unknown.DEFER)
        if not expanded.value and expanded.template is None:
            self.error(f"WORKDIR {command.value[0]}: the path is empty after expansion")
        path: str | None = None
        if expanded.template is None and expanded.value.startswith("/"):
            path = clean(expanded.value)
        elif expanded.template is None and scope.workdir is not None:
            path = clean(f"{scope.workdir}/{expanded.value}")
        scope.workdir = path
        if path is not None:
            edit = ConfigEdit(workdir=path)
        else:
            edit = ConfigEdit(workdir=expanded.template or escape_template(expanded.value), deferred=True)
        return [Workdir(edit, f"WORKDIR {path or expanded.template or expanded.value}", path)]

    def do_user(self, command: Any, scope: Scope) -> list[Item]:
        if not command.value or not command.value[0]:
            self.error("USER requires exactly one argument")
        expanded = self.word(command.value[0], scope, Unknown.DEFER)
        scope.user = Var(expanded.value, expanded.template)
        deferred = expanded.template is not None
        return [ConfigStep(ConfigEdit(user=as_text(expanded, deferred), deferred=deferred),
                               f"USER {expanded.template or expanded.value}")]

    def do_expose(self, command: Any, scope: Scope) -> list[Item]:
        specs = [spec for word in command.value for spec in self.words(word, scope)]
        if not specs:
            self.error("EXPOSE requires at least one argument")
        try:
            ports = formats.parse_port_specs(specs)
        except ValueError as exc:
            return self.error(f"EXPOSE {' '.join(specs)}: {exc}")
        shown = " ".join(f"{port}:{{}}" for port in ports)
        return [ConfigStep(ConfigEdit(exposed_ports=tuple(ports)), f"EXPOSE map[{shown}]")]

    def do_volume(self, command: Any, scope: Scope) -> list[Item]:
        volumes = [self.word(word, scope).value for word in command.value]
        if not volumes:
            self.error("VOLUME requires at least one argument")
        if "" in volumes:
            self.error("VOLUME specified can not be an empty string")
        return [ConfigStep(ConfigEdit(volumes=tuple(volumes)), f"VOLUME {formats.go_list(volumes)}")]

    def do_stopsignal(self, command: Any, scope: Scope) -> list[Item]:
        signal = self.word(command.value[0], scope).value if command.value else ""
        if not formats.is_signal(signal):
            self.error(f"STOPSIGNAL: invalid signal: {signal!r}", hint="e.g. SIGTERM, SIGQUIT, 15")
        return [ConfigStep(ConfigEdit(stop_signal=signal), f"STOPSIGNAL {signal}")]

    def do_cmd(self, command: Any, scope: Scope) -> list[Item]:
        args = self.run_form(command, scope)
        scope.cmd_set = True
        return [ConfigStep(ConfigEdit(cmd=args), f"CMD {formats.go_quote_list(args)}")]

    def do_entrypoint(self, command: Any, scope: Scope) -> list[Item]:
        args = self.run_form(command, scope)
        edit = ConfigEdit(entrypoint=args, cmd=None if scope.cmd_set else ())
        return [ConfigStep(edit, f"ENTRYPOINT {formats.go_quote_list(args)}")]

    def do_shell(self, command: Any, scope: Scope) -> list[Item]:
        if not command.json or not command.value:
            self.error('SHELL requires the arguments to be in JSON form, e.g. SHELL ["/bin/bash", "-c"]')
        scope.shell = tuple(command.value)
        return [ConfigStep(ConfigEdit(shell=scope.shell), f"SHELL {formats.go_list(scope.shell)}")]

    def do_healthcheck(self, command: Any, scope: Scope) -> list[Item]:
        flags = self.flags(command, {"interval": "str", "timeout": "str", "start-period": "str",
                                     "start-interval": "str", "retries": "str"})
        kind = command.value[0].upper() if command.value else ""
        if kind == "NONE":
            if len(command.value) > 1:
                self.error("HEALTHCHECK NONE takes no arguments")
            health: dict[str, object] = {"Test": ["NONE"]}
        elif kind == "CMD":
            if len(command.value) < 2:
                self.error("missing command after HEALTHCHECK CMD")
            rest = list(command.value[1:])
            health = {"Test": ["CMD", *rest] if command.json else ["CMD-SHELL", " ".join(rest)]}
            for flag, key in (("interval", "Interval"), ("timeout", "Timeout"),
                              ("start-period", "StartPeriod"), ("start-interval", "StartInterval")):
                if flag in flags:
                    health[key] = self.duration(flag, flags[flag])
            if "retries" in flags:
                if not re.fullmatch(r"-?\d+", flags["retries"]):
                    self.error(f"HEALTHCHECK --retries={flags['retries']}: not a number")
                if int(flags["retries"]) < 0:
                    self.error(f"HEALTHCHECK --retries cannot be negative ({flags['retries']})")
                health["Retries"] = int(flags["retries"])
            health = {key: value for key, value in health.items() if value}
        else:
            return self.error(f"unknown type {kind!r} in HEALTHCHECK (try CMD or NONE)")
        return [ConfigStep(ConfigEdit(healthcheck=health), "HEALTHCHECK " + health_text(health))]

    def duration(self, flag: str, text: str) -> int:
        try:
            value = formats.parse_duration(text)
        except ValueError:
            return self.error(f"HEALTHCHECK --{flag}={text}: not a duration", hint="e.g. 30s, 1m30s, 500ms")
        if value != 0 and value < _MIN_DURATION_NS:
            self.error(f"HEALTHCHECK --{flag}={text} cannot be less than 1ms")
        return value

    def do_onbuild(self, command: Any, scope: Scope) -> list[Item]:
        trigger = (command.sub_cmd or "").upper()
        if not trigger:
            self.error("ONBUILD requires at least one argument")
        if trigger in ("ONBUILD", "FROM", "MAINTAINER"):
            self.error(f"{trigger} isn't allowed as an ONBUILD trigger")
        expression = re.sub(r"(?i)^\s*ONBUILD\s*", "", command.original).strip()
        return [ConfigStep(ConfigEdit(onbuild=(expression,)))]  # BuildKit records no history for it


def health_text(health: Mapping[str, Any]) -> str:
    """`%q` of BuildKit's *HealthcheckConfig, as `docker history` shows it."""
    test = cast(list[str], health.get("Test", []))
    durations = " ".join(formats.go_quote(formats.format_duration(int(health.get(key, 0))))
                         for key in ("Interval", "Timeout", "StartPeriod", "StartInterval"))
    return f"&{{{formats.go_quote_list(test)} {durations} {formats.go_quote_int(int(health.get('Retries', 0)))}}}"
