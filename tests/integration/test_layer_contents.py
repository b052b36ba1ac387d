"""What the layer writer does to contents a runtime cares about, checked with the real consumers:
CPython importing from an image's unpacked tree (bytecode stays valid), and the warning for ELF
binaries built for another machine than the image's platform."""

from __future__ import annotations

import compileall
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from build_checks import EPOCH_ENV, cache_args
from conftest import RunDockwright
from images import sh


@pytest.mark.requires("umoci")
def test_python_imports_the_images_bytecode_without_recompiling(dockwright: RunDockwright, tmp_path: Path) -> None:
    """The host's Python, run on the image's tree as umoci unpacks it (with the layer's mtimes), finds
    every .pyc fresh: `python -v` says "matches", never "bytecode is stale"."""
    app = tmp_path / "context" / "app"
    (app / "pkg").mkdir(parents=True)
    (app / "pkg" / "__init__.py").write_text("")
    (app / "pkg" / "mod.py").write_text("VALUE = 42\n")
    (app / "main.py").write_text("import pkg.mod\nprint(pkg.mod.VALUE)\n")
    assert compileall.compile_dir(app, quiet=1)
    layout = tmp_path / "layout"
    dockwright("build", tmp_path / "context", "--from", "scratch", "--copy", "app:/app", "-t", "example.com/py:1",
               "-o", f"type=oci,dest={layout},tar=false", *cache_args(tmp_path), env=EPOCH_ENV)
    rootfs = tmp_path / "rootfs"
    sh("umoci", "raw", "unpack", "--image", f"{layout}:1", rootfs)
    cached = sorted((rootfs / "app").rglob("*.pyc"))
    before = [p.read_bytes() for p in cached]

    run = subprocess.run([sys.executable, "-v", "-c", "import main"], cwd=rootfs / "app", capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(rootfs / "app")})
    assert run.stdout == "42\n"
    for module in ("pkg/__init__", "pkg/mod", "main"):
        assert f"matches {rootfs}/app/{module}.py" in run.stderr
    assert "bytecode is stale" not in run.stderr
    assert [p.read_bytes() for p in cached] == before  # nothing was recompiled and written back


def test_a_binary_for_another_machine_gets_a_warning_per_platform(dockwright: RunDockwright, tmp_path: Path) -> None:
    context = tmp_path / "context"
    (context / "bin").mkdir(parents=True)
    shutil.copy(Path(sys.executable).resolve(), context / "bin" / "python")  # an ELF for this machine
    machine = subprocess.run(["uname", "-m"], capture_output=True, text=True, check=True).stdout.strip()
    host, other = ("amd64", "arm64") if machine == "x86_64" else ("arm64", "amd64")
    result = dockwright("build", context, "--from", "scratch", "--copy", "bin:/usr/bin",
                        "--platform", f"linux/{host},linux/{other}", "-o", f"type=oci,dest={tmp_path / 'out.tar'}",
                        *cache_args(tmp_path))
    warnings = [line for line in result.stderr.splitlines() if "ELF" in line]
    assert warnings == [f"/usr/bin/python is an ELF binary for {host}, but the image is for linux/{other}: "
                        "it will not run there"]
