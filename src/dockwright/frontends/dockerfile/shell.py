"""Docker's word lexer (BuildKit's frontend/dockerfile/shell): quotes, escapes and `$VAR` expansion.

Mirrors BuildKit's rules: `'...'` is literal, `"..."` expands `$` and lets the escape character
escape only `"`, `$` and itself; outside quotes the escape character escapes anything; `$VAR`,
`${VAR}`, `${VAR:-w}`, `${VAR-w}`, `${VAR:+w}`, `${VAR+w}`, `${VAR:?msg}` and `${VAR?msg}`, and the
pattern operators `${VAR#p}`, `${VAR##p}`, `${VAR%p}`, `${VAR%%p}`, `${VAR/p/r}`, `${VAR//p/r}`
(dockwright/substitution.py; their words keep their escapes). Special parameters (`$#`, `$@`,
`${?}`, ...) are never set.

The frontend does not know the base image's Env. A lookup may therefore answer UNKNOWN, and the
caller decides what an unknown variable means (`Unknown`): keep the reference for later
(`DEFER`: the result carries a template, resolved once the inherited Env is known), treat it as
unset, or refuse a plain `$VAR` (`ERROR`). A lookup may also answer a `Deferred` template: a build
arg whose value used the base image's Env, which no config holds to resolve `${NAME}` against later;
a plain reference to it becomes its template (an operator on it is refused). A template is text in
this same syntax with quotes disabled: literal `\\`, `$` and `}` (and `/` in a `${VAR/p/r}` pattern)
are escaped with a backslash; dockwright.deferred resolves it without this lexer.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from dockwright import substitution


class ShellError(Exception):
    """A substitution that cannot be expanded (bad syntax, `${VAR:?msg}`, unknown variable)."""


class UndefinedError(ShellError):
    """A variable this Dockerfile does not define, where its value must be known now (Unknown.ERROR)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"${name} is not defined in this Dockerfile")
        self.name = name


_SPECIAL = "@*#?-$!0"  # POSIX special parameters: never set in a Dockerfile
_PATTERN_OPS = ("#", "%", "/", "//")


class _Unknown(enum.Enum):
    UNKNOWN = "unknown"


UNKNOWN = _Unknown.UNKNOWN


@dataclass(frozen=True)
class Deferred:
    """A variable whose value is `template` (see the module docstring)."""

    template: str


Lookup = Callable[[str], "str | _Unknown | Deferred | None"]  # value, None = unset, UNKNOWN = not known here


class Unknown(enum.Enum):
    DEFER = "defer"
    UNSET = "unset"
    ERROR = "error"


@dataclass(frozen=True)
class Expansion:
    value: str  # the expanded text (unknown variables as empty) when not deferred
    template: str | None = None  # set when a reference was deferred (dockwright/deferred.py resolves it)


def escape_template(text: str, *, slash: bool = False) -> str:
    """Literal text as template text (`slash`: in a `${VAR/p/r}` pattern, where `/` ends the pattern)."""
    text = text.replace("\\", "\\\\").replace("$", "\\$").replace("}", "\\}")
    return text.replace("/", "\\/") if slash else text


class _Out:
    """The result of a word being built: plain value, template text, and the split words."""

    def __init__(self, slash: bool = False) -> None:
        self.slash = slash
        self.value: list[str] = []
        self.template: list[str] = []
        self.deferred = False
        self.words: list[str] = []
        self._word: list[str] = []
        self._in_word = False

    def text(self, text: str, *, split: bool) -> None:
        """Literal text; `split` text (unquoted) separates words at whitespace."""
        self.value.append(text)
        self.template.append(escape_template(text, slash=self.slash))
        for ch in text:
            if split and ch.isspace():
                if self._in_word and self._word:
                    self.words.append("".join(self._word))
                    self._word = []
                    self._in_word = False
            else:
                self._word.append(ch)
                self._in_word = True

    def reference(self, template: str) -> None:
        self.deferred = True
        self.template.append(template)
        self._in_word = True

    def merge(self, other: _Out) -> None:
        """Add a quoted part: one piece of the current word."""
        self.value.extend(other.value)
        self.template.extend(other.template)
        self.deferred = self.deferred or other.deferred
        self._word.extend(other.value)
        if other.value or other.deferred:
            self._in_word = True

    def finish_words(self) -> list[str]:
        if self._in_word:
            self.words.append("".join(self._word))
        return self.words


class _Lexer:
    def __init__(self, text: str, lookup: Lookup, escape: str, unknown: Unknown, *, quotes: bool = True,
                 raw_escapes: bool = False) -> None:
        self.text = text
        self.pos = 0
        self.lookup = lookup
        self.escape = escape
        self.unknown = unknown
        self.quotes = quotes
        self.raw_escapes = raw_escapes
        self.slash = False  # reading a `${VAR/p/r}` pattern

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _next(self) -> str:
        ch = self._peek()
        self.pos += 1 if ch else 0
        return ch

    def process(self, stop: str = "") -> _Out:
        out = _Out(self.slash)
        while self.pos < len(self.text):
            ch = self._peek()
            if stop and ch == stop:
                self._next()
                return out
            if ch == "$":
                self._dollar(out, split=True)
            elif ch == "'" and self.quotes:
                out.merge(self._single_quote())
            elif ch == '"' and self.quotes:
                out.merge(self._double_quote())
            else:
                self._next()
                if ch == self.escape:
                    escaped = self._next()
                    if self.raw_escapes:
                        out.text(ch + escaped, split=False)
                    elif escaped:
                        out.text(escaped, split=False)
                else:
                    out.text(ch, split=True)
        if stop:
            raise ShellError(f"unexpected end of statement while looking for matching {stop}")
        return out

    def _single_quote(self) -> _Out:
        out = _Out(self.slash)
        self._next()
        start = self.pos
        end = self.text.find("'", start)
        if end < 0:
            raise ShellError("unexpected end of statement while looking for matching single-quote")
        self.pos = end + 1
        out.text(self.text[start:end], split=False)
        return out

    def _double_quote(self) -> _Out:
        out = _Out(self.slash)
        self._next()
        while True:
            ch = self._peek()
            if not ch:
                raise ShellError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self._next()
                return out
            if ch == "$":
                self._dollar(out, split=False)
                continue
            self._next()
            if ch == self.escape:
                kept = ch if self.raw_escapes else ""  # BuildKit keeps the escape, escaped or not
                following = self._peek()
                if not following:
                    out.text(kept, split=False)
                    continue
                ch = kept + (self._next() if following in ('"', "$", self.escape) else ch)
            out.text(ch, split=False)

    def _name(self) -> str:
        start = self.pos
        if self._peek().isdigit():
            while self._peek().isdigit():
                self._next()
            return self.text[start:self.pos]
        if self._peek() and self._peek() in _SPECIAL:
            return self._next()
        while (ch := self._peek()) and (ch.isalnum() or ch == "_"):
            self._next()
        return self.text[start:self.pos]

    def _dollar(self, out: _Out, *, split: bool) -> None:
        self._next()  # $
        if self._peek() != "{":
            name = self._name()
            if not name:
                out.text("$", split=split)
                return
            self._emit(out, name, "", None, split=split)
            return
        self._next()  # {
        if not self._peek():
            raise ShellError("syntax error: missing '}'")
        if self._peek() in "{}:":
            raise ShellError("syntax error: bad substitution")
        name = self._name()
        op = self._next()
        if not op:
            raise ShellError("syntax error: missing '}'")
        if op == "}":
            self._emit(out, name, "", None, split=split)
            return
        if op == "/":
            if self._peek() == "/":
                op += self._next()
            self.slash = True
            try:
                pattern = self._word("/", raw=True, missing="syntax error: missing '/' in ${}")
            finally:
                self.slash = False
            self._emit(out, name, op, pattern, split=split, replacement=self._word("}", raw=True))
            return
        if op == ":":
            op += self._next()
        if op not in ("-", "+", "?", ":-", ":+", ":?", "#", "%"):
            raise ShellError(f"unsupported modifier ({op}) in substitution")
        self._emit(out, name, op, self._word("}", raw=op in ("#", "%")), split=split)

    def _word(self, stop: str, *, raw: bool, missing: str = "syntax error: missing '}'") -> _Out:
        """A modifier's word, up to `stop`; a pattern's (`raw`) keeps its escapes, as BuildKit's does."""
        outer, self.raw_escapes = self.raw_escapes, raw
        try:
            return self.process(stop)
        except ShellError:
            if not self._peek():
                raise ShellError(missing) from None
            raise
        finally:
            self.raw_escapes = outer

    def _emit(self, out: _Out, name: str, op: str, word: _Out | None, *, split: bool,
              replacement: _Out | None = None) -> None:
        value = None if name in _SPECIAL else self.lookup(name)
        if isinstance(value, Deferred):
            if self.unknown is Unknown.DEFER and not op:
                out.reference(value.template)
                return
            if self.unknown is Unknown.DEFER:
                raise ShellError(f"${{{name}{op}...}}: the build arg {name} has a value that uses the base image's "
                                 f"Env; dockwright can substitute it only whole (${name})")
            value = UNKNOWN
        deferred_words = any(part is not None and part.deferred for part in (word, replacement))
        if op in _PATTERN_OPS and value is not UNKNOWN and deferred_words:
            raise ShellError(f"${{{name}{op}...}}: the pattern uses a variable of the base image's Env but "
                             f"{name} does not; dockwright cannot expand that mix")
        if value is UNKNOWN:
            if self.unknown is Unknown.DEFER:
                inner = "".join(word.template) if word is not None else ""
                rest = "/" + "".join(replacement.template) if replacement is not None else ""
                out.reference(f"${{{name}{op}{inner}{rest}}}")
                return
            if self.unknown is Unknown.ERROR and (not op or op in _PATTERN_OPS):
                raise UndefinedError(name)
            value = None
        if op in _PATTERN_OPS:
            pattern = "".join(word.value) if word is not None else ""
            try:
                if replacement is None:
                    result = substitution.remove(value or "", op, pattern)
                else:
                    result = substitution.replace(value or "", pattern, "".join(replacement.value), every=op == "//")
            except substitution.PatternError as exc:
                raise ShellError(str(exc)) from None
            out.text(result, split=split)
            return
        empty = value is None or (op.startswith(":") and value == "")
        if op.endswith("-") and empty and word is not None:
            self._put_word(out, word, split=split)
        elif op.endswith("+"):
            if not empty and word is not None:
                self._put_word(out, word, split=split)
        elif op.endswith("?") and empty:
            message = "".join(word.value) if word is not None else ""
            default = "is not allowed to be unset" if value is None else "is not allowed to be empty"
            raise ShellError(f"{name}: {message or default}")
        else:
            out.text(value or "", split=split)

    @staticmethod
    def _put_word(out: _Out, word: _Out, *, split: bool) -> None:
        """A modifier's word; unquoted, its text is split at whitespace like a variable's value."""
        if split and not word.deferred:
            out.text("".join(word.value), split=True)
        else:
            out.merge(word)


def expand(text: str, lookup: Lookup, *, escape: str = "\\", unknown: Unknown = Unknown.UNSET,
           quotes: bool = True, raw_escapes: bool = False) -> Expansion:
    """Expand one word (BuildKit ProcessWord): quotes removed, whitespace kept."""
    out = _Lexer(text, lookup, escape, unknown, quotes=quotes, raw_escapes=raw_escapes).process()
    value = "".join(out.value)
    return Expansion(value, "".join(out.template) if out.deferred else None)


def expand_words(text: str, lookup: Lookup, *, escape: str = "\\") -> list[str]:
    """Expand and split into words (BuildKit ProcessWords): unquoted whitespace separates words."""
    out = _Lexer(text, lookup, escape, Unknown.UNSET).process()
    return out.finish_words()

