"""The README's first command, verbatim, makes an image that runs (issue 12 item 9): runc prints what the
bundled program says. The example's Dockerfile makes the same program run, and the committed binary is
what examples/hello/make_hello.py writes."""

from __future__ import annotations

import importlib.util
import platform
import re
import shlex
import shutil
import tarfile
from pathlib import Path

import pytest
from build_checks import skopeo_json
from conftest import RunDockwright
from images import run_oci_image

ROOT = Path(__file__).resolve().parents[2]
GREETING = "Hello from a dockwright image!\n"
pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                                reason="the example program is x86-64 machine code")


def readme_first_command() -> list[str]:
    """The dockwright part of the first command of the README's "Set up and try it" section."""
    section = (ROOT / "README.md").read_text().split("## Set up and try it", 1)[1]
    block = re.search(r"```sh\n(.*?)\n```", section, re.S)
    assert block is not None
    words = shlex.split(block.group(1))
    assert words[:3] == ["pip", "install", "-e"] and "&&" in words
    command = words[words.index("&&") + 1:]
    assert command[:2] == ["dockwright", "build"]
    return command[1:]


def _unpack(archive: Path, where: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(where, filter="data")
    return where


def test_the_readmes_first_command_makes_an_image_that_runs(dockwright: RunDockwright, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    dockwright(*readme_first_command(), cwd=tmp_path)

    archive = tmp_path / "hello.oci.tar"
    config = skopeo_json("inspect", "--config", f"oci-archive:{archive}")
    assert (config["architecture"], config["config"]["Cmd"]) == ("amd64", ["/hello"])
    assert run_oci_image(_unpack(archive, tmp_path / "layout"), "1", tmp_path) == GREETING


def test_the_examples_dockerfile_makes_the_same_program_run(dockwright: RunDockwright, tmp_path: Path) -> None:
    dockwright("build", ROOT / "examples" / "hello", "--platform", "linux/amd64", "-t", "hello:df",
               "-o", f"type=oci,dest={tmp_path / 'df.tar'}")
    assert run_oci_image(_unpack(tmp_path / "df.tar", tmp_path / "layout"), "df", tmp_path) == GREETING


def test_the_committed_program_is_what_make_hello_writes() -> None:
    spec = importlib.util.spec_from_file_location("make_hello", ROOT / "examples" / "hello" / "make_hello.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "examples" / "hello" / "hello").read_bytes() == module.program()
