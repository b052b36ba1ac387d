"""The Python library, as its users call it: the contract script of issue 10 from a worker thread against a
real registry, the same digest through the library and the command line, builds in two threads sharing a
cache, and cancellation that stops a transfer and leaves nothing behind."""

from __future__ import annotations

import json
import os
import tarfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from build_checks import EPOCH, EPOCH_ENV, digest_lines, tag_exists
from conftest import RunDockwright
from faultproxy import FaultProxy
from images import BusyboxBase, pull_to_layout, run_oci_image, sh
from servers import RegistryServer

import dockwright
from dockwright.progress import Progress

HELLO = '#!/bin/sh\necho "hello $GREETING from $(pwd) as $(id -u)"\n'


def _context(root: Path, base: str) -> Path:
    (root / "app").mkdir(parents=True)
    script = root / "app" / "hello.sh"
    script.write_text(HELLO)
    script.chmod(0o755)
    (root / "Dockerfile").write_text(
        f"FROM {base}\nARG GREETING\nENV GREETING=$GREETING\nCOPY app /app\nWORKDIR /app\n"
        'ENTRYPOINT ["/bin/sh", "/app/hello.sh"]\n')
    return root


@pytest.fixture
def base_1(busybox_base: BusyboxBase, registry: RegistryServer) -> str:
    """The busybox base under the contract's name, REG/base:1."""
    sh("skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
       f"docker://{busybox_base.oci_ref}", f"docker://{registry.host}/base:1")
    return f"{registry.host}/base:1"


@pytest.fixture(autouse=True)
def _epoch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.mark.requires("runc", "umoci", "skopeo")
def test_the_contract_script_runs_from_a_worker_thread(
    registry: RegistryServer, base_1: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _context(tmp_path / "ctx", base_1)
    (tmp_path / "out").mkdir()
    REG = registry.host

    def job(out: dict[str, Any]) -> None:
        base = dockwright.pull(f"{REG}/base:1")
        layer = dockwright.Layer.from_directory("ctx/app", "/app", chown="1000:1000")
        img = base.append(layer).with_config(
            entrypoint=["/bin/sh", "/app/hello.sh"], env={"GREETING": "world"}, workdir="/app")
        out["ref"] = dockwright.push(img, f"{REG}/app:api")
        dockwright.save(img, "out/app.oci.tar", format="oci")
        dockwright.save(img, "out/app.tar", format="docker", tags=["example/app:api"])
        out["digest"] = img.digest
        built = dockwright.build("ctx", build_args={"GREETING": "there"})
        out["built"] = dockwright.push(built, f"{REG}/app:df")
        try:
            dockwright.pull(f"{REG}/nope:1")
        except dockwright.DockwrightError as e:
            out["error"] = str(e)

    out: dict[str, Any] = {}
    thread = threading.Thread(target=job, args=(out,))
    thread.start()
    thread.join()

    assert out["ref"] == f"{REG}/app:api@{out['digest']}"
    assert out["digest"].startswith("sha256:")
    assert "nope" in out["error"]
    ran = run_oci_image(pull_to_layout(f"{REG}/app:api", tmp_path / "pulled", "api"), "api", tmp_path)
    assert ran.strip() == "hello world from /app as 0"
    ran = run_oci_image(pull_to_layout(out["built"].split("@")[0], tmp_path / "pulled", "df"), "df", tmp_path)
    assert ran.strip() == "hello there from /app as 0"
    # the archives hold the same image, and the tools read them
    oci = run_oci_image(pull_to_layout(f"oci-archive:{tmp_path / 'out/app.oci.tar'}", tmp_path / "o", "x"),
                        "x", tmp_path)
    assert oci.strip() == "hello world from /app as 0"
    with tarfile.open(tmp_path / "out/app.tar") as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["example/app:api"]
    assert "GREETING=world" in sh("skopeo", "inspect", f"docker-archive:{tmp_path / 'out/app.tar'}")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["app.oci.tar", "app.tar"]


@pytest.mark.requires("skopeo")
def test_the_library_and_the_command_line_give_one_digest(
    dockwright: RunDockwright, registry: RegistryServer, base_1: str, tmp_path: Path
) -> None:
    context = _context(tmp_path / "ctx", base_1)
    cli = dockwright("build", context, "--from", base_1, "--copy", "app:/app", "--chown", "1000:1000",
                     "--entrypoint", '["/bin/sh", "/app/hello.sh"]', "--env", "GREETING=world", "--workdir", "/app",
                     "-t", f"{registry.host}/app:cli", "--push", env=EPOCH_ENV)
    [(_, cli_digest)] = digest_lines(cli.stdout)
    img = dockwright_api_image(base_1, context)
    assert img.digest == cli_digest
    assert img.config["config"]["Entrypoint"] == ["/bin/sh", "/app/hello.sh"]


def dockwright_api_image(base: str, context: Path) -> dockwright.Image:
    layer = dockwright.Layer.from_directory(context / "app", "/app", chown="1000:1000")
    return dockwright.pull(base).append(layer).with_config(
        entrypoint=["/bin/sh", "/app/hello.sh"], env={"GREETING": "world"}, workdir="/app")


@pytest.mark.requires("skopeo")
def test_two_builds_in_two_threads_share_a_cache_and_do_not_interfere(
    registry: RegistryServer, base_1: str, tmp_path: Path
) -> None:
    contexts = [_context(tmp_path / f"ctx{i}", base_1) for i in range(2)]
    (contexts[1] / "app" / "extra.txt").write_text("only in the second\n")
    cache = tmp_path / "shared-cache"
    results: dict[int, Any] = {}

    def job(i: int) -> None:
        try:
            image = dockwright.build(contexts[i], build_args={"GREETING": str(i)}, cache_dir=cache)
            results[i] = (image.digest, dockwright.push(image, f"{registry.host}/threads:{i}"))
        except BaseException as exc:  # surfaces in the assertion below
            results[i] = exc

    threads = [threading.Thread(target=job, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(2):
        digest, line = results[i]
        assert line == f"{registry.host}/threads:{i}@{digest}"
        again = dockwright.build(contexts[i], build_args={"GREETING": str(i)}, cache_dir=cache)
        assert again.digest == digest  # as when built alone
    assert results[0][0] != results[1][0]


class _CancelAfterFirstChunk(Progress):
    """Sets the cancel event once a transfer has moved its first chunk: a cancel in the middle of a push."""

    def __init__(self, cancel: threading.Event) -> None:
        super().__init__()
        self.cancel = cancel

    def track(self, label: str, size: int, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            yield chunk
            self.cancel.set()


@pytest.mark.requires("skopeo")
def test_cancel_stops_a_push_and_leaves_nothing(
    proxy: FaultProxy, base_1: str, registry: RegistryServer, tmp_path: Path
) -> None:
    context = tmp_path / "ctx"
    (context / "big").mkdir(parents=True)
    (context / "big" / "blob.bin").write_bytes(os.urandom(8 << 20))  # incompressible: several chunks
    proxy.throttle("PATCH", "/blobs/uploads/", 4 << 20, times=None)  # a push that takes a while
    image = dockwright.pull(base_1.replace(registry.host, proxy.host)).append(
        dockwright.Layer.from_directory(context / "big", "/big"))
    cancel = threading.Event()
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(dockwright.Cancelled):
        dockwright.publish(image, [_oci_archive(out / "app.tar"), _registry()], tags=[f"{proxy.host}/app:cancel"],
                           cancel=cancel, progress=_CancelAfterFirstChunk(cancel))
    assert not tag_exists(registry, "app")
    assert list(out.iterdir()) == []  # neither the archive nor its temporary file


def _oci_archive(path: Path) -> Any:
    from dockwright.formats.layout import OciArchive

    return OciArchive(path)


def _registry() -> Any:
    from dockwright.formats.registry import RegistryPush

    return RegistryPush()


def test_errors_are_dockwright_errors_and_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(dockwright.DockwrightError, match="does not exist"):
        dockwright.Layer.from_directory(tmp_path / "missing", "/app")
    with pytest.raises(dockwright.DockwrightError, match="octal"):
        dockwright.Layer.from_directory(tmp_path, "/app", chmod="999")
    with pytest.raises(dockwright.DockwrightError, match="no Dockerfile"):
        dockwright.build(tmp_path)
    with pytest.raises(TypeError, match="unknown option"):
        dockwright.pull("scratch", colour="blue")


def test_scratch_images_are_values(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<h1>hi</h1>\n")
    base = dockwright.pull("scratch", platform="linux/arm64")
    img = base.append(dockwright.Layer.from_directory(tmp_path / "site", "/srv")).with_config(
        cmd=["/srv/index.html"], labels={"a": "b"})
    assert base.config["rootfs"]["diff_ids"] == []  # the base is unchanged
    assert img.config["architecture"] == "arm64"
    assert img.config["config"]["Labels"] == {"a": "b"}
    assert img.with_config(labels={"c": "d"}).config["config"]["Labels"] == {"a": "b", "c": "d"}
    assert img.with_annotations(team="x").manifest["annotations"]["team"] == "x"
    assert img.digest == base.append(dockwright.Layer.from_directory(tmp_path / "site", "/srv")).with_config(
        cmd=["/srv/index.html"], labels={"a": "b"}).digest


@pytest.mark.requires("skopeo")
def test_cancel_breaks_a_request_the_registry_does_not_answer(
    proxy: FaultProxy, base_1: str, registry: RegistryServer, tmp_path: Path
) -> None:
    """A registry that holds the tag's PUT: cancelling ends the call now, not at the 60 s read timeout."""
    image = dockwright.pull(base_1.replace(registry.host, proxy.host)).with_config(env={"A": "1"})
    proxy.delay("PUT", "/manifests/", 50, times=None)
    cancel = threading.Event()
    outcome: list[BaseException | str] = []

    def job() -> None:
        try:
            outcome.append(dockwright.push(image, f"{proxy.host}/app:held", cancel=cancel))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=job, daemon=True)
    worker.start()
    while not proxy.seen("PUT", "/manifests/"):
        worker.join(0.05)
    cancel.set()
    worker.join(20)  # far below the delay and the read timeout: only a broken exchange ends this soon
    assert not worker.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], dockwright.Cancelled), outcome
    assert not tag_exists(registry, "app")


@pytest.mark.requires("skopeo")
def test_the_examples_in_docs_api_md_run(
    registry: RegistryServer, busybox_base: BusyboxBase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    """Every example of docs/api.md after the introduction, in order, with it on this test's port and
    `base:1` a two-platform busybox (`load` needs an engine: test_build_load covers it)."""
    sh("skopeo", "copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false",
       f"docker://{busybox_base.multi_ref}", f"docker://{registry.host}/base:1")
    monkeypatch.chdir(tmp_path)
    _context(tmp_path / "ctx", "localhost:5000/base:1".replace("localhost:5000", registry.host))
    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    blocks = [b for b in text.split("```python\n")[1:] if "registry.example.com" not in b.split("```")[0]]
    namespace: dict[str, Any] = {}
    for block in blocks:
        code = "\n".join(line for line in block.split("```")[0].splitlines() if "dockwright.load(" not in line)
        exec(compile(code.replace("localhost:5000", registry.host), "docs/api.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert f"{registry.host}/app:1@sha256:" in printed
    assert "manifest unknown" in printed or "not found" in printed.lower()
    assert (tmp_path / "app.oci.tar").is_file() and (tmp_path / "multi.oci.tar").is_file()
    assert namespace["index"].manifest["manifests"][1]["platform"]["architecture"] == "arm64"
