"""What the Dockerfile frontend knows about a stage's config while it translates the stage: variables
(ENV and ARG, each known or a template over the base image's Env), WORKDIR, USER and SHELL."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from dockwright.frontends.dockerfile.shell import UNKNOWN, Expansion, escape_template


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
    args: dict[str, Var] = field(default_factory=dict)
    valueless: dict[str, int | None] = field(default_factory=dict)  # ARG NAME without a value: its line
    cmd_set: bool = False

    def lookup(self, name: str) -> Any:
        var = self.env.get(name) or self.args.get(name)  # ENV wins over ARG, as in Docker
        if var is None:
            return None if self.env_complete else UNKNOWN
        return UNKNOWN if var.template is not None else var.value

    def inherit(self) -> Scope:
        return Scope(dict(self.env), self.env_complete, self.workdir, self.user, self.shell)


def as_text(expanded: Expansion, deferred: bool) -> str:
    """A value for a ConfigEdit: a template when the edit is deferred, else the plain value."""
    if not deferred:
        return expanded.value
    return expanded.template if expanded.template is not None else escape_template(expanded.value)


def clean(path: str) -> str:
    """Go's path.Clean of an absolute path."""
    cleaned = posixpath.normpath("/" + path.lstrip("/"))
    return "/" + cleaned.lstrip("/")
