"""The pieces under the Dockerfile frontend: word expansion, Go value formats, .dockerignore reading,
deferred expansion against a base image's Env, --build-arg parsing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dockwright.deferred import resolve_deferred, resolve_template
from dockwright.frontends.dockerfile import parse_build_args
from dockwright.frontends.dockerfile.formats import format_duration, parse_duration, parse_port_specs
from dockwright.frontends.dockerfile.shell import UNKNOWN, ShellError, Unknown, escape_template, expand, expand_words
from dockwright.layers.dockerignore import parse_dockerignore, read_dockerignore
from dockwright.model.errors import UsageError
from dockwright.plan import ConfigEdit

ENV = {"A": "a b", "EMPTY": "", "X": "x"}


def lookup(name: str) -> object:
    return ENV.get(name, UNKNOWN if name == "BASEVAR" else None)


@pytest.mark.parametrize(("word", "value"), [
    ("$A", "a b"), ("${A}", "a b"), ("pre${X}post", "prexpost"), ("$X$X", "xx"), ("'$A'", "$A"),
    ('"$A"', "a b"), ("\\$A", "$A"), ('"\\$A"', "$A"), ('"a\\b"', "a\\b"), ("a\\ b", "a b"), ("$", "$"),
    ("$1", ""), ("${EMPTY:-d}", "d"), ("${EMPTY-d}", ""), ("${NOPE-d}", "d"), ("${X:+y}", "y"),
    ("${EMPTY:+y}", ""), ("${EMPTY+y}", "y"), ("${NOPE+y}", ""), ("${NOPE:-$X}", "x"), ("${NOPE:-'q $X'}", "q $X"),
    ('"${NOPE:-"in"}"', "in"), ("${X:?msg}", "x"),
])
def test_expand_word(word: str, value: str) -> None:
    assert expand(word, lookup).value == value


@pytest.mark.parametrize(("text", "words"), [
    ("$A", ["a", "b"]), ('"$A"', ["a b"]), ("80 $X", ["80", "x"]), ("${NOPE:-1 2}", ["1", "2"]), ("$NOPE", []),
])
def test_expand_words_splits_unquoted_values(text: str, words: list[str]) -> None:
    assert expand_words(text, lookup) == words


@pytest.mark.parametrize(("word", "error"), [
    ("${A", "missing '}'"), ("${}", "bad substitution"), ("${A:%x}", "unsupported modifier"),
    ("${NOPE:?}", "NOPE: is not allowed to be unset"), ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
    ('"open', "matching double-quote"),
])
def test_expand_errors(word: str, error: str) -> None:
    with pytest.raises(ShellError, match=error):
        expand(word, lookup)


def test_backtick_escape() -> None:
    assert expand("`$A C:\\dir", lookup, escape="`").value == "$A C:\\dir"


def test_unknown_variables_defer_to_a_template() -> None:
    result = expand("/opt/bin:$BASEVAR:$X:'$lit'", lookup, unknown=Unknown.DEFER)
    assert result.template == "/opt/bin:${BASEVAR}:x:\\$lit"
    assert expand("${BASEVAR:-$X}", lookup, unknown=Unknown.DEFER).template == "${BASEVAR:-x}"
    assert expand("$X", lookup, unknown=Unknown.DEFER).template is None
    with pytest.raises(ShellError, match="not defined"):
        expand("$BASEVAR", lookup, unknown=Unknown.ERROR)
    assert expand("${BASEVAR:-d}", lookup, unknown=Unknown.ERROR).value == "d"


def test_resolve_deferred_uses_the_inherited_env_and_workdir() -> None:
    edit = ConfigEdit(env=(("PATH", "/opt/bin:${PATH}"), ("LIT", "\\$x\\}")), labels=(("h", "${HOME:-/root}"),),
                      user="${APP_UID}", workdir="sub", deferred=True)
    resolved = resolve_deferred(edit, ["PATH=/usr/bin:/bin", "APP_UID=1654"], "/app")
    assert resolved.env == (("PATH", "/opt/bin:/usr/bin:/bin"), ("LIT", "$x}"))
    assert resolved.labels == (("h", "/root"),)
    assert (resolved.user, resolved.workdir, resolved.deferred) == ("1654", "/app/sub", False)
    plain = ConfigEdit(env=(("A", "${B}"),))
    assert resolve_deferred(plain, {"B": "no"}) is plain


@pytest.mark.parametrize("word", [
    "/opt/bin:$BASE:$X", "'$BASE' \\$ \\} }", '"a $BASE b" c\\d', "${BASE:-$X}", "${BASE-${X}y}", "${BASE:+[$X]}",
    "${BASE+${NONE:-z\\}}}", "${BASE:?}", "${EMPTYBASE:-e}${EMPTYBASE-f}${EMPTYBASE:+g}${EMPTYBASE+h}", "$ $1 ${X}$",
    "${BASE#b}", "${BASE##*:}", "${BASE%\\$}", "${BASE%%[a-z]*}", "${BASE#?:}", "${BASE/a/$X}", "${BASE//[?\\}/-}",
    "${BASE//?/<$0>}", "${BASE/\\//x}", '${BASE#"b:"}', "${BASE%${NONE:-e*}}", "${BASE/$X/y}", "${NOPE#x}z",
    "${BASE#\\q}",
])
@pytest.mark.parametrize("base", [{"BASE": "b:a}s\\e$", "EMPTYBASE": ""}, {"BASE": "", "EMPTYBASE": ""}])
def test_a_deferred_template_resolves_as_the_word_would_have_expanded(word: str, base: dict[str, str]) -> None:
    """The executor resolves templates without the frontend's lexer (dockwright/deferred.py): the result
    must equal expanding the word with the base's Env known up front."""
    known = {"X": "x", "NONE": None}

    def unknown_base(name: str) -> object:
        return UNKNOWN if name in base else known.get(name)

    def everything(name: str) -> str | None:
        return base[name] if name in base else known.get(name)

    try:
        expected = expand(word, everything).value
    except ShellError as exc:
        with pytest.raises(ValueError, match=re.escape(str(exc).split(":")[0])):
            resolve_template(expand(word, unknown_base, unknown=Unknown.DEFER).template or "", everything)
        return
    deferred = expand(word, unknown_base, unknown=Unknown.DEFER)
    assert resolve_template(deferred.template or escape_template(deferred.value), everything) == expected


@pytest.mark.parametrize(("text", "ns", "shown"), [
    ("0", 0, "0s"), ("30s", 30_000_000_000, "30s"), ("1m30s", 90_000_000_000, "1m30s"), ("500ms", 500_000_000, "500ms"),
    ("1.5h", 5_400_000_000_000, "1h30m0s"), ("2.5s", 2_500_000_000, "2.5s"), ("10us", 10_000, "10µs"),
])
def test_durations_like_go(text: str, ns: int, shown: str) -> None:
    assert parse_duration(text) == ns
    assert format_duration(ns) == shown


@pytest.mark.parametrize("bad", ["", "5", "s", "1x", "1.5"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_port_specs() -> None:
    assert parse_port_specs(["80", "53/UDP", "8000-8001/tcp", "127.0.0.1:8080:9000"]) == [
        "53/udp", "80/tcp", "8000/tcp", "8001/tcp", "9000/tcp"]
    for bad in ("80/xtp", "abc", "9-1", "/tcp"):
        with pytest.raises(ValueError):
            parse_port_specs([bad])


def test_parse_dockerignore_like_docker() -> None:
    text = "\ufeff# comment\n\n  node_modules  \n/abs/path/\n!keep.md\n! spaced\n**/*.log\nsub/../other\n./dot\n #x\n"
    assert parse_dockerignore(text) == ["node_modules", "abs/path", "!keep.md", "!spaced", "**/*.log", "other",
                                        "dot", "#x"]


def test_read_dockerignore_prefers_the_dockerfile_specific_file(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("from-context\n")
    dockerfile = tmp_path / "build" / "App.Dockerfile"
    dockerfile.parent.mkdir()
    dockerfile.write_text("FROM scratch\n")
    assert read_dockerignore(tmp_path, dockerfile) == ["from-context"]
    Path(f"{dockerfile}.dockerignore").write_text("specific\n")
    assert read_dockerignore(tmp_path, dockerfile) == ["specific"]
    assert read_dockerignore(tmp_path / "build", None) == []


def test_an_ignore_file_replaces_the_contexts_but_not_the_dockerfiles(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """BuildKit's order, with --ignore-file in the context's place: <Dockerfile>.dockerignore, then the ignore
    file, then CONTEXT/.dockerignore (never both)."""
    (tmp_path / ".dockerignore").write_text("node_modules\n")
    ship = tmp_path / "ship.ignore"
    ship.write_text("*.log\n")
    dockerfile = tmp_path / "Dockerfile"
    assert read_dockerignore(tmp_path, None, ship) == ["*.log"]
    assert read_dockerignore(tmp_path, dockerfile, ship) == ["*.log"]
    Path(f"{dockerfile}.dockerignore").write_text("specific\n")
    assert read_dockerignore(tmp_path, dockerfile, ship) == ["specific"]
    assert "takes precedence over --ignore-file" in caplog.text
    with pytest.raises(UsageError, match=r"--ignore-file .*missing: no such file"):
        read_dockerignore(tmp_path, None, tmp_path / "missing")


def test_parse_build_args() -> None:
    environ = {"FROM_ENV": "env-value"}
    assert parse_build_args(["A=1", "B=", "C=x=y", "FROM_ENV", "MISSING"], environ) == {
        "A": "1", "B": "", "C": "x=y", "FROM_ENV": "env-value"}


# BuildKit's own cases for the pattern operators (frontend/dockerfile/shell/lex_test.go, TestProcessWithMatches)
@pytest.mark.parametrize(("word", "env", "value"), [
    ("${FOO#()[]{\\}^$.\\*\\?|\\\\}", {"FOO": "()[]{}^$.*?|\\x"}, "x"),
    ("${FOO%%\\**}", {"FOO": "xx**"}, "xx"),
    ("${FOO#*x*y}", {"FOO": "xxyy"}, "y"),
    ("${FOO#*}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": "x"}, "xyy"),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy"),
    ("${FOO#}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO##*x}", {"FOO": "xxyy"}, "yy"),
    ("${FOO##}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO#?\\?}", {"FOO": "???y"}, "?y"),
    ("${ABC:-.}${FOO%x}${ABC:-.}", {"FOO": "xxyy"}, ".xxyy."),
    ("${FOO%%\\**\\*}", {"FOO": "a***yy*"}, "a"),
    ("${FOO%}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO%%$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy"),
    ("${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}", {"FOO": "/foo*/*/*.txt", "NEEDLE": "\\*/"}, "/foo.*/*.txt - /foo..*.txt"),
    ("${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}", {"FOO": "/tmp/tmp/bar.txt", "NEEDLE": "/tmp"}, "/tmp/bar.txt - /bar.txt"),
    ("${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
     {"FOO": "/a/foo/b/c.txt", "NEEDLE": "/?/", "REPLACEMENT": "/"}, "/foo/b/c.txt - /foo/c.txt"),
    ("${FOO/$NEEDLE/$REPLACEMENT}", {"FOO": "http://google.de", "NEEDLE": "http://", "REPLACEMENT": "https://"},
     "https://google.de"),
    ("${FOO//\\//\\/}", {"FOO": "/tmp/foo.txt"}, "\\/tmp\\/foo.txt"),
    ("${FOO/$BAR/ww}", {"FOO": "xxyy", "BAR": ""}, "wwxxyy"),
    ("${FOO///}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO///}", {}, ""),
    # beyond BuildKit's list: shortest vs longest, unset variables, brackets are literal, Go's ReplaceAll
    ("${FOO#*.}|${FOO##*.}|${FOO%.*}|${FOO%%.*}", {"FOO": "a.tar.gz"}, "tar.gz|gz|a.tar|a"),
    ("${NOPE#x}|${NOPE%x}|${NOPE/x/y}|${NOPE/*/y}", {}, "|||y"),
    ("${FOO#[ab]}|${FOO#?}", {"FOO": "[ab]c"}, "c|ab]c"),
    ("${FOO//x*/-}|${FOO//?/$R}|${FOO//b/$D}|${FOO//b/$1$x}|${FOO/b/$R}", {"FOO": "abxb", "R": "<$0>", "D": "$$"},
     "ab-|<a><b><x><b>|a$x$|ax|a<$0>xb"),
    ("${TARGETARCH/amd64/x64}", {"TARGETARCH": "amd64"}, "x64"),
    ("${#}${#:-d}$#$@${?}", {}, "d"),
])
def test_pattern_operators_as_buildkit(word: str, env: dict[str, str], value: str) -> None:
    assert expand(word, env.get).value == value


@pytest.mark.parametrize(("word", "error"), [
    ("${FOO:#}", "unsupported modifier (:#)"), ("${FOO:##}", "unsupported modifier (:#)"),
    ("${FOO:%}", "unsupported modifier (:%)"), ("${FOO//ww}", "missing '/'"), ("${FOO//}", "missing '/'"),
    ("${FOO#\\x}", "invalid escape '\\x'"), ("${FOO#\\[}", "invalid escape '\\['"),
    ("${FOO#a", "missing '}'"), ("${FOO/a/b", "missing '}'"),
])
def test_pattern_operator_errors(word: str, error: str) -> None:
    with pytest.raises(ShellError) as info:
        expand(word, {"FOO": "xxyy"}.get)
    assert error in str(info.value)


def test_pattern_operators_on_base_image_variables_are_deferred() -> None:
    deferred = expand("${BASEVAR#/}:${BASEVAR//\\//_}", lookup, unknown=Unknown.DEFER)
    resolved = resolve_template(deferred.template or "", {"BASEVAR": "/usr/local/bin"}.get)
    assert resolved == "usr/local/bin:_usr_local_bin"
    with pytest.raises(ShellError, match="not defined"):
        expand("${BASEVAR%/*}", lookup, unknown=Unknown.ERROR)
    with pytest.raises(ShellError, match="cannot expand that mix"):
        expand("${X#$BASEVAR}", lookup, unknown=Unknown.DEFER)
