"""The local cache: what is stored is found again, a damaged entry is never used, concurrent builds
sharing one cache directory leave it consistent."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from dockwright.cache import STALE_TEMP_SECONDS, Cache, cache_cap, default_cache_dir, disk_usage, prune
from dockwright.model.blobs import FileBlob
from dockwright.model.digest import digest_bytes
from dockwright.model.errors import DockwrightError, UsageError


def _fingerprint(n: int) -> str:
    return digest_bytes(f"inputs-{n}".encode())


def _store(cache: Cache, fingerprint: str, content: bytes) -> tuple[str, str]:
    """Store `content` as a layer blob as the builder does; (digest, diff_id)."""
    temp = cache.temp_path(".layer")
    temp.write_bytes(content)
    digest, diff_id = digest_bytes(content), digest_bytes(b"tar:" + content)
    cache.store_layer(fingerprint, temp, digest, len(content), diff_id, "gzip")
    return digest, diff_id


def _usage(root: Path) -> dict[str, tuple[int, str]]:
    """`cache du`'s lines: kind -> (count, human size)."""
    kinds = {}
    for line in disk_usage(root).splitlines()[1:]:
        name, size, count = re.fullmatch(r"  (.+?)\s+(\d[\d.]* \w+)  (\d+) \w+", line).groups()  # type: ignore[union-attr]
        kinds[name] = (int(count), size)
    return kinds


def test_store_then_lookup_round_trip(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    digest, diff_id = _store(cache, _fingerprint(1), b"layer bytes")
    again = Cache(tmp_path / "cache")  # another build, same directory
    hit = again.lookup_layer(_fingerprint(1))
    assert hit is not None
    assert (hit.digest, hit.size, hit.diff_id, hit.media_type_key) == (digest, 11, diff_id, "gzip")
    assert b"".join(FileBlob(hit.path, hit.digest, hit.size).open()) == b"layer bytes"
    assert again.lookup_layer(_fingerprint(2)) is None
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_record_whose_blob_is_missing_is_ignored(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    digest, _ = _store(cache, _fingerprint(1), b"content")
    cache.discard_blob(digest)
    assert cache.lookup_layer(_fingerprint(1)) is None
    # and the layer can be stored again afterwards
    _store(cache, _fingerprint(1), b"content")
    assert cache.lookup_layer(_fingerprint(1)) is not None


def test_record_whose_blob_has_the_wrong_size_is_ignored(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    digest, _ = _store(cache, _fingerprint(1), b"content")
    cache.blob_path(digest).write_bytes(b"cont")  # truncated, e.g. by a full disk
    assert cache.lookup_layer(_fingerprint(1)) is None


@pytest.mark.parametrize(
    "record",
    [
        "not json",
        "[]",
        json.dumps({"version": "0", "digest": "sha256:" + "a" * 64, "size": 1, "diff_id": "sha256:" + "b" * 64,
                    "compression": "gzip"}),
        json.dumps({"version": "1", "digest": "../../etc/passwd", "size": 1, "diff_id": "sha256:" + "b" * 64,
                    "compression": "gzip"}),
        json.dumps({"version": "1", "digest": "sha256:" + "a" * 64, "size": "big",
                    "diff_id": "sha256:" + "b" * 64, "compression": "gzip"}),
        json.dumps({"version": "1", "digest": "sha256:" + "a" * 64, "size": 1}),
    ],
)
def test_damaged_or_foreign_records_are_ignored(tmp_path: Path, record: str) -> None:
    cache = Cache(tmp_path)
    (cache.layers / f"{_fingerprint(1)}.json").write_text(record)
    assert cache.lookup_layer(_fingerprint(1)) is None


def _set_times(paths: list[Path], when: float) -> None:
    for path in paths:
        os.utime(path, (when, when))


def test_prune_keeps_the_most_recently_used_entries_up_to_the_limit(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    now = time.time()
    sizes = {}
    for n in range(5):
        content = bytes([n]) * (1000 * (n + 1))
        digest, _ = _store(cache, _fingerprint(n), content)
        record = cache.layers / f"{_fingerprint(n)}.json"
        _set_times([cache.blob_path(digest), record], now - 1000 + n)  # entry 4 is the most recent
        sizes[n] = len(content) + record.stat().st_size
    keep = sizes[3] + sizes[4]
    cache.close()  # an open cache is a running build: prune would refuse
    removed, freed = prune(tmp_path, keep)
    assert removed == 6  # blob and record of entries 0, 1 and 2
    assert freed == sizes[0] + sizes[1] + sizes[2]
    assert [cache.lookup_layer(_fingerprint(n)) is not None for n in range(5)] == [False, False, False, True, True]


def test_prune_to_zero_empties_the_cache_and_keeps_it_usable(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    _store(cache, _fingerprint(1), b"x" * 100)
    cache.close()
    prune(tmp_path, 0)
    usage = _usage(tmp_path)
    assert usage["layers built"] == usage["layer records and indexes"] == (0, "0 B")
    assert cache.lookup_layer(_fingerprint(1)) is None
    _store(cache, _fingerprint(1), b"x" * 100)
    assert cache.lookup_layer(_fingerprint(1)) is not None


def test_prune_removes_only_abandoned_temporary_files(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    old, fresh = cache.temp_path(".layer"), cache.temp_path(".layer")
    _set_times([old], time.time() - STALE_TEMP_SECONDS - 60)
    cache._temps.clear()  # as if the process that made them had been killed
    cache.close()
    prune(tmp_path, 10**12)
    assert not old.exists()
    assert fresh.exists()  # a running build's file


def test_disk_usage_counts_blobs_and_records(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    _store(cache, _fingerprint(1), b"a" * 10)
    _store(cache, _fingerprint(2), b"b" * 20)
    report = disk_usage(tmp_path)
    assert report.startswith(f"{tmp_path}: ")
    usage = _usage(tmp_path)
    assert usage["layers built"] == (2, "30 B")
    assert usage["layer records and indexes"][0] == 2
    assert usage["base image layers"] == usage["temporary files"] == (0, "0 B")


def test_temporary_cache_is_removed_on_close() -> None:
    cache = Cache(None)
    _store(cache, _fingerprint(1), b"data")
    root = cache.root
    assert root.is_dir()
    cache.close()
    assert not root.exists()


def test_persistent_cache_survives_close(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    _store(cache, _fingerprint(1), b"data")
    cache.close()
    assert Cache(tmp_path).lookup_layer(_fingerprint(1)) is not None


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "dockwright"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "dockwright"


def _worker(root: str, content: bytes, rounds: int) -> str:
    cache = Cache(Path(root))
    for _ in range(rounds):
        _store(cache, _fingerprint(7), content)
        hit = cache.lookup_layer(_fingerprint(7))
        assert hit is not None
        assert b"".join(FileBlob(hit.path, hit.digest, hit.size).open()) == content
    return "ok"


def test_concurrent_stores_of_the_same_layer_leave_one_consistent_entry(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    Cache(root)
    content = os.urandom(256 * 1024)
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        results = pool.starmap(_worker, [(str(root), content, 20)] * 8)
    assert results == ["ok"] * 8
    cache = Cache(root)
    hit = cache.lookup_layer(_fingerprint(7))
    assert hit is not None
    assert hit.digest == digest_bytes(content)
    assert hit.path.read_bytes() == content
    assert [p.name for p in cache.blobs.iterdir()] == [digest_bytes(content)[7:]]
    assert [p.name for p in cache.layers.iterdir()] == [f"{_fingerprint(7)}.json"]
    assert list(cache.tmp.iterdir()) == []  # no torn or abandoned temporary file


def test_a_cache_hit_counts_as_recent_use_for_prune(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    for name, content in (("old", b"o" * 100), ("new", b"n" * 100)):
        temp = cache.temp_path()
        temp.write_bytes(content)
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        cache.store_layer(f"fp-{name}", temp, digest, 100, digest, "none")
    for path in (*cache.layers.iterdir(), *cache.blobs.iterdir()):
        os.utime(path, (1_000_000, 1_000_000))  # both long unused
    old = cache.lookup_layer("fp-old")  # ... until the old one is used again
    assert old is not None
    cache.close()
    prune(tmp_path, old.size + (cache.layers / "fp-old.json").stat().st_size)
    assert cache.lookup_layer("fp-old") is not None
    assert cache.lookup_layer("fp-new") is None


def test_tag_resolutions_round_trip_and_ignore_other_names(tmp_path: Path) -> None:
    from dockwright.cache import Resolution

    cache = Cache(tmp_path)
    wanted = Resolution("sha256:" + "a" * 64, "application/vnd.oci.image.index.v1+json")
    cache.record_resolution("r.example/app:1", wanted)
    assert cache.resolution("r.example/app:1") == wanted
    assert cache.resolution("r.example/app:2") is None
    (cache.resolutions / next(cache.resolutions.iterdir()).name).write_text("{not json")
    assert cache.resolution("r.example/app:1") is None


def test_a_cached_document_is_verified_and_a_corrupt_one_removed(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    data = b'{"schemaVersion": 2}'
    cache.put_bytes(data, digest_bytes(data))
    assert cache.document(digest_bytes(data)) == data
    cache.blob_path(digest_bytes(data)).write_bytes(b'{"schemaVersion": 3}')
    assert cache.document(digest_bytes(data)) is None
    assert not cache.blob_path(digest_bytes(data)).exists()


def test_prune_removes_run_layer_directories_oldest_first_and_abandoned_run_temporaries(tmp_path: Path) -> None:
    Cache(tmp_path)
    rootfs = tmp_path / "rootfs"
    old, recent = rootfs / ("a" * 64), rootfs / ("b" * 64)
    for directory in (old, recent):
        (directory / "usr/bin").mkdir(parents=True)
        (directory / "usr/bin/tool").write_bytes(b"x" * 1000)
    abandoned, running = rootfs / "tmp-killed", rootfs / "tmp-running"
    for directory in (abandoned, running):
        (directory / "upper").mkdir(parents=True)
    _set_times([old, abandoned], time.time() - STALE_TEMP_SECONDS - 60)
    assert _usage(tmp_path)["RUN layer directories"][0] == 2

    removed, freed = prune(tmp_path, 12_000)  # one directory: ~9 kB (two directories and a file)

    assert (removed, not old.exists(), recent.exists()) == (1, True, True)
    assert freed >= 1000
    assert not abandoned.exists() and running.exists()



def test_a_run_layer_directory_is_walked_once_its_size_remembered_and_forgotten_when_pruned(tmp_path: Path) -> None:
    Cache(tmp_path)
    layer = tmp_path / "rootfs" / ("c" * 64)
    (layer / "usr").mkdir(parents=True)
    (layer / "usr/tool").write_bytes(b"x" * 5000)
    first = _usage(tmp_path)["RUN layer directories"]
    (layer / "usr/tool").write_bytes(b"x" * 50_000)  # never happens to a layer directory: shows the memo is used
    assert _usage(tmp_path)["RUN layer directories"] == first
    assert (tmp_path / "rootfs" / f".size-{'c' * 64}").read_text().isdecimal()

    assert prune(tmp_path, 0)[0] >= 1
    assert os.listdir(tmp_path / "rootfs") == []

def _filled(root: Path, count: int, size: int) -> Cache:
    """A cache with `count` layers of `size` bytes, entry 0 the least recently used."""
    cache = Cache(root)
    now = time.time()
    for n in range(count):
        digest, _ = _store(cache, _fingerprint(n), bytes([n]) * size)
        _set_times([cache.blob_path(digest), cache.layers / f"{_fingerprint(n)}.json"], now - 1000 + n)
    return cache


def test_a_build_closing_the_cache_trims_it_to_its_cap_least_recently_used_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKWRIGHT_CACHE_MAX", "25kB")
    cache = _filled(tmp_path, 4, 10_000)
    cache.close()
    assert [Cache(tmp_path).lookup_layer(_fingerprint(n)) is not None for n in range(4)] == [False, False, True, True]


def test_no_trim_while_another_build_uses_the_cache_the_last_one_trims(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKWRIGHT_CACHE_MAX", "25kB")
    running = Cache(tmp_path)  # another build, still running (flock: another open file is another holder)
    finished = _filled(tmp_path, 4, 10_000)
    finished.close()
    assert len(list(running.blobs.iterdir())) == 4  # nothing removed under the running build
    with pytest.raises(DockwrightError, match="in use by a running build"):
        prune(tmp_path, 0)
    running.close()
    assert len(list(running.blobs.iterdir())) == 2


def test_the_cap_is_the_variable_or_the_smaller_of_10_gib_and_a_tenth_of_the_free_space(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKWRIGHT_CACHE_MAX", raising=False)
    for free, cap in ((50 * 2**30, 5 * 2**30), (500 * 2**30, 10 * 2**30)):
        monkeypatch.setattr(shutil, "disk_usage", lambda path, free=free: shutil._ntuple_diskusage(0, 0, free))
        assert cache_cap(tmp_path) == cap
    monkeypatch.undo()
    monkeypatch.setenv("DOCKWRIGHT_CACHE_MAX", "5MB")
    assert cache_cap(tmp_path) == 5_000_000
    monkeypatch.setenv("DOCKWRIGHT_CACHE_MAX", "10GiB")
    assert cache_cap(tmp_path) == 10 * 2**30
    monkeypatch.setenv("DOCKWRIGHT_CACHE_MAX", "lots")
    with pytest.raises(UsageError, match="DOCKWRIGHT_CACHE_MAX 'lots': expected a size"):
        Cache(tmp_path / "cache")  # before the build, not after it


def test_du_shows_human_sizes_per_kind_and_takes_cache_dir_after_the_action(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dockwright.cli.main import main

    cache = _filled(tmp_path / "cache", 2, 1536)
    document = b'{"schemaVersion": 2}'
    cache.put_bytes(document, digest_bytes(document))
    base_layer = b"\x1f\x8b" + b"z" * 3000
    cache.put_bytes(base_layer, digest_bytes(base_layer))
    cache.close()
    for argv in (["cache", "du", "--cache-dir", str(tmp_path / "cache")],
                 ["cache", "--cache-dir", str(tmp_path / "cache"), "du"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"{tmp_path / 'cache'}: ")
        usage = _usage(tmp_path / "cache")
        assert usage["layers built"] == (2, "3.0 KiB")
        assert usage["base image layers"] == (1, "2.9 KiB")
        assert usage["manifests and configs"] == (1, "20 B")
    assert main(["cache", "prune", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert capsys.readouterr().out.startswith("removed 6 entries, freed ")
