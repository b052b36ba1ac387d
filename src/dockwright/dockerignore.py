"""Reading .dockerignore files the way Docker does (moby/patternmatcher/ignorefile)."""

from __future__ import annotations

import posixpath
from pathlib import Path

from dockwright.errors import ContextError


def parse_dockerignore(text: str) -> list[str]:
    """Patterns from .dockerignore text: `#` comment lines and blank lines skipped, whitespace
    trimmed, paths cleaned, a leading `/` removed; `!` exceptions kept with their `!`."""
    patterns: list[str] = []
    for line in text.removeprefix("\ufeff").splitlines():
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = posixpath.normpath(pattern)
            if pattern.startswith("//"):
                pattern = "/" + pattern.lstrip("/")
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return patterns


def read_dockerignore(context: Path, dockerfile_path: Path | None) -> list[str]:
    """The ignore patterns for a build: `<Dockerfile>.dockerignore` next to the Dockerfile wins over
    CONTEXT/.dockerignore; no file means no patterns."""
    candidates = [Path(f"{dockerfile_path}.dockerignore")] if dockerfile_path is not None else []
    candidates.append(context / ".dockerignore")
    for candidate in candidates:
        if candidate.is_file():
            try:
                return parse_dockerignore(candidate.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                raise ContextError(f"cannot read {candidate}: {exc}") from None
    return []
