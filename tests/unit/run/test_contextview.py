"""A context directory as a RUN mount reads it (run/contextview.py): without what .dockerignore excludes, as
BuildKit's context (an llb.Local with the patterns as exclude patterns) is."""

from __future__ import annotations

import os
from pathlib import Path

from dockwright.layers.dockerignore import IgnoreMatcher
from dockwright.run.contextview import filters, kept, make_view, view_digest

PATTERNS = IgnoreMatcher(["**/*.log", "node_modules", ".git", "docs", "!docs/README.md", "build", "!build/keep"])


def _context(root: Path) -> Path:
    for name in ("a/keep.txt", "a/skip.log", "node_modules/x/y.js", ".git/HEAD", "docs/README.md", "docs/other.md",
                 "top.txt", "build/other"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    os.symlink("keep.txt", root / "a" / "link")
    return root


def test_the_view_keeps_what_dockerignore_keeps(tmp_path: Path) -> None:
    context = _context(tmp_path / "context")
    assert [rel for rel, _ in kept(context, "", PATTERNS)] == [
        "a", "top.txt", "a/keep.txt", "a/link", "docs", "docs/README.md"]  # docs: the parent of what is kept
    view = tmp_path / "view"
    view.mkdir()
    make_view(context, "", PATTERNS, view)
    assert sorted(str(p.relative_to(view)) for p in view.rglob("*")) == [
        "a", "a/keep.txt", "a/link", "docs", "docs/README.md", "top.txt"]
    assert os.stat(view / "a/keep.txt").st_ino == os.stat(context / "a/keep.txt").st_ino  # linked, not copied
    assert os.readlink(view / "a/link") == "keep.txt"
    assert [rel for rel, _ in kept(context, "a", PATTERNS)] == ["keep.txt", "link"]  # below a mounted source


def test_only_what_the_mount_sees_counts_for_the_cache_key(tmp_path: Path) -> None:
    context = _context(tmp_path / "context")
    before = view_digest(context, "", PATTERNS)
    (context / "a/skip.log").write_text("more log")
    (context / "node_modules/x/y.js").write_text("changed")
    assert view_digest(context, "", PATTERNS) == before
    (context / "top.txt").write_text("changed")
    assert view_digest(context, "", PATTERNS) != before


def test_a_view_is_needed_only_when_something_below_is_excluded() -> None:
    assert filters(PATTERNS, "") and filters(PATTERNS, "a")  # **/*.log may match anywhere
    assert not filters(IgnoreMatcher(["node_modules"]), "src") and filters(IgnoreMatcher(["src/gen"]), "src")
    assert not filters(None, "")
