"""COPY semantics over a real directory tree."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dockwright.layers.copy import CopySettings, collect_copy, stream_copy
from dockwright.layers.dockerignore import IgnoreMatcher, read_dockerignore
from dockwright.layers.tar import TarEntry
from dockwright.model.errors import ContextError


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "main.py").write_text("main")
    (root / "src" / "pkg" / "mod.py").write_text("mod")
    (root / "src" / "notes.txt").write_text("notes")
    (root / "README.md").write_text("readme")
    (root / "a.txt").write_text("a")
    (root / "b.txt").write_text("b")
    return root


def paths(entries: list[TarEntry]) -> list[str]:
    return [e.path for e in entries]


def by_path(entries: list[TarEntry]) -> dict[str, TarEntry]:
    return {e.path: e for e in entries}


def test_directory_contents_go_into_dest_without_its_ancestors(ctx: Path) -> None:
    """Neither dest nor its parents are layer entries: the base may have them with another mode or
    owner (/tmp at 1777, a user's home) and an entry would replace those; runtimes create missing ones."""
    entries = collect_copy(ctx, ["src"], "/opt/app")
    assert paths(entries) == ["opt/app/main.py", "opt/app/notes.txt", "opt/app/pkg", "opt/app/pkg/mod.py"]
    main = by_path(entries)["opt/app/main.py"]
    assert (main.kind, main.size, Path(main.source).read_text()) == ("file", 4, "main")


def test_file_onto_dest_or_into_dest_dir(ctx: Path) -> None:
    assert paths(collect_copy(ctx, ["a.txt"], "/etc/renamed")) == ["etc/renamed"]
    assert paths(collect_copy(ctx, ["a.txt"], "/etc/")) == ["etc/a.txt"]
    assert paths(collect_copy(ctx, ["/a.txt"], "/")) == ["a.txt"]  # "/x" is "x" in the context


def test_several_sources_need_a_directory_dest(ctx: Path) -> None:
    with pytest.raises(ContextError, match="must be a directory and end with a /"):
        collect_copy(ctx, ["a.txt", "b.txt"], "/dest")
    assert paths(collect_copy(ctx, ["a.txt", "b.txt"], "/dest/")) == ["dest/a.txt", "dest/b.txt"]


def test_wildcards(ctx: Path) -> None:
    assert paths(collect_copy(ctx, ["*.txt"], "/d/")) == ["d/a.txt", "d/b.txt"]
    assert paths(collect_copy(ctx, ["src/*.py"], "/d/")) == ["d/main.py"]
    assert paths(collect_copy(ctx, ["[a]?txt"], "/d/")) == ["d/a.txt"]
    with pytest.raises(ContextError, match=r"'\*\.rs'"):
        collect_copy(ctx, ["*.rs"], "/d/")


def test_missing_source_is_named(ctx: Path) -> None:
    with pytest.raises(ContextError, match=r"'nope\.txt' not found"):
        collect_copy(ctx, ["nope.txt"], "/d/")


def test_parents_keep_the_relative_path(ctx: Path) -> None:
    entries = collect_copy(ctx, ["src/pkg/mod.py", "a.txt"], "/app/", CopySettings(parents=True))
    assert paths(entries) == ["app/a.txt", "app/src", "app/src/pkg", "app/src/pkg/mod.py"]
    assert paths(collect_copy(ctx, ["src/./pkg/mod.py"], "/app/", CopySettings(parents=True))) == [
        "app/pkg", "app/pkg/mod.py"]


def test_sources_may_not_leave_the_context(ctx: Path, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s")
    with pytest.raises(ContextError, match="outside"):
        collect_copy(ctx, ["../secret"], "/d/")
    os.symlink(tmp_path, ctx / "up")
    with pytest.raises(ContextError, match="outside the build context"):
        collect_copy(ctx, ["up/secret"], "/d/")
    os.symlink(tmp_path / "secret", ctx / "direct")
    with pytest.raises(ContextError, match="outside the build context"):
        collect_copy(ctx, ["direct"], "/d/")


def test_source_symlink_inside_the_context_is_followed(ctx: Path) -> None:
    os.symlink("src", ctx / "alias")
    os.symlink("a.txt", ctx / "a-link")
    assert paths(collect_copy(ctx, ["alias"], "/d"))[:2] == ["d/main.py", "d/notes.txt"]
    entry = by_path(collect_copy(ctx, ["a-link"], "/d/"))["d/a-link"]
    assert (entry.kind, Path(entry.source).read_text()) == ("file", "a")


def test_symlinks_inside_trees_are_kept_never_followed(ctx: Path, tmp_path: Path) -> None:
    os.symlink("/etc/shadow", ctx / "src" / "outside")
    os.symlink("missing", ctx / "src" / "dangling")
    os.symlink("loop", ctx / "src" / "loop")
    entries = by_path(collect_copy(ctx, ["src"], "/app"))
    assert (entries["app/outside"].kind, entries["app/outside"].linkname) == ("symlink", "/etc/shadow")
    assert entries["app/dangling"].linkname == "missing"
    assert entries["app/loop"].linkname == "loop"


def test_whiteout_names_fifos_and_sockets_are_rejected(ctx: Path) -> None:
    (ctx / "src" / ".wh.secret").write_text("x")
    with pytest.raises(ContextError, match=r"\.wh\.secret"):
        collect_copy(ctx, ["src"], "/app")
    (ctx / "src" / ".wh.secret").unlink()
    os.mkfifo(ctx / "src" / "pipe")
    with pytest.raises(ContextError, match=r"src/pipe: cannot copy a device, FIFO or socket"):
        collect_copy(ctx, ["src"], "/app")


def test_modes_are_masked_unless_chmod(ctx: Path) -> None:
    tool = ctx / "src" / "tool"
    tool.write_text("#!/bin/sh")
    tool.chmod(0o4777)
    (ctx / "src" / "pkg").chmod(0o1777)
    entries = by_path(collect_copy(ctx, ["src"], "/app"))
    assert entries["app/tool"].mode == 0o755
    assert entries["app/pkg"].mode == 0o755
    chmodded = collect_copy(ctx, ["src"], "/app", CopySettings(chmod=0o640, uid=1000, gid=1001))
    assert all(e.mode == 0o640 and (e.uid, e.gid) == (1000, 1001) for e in chmodded)


def test_owner_and_mtime(ctx: Path) -> None:
    entries = by_path(collect_copy(ctx, ["a.txt"], "/srv/app/", CopySettings(uid=10, gid=20, mtime=1234)))
    assert "srv" not in entries  # ancestors are never entries
    assert (entries["srv/app"].uid, entries["srv/app"].gid) == (10, 20)  # --chown: dest gets the owner
    assert (entries["srv/app/a.txt"].uid, entries["srv/app/a.txt"].gid) == (10, 20)
    assert {e.mtime for e in entries.values()} == {1234}


def test_hardlinks_become_link_entries(ctx: Path) -> None:
    os.link(ctx / "src" / "main.py", ctx / "src" / "z-main")
    entries = by_path(collect_copy(ctx, ["src"], "/app"))
    assert entries["app/main.py"].kind == "file"
    assert (entries["app/z-main"].kind, entries["app/z-main"].linkname) == ("hardlink", "app/main.py")


def test_later_source_wins(ctx: Path) -> None:
    (ctx / "other").mkdir()
    (ctx / "other" / "main.py").write_text("other main")
    entries = by_path(collect_copy(ctx, ["src", "other"], "/app/"))
    assert Path(entries["app/main.py"].source).read_text() == "other main"


def test_dockerignore_with_exceptions_and_doublestar(ctx: Path) -> None:
    matcher = IgnoreMatcher.from_patterns(["**/*.txt", "!src/notes.txt", "src/pkg", "*.md"])
    entries = paths(collect_copy(ctx, ["."], "/app", ignore=matcher))
    assert entries == ["app/src", "app/src/main.py", "app/src/notes.txt"]
    with pytest.raises(ContextError, match=r"excluded by \.dockerignore"):
        collect_copy(ctx, ["README.md"], "/app/", ignore=matcher)


def test_dockerignore_exception_below_an_excluded_dir(ctx: Path) -> None:
    matcher = IgnoreMatcher.from_patterns(["src", "!src/pkg/mod.py"])
    assert paths(collect_copy(ctx, ["."], "/", ignore=matcher)) == [
        "README.md", "a.txt", "b.txt", "src", "src/pkg", "src/pkg/mod.py"]


def test_ignore_matcher_rules(tmp_path: Path) -> None:
    file = tmp_path / ".dockerignore"
    file.write_text("# comment\n/build/\n*.LOG\n!keep.LOG\n  \n.\n")
    matcher = IgnoreMatcher.from_patterns(read_dockerignore(tmp_path, None))  # as a build reads it
    assert matcher.matches("build") and matcher.matches("build/x/y")  # a dir match covers what is below
    assert matcher.matches("a.LOG") and not matcher.matches("keep.LOG")
    assert not matcher.matches("a.log")  # case-sensitive, as Docker on Linux
    assert not matcher.matches("sub/a.LOG")  # "*" does not cross "/"
    assert not matcher.matches("# comment")


def test_copy_exclude_is_relative_to_the_source(ctx: Path) -> None:
    entries = paths(collect_copy(ctx, ["src"], "/app", CopySettings(excludes=("*.txt", "pkg"))))
    assert entries == ["app/main.py"]
    assert paths(collect_copy(ctx, ["*.txt"], "/d/", CopySettings(excludes=("a.txt",)))) == ["d/b.txt"]


def test_non_utf8_names_survive(ctx: Path) -> None:
    raw = os.path.join(os.fsencode(ctx / "src"), b"caf\xe9")
    with open(raw, "wb") as file:
        file.write(b"x")
    entries = collect_copy(ctx, ["src"], "/app")
    assert b"app/caf\xe9" in [os.fsencode(e.path) for e in entries]


def test_unreadable_directory_is_named(ctx: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    (ctx / "src" / "pkg").chmod(0)
    with pytest.raises(ContextError, match="pkg"):
        collect_copy(ctx, ["src"], "/app")


def test_entries_are_sorted_and_unique(ctx: Path) -> None:
    entries = collect_copy(ctx, ["src", "src/pkg", "."], "/app/")
    names = paths(entries)
    assert names == sorted(names) and len(names) == len(set(names))
    assert all(stat.S_IMODE(e.mode) == e.mode for e in entries)


@pytest.fixture
def tricky(tmp_path: Path) -> Path:
    """Names that sort around "/" ("a-b" and "a.b" before "a/x"), a hard link whose first path in
    layer order is not its first in a walk, a symlink, an empty directory and a non-UTF-8 name."""
    root = tmp_path / "tricky"
    for folder in ("a/x", "a-b", "a.b/c", "empty", "z"):
        (root / "src" / folder).mkdir(parents=True)
    for name in ("a/x/f", "a-b/g", "a.b/c/h", "a0", "z/late"):
        (root / "src" / name).write_text(name)
    os.link(root / "src" / "z" / "late", root / "src" / "a" / "early")
    os.symlink("../a0", root / "src" / "z" / "link")
    (root / "src" / os.fsdecode(b"caf\xe9")).write_text("latin-1")
    return root


@pytest.mark.parametrize("dest,chown", [("/app", None), ("/app/", (10, 20)), ("/", None)])
def test_streamed_entries_are_the_collected_ones_in_the_same_order(tricky: Path, dest: str,
                                                                  chown: tuple[int, int] | None) -> None:
    uid, gid = chown or (0, 0)
    collected = collect_copy(tricky, ["src"], dest, CopySettings(uid=uid, gid=gid, mtime=7))
    assert list(stream_copy(tricky, "src", dest, CopySettings(uid=uid, gid=gid, mtime=7))) == collected
    assert paths(collected) == sorted(paths(collected))
    entries = by_path(collected)
    prefix = dest.strip("/") + "/" if dest.strip("/") else ""
    assert (entries[prefix + "a/early"].kind, entries[prefix + "z/late"].kind) == ("file", "hardlink")
    assert entries[prefix + "z/late"].linkname == prefix + "a/early"
    assert (prefix.rstrip("/") in entries) == (chown is not None)  # the destination only when owned


def test_streaming_a_file_or_a_wildcard_gives_the_collected_entries(tricky: Path) -> None:
    assert list(stream_copy(tricky, "src/a0", "/d/")) == collect_copy(tricky, ["src/a0"], "/d/")
    assert list(stream_copy(tricky, "src/a*", "/d/")) == collect_copy(tricky, ["src/a*"], "/d/")


def test_a_streamed_source_is_checked_before_any_entry_is_asked_for(tricky: Path) -> None:
    with pytest.raises(ContextError, match="not found"):
        stream_copy(tricky, "nope", "/d/")
    with pytest.raises(ContextError, match="outside"):
        stream_copy(tricky, "../x", "/d/")


def test_a_fifo_deep_in_a_streamed_tree_is_an_error_naming_it(tricky: Path) -> None:
    os.mkfifo(tricky / "src" / "z" / "pipe")
    entries = stream_copy(tricky, "src", "/app")
    with pytest.raises(ContextError, match=r"z/pipe: cannot copy a device, FIFO or socket"):
        list(entries)


@pytest.mark.parametrize("source", ["./src", "src/./a", "src/./a.b/c", "src/./z"])
@pytest.mark.parametrize("chown", [None, (10, 20)])
def test_streamed_parents_copies_are_the_collected_ones(tricky: Path, source: str,
                                                        chown: tuple[int, int] | None) -> None:
    uid, gid = chown or (0, 0)
    collected = collect_copy(tricky, [source], "/app/", CopySettings(uid=uid, gid=gid, parents=True))
    assert list(stream_copy(tricky, source, "/app/", CopySettings(uid=uid, gid=gid, parents=True))) == collected
    assert paths(collected) == sorted(paths(collected))


@pytest.mark.parametrize("patterns,reldir,reaches", [
    ([".git", "*.md", "build"], "src", False),
    (["src"], "src/pkg", True),  # an ancestor: everything below goes with it
    (["src/*.py"], "src", True),
    (["src/*.py"], "other", False),
    (["*/cache"], "src", True),
    (["*/cache"], "src/pkg", False),  # two components match only paths of two components
    (["**/*.log"], "src", True),
    (["[a-z]rc/x"], "other", True),  # character classes: not analysed, assumed to reach
    (["!src/keep"], "other", True),  # exceptions: likewise
    (["anything"], "", True),  # below the root, every pattern may match
])
def test_may_match_below(patterns: list[str], reldir: str, reaches: bool) -> None:
    assert IgnoreMatcher(patterns).may_match_below(reldir) is reaches


@pytest.mark.parametrize("patterns,excludes,fewer", [
    (["**/*.txt"], [], True),
    (["src/pkg", "!src/pkg/mod.py"], [], False),  # excluded, then all of it re-included
    (["src/pkg", "!src/pkg/nothing"], [], True),  # excluded, walked for exceptions, none found
    ([], ["*.txt", "pkg"], True),
    (["src/notes.txt"], ["main.py"], True),
])
def test_streamed_entries_with_patterns_are_the_collected_ones(ctx: Path, patterns: list[str], excludes: list[str],
                                                              fewer: bool) -> None:
    matcher = IgnoreMatcher(patterns) if patterns else None
    collected = collect_copy(ctx, ["src"], "/app", CopySettings(excludes=tuple(excludes)), ignore=matcher)
    streamed = list(stream_copy(ctx, "src", "/app", CopySettings(excludes=tuple(excludes)), ignore=matcher))
    assert streamed == collected
    assert (len(collected) < len(collect_copy(ctx, ["src"], "/app"))) is fewer
