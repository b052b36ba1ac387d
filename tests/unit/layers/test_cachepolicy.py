"""The layer cache policy (layers/cachepolicy.py), directly: which key finds a layer, when the tree is
collected or streamed, what --no-cache changes, and the media type a found layer gets."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

import pytest

from dockwright.cache import Cache
from dockwright.layers.cachepolicy import LayerCache, TreeCopy, counts_excluded, tree_source
from dockwright.layers.compress import Compression
from dockwright.layers.copy import CopySettings, collect_copy, stream_copy
from dockwright.layers.dockerignore import IgnoreMatcher
from dockwright.layers.quickkey import key_of, tree_digest
from dockwright.layers.tar import TarEntry
from dockwright.model.errors import DockwrightError
from dockwright.model.image import Layer
from dockwright.model.mediatypes import DOCKER_LAYER_GZIP, OCI_LAYER_GZIP, OCI_LAYER_ZSTD
from dockwright.plan import CopyStep

IGNORE = IgnoreMatcher.from_patterns(["**/*.log"])


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    (tmp_path / "ctx" / "app" / "lib").mkdir(parents=True)
    (tmp_path / "ctx" / "app" / "main.js").write_text("console.log(1)\n")
    (tmp_path / "ctx" / "app" / "lib" / "util.js").write_text("module.exports = 2\n")
    (tmp_path / "ctx" / "app" / "debug.log").write_text("one\n")
    return tmp_path / "ctx"


class Copy:
    """One plain `COPY app /srv` through a LayerCache, recording which way its entries came."""

    def __init__(self, ctx: Path, ignore: IgnoreMatcher | None = None) -> None:
        self.ctx, self.ignore, self.calls = ctx, ignore, []
        step = CopyStep(sources=("app",), dest="/srv")
        found = tree_source(str(ctx), step, ("**/*.log",) if ignore else ())
        assert found is not None
        root, skip = found
        self.tree = TreeCopy(root, skip, "settings", counts_excluded(str(ctx), root, (), skip, ignore))

    def collect(self) -> list[TarEntry]:
        self.calls.append("collect")
        return collect_copy(self.ctx, ["app"], "/srv", CopySettings(), ignore=self.ignore)

    def stream(self) -> Iterable[TarEntry]:
        self.calls.append("stream")
        return stream_copy(self.ctx, "app", "/srv", CopySettings(), ignore=self.ignore)

    def layer(self, layers: LayerCache, fmt: str = "oci") -> Layer:
        return layers.for_tree(self.tree, fmt, self.collect, self.stream)  # type: ignore[arg-type]


def build(cache: Cache, copy: Copy, *, use_cache: bool = True, compression: str = "gzip",
          fmt: str = "oci") -> tuple[Layer, LayerCache]:
    """One build's view: a fresh LayerCache over the shared cache directory."""
    layers = LayerCache(cache, Compression(compression), use_cache=use_cache)  # type: ignore[arg-type]
    layers.start_walks([(copy.tree.root, copy.tree.skip)])
    return copy.layer(layers, fmt), layers


def test_an_unchanged_tree_is_found_by_its_quick_key_without_collecting(ctx: Path, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    first, layers = build(cache, copy := Copy(ctx))
    assert (copy.calls, layers.built, layers.cached) == (["stream"], 1, 0)
    again, layers = build(cache, copy := Copy(ctx))
    assert (copy.calls, layers.built, layers.cached) == ([], 0, 1)
    assert (again.descriptor, again.diff_id) == (first.descriptor, first.diff_id)


def test_a_changed_tree_misses_the_quick_key_and_streams_a_new_layer(ctx: Path, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    first, _ = build(cache, Copy(ctx))
    (ctx / "app" / "main.js").write_text("console.log(2)\n")
    changed, layers = build(cache, copy := Copy(ctx))
    assert (copy.calls, layers.built, layers.cached) == (["stream"], 1, 0)
    assert changed.descriptor.digest != first.descriptor.digest


def test_a_changed_ignored_file_misses_the_quick_key_but_the_fingerprint_finds_the_layer(ctx: Path,
                                                                                      tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    copy = Copy(ctx, IGNORE)
    assert copy.tree.counts_excluded  # the quick key counts debug.log, which the layer leaves out
    first, layers = build(cache, copy)
    assert (copy.calls, layers.built) == (["collect"], 1)
    (ctx / "app" / "debug.log").write_text("two, and longer\n")
    again, layers = build(cache, copy := Copy(ctx, IGNORE))
    assert (copy.calls, layers.built, layers.cached) == (["collect"], 0, 1)
    assert again.descriptor == first.descriptor
    # the quick key it missed by is filed now: the next build finds the layer without collecting
    _, layers = build(cache, copy := Copy(ctx, IGNORE))
    assert (copy.calls, layers.built, layers.cached) == ([], 0, 1)


def test_no_cache_writes_every_layer_but_one_build_still_makes_a_step_once(ctx: Path, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    build(cache, Copy(ctx))
    layer, layers = build(cache, copy := Copy(ctx), use_cache=False)
    assert (copy.calls, layers.built, layers.cached) == (["stream"], 1, 0)
    assert copy.layer(layers).descriptor == layer.descriptor  # a second platform: the memo, no walk
    assert (copy.calls, layers.built) == (["stream"], 1)
    # a streamed layer has no fingerprint: the same entries collected are written again (same digest) ...
    assert layers.for_entries(collect_copy(ctx, ["app"], "/srv"), "oci").descriptor == layer.descriptor
    assert layers.built == 2
    # ... and then found by fingerprint within the build
    assert layers.for_entries(collect_copy(ctx, ["app"], "/srv"), "oci").descriptor == layer.descriptor
    assert (layers.built, layers.cached) == (2, 0)
    quick = key_of("settings", tree_digest(copy.tree.root, copy.tree.skip))
    assert LayerCache(cache, Compression(), use_cache=True).lookup(quick, "oci") is not None
    assert LayerCache(cache, Compression(), use_cache=False).lookup(quick, "oci") is None


@pytest.mark.parametrize(("fmt", "media_type"), [("oci", OCI_LAYER_GZIP), ("docker", DOCKER_LAYER_GZIP)])
def test_a_layer_found_for_one_format_gets_the_media_type_of_the_other(ctx: Path, tmp_path: Path, fmt: str,
                                                                       media_type: str) -> None:
    cache = Cache(tmp_path / "cache")
    other = "docker" if fmt == "oci" else "oci"
    written, _ = build(cache, Copy(ctx), fmt=other)
    found, layers = build(cache, Copy(ctx), fmt=fmt)
    assert layers.cached == 1
    assert (found.descriptor.media_type, found.descriptor.digest) == (media_type, written.descriptor.digest)
    # and within one build, by memo
    assert Copy(ctx).layer(layers, other).descriptor.media_type == written.descriptor.media_type


def test_a_zstd_layer_is_oci_only(ctx: Path, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    assert build(cache, Copy(ctx), compression="zstd")[0].descriptor.media_type == OCI_LAYER_ZSTD
    with pytest.raises(DockwrightError, match="cannot go into a Docker-format manifest"):
        build(cache, Copy(ctx), compression="zstd", fmt="docker")



def test_a_tree_copy_is_keyed_by_every_setting_and_only_plain_directory_copies_have_one(ctx: Path,
                                                                                       tmp_path: Path) -> None:
    from dockwright.plan import BuildPlan, Stage

    layers = LayerCache(Cache(tmp_path / "cache"), Compression(), use_cache=True)
    step = CopyStep(sources=("app",), dest="/srv")
    plan = BuildPlan(ctx, (Stage("scratch", (step,)),))
    tree = layers.tree_copy(plan, step, "/srv", CopySettings())
    assert tree is not None and tree.root == str(ctx / "app") and not tree.counts_excluded
    for dest, settings in (("/srv", CopySettings(uid=1)), ("/srv", CopySettings(mtime=1)),
                           ("/srv", CopySettings(dest_exists=True)), ("/other", CopySettings())):
        other_tree = layers.tree_copy(plan, step, dest, settings)
        assert other_tree is not None and other_tree.settings != tree.settings
    for other in (CopyStep(sources=("app",), dest="/srv", add=True), CopyStep(sources=("app", "x"), dest="/srv/"),
                  CopyStep(sources=("app/*",), dest="/srv/"), CopyStep(sources=("app",), dest="/srv", from_stage=0)):
        assert layers.tree_copy(plan, other, "/srv", CopySettings()) is None


def test_the_same_step_in_two_stages_at_once_is_made_once(ctx: Path, tmp_path: Path) -> None:
    layers = LayerCache(Cache(tmp_path / "cache"), Compression(), use_cache=False)
    copy = Copy(ctx)
    both = threading.Barrier(2, timeout=30)
    made: list[Layer] = []

    def stage() -> None:
        both.wait()
        made.append(copy.layer(layers))

    threads = [threading.Thread(target=stage) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(made) == 2 and made[0].descriptor == made[1].descriptor
    assert (copy.calls, layers.built) == (["stream"], 1)  # as one stage after the other: the memo
