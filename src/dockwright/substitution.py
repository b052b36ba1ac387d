"""The pattern operators of Dockerfile variable expansion, with BuildKit's semantics (its shell lexer,
frontend/dockerfile/shell/lex.go): `${v#p}`, `${v##p}` (remove the shortest / longest matching prefix),
`${v%p}`, `${v%%p}` (suffix), `${v/p/r}`, `${v//p/r}` (replace the first / every match).

Used by the Dockerfile lexer and by the resolver of deferred templates, so both expand alike.

A pattern is text as the lexer read it, escapes kept: `*` matches any string, `?` one character, `\\*`,
`\\?` and `\\\\` are those characters, `\\}` and `\\/` are `}` and `/`; any other escape is an error.
Unlike a POSIX shell, BuildKit has no bracket expressions: `[` is a literal character. `/` patterns
match anywhere (the leftmost match, `*` greedy); in `${v//p/r}` a `$` in the replacement is Go's
regexp template syntax (`$0` is the match, `$$` a dollar), in `${v/p/r}` it is literal.
"""

from __future__ import annotations

import re

_REGEX_SPECIAL = frozenset("[]{}.+()|^$")


class PatternError(ValueError):
    """A pattern BuildKit refuses (an escape other than \\*, \\?, \\\\, \\}, \\/)."""


def remove(value: str, op: str, word: str) -> str:
    """`${v#word}` (op "#") or `${v%word}` (op "%"); a word that starts with op again (`##`, `%%`) removes
    the longest match instead of the shortest."""
    greedy = word.startswith(op)
    pattern = word[1:] if greedy else word
    if op == "#":
        return _trim_prefix(pattern, value, greedy)
    # the shortest rightmost match is the shortest leftmost match of the reversed pattern in the reversed value
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


def replace(value: str, pattern: str, replacement: str, *, every: bool) -> str:
    """`${v/pattern/replacement}`, or `${v//pattern/replacement}` when `every`."""
    regex = _regex(pattern, greedy=True, anchored=False)
    if not every:
        match = regex.search(value)
        return value if match is None else value[:match.start()] + replacement + value[match.end():]
    out: list[str] = []
    last = pos = 0
    while pos <= len(value):  # Go's ReplaceAllString: no empty match right after a match
        match = regex.search(value, pos)
        if match is None:
            break
        start, end = match.span()
        out.append(value[last:start])
        if end > last or start == 0:
            out.append(_expand(replacement, value[start:end]))
        last = end
        pos = pos + 1 if end <= pos else end
    out.append(value[last:])
    return "".join(out)


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    match = _regex(pattern, greedy=greedy, anchored=True).search(value)
    return value if match is None else value[match.end():]


def _regex(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    out = ["^"] if anchored else []
    chars = iter(pattern)
    for ch in chars:
        if ch == "*":
            out.append(".*" if greedy else ".*?")
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            following = next(chars, "")
            if following in ("}", "/"):  # escaped only to get past the lexer: not part of the pattern
                out.append(re.escape(following))
            elif following in ("*", "?", "\\"):
                out.append("\\" + following)
            else:
                raise PatternError(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{following}'")
        elif ch in _REGEX_SPECIAL:
            out.append("\\" + ch)
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out))


def _reverse_pattern(pattern: str) -> str:
    """The pattern backwards, each escape staying in front of the character it escapes (a\\*c -> c\\*a)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i != len(pattern) - 1:
            out.append(pattern[i:i + 2])
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(reversed(out))


def _expand(template: str, match: str) -> str:
    """Go's Regexp.Expand for a pattern without groups: `$0`/`${0}` is the match, `$$` a dollar, any other
    `$name` nothing, a `$` not followed by a name itself."""
    out: list[str] = []
    pos = 0
    while True:
        dollar = template.find("$", pos)
        if dollar < 0:
            out.append(template[pos:])
            return "".join(out)
        out.append(template[pos:dollar])
        pos = dollar + 1
        if template.startswith("$", pos):
            out.append("$")
            pos += 1
            continue
        brace = template.startswith("{", pos)
        start = end = pos + brace
        while end < len(template) and (template[end].isalpha() or template[end].isdecimal() or template[end] == "_"):
            end += 1
        name = template[start:end]
        if not name or (brace and not template.startswith("}", end)):
            out.append("$")  # malformed: the dollar is literal
            continue
        pos = end + brace
        if name == "0":
            out.append(match)
