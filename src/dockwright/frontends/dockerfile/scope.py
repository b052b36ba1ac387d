"""What the Dockerfile frontend knows about a stage's config while it translates the stage: variables
(ENV and ARG, each known or a template over the base image's Env), WORKDIR, USER and SHELL.

Variables as BuildKit keeps them (frontend/dockerfile/dockerfile2llb/convert.go: dispatchEnv and
dispatchArg both add to the stage's env list): the stage's environment is the base's Env, then every
ENV and every ARG with a value sets its key, the later setting winning (an ARG declared after an ENV of
the same name wins, an ENV after an ARG wins); an ARG without a value sets nothing. A stage FROM an
earlier stage starts with that stage's environment (convert.go dispatchState.init), its ARGs included,
the config's Env set over it again (dispatchStages), and lists those ARGs in its RUN history."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from dockwright.frontends.dockerfile.shell import UNKNOWN, Deferred, Expansion, escape_template


@dataclass
class Var:
    value: str
    template: str | None = None  # set when the value depends on the (unknown) base Env


@dataclass
class Scope:
    """What the frontend knows about a stage's config while translating it."""

    env: dict[str, Var] = field(default_factory=dict)
    env_complete: bool = True  # False when the base is an image: its Env is unknown here
    workdir: str | None = "/"  # None: unknown (inherited from an image, or deferred)
    user: Var | None = None
    shell: tuple[str, ...] | None = None
    args: dict[str, Var] = field(default_factory=dict)  # ARGs with a value
    valueless: dict[str, int | None] = field(default_factory=dict)  # ARG NAME without a value: its line
    declared: dict[str, None] = field(default_factory=dict)  # every ARG of the stage, in declaration order
    # the keys this stage's ENV ("ENV") and ARG ("ARG") instructions set, ordered by their last setting
    # (BuildKit's env list moves a key to the end when it is set again)
    last_set: dict[str, str] = field(default_factory=dict)
    inherited: dict[str, Var] = field(default_factory=dict)  # the ARG values of the stage this one is FROM
    cmd_set: bool = False

    def set_env(self, key: str, var: Var) -> None:
        self.env[key] = var
        self._mark(key, "ENV")

    def set_arg(self, key: str, var: Var | None, line: int | None) -> None:
        """ARG KEY (var None: declared without a value, which sets nothing)."""
        self.declared.setdefault(key, None)
        if var is None:
            self.valueless[key] = line
            return
        self.args[key] = var
        self.valueless.pop(key, None)
        self._mark(key, "ARG")

    def _mark(self, key: str, kind: str) -> None:
        self.last_set.pop(key, None)
        self.last_set[key] = kind

    def arg_values(self) -> dict[str, Var]:
        """The ARGs whose value the stage's environment has (those set after any ENV of the same name)."""
        return {key: self.args[key] for key, kind in self.last_set.items() if kind == "ARG"}

    def inherited_values(self) -> dict[str, Var]:
        """The inherited ARGs the environment still has: not set again in this stage, and not in the config's
        Env, whose value wins; when the base image's Env is unknown here, a template giving its value if it
        has one."""
        found = {}
        for key, var in self.inherited.items():
            if key in self.last_set or key in self.env:
                continue
            if self.env_complete:
                found[key] = var
            else:
                word = var.template if var.template is not None else escape_template(var.value)
                found[key] = Var(var.value, f"${{{key}-{word}}}")
        return found

    def lookup(self, name: str) -> Any:
        from_arg = self.last_set.get(name) == "ARG"
        var = self.args.get(name) if from_arg else self.env.get(name)
        if var is None and name not in self.last_set and name in self.inherited:
            var, from_arg = self.inherited_values().get(name), True
        if var is None:
            return None if self.env_complete else UNKNOWN
        if var.template is None:
            return var.value
        # an ENV's template is resolved against the config that holds it; a build arg's is in no config
        return Deferred(var.template) if from_arg else UNKNOWN

    def inherit(self) -> Scope:
        """The scope of a stage FROM this one: this one's config and, as BuildKit, its ARGs."""
        inherited = {key: var for key, var in self.inherited.items() if key not in self.last_set}
        return Scope(dict(self.env), self.env_complete, self.workdir, self.user, self.shell,
                     valueless=dict(self.valueless), declared=dict(self.declared),
                     inherited={**inherited, **self.arg_values()})


def as_text(expanded: Expansion, deferred: bool) -> str:
    """A value for a ConfigEdit: a template when the edit is deferred, else the plain value."""
    if not deferred:
        return expanded.value
    return expanded.template if expanded.template is not None else escape_template(expanded.value)


def clean(path: str) -> str:
    """Go's path.Clean of an absolute path."""
    cleaned = posixpath.normpath("/" + path.lstrip("/"))
    return "/" + cleaned.lstrip("/")
