"""What the `dockwright build` integration tests check again and again: a small app to build, the
common build options, reading results back with skopeo, the registry's access log, and what a
failed build must look like to a user."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from images import pull_to_layout, run_oci_image, sh
from servers import RegistryServer

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

EPOCH = "1700000000"  # SOURCE_DATE_EPOCH of every build here: 2023-11-14T22:13:20Z
EPOCH_ENV = {"SOURCE_DATE_EPOCH": EPOCH}
DIGEST_LINE = re.compile(r"^(?P<ref>\S+)@(?P<digest>sha256:[0-9a-f]{64})$")

HELLO = """#!/bin/sh
echo "greeting=$GREETING"
echo "uid=$(id -u) gid=$(id -g)"
echo "pwd=$(pwd)"
echo "args=$*"
"""


def make_app(root: Path) -> Path:
    """A build context with `app/hello.sh` (prints $GREETING, its uid/gid, cwd and arguments)
    and `app/data.txt`; returns the context directory."""
    app = root / "app"
    app.mkdir(parents=True)
    script = app / "hello.sh"
    script.write_text(HELLO)
    script.chmod(0o755)
    (app / "data.txt").write_text("some data\n")
    return root


def dockerfile_context(tmp_path: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    """tmp_path/context holding `dockerfile` as its Dockerfile and `files` (name -> text)."""
    context = tmp_path / "context"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text(text)
    return context


def cache_args(tmp_path: Path, name: str = "cache") -> list[str]:
    """`--cache-dir` under the test's directory, so no test touches ~/.cache."""
    return ["--cache-dir", str(tmp_path / name)]


def build_and_run(dockwright: Any, context: Path, ref: str, tmp_path: Path, *extra: str) -> list[str]:
    """Build `context` (its Dockerfile), push to `ref`, pull with skopeo and run with runc: the output lines."""
    dockwright("build", context, "-t", ref, "--push", *cache_args(tmp_path), *extra, env=EPOCH_ENV)
    return run_pushed(ref, tmp_path)


def run_pushed(ref: str, tmp_path: Path, *args: str) -> list[str]:
    """Pull the pushed image `ref` into a new layout under tmp_path and run it with runc (its Entrypoint +
    Cmd, or `args`): the output lines."""
    layout = pull_to_layout(ref, tmp_path / f"pulled-{len(list(tmp_path.glob('pulled-*')))}", "app")
    return run_oci_image(layout, "app", tmp_path, list(args) or None).splitlines()


def pushed_rootfs(ref: str, tmp_path: Path, name: str = "image") -> Path:
    """Pull the pushed image `ref` (or copy any skopeo source, e.g. `oci-archive:FILE`) and unpack its file
    system under tmp_path: the root directory."""
    layout = pull_to_layout(ref, tmp_path / f"{name}-layout", "app")
    rootfs = tmp_path / f"{name}-rootfs"
    sh("umoci", "raw", "unpack", "--image", f"{layout}:app", rootfs)
    return rootfs


def digest_lines(stdout: str) -> list[tuple[str, str]]:
    """The `REF@sha256:...` lines of a build's stdout as (ref, digest); fails on any other line."""
    lines = stdout.splitlines()
    matches = [DIGEST_LINE.match(line) for line in lines]
    assert all(matches), f"stdout should hold only REF@sha256:... lines, got:\n{stdout}"
    return [(m["ref"], m["digest"]) for m in matches if m]


def skopeo_json(*args: str) -> dict[str, Any]:
    """`skopeo ARGS` (no TLS verification for docker:// references) parsed as JSON."""
    return json.loads(sh("skopeo", *args))


def raw_manifest(ref: str) -> dict[str, Any]:
    return skopeo_json("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")


def image_config(ref: str, *extra: str) -> dict[str, Any]:
    return skopeo_json("inspect", "--config", "--tls-verify=false", *extra, f"docker://{ref}")


def requests(server: RegistryServer, method: str, path_part: str = "") -> list[str]:
    """dockwright's requests in `server`'s access log (`METHOD /v2/...`, other clients such as the
    skopeo that seeded the base left out) with this method and `path_part` in the URL-decoded path."""
    found = re.findall(r'"([A-Z]+) (/v2/\S*) HTTP/[0-9.]+" \d+ \d+ "[^"]*" "dockwright/', server.log_text())
    return [f"{m} {unquote(p)}" for m, p in found if m == method and path_part in unquote(p)]


def tag_exists(server: RegistryServer, repository: str) -> bool:
    """Whether `repository` has any tag (skopeo list-tags fails for an unknown repository)."""
    creds = ["--creds", f"{server.username}:{server.password}"] if server.username else []
    proc = subprocess.run(
        ["skopeo", "list-tags", "--tls-verify=false", *creds, f"docker://{server.host}/{repository}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode == 0 and bool(json.loads(proc.stdout).get("Tags"))


def corrupt_blob(server: RegistryServer, digest: str) -> None:
    """Change bytes of a stored blob, keeping its size: only a digest check can notice."""
    path = server.blob_data_path(digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def assert_user_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """A failure as a user should see it: non-zero exit, nothing on stdout, an `error:` line that
    holds every needle (an optional `hint:` line after it) and no Python traceback. Returns the line."""
    assert proc.returncode != 0, f"expected a failure, got exit 0\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == "", proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, f"expected exactly one error line:\n{proc.stderr}"
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in the error line: {errors[0]}"
    return errors[0]


def hint_of(proc: subprocess.CompletedProcess[str]) -> str:
    """The text of a failure's one `hint:` line (printed after its error line)."""
    hints = [line.removeprefix("  hint: ") for line in proc.stderr.splitlines() if line.startswith("  hint: ")]
    assert len(hints) == 1, f"expected exactly one hint line:\n{proc.stderr}"
    return hints[0]


def assert_output_tail(proc: subprocess.CompletedProcess[str], lines: list[str]) -> None:
    """After a failed RUN's error line come exactly `lines`, the last lines of the command's output, two spaces in."""
    tail = proc.stderr[proc.stderr.index("error: "):].splitlines()
    assert tail[1:] == [f"  {line}" for line in lines], proc.stderr


def run_leftovers(cache: Path) -> list[str]:
    """What a RUN could leave behind: mounts, containers, temporary directories in the cache."""
    mounts = [line for line in Path("/proc/mounts").read_text().splitlines() if str(cache) in line]
    listed = json.loads(sh("runc", "list", "--format", "json") or "null") or []
    containers = [c["id"] for c in listed if str(cache) in c.get("bundle", "")]  # other builds may run here too
    temps = [p.name for p in (cache / "rootfs").glob("tmp-*")] + [p.name for p in (cache / "tmp").glob("*")]
    return mounts + containers + temps


@contextlib.contextmanager
def cancel_on_log(message: str) -> Iterator[threading.Event]:
    """An Event for the library's `cancel=`, set once dockwright logs `message` (e.g. a RUN's first output
    line `#1 started`), so a test cancels a build while its command runs."""
    cancel = threading.Event()

    class _SetOnMessage(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == message:
                cancel.set()

    handler = _SetOnMessage()
    logger = logging.getLogger("dockwright")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield cancel
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
