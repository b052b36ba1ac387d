"""Reading and matching .dockerignore patterns the way Docker does (moby/patternmatcher and its
ignorefile, which BuildKit uses): patterns are cleaned like Go's filepath.Clean, `*` and `?` stop
at "/", `**` spans directories, `\\` escapes, `!` re-includes, the last matching pattern wins, and a
pattern that matches a directory matches everything below it. `docker.utils.build.PatternMatcher`
was not used: it lower-cases names and patterns (Docker's matching is case-sensitive on Linux) and
only checks one parent prefix.
"""

from __future__ import annotations

import functools
import logging
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dockwright.model.errors import ContextError, UsageError

log = logging.getLogger("dockwright")


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


def read_dockerignore(context: Path, dockerfile_path: Path | None, ignore_file: Path | None = None) -> list[str]:
    """The ignore patterns for a build, from the first file that exists of: `<Dockerfile>.dockerignore`
    next to the Dockerfile (BuildKit reads it first, from the Dockerfile's directory), `ignore_file`
    (`--ignore-file`, in place of the context's), CONTEXT/.dockerignore (BuildKit's fallback). No file
    means no patterns; an `ignore_file` that does not exist is an error."""
    if ignore_file is not None and not ignore_file.is_file():
        raise UsageError(f"--ignore-file {ignore_file}: no such file")
    candidates = [Path(f"{dockerfile_path}.dockerignore")] if dockerfile_path is not None else []
    candidates.append(ignore_file if ignore_file is not None else context / ".dockerignore")
    if ignore_file is not None and candidates[0].is_file() and candidates[0] != ignore_file:
        log.warning("warning: %s takes precedence over --ignore-file %s (as in BuildKit)", candidates[0], ignore_file)
    for candidate in candidates:
        if candidate.is_file():
            try:
                return parse_dockerignore(candidate.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                raise ContextError(f"cannot read {candidate}: {exc}") from None
    return []


def clean_path(path: str) -> str:
    """Go's filepath.Clean for a context-relative path, with any leading "/" dropped ("" = root)."""
    cleaned = posixpath.normpath("/" + path).lstrip("/")
    return "" if cleaned == "." else cleaned


_WILDCARD = re.compile(r"[*?\[\\]")


def has_wildcards(text: str) -> bool:
    """Whether a COPY source or pattern has Go filepath.Match metacharacters: `*`, `?`, `[`, or `\\`."""
    return _WILDCARD.search(text) is not None


def translate(pattern: str, doublestar: bool) -> str:
    """A Go filepath.Match pattern (plus `**` when `doublestar`) as a regular expression."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if doublestar and i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                out.append(".*" if i >= n else "(?:.*/)?")
            else:
                out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i < n:
            out.append(re.escape(pattern[i]))
            i += 1
        elif c == "[":
            end = pattern.find("]", i)
            body = pattern[i:end] if end >= 0 else ""
            negate = body.startswith("^")
            body = body[1:] if negate else body
            if not body:  # no closing "]" or an empty class: Go rejects it; take it literally
                out.append(re.escape(c))
            else:
                out.append("[" + ("^" if negate else "") + body.replace("[", "\\[") + "]")
                i = end + 1
        else:
            out.append(re.escape(c))
    return "".join(out)


@dataclass(frozen=True)
class _Pattern:
    text: str
    exclusion: bool
    regex: re.Pattern[str]
    dirs: tuple[str, ...]


class IgnoreMatcher:
    """`.dockerignore` semantics over context-relative, "/"-separated paths."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns: list[_Pattern] = []
        for raw in patterns:
            text = raw.strip()
            exclusion = text.startswith("!")
            if exclusion:
                text = text[1:].strip()
            text = clean_path(text)
            if not text:  # "" and "." are ignored, as in Docker
                continue
            regex = re.compile(translate(text, doublestar=True), re.DOTALL)
            self.patterns.append(_Pattern(text, exclusion, regex, tuple(text.split("/"))))

    @classmethod
    def from_patterns(cls, patterns: Sequence[str]) -> IgnoreMatcher:
        return cls(patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def state(self, relpath: str, parent: tuple[bool, ...] | None) -> tuple[bool, ...]:
        """Per pattern: does it match `relpath` or one of its parents? `parent` is the state of
        the parent directory (None: compute it), so a walk costs one regex match per pattern."""
        if parent is None:
            head = relpath.rpartition("/")[0]
            parent = self.state(head, None) if head else (False,) * len(self.patterns)
        return tuple(p_state or bool(p.regex.fullmatch(relpath))
                     for p, p_state in zip(self.patterns, parent, strict=True))

    def decide(self, state: tuple[bool, ...]) -> bool:
        """Excluded? The last matching pattern wins."""
        excluded = False
        for pattern, matched in zip(self.patterns, state, strict=True):
            if matched:
                excluded = not pattern.exclusion
        return excluded

    def matches(self, relpath: str) -> bool:
        """True when `relpath` is excluded (the context root never is)."""
        relpath = clean_path(relpath)
        return bool(self.patterns) and bool(relpath) and self.decide(self.state(relpath, None))

    def may_match_below(self, reldir: str) -> bool:
        """Could a pattern match anything strictly below the directory `reldir` ("" = the root)?
        Conservative: True for `**`, character classes, escapes and exceptions. Otherwise a pattern of
        k components only matches paths of k components, so it reaches below `reldir` only if it is
        longer and its leading components match; one that matches `reldir` or an ancestor is counted
        too (everything below would go with it)."""
        parts = reldir.split("/") if reldir else []
        for pattern in self.patterns:
            if pattern.exclusion or "**" in pattern.text or "[" in pattern.text or "\\" in pattern.text:
                return True
            if all(re.fullmatch(translate(p, doublestar=False), d, re.DOTALL)
                   for p, d in zip(pattern.dirs, parts, strict=False)):
                return True
        return False

    def may_include_below(self, reldir: str) -> bool:
        """Could an exception (`!pattern`) re-include something under the excluded dir `reldir`?"""
        parts = reldir.split("/")
        for pattern in self.patterns:
            if not pattern.exclusion:
                continue
            if "**" in pattern.text:
                return True
            if len(pattern.dirs) > len(parts) and all(
                re.fullmatch(translate(p, doublestar=False), d, re.DOTALL)
                for p, d in zip(pattern.dirs, parts, strict=False)
            ):
                return True
        return False


@functools.lru_cache(maxsize=8)
def compiled(patterns: tuple[str, ...]) -> IgnoreMatcher | None:
    """The matcher of a build's .dockerignore patterns (None without any), compiled once per build rather
    than once per COPY step and use: a matcher holds no state."""
    return IgnoreMatcher.from_patterns(list(patterns)) if patterns else None
