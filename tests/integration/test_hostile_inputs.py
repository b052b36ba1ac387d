"""Hostile and bad input (issue 5): build contexts with links out of the context, special files and
odd names; base images from OCI layouts and docker-archives that try to escape, bomb or confuse; bad
references, platforms and outputs. Each is either built safely (checked in the layer's bytes) or
refused with one `error:` line that names the path or argument."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import socket
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from build_checks import assert_user_error
from conftest import RunDockwright
from images import BusyboxBase

SECRET = b"host-secret-5f2c1e: must never be packed"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


def build_layer(dockwright: RunDockwright, context: Path, tmp_path: Path, *extra: str,
                base: str = "scratch") -> tuple[bytes, list[tarfile.TarInfo]]:
    """Build `--copy .:/ctx` onto `base` into an OCI archive; return the new layer's bytes and members."""
    archive = tmp_path / "out.tar"
    dockwright("build", context, "--from", base, "--copy", ".:/ctx", "--compression", "none",
               "-o", f"type=oci,dest={archive}", "--cache-dir", tmp_path / "cache", *extra)
    data = read_archive_layer(archive)
    with tarfile.open(fileobj=io.BytesIO(data)) as layer:
        return data, layer.getmembers()


def read_archive_layer(archive: Path, index: int = -1) -> bytes:
    with tarfile.open(archive) as tar:
        def blob(digest: str) -> bytes:
            member = tar.extractfile("blobs/" + digest.replace(":", "/"))
            assert member is not None
            return member.read()

        top = json.loads(tar.extractfile("index.json").read())["manifests"][0]  # type: ignore[union-attr]
        manifest = json.loads(blob(top["digest"]))
        return blob(manifest["layers"][index]["digest"])


def by_name(members: list[tarfile.TarInfo]) -> dict[str, tarfile.TarInfo]:
    return {m.name: m for m in members}


def layer_members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as layer:
        return by_name(layer.getmembers())


# ---------------------------------------------------------------------------------------------- build contexts


def test_symlinks_out_of_the_context_are_kept_as_links_and_never_followed(
    dockwright: RunDockwright, tmp_path: Path,
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(SECRET)
    context = tmp_path / "context"
    (context / "sub").mkdir(parents=True)
    (context / "abs-link").symlink_to(outside)
    (context / "sub" / "rel-link").symlink_to("../../outside.txt")
    (context / "loop-a").symlink_to("loop-b")
    (context / "loop-b").symlink_to("loop-a")
    (context / "dangling").symlink_to("does/not/exist")
    (context / "file.txt").write_text("inside\n")
    os.link(context / "file.txt", context / "hardlink.txt")

    data, members = build_layer(dockwright, context, tmp_path)

    names = by_name(members)
    assert SECRET not in data
    assert names["ctx/abs-link"].issym() and names["ctx/abs-link"].linkname == str(outside)
    assert names["ctx/sub/rel-link"].linkname == "../../outside.txt"
    assert names["ctx/loop-a"].linkname == "loop-b" and names["ctx/loop-b"].linkname == "loop-a"
    assert names["ctx/dangling"].issym()
    for name in ("ctx/file.txt", "ctx/hardlink.txt"):  # both present with their content
        assert names[name].isfile() or names[name].islnk()


def test_copying_a_symlink_that_leaves_the_context_is_refused(dockwright: RunDockwright, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_bytes(SECRET)
    context = tmp_path / "context"
    context.mkdir()
    (context / "escape").symlink_to("../outside.txt")

    proc = dockwright("build", context, "--from", "scratch", "--copy", "escape:/x", "-o",
                      f"type=oci,dest={tmp_path / 'out.tar'}", check=False)

    assert_user_error(proc, "'escape'", "outside")
    assert not (tmp_path / "out.tar").exists()


def _make_fifo(path: Path) -> None:
    os.mkfifo(path)


def _make_device(path: Path) -> None:
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))


def _make_socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()


def _make_whiteout(path: Path) -> None:
    path.write_text("I look like a whiteout\n")


@pytest.mark.parametrize(
    ("name", "make", "needle"),
    [
        ("pipe", _make_fifo, "FIFO"),
        ("null", _make_device, "device"),
        ("sock", _make_socket, "socket"),
        (".wh.hidden", _make_whiteout, ".wh."),
    ],
    ids=["fifo", "device", "socket", "whiteout-name"],
)
def test_special_files_and_whiteout_names_are_refused_naming_the_path(
    dockwright: RunDockwright, tmp_path: Path, name: str, make: Any, needle: str,
) -> None:
    context = tmp_path / "context"
    (context / "dir").mkdir(parents=True)
    make(context / "dir" / name)
    out = tmp_path / "out.tar"

    proc = dockwright("build", context, "--from", "scratch", "--copy", ".:/ctx", "-o", f"type=oci,dest={out}",
                      "--cache-dir", tmp_path / "cache", check=False)

    assert_user_error(proc, str(context / "dir" / name), needle)
    assert not out.exists()


def test_non_utf8_and_very_long_names_round_trip(dockwright: RunDockwright, tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    latin1 = os.fsdecode(b"caf\xe9.txt")
    (context / latin1).write_text("latin-1 name\n")
    deep = context / ("d" * 120) / ("e" * 120)
    deep.mkdir(parents=True)
    long_name = "f" * 250
    (deep / long_name).write_text("long name\n")

    _, members = build_layer(dockwright, context, tmp_path)

    names = {m.name for m in members}
    assert f"ctx/{'d' * 120}/{'e' * 120}/{long_name}" in names
    raw = {os.fsencode(n) for n in names}
    assert b"ctx/caf\xe9.txt" in raw


def test_setuid_and_world_writable_bits_are_masked(dockwright: RunDockwright, tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    for name, mode in (("suid", 0o4755), ("sgid", 0o2755), ("world", 0o666)):
        (context / name).write_text(name)
        (context / name).chmod(mode)
    sticky = context / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)

    _, members = build_layer(dockwright, context, tmp_path)

    modes = {m.name: stat.S_IMODE(m.mode) for m in members}  # the type bits Docker also sets aside
    assert modes["ctx/suid"] == 0o755 and modes["ctx/sgid"] == 0o755
    assert modes["ctx/world"] == 0o644
    assert modes["ctx/sticky"] == 0o755


def test_an_unreadable_file_is_an_error_naming_it(dockwright: RunDockwright, tmp_path: Path) -> None:
    context = tmp_path / "context"
    locked = context / "locked"
    locked.mkdir(parents=True)
    (locked / "secret.txt").write_text("x")
    (locked / "secret.txt").chmod(0o000)
    try:
        if _really_readable(locked / "secret.txt"):
            pytest.skip("running as root (CAP_DAC_OVERRIDE): a mode-000 file still opens, nothing to refuse")
        proc = dockwright("build", context, "--from", "scratch", "--copy", ".:/ctx", "-o",
                          f"type=oci,dest={tmp_path / 'out.tar'}", check=False)
        assert_user_error(proc, str(locked / "secret.txt"))
    finally:
        (locked / "secret.txt").chmod(0o644)


def _really_readable(path: Path) -> bool:
    try:
        path.read_bytes()
    except OSError:
        return False
    return True


@pytest.mark.timeout(900)
def test_a_sparse_file_over_8_gib_is_written_with_a_pax_size(dockwright: RunDockwright, tmp_path: Path) -> None:
    size = 8 * 1024**3 + 1  # one byte more than USTAR's 11 octal digits hold
    context = tmp_path / "context"
    context.mkdir()
    with (context / "sparse.bin").open("wb") as handle:
        handle.truncate(size)
    cache = tmp_path / "cache"

    # no output: the layer is built into the cache, which is where we read its header back
    dockwright("build", context, "--from", "scratch", "--copy", "sparse.bin:/big", "--compression", "none",
               "--cache-dir", cache, env={"DOCKWRIGHT_CACHE_MAX": "1TB"})  # kept, not trimmed to the cap

    [blob] = [p for p in (cache / "blobs" / "sha256").iterdir() if p.stat().st_size > size]
    with tarfile.open(blob, mode="r|") as layer:
        member = next(iter(layer))
        assert member.name == "big" and member.size == size
        assert member.pax_headers.get("size") == str(size)


# ---------------------------------------------------------------------------------------------- hostile bases


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


class Layout:
    """A hand-made OCI layout whose documents can be anything (this is the hostile part)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def blob(self, data: bytes) -> str:
        digest = _sha(data)
        (self.root / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return digest

    def image(self, layers: list[bytes], *, config: dict[str, Any] | None = None,
              manifest_extra: dict[str, Any] | None = None, raw_manifest: bytes | None = None) -> str:
        """Write an image (uncompressed layers) and tag it `latest`; returns the spec for --from."""
        diff_ids = [_sha(layer) for layer in layers]
        config = config if config is not None else {
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": []}
        config_bytes = json.dumps(config).encode()
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": self.blob(config_bytes), "size": len(config_bytes)},
                    "layers": [{"mediaType": OCI_LAYER_TAR, "digest": self.blob(layer), "size": len(layer)}
                               for layer in layers], **(manifest_extra or {})}
        data = raw_manifest if raw_manifest is not None else json.dumps(manifest).encode()
        return self.tag(data, OCI_MANIFEST)

    def tag(self, data: bytes, media_type: str, digest: str | None = None) -> str:
        descriptor = {"mediaType": media_type, "digest": digest or self.blob(data), "size": len(data),
                      "annotations": {"org.opencontainers.image.ref.name": "latest"}}
        (self.root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))
        return f"oci-layout://{self.root}:latest"


PASSWD = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
GROUP = b"root:x:0:\napp:x:1000:\n"


def _app_context(tmp_path: Path) -> Path:
    context = tmp_path / "context"
    context.mkdir()
    (context / "app.txt").write_text("app\n")
    return context


def _build_on(dockwright: RunDockwright, spec: str, tmp_path: Path, *extra: str,
              check: bool = True) -> subprocess.CompletedProcess[str]:
    return dockwright("build", _app_context(tmp_path), "--from", spec, *extra, "--copy", "app.txt:/app.txt",
                      "-o", f"type=oci,dest={tmp_path / 'out.tar'}", "--cache-dir", tmp_path / "cache", check=check)


@pytest.mark.parametrize(
    ("name", "refused"),
    [("../../escaped.txt", True), ("etc/../../../escaped.txt", True), ("/abs-escaped.txt", False)],
    ids=["dot-dot", "dot-dot-inside", "absolute"],  # an absolute name is root-relative: harmless
)
def test_base_layer_paths_that_escape_the_root_never_touch_the_host(
    dockwright: RunDockwright, tmp_path: Path, name: str, refused: bool,
) -> None:
    layer = _tar([(_entry("etc/", tarfile.DIRTYPE, mode=0o755), None), (_entry("etc/passwd"), PASSWD),
                  (_entry("etc/group"), GROUP), (_entry(name), SECRET)])
    spec = Layout(tmp_path / "layout").image([layer])
    work = tmp_path / "work"
    work.mkdir()

    # --chown with a name makes dockwright extract /etc/passwd and /etc/group from the base
    proc = _build_on(dockwright, spec, tmp_path, "--chown", "app:app", check=False)

    hits = [p for p in (Path("/escaped.txt"), Path("/abs-escaped.txt"), tmp_path / "escaped.txt",
                        tmp_path.parent / "escaped.txt") if p.exists()]
    assert hits == [], "a base layer wrote outside the extraction root"
    if refused:
        assert_user_error(proc, repr(name), "outside the image root")
        assert not (tmp_path / "out.tar").exists()
    else:
        assert proc.returncode == 0, proc.stderr
        assert layer_members(read_archive_layer(tmp_path / "out.tar"))["app.txt"].uid == 1000


def test_base_symlinks_escaping_the_root_are_not_followed_by_copy_from(
    dockwright: RunDockwright, tmp_path: Path,
) -> None:
    outside = tmp_path / "host-file.txt"
    outside.write_bytes(SECRET)
    layer = _tar([(_entry("data/", tarfile.DIRTYPE, mode=0o755), None),
                  (_entry("data/evil", tarfile.SYMTYPE, link=str(outside)), None),
                  (_entry("data/up", tarfile.SYMTYPE, link="../../../../../../" + str(outside)), None),
                  (_entry("data/ok.txt"), b"fine\n")])
    spec = Layout(tmp_path / "layout").image([layer])
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {spec} AS src\nFROM scratch\nCOPY --from=src /data/ /copied/\n")
    out = tmp_path / "out.tar"

    proc = dockwright("build", _app_context(tmp_path), "-f", dockerfile, "--compression", "none",
                      "-o", f"type=oci,dest={out}", "--cache-dir", tmp_path / "cache", check=False)

    assert proc.returncode == 0, proc.stderr
    data = read_archive_layer(out)
    assert SECRET not in data
    names = layer_members(data)
    assert names["copied/evil"].issym() and names["copied/evil"].linkname == str(outside)
    assert names["copied/up"].issym() and names["copied/ok.txt"].isfile()


def test_duplicate_entries_in_a_base_layer_keep_the_last(dockwright: RunDockwright, tmp_path: Path) -> None:
    layer = _tar([(_entry("etc/", tarfile.DIRTYPE, mode=0o755), None), (_entry("etc/passwd"), b"bogus\n"),
                  (_entry("etc/passwd"), PASSWD), (_entry("etc/group"), GROUP)])
    spec = Layout(tmp_path / "layout").image([layer])

    _build_on(dockwright, spec, tmp_path, "--chown", "app:app")

    assert layer_members(read_archive_layer(tmp_path / "out.tar"))["app.txt"].uid == 1000


def test_a_gzip_bomb_base_layer_is_bounded(dockwright: RunDockwright, tmp_path: Path) -> None:
    # a gzip member that inflates to far more than it claims: its diff_id is the digest of garbage,
    # so the read must stop at a bound or at the digest check, never fill the disk
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # 64 MiB of zeros in ~64 KiB
    layout = Layout(tmp_path / "layout")
    config = {"architecture": "amd64", "os": "linux", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [_sha(b"not the content")]}, "history": []}
    spec = layout.image([bomb], config=config)
    manifest = json.loads((layout.root / "blobs/sha256" / layout_top(layout)[7:]).read_bytes())
    manifest["layers"][0]["mediaType"] = OCI_LAYER_TAR + "+gzip"
    spec = layout.tag(json.dumps(manifest).encode(), OCI_MANIFEST)

    proc = _build_on(dockwright, spec, tmp_path, "--chown", "app:app", check=False)

    assert_user_error(proc)
    assert not (tmp_path / "out.tar").exists()


def layout_top(layout: Layout) -> str:
    return json.loads((layout.root / "index.json").read_text())["manifests"][0]["digest"]


@pytest.mark.parametrize(
    ("document", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "object"),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "manifests": [], "layers": []}).encode(),
         "both"),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
                     "config": {"mediaType": OCI_CONFIG, "digest": "sha256:../../../etc/passwd", "size": 1}}
                    ).encode(), "invalid digest"),
        (b'{"schemaVersion": 2, "layers": [' + b'{"a": 1},' * 500_000 + b'{}]}', "larger than"),
    ],
    ids=["malformed-json", "not-an-object", "manifest-and-index", "invalid-digest", "oversized"],
)
def test_malformed_base_manifests_are_refused(
    dockwright: RunDockwright, tmp_path: Path, document: bytes, needle: str,
) -> None:
    spec = Layout(tmp_path / "layout").tag(document, OCI_MANIFEST)

    proc = _build_on(dockwright, spec, tmp_path, check=False)

    assert_user_error(proc, needle)
    assert not (tmp_path / "out.tar").exists()


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"architecture": "amd64", "os": "linux"}, "rootfs"),
        ({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": ["sha256:zz"]}},
         "invalid digest"),
        ({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "config": []},
         "config"),
    ],
    ids=["no-rootfs", "bad-diff-id", "config-not-object"],
)
def test_malformed_base_configs_are_refused(
    dockwright: RunDockwright, tmp_path: Path, config: dict[str, Any], needle: str,
) -> None:
    spec = Layout(tmp_path / "layout").image([], config=config)

    proc = _build_on(dockwright, spec, tmp_path, check=False)

    assert_user_error(proc, needle)


def test_an_invalid_digest_in_the_layout_index_is_refused_before_any_path_use(
    dockwright: RunDockwright, tmp_path: Path,
) -> None:
    layout = Layout(tmp_path / "layout")
    spec = layout.tag(b"{}", OCI_MANIFEST, digest="sha256:../../../../etc/passwd")

    proc = _build_on(dockwright, spec, tmp_path, check=False)

    assert_user_error(proc, "invalid digest")


def _docker_archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    ("manifest_json", "needle"),
    [
        (b"not json", "manifest.json"),
        (json.dumps([{"Config": "../../etc/passwd", "Layers": []}]).encode(), "../../etc/passwd"),
        (json.dumps([{"Config": "config.json", "Layers": ["/etc/shadow"]}]).encode(), "/etc/shadow"),
    ],
    ids=["malformed", "config-escapes", "layer-absolute"],
)
def test_hostile_docker_archives_are_refused(
    dockwright: RunDockwright, tmp_path: Path, manifest_json: bytes, needle: str,
) -> None:
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [_sha(b"x")]}}).encode()
    archive = _docker_archive(tmp_path / "base.tar", {"manifest.json": manifest_json, "config.json": config})

    proc = _build_on(dockwright, f"docker-archive://{archive}", tmp_path, check=False)

    assert_user_error(proc, needle)


def test_a_docker_archive_base_with_escaping_layer_paths_never_touches_the_host(
    dockwright: RunDockwright, busybox_files: BusyboxBase, tmp_path: Path,
) -> None:
    layer = _tar([(_entry("etc/", tarfile.DIRTYPE, mode=0o755), None), (_entry("etc/passwd"), PASSWD),
                  (_entry("etc/group"), GROUP), (_entry("../../../docker-escaped.txt"), SECRET),
                  (_entry("etc/hosts", tarfile.SYMTYPE, link="/../../../../etc/hosts"), None)])
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [_sha(layer)]}}).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": ["evil:1"], "Layers": ["layer.tar"]}]).encode()
    archive = _docker_archive(tmp_path / "base.tar",
                              {"manifest.json": manifest, "config.json": config, "layer.tar": layer})

    proc = _build_on(dockwright, f"docker-archive://{archive}", tmp_path, "--chown", "app", check=False)

    assert not (tmp_path.parent / "docker-escaped.txt").exists()
    assert not Path("/docker-escaped.txt").exists()
    assert_user_error(proc, "../../../docker-escaped.txt", "outside the image root")


# ---------------------------------------------------------------------------------------------- references and flags


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--from", "Not A Reference!"], "Not A Reference!"),
        (["--from", "registry.example.com/UPPER/case:1"], "UPPER"),
        (["--from", "scratch", "-t", "bad tag::x", "--push"], "bad tag::x"),
        (["--from", "scratch", "--platform", "linux/nonsense-arch/v99/extra"], "linux/nonsense-arch/v99/extra"),
        (["--from", "scratch", "-o", "type=oci,dest=same.tar", "-o", "type=docker,dest=same.tar"], "same"),
        (["--from", "scratch", "-o", "type=floppy,dest=x"], "floppy"),
        (["--from", "scratch", "--platform", "linux/amd64,linux/arm64", "-o", "type=docker,dest=x.tar"],
         "--platform"),
    ],
    ids=["garbage-ref", "uppercase-repo", "bad-tag", "unknown-platform", "same-dest", "unknown-output",
         "multi-platform-docker-archive"],
)
def test_bad_arguments_are_named_in_the_error(
    dockwright: RunDockwright, tmp_path: Path, args: list[str], needle: str,
) -> None:
    proc = dockwright("build", _app_context(tmp_path), *args, "--copy", "app.txt:/a", cwd=tmp_path, check=False)

    assert_user_error(proc, needle)
    assert proc.returncode == 2
