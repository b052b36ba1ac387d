"""The quick cache key of a COPY: equal only when nothing that could change the layer changed."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from dockwright.layers.quickkey import BackgroundWalks, key_of, tree_digest, tree_root


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    (tmp_path / "app" / "node_modules" / "pkg").mkdir(parents=True)
    (tmp_path / "app" / "node_modules" / "pkg" / "index.js").write_text("module.exports = 1\n")
    (tmp_path / "app" / "server.js").write_text("require('pkg')\n")
    return tmp_path


def key(ctx: Path, source: str, settings: str, skip: frozenset[str] = frozenset()) -> str:
    root = tree_root(str(ctx), source)
    assert root is not None
    return key_of(settings, tree_digest(root, skip))


def test_same_tree_and_settings_give_the_same_key(ctx: Path) -> None:
    assert key(ctx, "app", "s") == key(ctx, "app", "s")
    assert key(ctx, "app", "s") != key(ctx, "app", "other settings")


@pytest.mark.parametrize("change", ["content", "mode", "new-file", "removed", "symlink-target"])
def test_any_change_below_the_source_changes_the_key(ctx: Path, change: str) -> None:
    os.symlink("server.js", ctx / "app" / "link")
    before = key(ctx, "app", "s")
    target = ctx / "app" / "node_modules" / "pkg" / "index.js"
    if change == "content":
        stat = target.stat()
        target.write_text("module.exports = 2\n")  # same size; mtime restored: ctime still tells
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    elif change == "mode":
        target.chmod(0o600)
    elif change == "new-file":
        (ctx / "app" / "node_modules" / "new.js").write_text("x")
    elif change == "removed":
        target.unlink()
    else:
        (ctx / "app" / "link").unlink()
        os.symlink("node_modules", ctx / "app" / "link")
    assert key(ctx, "app", "s") != before


def test_outright_excluded_names_do_not_count(ctx: Path) -> None:
    before = key(ctx, "app", "s", frozenset({"node_modules"}))
    (ctx / "app" / "node_modules" / "pkg" / "index.js").write_text("changed, but excluded")
    assert key(ctx, "app", "s", frozenset({"node_modules"})) == before


@pytest.mark.parametrize("source", ["app/*", "../app", "missing", "app/server.js"])
def test_no_quick_key_for_wildcards_escapes_files_or_missing_sources(ctx: Path, source: str) -> None:
    assert tree_root(str(ctx), source) is None


def test_no_quick_key_through_a_symlinked_directory(ctx: Path) -> None:
    os.symlink("app", ctx / "alias")
    assert tree_root(str(ctx), "alias") is None


def _build(ctx: Path, cache: Path) -> tuple[str, str]:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "dockwright", "build", str(ctx), "--from", "scratch",
                           "--copy", "app:/srv", "--layering", "auto", "--cache-dir", str(cache)],
                          capture_output=True, text=True, check=True, env={**os.environ, "SOURCE_DATE_EPOCH": "0"})
    return proc.stdout.strip(), proc.stderr


def test_a_rebuild_sees_a_change_inside_the_dependency_tree(ctx: Path, tmp_path: Path) -> None:
    """The property users care about: a cached layer is never reused for changed files."""
    cache = tmp_path / "cache"
    first, _ = _build(ctx, cache)
    again, log = _build(ctx, cache)
    assert again == first and "2 from cache" in log
    target = ctx / "app" / "node_modules" / "pkg" / "index.js"
    stat = target.stat()
    target.write_text("module.exports = 2\n")  # same size, same mtime
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    changed, log = _build(ctx, cache)
    assert changed != first and "1 layer built" in log  # issue 12: singular for one


def test_an_unchanged_rebuild_collects_nothing(ctx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Both layers of --layering auto (the dependencies are a --parents copy) come by quick key: no
    walk of the whole tree, no fingerprint."""
    from dockwright.cli.main import main
    from dockwright.layers import copy as context

    cache = tmp_path / "cache"
    first, _ = _build(ctx, cache)

    def walked(*args: object, **kwargs: object) -> None:
        raise AssertionError("the tree was collected")

    monkeypatch.setattr(context, "collect_copy", walked)
    monkeypatch.setattr(context, "stream_copy", walked)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    assert main(["build", str(ctx), "--from", "scratch", "--copy", "app:/srv", "--layering", "auto",
                 "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.strip() == first


def test_a_changed_ignored_file_misses_the_quick_key_but_not_the_layer(tmp_path: Path) -> None:
    """With .dockerignore patterns the layer is looked up by fingerprint after a quick-key miss (the
    quick key counts ignored files); without patterns a miss means the tree changed, and it streams."""
    import subprocess
    import sys

    ctx = tmp_path / "ctx"
    (ctx / "app").mkdir(parents=True)
    (ctx / "app" / "main.js").write_text("console.log(1)\n")
    (ctx / "app" / "debug.log").write_text("one\n")
    (ctx / ".dockerignore").write_text("**/*.log\n")

    def build() -> tuple[str, str]:
        proc = subprocess.run([sys.executable, "-m", "dockwright", "build", str(ctx), "--from", "scratch",
                               "--copy", "app:/srv", "--cache-dir", str(tmp_path / "cache")],
                              capture_output=True, text=True, check=True, env={**os.environ, "SOURCE_DATE_EPOCH": "0"})
        return proc.stdout.strip(), proc.stderr

    first, _ = build()
    (ctx / "app" / "debug.log").write_text("two, and longer\n")
    again, log = build()
    assert again == first and "0 layers built, 1 from cache" in log


def test_a_dockerignore_that_does_not_reach_the_source_still_streams(ctx: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from dockwright.cli.main import main
    from dockwright.layers import copy as context

    (ctx / ".dockerignore").write_text(".git\n*.md\nbuild\n")

    def collected(*args: object, **kwargs: object) -> None:
        raise AssertionError("collected first, though no pattern reaches into app/node_modules")

    argv = ["build", str(ctx), "--from", "scratch", "--copy", "app/node_modules:/srv/node_modules"]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    with monkeypatch.context() as patched:
        patched.setattr(context, "collect_copy", collected)
        assert main([*argv, "--cache-dir", str(tmp_path / "cache")]) == 0
    streamed = capsys.readouterr().out.strip()
    assert streamed.startswith("sha256:")
    # a pattern that reaches into the source (matching nothing) takes the collect-first path: same image
    (ctx / ".dockerignore").write_text(".git\napp/node_modules/nothing\n")
    assert main([*argv, "--cache-dir", str(tmp_path / "other-cache")]) == 0
    assert capsys.readouterr().out.strip() == streamed


def _join_walker() -> None:
    for thread in threading.enumerate():
        if thread.name == "dockwright-walk":
            thread.join(timeout=30)


def test_background_walks_give_the_digests_a_walk_in_place_gives(ctx: Path) -> None:
    app, modules = str(ctx / "app"), str(ctx / "app" / "node_modules")
    skip = frozenset({"node_modules"})
    walks = BackgroundWalks([(modules, frozenset()), (app, skip)])

    assert walks.digest(modules, frozenset()) == tree_digest(modules)
    assert walks.digest(app, skip) == tree_digest(app, skip)  # begun or not, the same answer
    assert walks.digest(app, frozenset()) == tree_digest(app)  # a tree it was not given: walked in place
    assert walks.digest(app, skip) != walks.digest(app, frozenset())


def test_a_background_walk_that_fails_raises_where_its_digest_is_asked_for(ctx: Path) -> None:
    missing = str(ctx / "gone")
    walks = BackgroundWalks([(missing, frozenset())])

    with pytest.raises(FileNotFoundError):
        walks.digest(missing, frozenset())


def test_background_walks_leave_the_switch_interval_as_they_found_it(ctx: Path) -> None:
    before = sys.getswitchinterval()
    walks = BackgroundWalks([(str(ctx / "app"), frozenset())])
    walks.digest(str(ctx / "app"), frozenset())
    _join_walker()

    assert sys.getswitchinterval() == before


def test_overlapping_walks_restore_the_switch_interval_when_the_last_one_ends() -> None:
    """Two builds in two threads: A begins, B begins, A ends (B still walks: still short), B ends (restored).
    Each restoring what it saw would leave the short interval behind for good."""
    from dockwright.layers.quickkey import short_switch_interval

    before = sys.getswitchinterval()
    a_began, b_began, a_ended = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, float] = {}

    def a() -> None:
        with short_switch_interval():
            a_began.set()
            b_began.wait(10)
        a_ended.set()

    def b() -> None:
        a_began.wait(10)
        with short_switch_interval():
            b_began.set()
            a_ended.wait(10)
            seen["after a ended"] = sys.getswitchinterval()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert seen["after a ended"] < before
    assert sys.getswitchinterval() == before
