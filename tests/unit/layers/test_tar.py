"""The layer writer: what it writes must read back identically with tarfile and GNU tar."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockwright.layers.compress import Compression, layer_media_type
from dockwright.layers.tar import TarEntry, encode_header, fingerprint, write_layer
from dockwright.model.errors import ContextError, UsageError
from dockwright.model.mediatypes import DOCKER_LAYER_GZIP, OCI_LAYER_GZIP, OCI_LAYER_ZSTD


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def tree(tmp_path: Path) -> list[TarEntry]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # spans several blocks
    (src / "main.py").write_text("print('hi')\n")
    (src / "empty").write_bytes(b"")
    return [
        TarEntry("app", "dir", 0o755, 1000, 1000, mtime=1700000000),
        TarEntry("app/big.bin", "file", 0o644, size=(src / "big.bin").stat().st_size, source=src / "big.bin"),
        TarEntry("app/empty", "file", 0o600, source=src / "empty"),
        TarEntry("app/hard", "hardlink", 0o644, linkname="app/big.bin"),
        TarEntry("app/inline.txt", "file", 0o644, data=b"generated\n"),
        TarEntry("app/link", "symlink", 0o777, linkname="../etc/passwd"),
        TarEntry("app/main.py", "file", 0o755, 10, 20, size=12, source=str(src / "main.py")),
        TarEntry("app/" + "d" * 120 + "/" + "n" * 150, "file", 0o644, data=b"long"),
    ]


def _decompress(blob: Path, algorithm: str) -> bytes:
    data = blob.read_bytes()
    if algorithm == "gzip":
        return gzip.decompress(data)
    if algorithm == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


@pytest.mark.parametrize("algorithm", ["gzip", "zstd", "none"])
def test_round_trip_with_tarfile(tree: list[TarEntry], tmp_path: Path, algorithm: str) -> None:
    blob = write_layer(tree, tmp_path / "layer", Compression(algorithm))
    raw = blob.path.read_bytes()
    assert blob.size == len(raw)
    assert blob.digest == _sha(raw)
    tar_bytes = _decompress(blob.path, algorithm)
    assert blob.diff_id == _sha(tar_bytes)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == [e.path for e in tree]
        by_name = {m.name: m for m in members}
        for entry in tree:
            member = by_name[entry.path]
            assert member.mode & 0o7777 == entry.mode
            assert (member.uid, member.gid, member.uname, member.gname) == (entry.uid, entry.gid, "", "")
            assert member.mtime == entry.mtime
            if entry.kind == "file":
                content = entry.data if entry.data is not None else Path(entry.source).read_bytes()
                assert archive.extractfile(member).read() == content
            if entry.kind in ("symlink", "hardlink"):
                assert member.linkname == entry.linkname
        assert by_name["app"].isdir() and by_name["app/link"].issym() and by_name["app/hard"].islnk()


def test_gnu_tar_lists_and_extracts_the_same_tree(tree: list[TarEntry], tmp_path: Path) -> None:
    blob = write_layer(tree, tmp_path / "layer.tar.gz", Compression("gzip"))
    listing = subprocess.run(["tar", "-tvzf", str(blob.path)], check=True, capture_output=True, text=True)
    assert listing.stderr == ""
    assert "app/link -> ../etc/passwd" in listing.stdout
    assert "app/hard link to app/big.bin" in listing.stdout
    assert "1000/1000" in listing.stdout.splitlines()[0]
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xzf", str(blob.path), "-C", str(out)], check=True)
    for entry in tree:
        path = out / entry.path
        if entry.kind == "file":
            expected = entry.data if entry.data is not None else Path(entry.source).read_bytes()
            assert path.read_bytes() == expected
            assert path.stat().st_mode & 0o7777 == entry.mode
        elif entry.kind == "symlink":
            assert os.readlink(path) == entry.linkname
        elif entry.kind == "hardlink":
            assert path.stat().st_ino == (out / entry.linkname).stat().st_ino


@pytest.mark.parametrize("algorithm", ["gzip", "zstd"])
def test_same_bytes_whatever_the_thread_count(tree: list[TarEntry], tmp_path: Path, algorithm: str) -> None:
    digests = {
        write_layer(tree, tmp_path / f"l{threads}", Compression(algorithm, threads=threads)).digest
        for threads in (1, 2, 4, 1)
    }
    assert len(digests) == 1


def test_compression_level_changes_bytes_but_not_diff_id(tree: list[TarEntry], tmp_path: Path) -> None:
    fast = write_layer(tree, tmp_path / "a", Compression("gzip", level=0))
    small = write_layer(tree, tmp_path / "b", Compression("gzip", level=3))
    assert fast.digest != small.digest
    assert fast.diff_id == small.diff_id


def test_gzip_header_is_reproducible(tree: list[TarEntry], tmp_path: Path) -> None:
    head = write_layer(tree, tmp_path / "l", Compression("gzip")).path.read_bytes()[:10]
    assert head[:4] == b"\x1f\x8b\x08\x00"  # no FNAME flag
    assert head[4:8] == b"\0\0\0\0"  # mtime 0


def test_long_names_and_links_use_pax(tmp_path: Path) -> None:
    long_name = "/".join(["x" * 60] * 6)
    long_link = "t" * 300
    entries = [TarEntry(long_name, "symlink", 0o777, linkname=long_link),
               TarEntry("z" * 101, "file", 0o644, data=b"")]  # no "/" to split on
    blob = write_layer(entries, tmp_path / "l", Compression("none"))
    with tarfile.open(blob.path) as archive:
        assert [(m.name, m.linkname) for m in archive] == [(long_name, long_link), ("z" * 101, "")]
    listing = subprocess.run(["tar", "-tf", str(blob.path)], check=True, capture_output=True, text=True)
    assert listing.stdout.split() == [long_name, "z" * 101]


def test_splittable_long_name_stays_ustar() -> None:
    name = "a" * 90 + "/" + "b" * 90
    header = encode_header(TarEntry(name, "file", 0o644))
    assert len(header) == 512 and header[257:263] == b"ustar\0"
    assert header[345:345 + 90] == b"a" * 90


def test_huge_file_size_goes_to_pax(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse"
    size = 9 * 1024**3
    with open(sparse, "wb") as file:
        file.truncate(size)
    header = encode_header(TarEntry("big", "file", 0o644, size=size, source=sparse))
    with tarfile.open(fileobj=io.BytesIO(header), mode="r|") as archive:
        member = archive.next()
        assert member is not None
        assert (member.name, member.size) == ("big", size)


def test_huge_ids_go_to_pax() -> None:
    header = encode_header(TarEntry("f", "file", 0o644, uid=3_000_000, gid=2**31))
    with tarfile.open(fileobj=io.BytesIO(header + bytes(1024)), mode="r|") as archive:
        member = archive.next()
        assert (member.uid, member.gid) == (3_000_000, 2**31)


def test_non_utf8_name_keeps_its_bytes(tmp_path: Path) -> None:
    raw = b"caf\xe9-" + b"n" * 120  # latin-1, too long for USTAR's name field
    short = b"caf\xe9.txt"
    entries = [TarEntry(os.fsdecode(raw), "file", 0o644, data=b"1"),
               TarEntry(os.fsdecode(short), "file", 0o644, data=b"2")]
    blob = write_layer(entries, tmp_path / "l", Compression("none"))
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(blob.path), "-C", str(out)], check=True)
    assert sorted(os.listdir(os.fsencode(out))) == sorted([raw, short])
    with tarfile.open(blob.path, encoding="utf-8", errors="surrogateescape") as archive:
        assert [os.fsencode(m.name) for m in archive] == [raw, short]


def test_file_that_changes_size_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"12345")
    entry = TarEntry("f", "file", 0o644, size=10, source=src)  # listed when it had 10 bytes
    with pytest.raises(ContextError, match=r"changed during the build"):
        write_layer([entry], tmp_path / "l", Compression("gzip"))
    assert not (tmp_path / "l").exists()
    grown = TarEntry("f", "file", 0o644, size=3, source=src)
    with pytest.raises(ContextError, match=str(src)):
        write_layer([grown], tmp_path / "l", Compression("none"))


def test_missing_source_names_the_path(tmp_path: Path) -> None:
    entry = TarEntry("f", "file", 0o644, size=1, source=tmp_path / "gone")
    with pytest.raises(ContextError, match="gone"):
        write_layer([entry], tmp_path / "l", Compression("gzip"))


def test_duplicate_paths_are_rejected(tmp_path: Path) -> None:
    entries = [TarEntry("a", "file", 0o644, data=b"1"), TarEntry("a", "file", 0o644, data=b"2")]
    with pytest.raises(ContextError, match="duplicate"):
        write_layer(entries, tmp_path / "l", Compression("none"))


def test_invalid_level_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="level 9"):
        write_layer([], tmp_path / "l", Compression("gzip", level=9))
    assert not (tmp_path / "l").exists()


def test_empty_layer_is_two_zero_blocks(tmp_path: Path) -> None:
    blob = write_layer([], tmp_path / "l", Compression("none"))
    assert blob.path.read_bytes() == bytes(1024)


def test_fingerprint_tracks_what_changes_the_bytes(tree: list[TarEntry]) -> None:
    base = fingerprint(tree, Compression("gzip"))
    assert base == fingerprint(tree, Compression("gzip", threads=3))
    assert base != fingerprint(tree, Compression("gzip", level=2))
    assert base != fingerprint(tree, Compression("zstd"))
    changed = [*tree[:-1], TarEntry(tree[-1].path, "file", 0o644, data=b"other")]
    assert base != fingerprint(changed, Compression("gzip"))
    chmodded = [TarEntry("app", "dir", 0o700, 1000, 1000, mtime=1700000000), *tree[1:]]
    assert base != fingerprint(chmodded, Compression("gzip"))


def test_media_types() -> None:
    assert layer_media_type("gzip", "oci") == OCI_LAYER_GZIP
    assert layer_media_type("gzip", "docker") == DOCKER_LAYER_GZIP
    assert layer_media_type("zstd", "oci") == OCI_LAYER_ZSTD
    with pytest.raises(UsageError):
        layer_media_type("zstd", "docker")


_names = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\0"),
                 min_size=1, max_size=80).filter(lambda s: s not in (".", ".."))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.dictionaries(st.lists(_names, min_size=1, max_size=4).map("/".join),
                             st.tuples(st.binary(max_size=2000), st.integers(0, 0o777),
                                       st.integers(0, 5_000_000)), min_size=1, max_size=8))
def test_property_round_trip(files: dict[str, tuple[bytes, int, int]], tmp_path: Path) -> None:
    entries = [TarEntry(path, "file", mode, uid, uid, data=data)
               for path, (data, mode, uid) in sorted(files.items())]
    blob = write_layer(entries, tmp_path / "prop", Compression("gzip", threads=2))
    with tarfile.open(blob.path) as archive:
        got = {m.name: (archive.extractfile(m).read(), m.mode & 0o7777, m.uid) for m in archive}
    assert got == files
