"""Finishing ConfigEdits whose expansion needed the base image's Env (see plan.ConfigEdit.deferred).

A template is plain data, so the executor resolves it without the frontend that wrote it. Its
syntax: `\\c` is the literal character c; `${NAME}` is NAME's value; `${NAME<op>WORD}` with op one of
`-`, `:-`, `+`, `:+`, `?`, `:?` has the shell's meaning, WORD being a template itself; `${NAME#WORD}`,
`${NAME%WORD}` and `${NAME/PATTERN/WORD}`, `${NAME//PATTERN/WORD}` are BuildKit's pattern operators
(dockwright/substitution.py) on the resolved words; anything else is literal. (The Dockerfile frontend
writes templates in this form: frontends/dockerfile/shell.py.)
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from dockwright import substitution
from dockwright.model.errors import DockerfileError
from dockwright.plan import ConfigEdit

Env = Callable[[str], "str | None"]
_OPS = ("-", "+", "?", ":-", ":+", ":?", "#", "%", "/")


class TemplateError(ValueError):
    """A template that cannot be resolved (`${VAR:?msg}` with VAR unset, or malformed text)."""


def resolve_deferred(edit: ConfigEdit, inherited_env: Mapping[str, str] | Sequence[str],
                     inherited_workdir: str = "") -> ConfigEdit:
    """Expand a deferred edit against the Env (a mapping, or the config's `K=V` list) and the
    WorkingDir in force when it applies (the base's, plus the edits before it). Returns the edit
    unchanged when it is not deferred."""
    if not edit.deferred:
        return edit
    if not isinstance(inherited_env, Mapping):
        inherited_env = dict(item.partition("=")[::2] for item in inherited_env)
    lookup = inherited_env.get
    try:
        workdir = edit.workdir
        if workdir is not None:
            workdir = resolve_template(workdir, lookup)
            if not workdir.startswith("/"):
                workdir = posixpath.normpath(posixpath.join("/", inherited_workdir, workdir))
        return replace(
            edit,
            env=tuple((key, resolve_template(value, lookup)) for key, value in edit.env),
            labels=tuple((key, resolve_template(value, lookup)) for key, value in edit.labels),
            workdir=workdir,
            user=resolve_template(edit.user, lookup) if edit.user is not None else None,
            deferred=False,
        )
    except TemplateError as exc:
        raise DockerfileError(f"cannot expand a Dockerfile value against the base image's Env: {exc}") from None


def resolve_template(template: str, env: Env) -> str:
    """A template's text with every reference expanded against `env` (None: unset)."""
    return _resolve(template, 0, env, stop="")[0]


def _resolve(text: str, pos: int, env: Env, *, stop: str) -> tuple[str, int]:
    """Resolve from `pos` to the end, or to the unescaped `stop` (`}` closing a reference's word, `/` ending
    a pattern); (value, position after it)."""
    out: list[str] = []
    while pos < len(text):
        ch = text[pos]
        if ch == "\\":
            out.append(text[pos + 1 : pos + 2])
            pos += 2
        elif stop and ch == stop:
            return "".join(out), pos + 1
        elif text.startswith("${", pos):
            value, pos = _reference(text, pos + 2, env)
            out.append(value)
        else:
            out.append(ch)
            pos += 1
    if stop:
        raise TemplateError(f"syntax error: missing '{stop}'")
    return "".join(out), pos


def _reference(text: str, pos: int, env: Env) -> tuple[str, int]:
    """`${` already read: NAME, then `}` or an operator and its word."""
    start = pos
    while pos < len(text) and (text[pos].isalnum() or text[pos] == "_"):
        pos += 1
    name = text[start:pos]
    value = env(name)
    if text.startswith("}", pos):
        return value or "", pos + 1
    op = text[pos : pos + 2] if text.startswith(":", pos) else text[pos : pos + 1]
    if not name or op not in _OPS:
        raise TemplateError(f"bad substitution in {text!r}")
    if op == "/":
        every = text.startswith("/", pos + 1)
        pattern, pos = _resolve(text, pos + 1 + every, env, stop="/")
        replacement, pos = _resolve(text, pos, env, stop="}")
        return _pattern(lambda: substitution.replace(value or "", pattern, replacement, every=every)), pos
    word, pos = _resolve(text, pos + len(op), env, stop="}")
    if op in ("#", "%"):
        return _pattern(lambda: substitution.remove(value or "", op, word)), pos
    empty = value is None or (op.startswith(":") and value == "")
    if op.endswith("-"):
        return (word if empty else value or ""), pos
    if op.endswith("+"):
        return ("" if empty else word), pos
    if empty:  # ? and :?
        default = "is not allowed to be unset" if value is None else "is not allowed to be empty"
        raise TemplateError(f"{name}: {word or default}")
    return value or "", pos


def _pattern(operation: Callable[[], str]) -> str:
    try:
        return operation()
    except substitution.PatternError as exc:
        raise TemplateError(str(exc)) from None
