"""Finishing ConfigEdits whose expansion needed the base image's Env (see plan.ConfigEdit.deferred)."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import replace

from dockwright.frontends.dockerfile.shell import ShellError, resolve_template
from dockwright.model.errors import DockerfileError
from dockwright.plan import ConfigEdit


def resolve_deferred(edit: ConfigEdit, inherited_env: Mapping[str, str] | Sequence[str],
                     inherited_workdir: str = "") -> ConfigEdit:
    """Expand a deferred edit against the Env (a mapping, or the config's `K=V` list) and the
    WorkingDir in force when it applies (the base's, plus the edits before it). Returns the edit
    unchanged when it is not deferred."""
    if not edit.deferred:
        return edit
    if not isinstance(inherited_env, Mapping):
        inherited_env = dict(item.partition("=")[::2] for item in inherited_env)
    try:
        def resolve(template: str) -> str:
            return resolve_template(template, inherited_env.get)

        workdir = edit.workdir
        if workdir is not None:
            workdir = resolve(workdir)
            if not workdir.startswith("/"):
                workdir = posixpath.normpath(posixpath.join("/", inherited_workdir, workdir))
        return replace(
            edit,
            env=tuple((key, resolve(value)) for key, value in edit.env),
            labels=tuple((key, resolve(value)) for key, value in edit.labels),
            workdir=workdir,
            user=resolve(edit.user) if edit.user is not None else None,
            deferred=False,
        )
    except ShellError as exc:
        raise DockerfileError(f"cannot expand a Dockerfile value against the base image's Env: {exc}") from None
