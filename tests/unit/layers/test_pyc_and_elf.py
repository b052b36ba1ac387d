"""What the layer writer does with Python bytecode (layers/pyc.py) and ELF binaries (layers/elf.py):
real .pyc files from py_compile and real ELF binaries from the host, written and read back."""

from __future__ import annotations

import logging
import os
import py_compile
import shutil
import sys
from pathlib import Path

import pytest

from dockwright.cache import Cache
from dockwright.executor import Builder
from dockwright.frontends import flags
from dockwright.layers import elf
from dockwright.layers.compress import Compression
from dockwright.layers.copy import CopySettings, collect_copy
from dockwright.layers.rootfs import iter_layer
from dockwright.layers.tar import fingerprint, write_layer
from dockwright.plan import BuildOptions

EPOCH = 1_700_000_000
HOST_ELF = Path(sys.executable).resolve()  # a real ELF executable for the host's machine


def _layer(context: Path, tmp_path: Path, mtime: int = EPOCH) -> dict[str, tuple[int, bytes]]:
    """COPY app /app, written and read back: {in-image path: (mtime, content)} for files."""
    entries = collect_copy(context, ["app"], "/app", CopySettings(mtime=mtime))
    blob = write_layer(entries, tmp_path / "layer.tar.gz", Compression())
    return {m.name: (m.mtime, content.read()) for m, content in iter_layer([blob.path.read_bytes()])
            if content is not None}


def _header(pyc: bytes) -> tuple[int, int, int]:
    """(flags, recorded source mtime, recorded source size) of a .pyc."""
    return tuple(int.from_bytes(pyc[i : i + 4], "little") for i in (4, 8, 12))  # type: ignore[return-value]


def _app(root: Path) -> Path:
    pkg = root / "app" / "pkg"
    pkg.mkdir(parents=True)
    for name, text in (("fresh", "A = 1\n"), ("checked", "B = 2\n"), ("stale", "C = 3\n"), ("legacy", "D = 4\n")):
        (pkg / f"{name}.py").write_text(text)
    py_compile.compile(str(pkg / "fresh.py"), doraise=True)
    py_compile.compile(str(pkg / "checked.py"), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    py_compile.compile(str(pkg / "stale.py"), doraise=True)
    py_compile.compile(str(pkg / "legacy.py"), cfile=str(pkg / "legacy.pyc"), doraise=True)
    (pkg / "stale.py").write_text("C = 3  # edited after compiling\n")
    (root / "app" / "notes.pyc").write_bytes(b"not bytecode at all")
    return root


@pytest.mark.parametrize("mtime", [EPOCH, 0, 2**32 + 5])
def test_timestamp_pycs_that_match_their_source_record_the_layers_mtime(tmp_path: Path, mtime: int) -> None:
    context = _app(tmp_path / "context")
    host = {p.name: p.read_bytes() for p in (context / "app").rglob("*.pyc")}
    files = _layer(context, tmp_path, mtime)
    tag = sys.implementation.cache_tag
    for name in ("fresh", "legacy"):
        pyc = files[f"app/pkg/__pycache__/{name}.{tag}.pyc" if name == "fresh" else f"app/pkg/{name}.pyc"][1]
        source_mtime, source = files[f"app/pkg/{name}.py"]
        assert _header(pyc) == (0, source_mtime & 0xFFFFFFFF, len(source))  # what CPython checks
        assert pyc[16:] == host[pyc_name(name, tag)][16:]  # the code itself is untouched
    for untouched in (f"app/pkg/__pycache__/checked.{tag}.pyc", f"app/pkg/__pycache__/stale.{tag}.pyc",
                      "app/notes.pyc"):  # hash-based, stale on the host already, not bytecode
        assert files[untouched][1] == host[untouched.rpartition("/")[2]]


def pyc_name(name: str, tag: str) -> str:
    return f"{name}.{tag}.pyc" if name == "fresh" else f"{name}.pyc"


def test_pyc_rewriting_is_reproducible_and_in_the_fingerprint(tmp_path: Path) -> None:
    context = _app(tmp_path / "context")
    settings = CopySettings(mtime=EPOCH)
    first = write_layer(collect_copy(context, ["app"], "/app", settings), tmp_path / "1", Compression())
    second = write_layer(collect_copy(context, ["app"], "/app", settings), tmp_path / "2", Compression())
    assert first.digest == second.digest
    entries = [e for e in collect_copy(context, ["app"], "/app", settings) if not e.path.endswith(".py")]
    before = fingerprint(entries, Compression())
    os.utime(context / "app" / "pkg" / "fresh.py", (EPOCH, EPOCH))  # the .py is not in these entries
    assert fingerprint(entries, Compression()) != before


def test_elf_machine_keys_from_real_headers(tmp_path: Path) -> None:
    head = HOST_ELF.read_bytes()[: elf.HEAD]
    key = elf.machine(head)
    assert key is not None and elf.architecture(key) in ("amd64", "arm64")
    arm = bytearray(head)
    arm[18:20] = (183).to_bytes(2, "little")  # EM_AARCH64
    assert elf.architecture(elf.machine(bytes(arm)) or "") == "arm64"
    relocatable = bytearray(head)
    relocatable[16:18] = (1).to_bytes(2, "little")  # ET_REL: an object file, not run
    assert elf.machine(bytes(relocatable)) is None
    assert elf.machine(b"#!/bin/sh\necho hi\n  ") is None
    assert elf.foreign({"2:62": ["bin/x"], "1:3": ["lib32/y.so"]}, "amd64") == []
    assert elf.foreign({"2:62": ["bin/x"]}, "arm64") == [("bin/x", "amd64")]


def test_the_writer_records_executables_and_shared_libraries_only(tmp_path: Path) -> None:
    bin_dir = tmp_path / "context" / "app"
    bin_dir.mkdir(parents=True)
    shutil.copy(HOST_ELF, bin_dir / "tool")  # executable (large: streamed)
    small = HOST_ELF.read_bytes()[:4096]
    (bin_dir / "libx.so.1").write_bytes(small)  # a shared library by name, small: read whole
    (bin_dir / "data.bin").write_bytes(small)  # not executable, not *.so*: not looked at
    (bin_dir / "script").write_text("#!/bin/sh\n")
    os.chmod(bin_dir / "script", 0o755)
    blob = write_layer(collect_copy(tmp_path / "context", ["app"], "/app"), tmp_path / "l", Compression())
    key = elf.machine(small[: elf.HEAD])
    assert blob.machines == {key: ["app/libx.so.1", "app/tool"]}


def test_a_build_warns_per_platform_about_foreign_binaries(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    context = tmp_path / "context"
    (context / "bin").mkdir(parents=True)
    shutil.copy(HOST_ELF, context / "bin" / "tool")
    host_arch = elf.architecture(elf.machine(HOST_ELF.read_bytes()[: elf.HEAD]) or "")
    other = "arm64" if host_arch == "amd64" else "amd64"
    plan = flags.plan_from_flags(context, "scratch", ["bin:/bin"], flags.config_edit())
    cache = Cache(tmp_path / "cache")
    for _ in range(2):  # built, then from the cache: the warning comes both times
        caplog.clear()
        options = BuildOptions(platforms=f"linux/{host_arch},linux/{other}")
        with caplog.at_level(logging.WARNING, logger="dockwright"):
            Builder(options, cache, None, tmp_path).build(lambda platform: plan)
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
            f"/bin/tool is an ELF binary for {host_arch}, but the image is for linux/{other}: it will not run there"]
