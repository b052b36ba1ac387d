"""Which directories an image has (layers/dirindex.py), and the WORKDIR / COPY --chown decisions the
executor takes from it: read from real tar streams and real builds (an OCI layout base)."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from dockwright.cache import Cache
from dockwright.executor import Builder
from dockwright.formats import PublishContext, write_all
from dockwright.formats.layout import OciLayoutDir
from dockwright.frontends.dockerfile import plan_from_dockerfile
from dockwright.layers.copy import resolve_in_root
from dockwright.layers.dirindex import ImageDirs, LayerIndex
from dockwright.layers.rootfs import iter_layer
from dockwright.model.errors import ContextError
from dockwright.model.platform import Platform
from dockwright.model.reference import parse_reference
from dockwright.plan import BuildOptions
from dockwright.progress import Progress


def _tar(*members: tuple[str, str, str]) -> bytes:
    """(name, type "d"/"f"/"l", link target) -> an uncompressed tar."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, kind, target in members:
            info = tarfile.TarInfo(name)
            info.type = {"d": tarfile.DIRTYPE, "f": tarfile.REGTYPE, "l": tarfile.SYMTYPE}[kind]
            info.linkname = target
            archive.addfile(info, io.BytesIO(b"") if kind == "f" else None)
    return out.getvalue()


def _index(*members: tuple[str, str, str]) -> LayerIndex:
    return LayerIndex.read([_tar(*members)], "test layer")


def test_layer_index_holds_directories_parents_links_and_whiteouts() -> None:
    index = _index(("./etc/", "d", ""), ("usr/lib/x/file", "f", ""), ("var/run", "l", "/run"),
                   ("opt/.wh.old", "f", ""), ("srv/.wh..wh..opq", "f", ""))
    assert index.dirs == {"etc", "usr", "usr/lib", "usr/lib/x", "var", "opt", "srv"}
    assert index.links == {"var/run": "/run"}
    assert (index.whiteouts, index.opaque) == (["opt/old"], ["srv"])
    assert LayerIndex.from_json(json.loads(json.dumps(index.to_json()))) == index
    assert LayerIndex.from_json({"version": 0}) is None


def test_missing_follows_symlinks_and_layers() -> None:
    dirs = ImageDirs()
    dirs.apply(_index(("run/", "d", ""), ("var/run", "l", "/run"), ("home/app/", "d", ""), ("lib", "l", "usr/lib"),
                      ("usr/lib/", "d", ""), ("old/deep/er/", "d", ""), ("keep/a/", "d", "")))
    assert dirs.missing("/home/app") == []
    assert dirs.missing("home/app/work/x") == ["home/app/work", "home/app/work/x"]
    assert dirs.missing("/var/run/app") == ["run/app"]  # made where the symlink points
    assert dirs.missing("lib/x") == ["usr/lib/x"]
    assert dirs.missing("home/./app/") == []
    assert dirs.missing("srv/../b") == ["b"]
    assert dirs.missing("") == []
    dirs.apply(_index(("./.wh.old", "f", ""), ("keep/.wh..wh..opq", "f", ""), ("keep/b/", "d", "")))
    assert dirs.missing("old/deep") == ["old", "old/deep"]
    assert dirs.missing("keep/a") == ["keep/a"]
    assert dirs.missing("keep/b") == []


def test_a_symlink_loop_does_not_hang() -> None:
    # gives up after 255 links, with the error COPY --from's resolve_in_root gives (one walk: layers/chroot.py);
    # BuildKit's mkdir for WORKDIR fails there too (continuity's RootPath: too many links)
    dirs = ImageDirs()
    dirs.apply(_index(("a", "l", "b"), ("b", "l", "a")))
    with pytest.raises(ContextError, match="too many levels of symbolic links resolving /a/x"):
        dirs.missing("a/x")


def test_resolve_in_root_walks_as_the_index_does(tmp_path: Path) -> None:
    for name, target in (("var/run", "/run"), ("lib", "usr/lib"), ("up", "../../.."), ("a", "b"), ("b", "a")):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, tmp_path / name)
    assert resolve_in_root(str(tmp_path), "/var/run/app") == str(tmp_path / "run/app")
    assert resolve_in_root(str(tmp_path), "lib/x") == str(tmp_path / "usr/lib/x")
    assert resolve_in_root(str(tmp_path), "up/etc") == str(tmp_path / "etc")  # ".." stops at the root
    with pytest.raises(ContextError, match="too many levels of symbolic links resolving /a/x"):
        resolve_in_root(str(tmp_path), "a/x")


def _build(tmp_path: Path, dockerfile: str, base: str, cache: Cache) -> list[tuple[str, int, int, int]]:
    """Build `dockerfile` FROM `base`; the directories of the layers this build added:
    (path, mode, uid, gid)."""
    context = tmp_path / "context"
    (context / "dir").mkdir(parents=True, exist_ok=True)
    (context / "f").write_text("x\n")
    plan = plan_from_dockerfile(context, f"FROM {base}\n{dockerfile}", platform=Platform.parse("linux/amd64"))
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    options = BuildOptions(platforms="linux/amd64", source_date_epoch=0)
    result = Builder(options, cache, None, work).build(lambda platform: plan)
    added = result.images[0].layers[1:] if base != "scratch" else result.images[0].layers
    return [(m.name, stat.S_IMODE(m.mode), m.uid, m.gid) for layer in added for m, _ in iter_layer(layer.source.open())
            if m.isdir()]


def test_workdir_and_chown_against_a_base(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    base_layout = tmp_path / "base"
    (tmp_path / "f").write_text("f\n")
    base = Builder(BuildOptions(platforms="linux/amd64"), cache, None, tmp_path).build(
        lambda platform: plan_from_dockerfile(tmp_path, "FROM scratch\nCOPY --chown=7:7 --chmod=1777 f /tmp/f\n",
                                              platform=platform))
    write_all(base, [OciLayoutDir(base_layout)],
              PublishContext([parse_reference("example.com/base:1")], None, tmp_path, Progress()))
    ref = f"oci-layout://{base_layout}:1"

    # a plain COPY never needs the base's directories: nothing indexed
    assert _build(tmp_path, "COPY f /app/\n", ref, cache) == []
    assert list(cache.indexes.iterdir()) == []
    # WORKDIR on an existing directory changes nothing; on a new one, USER owns what it creates
    assert _build(tmp_path, "WORKDIR /tmp\nUSER 5:6\nWORKDIR /tmp/a/b\n", ref, cache) == [
        ("tmp/a", 0o755, 5, 6), ("tmp/a/b", 0o755, 5, 6)]
    assert len(list(cache.indexes.iterdir())) == 1  # the base layer's index, kept for the next build
    # COPY --chown: missing parents belong to the user, existing ones (/tmp) are left alone
    assert _build(tmp_path, "COPY --chown=9 f /tmp/x/y/f\n", ref, cache) == [
        ("tmp/x", 0o755, 9, 9), ("tmp/x/y", 0o755, 9, 9)]
    # a directory an earlier step made keeps its owner
    assert _build(tmp_path, "COPY --chown=3 dir /app\nWORKDIR /app\n", ref, cache) == [("app", 0o755, 3, 3)]
    # a heredoc COPY --chown makes its missing directories for that user too
    assert _build(tmp_path, "COPY --chown=4 <<EOF /tmp/h/d/\nhi\nEOF\n", ref, cache) == [
        ("tmp/h", 0o755, 4, 4), ("tmp/h/d", 0o755, 4, 4)]
    # USER root needs no /etc/passwd (this base has none)
    assert _build(tmp_path, "USER root:0\nWORKDIR /r\n", ref, cache) == [("r", 0o755, 0, 0)]


def test_user_names_come_from_the_index_without_extracting_the_base(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    (tmp_path / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1234:1235::/home/app:/bin/sh\n")
    (tmp_path / "group").write_text("root:x:0:\napp:x:1235:\nstaff:x:50:\n")
    base = Builder(BuildOptions(platforms="linux/amd64"), cache, None, tmp_path).build(
        lambda platform: plan_from_dockerfile(tmp_path, "FROM scratch\nCOPY passwd group /etc/\n", platform=platform))
    write_all(base, [OciLayoutDir(tmp_path / "base")],
              PublishContext([parse_reference("example.com/base:1")], None, tmp_path, Progress()))
    ref = f"oci-layout://{tmp_path / 'base'}:1"

    assert _build(tmp_path, "USER app\nWORKDIR /w\nCOPY --chown=app:staff f /c/\n", ref, cache) == [
        ("w", 0o755, 1234, 1235), ("c", 0o755, 1234, 50)]
    assert list((tmp_path / "work").glob("rootfs-*")) == []  # nothing extracted for the lookups


def test_account_files_follow_whiteouts() -> None:
    dirs = ImageDirs()
    index = _index(("etc/", "d", ""))
    index.accounts = {"etc/passwd": "a:x:1:1::/:/bin/sh\n", "etc/group": "a:x:1:\n"}
    dirs.apply(index)
    dirs.apply(_index(("etc/.wh.passwd", "f", "")))
    assert dirs.accounts == {"etc/group": "a:x:1:\n"}
    dirs.apply(_index(("etc/.wh..wh..opq", "f", "")))
    assert dirs.accounts == {}
