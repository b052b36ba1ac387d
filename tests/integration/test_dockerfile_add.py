"""ADD: a local tar archive is unpacked, a URL is downloaded and checked against --checksum, and a
hostile archive fails with the archive's name. The files are read back from the OCI layout written."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from build_checks import EPOCH_ENV, assert_user_error, cache_args
from conftest import RunDockwright

PAYLOAD = b"downloaded by ADD\n"


@pytest.fixture
def web(tmp_path: Path) -> Iterator[str]:
    """A plain HTTP file server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "payload.txt").write_bytes(PAYLOAD)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _tar_gz(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _layer_files(layout: Path) -> dict[str, bytes]:
    """Every regular file of every layer of the single image in an OCI layout: path -> content."""
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_bytes())
    files: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        with tarfile.open(layout / "blobs/sha256" / layer["digest"][7:]) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    files[member.name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    return files


def _build(dockwright: RunDockwright, tmp_path: Path, dockerfile: str, check: bool = True):  # type: ignore[no-untyped-def]
    context = tmp_path / "context"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    return dockwright("build", str(context), "-o", f"type=oci,dest={tmp_path / 'layout'},tar=false",
                      *cache_args(tmp_path), env=EPOCH_ENV, check=check)


def test_add_unpacks_a_local_archive_and_downloads_a_verified_url(
    dockwright: RunDockwright, web: str, tmp_path: Path,
) -> None:
    context = tmp_path / "context"
    context.mkdir()
    _tar_gz(context / "bundle.tar.gz", {"bin/tool": b"tool\n", "share/readme": b"readme\n"})
    checksum = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
    _build(dockwright, tmp_path, f"FROM scratch\nADD bundle.tar.gz /opt/\n"
                                 f"ADD --checksum={checksum} {web}/payload.txt /data/\n")
    files = _layer_files(tmp_path / "layout")
    assert files["opt/bin/tool"] == b"tool\n" and files["opt/share/readme"] == b"readme\n"
    assert files["data/payload.txt"] == PAYLOAD


def test_add_url_with_a_wrong_checksum_fails_and_writes_nothing(
    dockwright: RunDockwright, web: str, tmp_path: Path,
) -> None:
    wrong = "sha256:" + "0" * 64
    proc = _build(dockwright, tmp_path, f"FROM scratch\nADD --checksum={wrong} {web}/payload.txt /data/\n",
                  check=False)
    assert_user_error(proc, "checksum mismatch", wrong)
    assert not (tmp_path / "layout").exists()


def test_add_of_an_archive_climbing_out_of_its_root_names_the_archive(
    dockwright: RunDockwright, tmp_path: Path,
) -> None:
    context = tmp_path / "context"
    context.mkdir()
    _tar_gz(context / "evil.tar.gz", {"../../escape": b"x\n"})
    proc = _build(dockwright, tmp_path, "FROM scratch\nADD evil.tar.gz /opt/\n", check=False)
    assert_user_error(proc, "evil.tar.gz", "Dockerfile:2")
    assert not (tmp_path / "layout").exists()


def test_add_of_a_git_repository_says_what_to_do_instead(dockwright: RunDockwright, tmp_path: Path) -> None:
    proc = _build(dockwright, tmp_path, "FROM scratch\nADD https://example.invalid/org/repo.git /src\n", check=False)
    assert_user_error(proc, "Dockerfile:2", "git repository is not supported")
    assert "clone it" in proc.stderr  # the hint line
    assert not (tmp_path / "layout").exists()
