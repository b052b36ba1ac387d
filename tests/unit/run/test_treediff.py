"""run/treediff.py on real directories: what changed between a snapshot and now, as a layer's entries."""

from __future__ import annotations

import os
from pathlib import Path

from dockwright.run.treediff import changed_entries, snapshot, wait_past

EPOCH = 1_700_000_000


def _tree(root: Path) -> None:
    for directory in ("etc", "usr/bin", "data/old", "keep", "dev"):
        (root / directory).mkdir(parents=True)
    for path, text in (("etc/passwd", "root\n"), ("etc/group", "root\n"), ("usr/bin/tool", "t"),
                       ("data/old/a", "a"), ("keep/same", "s"), ("keep/linked", "l"), ("dev/null", "")):
        (root / path).write_text(text)
    os.link(root / "keep/linked", root / "keep/other-name")


def _names(entries: list) -> list[tuple[str, str]]:
    return [(entry.path, entry.kind if entry.kind != "hardlink" else f"hardlink:{entry.linkname}")
            for entry in entries]


def test_changes_whiteouts_and_opaque_directories(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _tree(root)
    before = snapshot(root, ignored=["dev"])
    wait_past(tmp_path, before.latest_ctime_ns)

    with open(root / "etc/passwd", "a") as file:  # in place: same inode, same directory
        file.write("app\n")
    (root / "etc/group").unlink()
    (root / "usr/bin/tool").chmod(0o4755)
    (root / "data/old").rename(tmp_path / "elsewhere")  # kept: the new directory has another inode
    (root / "data/old").mkdir()  # made again: opaque, listed whole
    (root / "data/old/b").write_text("b")
    (root / "new/deeper").mkdir(parents=True)
    (root / "new/deeper/file").write_text("n")
    os.link(root / "new/deeper/file", root / "new/link")
    (root / "dev/null").write_text("ignored")

    entries = changed_entries(root, before, EPOCH)

    assert _names(entries) == [
        ("data", "dir"), ("data/old", "dir"), ("data/old/.wh..wh..opq", "file"), ("data/old/b", "file"),
        ("etc", "dir"), ("etc/.wh.group", "file"), ("etc/passwd", "file"),
        ("new", "dir"), ("new/deeper", "dir"), ("new/deeper/file", "file"), ("new/link", "hardlink:new/deeper/file"),
        ("usr/bin/tool", "file"),
    ]  # keep and usr/bin (same directories, their metadata unchanged): no entry; dev ignored
    by_path = {entry.path: entry for entry in entries}
    assert by_path["usr/bin/tool"].mode == 0o4755
    assert all(entry.mtime <= EPOCH for entry in entries)


def test_a_link_to_an_unchanged_file_lists_both_names_and_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _tree(root)
    before = snapshot(root)
    wait_past(tmp_path, before.latest_ctime_ns)

    with open(root / "keep/linked", "w") as file:  # both names are the one changed file
        file.write("changed")

    assert _names(changed_entries(root, before, EPOCH)) == [
        ("keep/linked", "file"), ("keep/other-name", "hardlink:keep/linked")]


def test_a_forgotten_path_is_new(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _tree(root)
    (root / "made/for/a/mount").mkdir(parents=True)
    before = snapshot(root, ignored=["made/for/a/mount"])
    before.forget("made")
    wait_past(tmp_path, before.latest_ctime_ns)

    (root / "made/for/written").write_text("w")
    (root / "made/for/a/mount").rmdir()
    (root / "made/for/a").rmdir()

    assert _names(changed_entries(root, before, EPOCH)) == [
        ("made", "dir"), ("made/for", "dir"), ("made/for/written", "file")]


def test_a_directory_made_again_on_its_old_inode_hides_what_was_in_it(tmp_path: Path) -> None:
    """ext4 hands a removed directory's inode to the next mkdir: then it looks like the same directory, and
    its old entries become whiteouts (the same file tree as an opaque directory gives)."""
    root = tmp_path / "root"
    _tree(root)
    before = snapshot(root)
    wait_past(tmp_path, before.latest_ctime_ns)

    (root / "data/old/a").unlink()
    (root / "data/old").rmdir()
    (root / "data/old").mkdir()
    (root / "data/old/b").write_text("b")

    names = [path for path, _ in _names(changed_entries(root, before, EPOCH))]
    assert "data/old/.wh..wh..opq" in names or "data/old/.wh.a" in names
    assert "data/old" in names and "data/old/b" in names
