"""Named build contexts (`--build-context NAME=...`, as buildx passes them to BuildKit): which name a FROM
or COPY --from refers to, and how BuildKit matches it. A stage whose name has a named context is that
context, its instructions never translated (a builder stage with RUN is neither run nor refused)."""

from __future__ import annotations

from collections.abc import Sequence

from dockwright.model.errors import InvalidReferenceError
from dockwright.model.reference import parse_reference
from dockwright.plan import NamedContext


def context_key(name: str) -> str:
    """BuildKit's lookup key: the familiar form of the name as an image reference, without `:latest`
    (`docker.io/library/golang:latest` and `golang` are one key); a name that is no reference as it is."""
    try:
        return parse_reference(name).familiar.removesuffix(":latest")
    except InvalidReferenceError:
        return name.lower()


class NamedContexts:
    """The build's named contexts, by key; remembers the ones the plan uses."""

    def __init__(self, contexts: Sequence[NamedContext]) -> None:
        self.by_key = {context_key(c.name): c for c in contexts}
        self.used: dict[str, NamedContext] = {}

    def get(self, name: str | None) -> NamedContext | None:
        found = self.by_key.get(context_key(name)) if name else None
        if found is not None:
            self.used[found.name] = found
        return found
