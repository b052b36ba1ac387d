"""Windows images are refused with one line until dockwright writes Windows layers (issue 11 item 7): a
Windows --platform, FROM --platform, or a base whose platform is Windows, never a Linux-shaped plan."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from dockwright.cli.main import main
from dockwright.formats.resolve import select_platforms
from dockwright.frontends.dockerfile import plan_from_dockerfile
from dockwright.model.documents import Descriptor, Index
from dockwright.model.errors import DockerfileError, UsageError
from dockwright.model.platform import Platform, parse_platforms

SAYS = "Windows images are not supported yet"


def _blob(root: Path, document: dict[str, object]) -> dict[str, object]:
    data = json.dumps(document).encode()
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _windows_layout(root: Path) -> Path:
    """An OCI layout holding one image whose config says windows/amd64 (nanoserver's shape, no layers)."""
    config = _blob(root, {"architecture": "amd64", "os": "windows", "os.version": "10.0.20348.2113",
                          "config": {"Cmd": ["c:\\windows\\system32\\cmd.exe"]}, "rootfs": {"type": "layers",
                                                                                          "diff_ids": []}})
    manifest = _blob(root, {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                            "layers": []})
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest}]}))
    return root


def test_a_windows_platform_is_refused() -> None:
    with pytest.raises(UsageError, match=f"{SAYS}: --platform windows/amd64 is windows/amd64"):
        parse_platforms("linux/amd64,windows/amd64")
    with pytest.raises(UsageError, match=SAYS):
        plan_from_dockerfile(Path("."), "FROM scratch\nCOPY hello.txt C:\n", platform=Platform("windows", "amd64"))
    with pytest.raises(DockerfileError, match=f"Dockerfile:1: FROM --platform=windows/amd64: {SAYS}"):
        plan_from_dockerfile(Path("."), "FROM --platform=windows/amd64 mcr.microsoft.com/windows/nanoserver:ltsc2022"
                             "\nCOPY hello.txt C:\n", platform=Platform("linux", "amd64"))


def test_an_index_with_only_windows_images_says_so() -> None:
    nanoserver = Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "a" * 64, 1,
                            platform=Platform("windows", "amd64", None, "10.0.17763.5122"))
    index = Index("application/vnd.oci.image.index.v1+json", [nanoserver])
    with pytest.raises(UsageError, match=f"{SAYS}: base mcr.microsoft.com/dotnet/runtime is windows/amd64"):
        select_platforms(index, [Platform("linux", "amd64")], "mcr.microsoft.com/dotnet/runtime", explicit=False)


@pytest.mark.parametrize("extra", [[], ["--dry-run"]])
def test_the_command_line_refuses_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                extra: list[str]) -> None:
    (tmp_path / "hello.txt").write_text("hi\n")
    argv = ["build", str(tmp_path), "--from", "scratch", "--copy", "hello.txt:C:/", "--platform", "windows/amd64"]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: {SAYS}: --platform windows/amd64 is windows/amd64", err
    assert len(err) == 2 and err[1].startswith("  hint: ")


def test_a_windows_base_is_refused_before_any_layer_is_made(capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path) -> None:
    layout = _windows_layout(tmp_path / "nanoserver")
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "hello.txt").write_text("hi\n")
    out = tmp_path / "out.tar"
    assert main(["build", str(tmp_path / "ctx"), "--from", f"oci-layout://{layout}", "--copy", "hello.txt:C:/",
                 "--cache-dir", str(tmp_path / "cache"), "-o", f"type=oci,dest={out}"]) == 2
    err = capsys.readouterr().err
    assert f"error: {SAYS}: base oci-layout://{layout} is windows/amd64" in err, err
    assert not out.exists()
