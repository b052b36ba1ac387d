"""Docker parity on real inputs (issue 11), seen from a running container or from skopeo: --entrypoint
resets the base's CMD, named build contexts replace stages, OCI archives as bases, --ignore-file."""

from __future__ import annotations

from pathlib import Path

import pytest
from build_checks import EPOCH_ENV, assert_user_error, cache_args, make_app
from conftest import RunDockwright
from images import BusyboxBase, run_oci_image, sh


@pytest.mark.requires("runc")
def test_entrypoint_resets_the_base_cmd_in_flags_mode(dockwright: RunDockwright, busybox_files: BusyboxBase,
                                                      tmp_path: Path) -> None:
    """The busybox base's config has CMD ["sh"]: with --entrypoint alone the container gets no arguments
    (Docker's rule), with --cmd as well it gets those."""
    context = make_app(tmp_path / "context")
    base = f"oci-layout://{busybox_files.layout}:latest"
    for name, extra, args in (("alone", [], "args="), ("with-cmd", ["--cmd", '["one", "two"]'], "args=one two")):
        layout = tmp_path / name
        dockwright("build", context, "--from", base, "--copy", "app:/app", "--entrypoint", '["/app/hello.sh"]',
                   *extra, "-t", "example.com/app:1", "-o", f"type=oci,dest={layout},tar=false",
                   *cache_args(tmp_path), env=EPOCH_ENV)
        assert args + "\n" in run_oci_image(layout, "1", tmp_path)
    dry = dockwright("build", context, "--from", base, "--entrypoint", '["/app/hello.sh"]', "--dry-run").stdout
    assert "CMD []" in dry


@pytest.mark.requires("runc")
def test_variable_modifiers_on_build_args_and_on_the_base_images_env(dockwright: RunDockwright,
                                                                      busybox_files: BusyboxBase,
                                                                      tmp_path: Path) -> None:
    """${v#p} ${v%%p} ${v/p/r} ${v//p/r} as BuildKit expands them (buildah 1.28 refuses these modifiers, so the
    expected values are BuildKit's documented ones): on an ARG (hugo's DART_ARCH) and on the base's PATH,
    which is only known at build time."""
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM oci-layout://{busybox_files.layout}:latest\n"
        "ARG TARGETARCH\nARG DART_ARCH=${TARGETARCH/amd64/x64}\nARG FILE=app.tar.gz\n"
        "ENV DART=${DART_ARCH} STEM=${FILE%%.*} EXT=${FILE#*.} FIRST=${PATH%%:*} SPACED=\"${PATH//:/ }\" "
        "LAST=${PATH##*/}\n")
    layout = tmp_path / "layout"
    dockwright("build", context, "--platform", "linux/amd64", "-t", "example.com/mods:1",
               "-o", f"type=oci,dest={layout},tar=false", *cache_args(tmp_path), env=EPOCH_ENV)
    env = run_oci_image(layout, "1", tmp_path, ["env"]).splitlines()
    for line in ("DART=x64", "STEM=app", "EXT=tar.gz", "FIRST=/usr/local/sbin", "LAST=bin",
                 "SPACED=/usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin"):
        assert line in env, env


@pytest.mark.requires("runc")
def test_ignore_file_replaces_the_contexts_dockerignore(dockwright: RunDockwright, busybox_files: BusyboxBase,
                                                        tmp_path: Path) -> None:
    """A Node project whose .dockerignore leaves node_modules out (for its own `docker build`) ships them with
    --ignore-file; in Dockerfile mode a <Dockerfile>.dockerignore still wins over --ignore-file."""
    context = tmp_path / "context"
    (context / "node_modules" / "left-pad").mkdir(parents=True)
    (context / "node_modules" / "left-pad" / "index.js").write_text("module.exports = 1\n")
    (context / "index.js").write_text("console.log(1)\n")
    (context / "debug.log").write_text("noise\n")
    (context / ".dockerignore").write_text("node_modules\n")
    ship = tmp_path / "ship.ignore"
    ship.write_text("*.log\n.dockerignore\n")
    base = f"oci-layout://{busybox_files.layout}:latest"
    listing = ["sh", "-c", "cd /app && find . -type f | sort"]

    def files(*args: str) -> list[str]:
        layout = tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}"
        dockwright("build", context, *args, "-t", "example.com/node:1", "-o", f"type=oci,dest={layout},tar=false",
                   *cache_args(tmp_path), env=EPOCH_ENV)
        return run_oci_image(layout, "1", tmp_path, listing).split()

    assert files("--from", base, "--copy", ".:/app") == ["./.dockerignore", "./debug.log", "./index.js"]
    assert files("--from", base, "--copy", ".:/app", "--ignore-file", str(ship)) == [
        "./index.js", "./node_modules/left-pad/index.js"]
    (context / "Dockerfile").write_text(f"FROM {base}\nCOPY . /app\n")
    assert "./node_modules/left-pad/index.js" in files("--ignore-file", str(ship))
    (context / "Dockerfile.dockerignore").write_text("node_modules\nDockerfile*\n")
    assert files("--ignore-file", str(ship)) == ["./.dockerignore", "./debug.log", "./index.js"]


@pytest.mark.requires("runc")
def test_oci_archives_as_bases(dockwright: RunDockwright, busybox_files: BusyboxBase, tmp_path: Path) -> None:
    """dockwright's own `-o type=oci` output and skopeo's oci-archive: are bases (--from and FROM), read in
    place; a docker-archive:// that is an OCI archive, and the reverse, say which they are."""
    context = make_app(tmp_path / "context")
    first = tmp_path / "first.tar"
    dockwright("build", context, "--from", f"oci-layout://{busybox_files.layout}:latest", "--copy", "app:/app",
               "-t", "example.com/first:1", "-o", f"type=oci,dest={first}", *cache_args(tmp_path), env=EPOCH_ENV)
    skopeo_made = tmp_path / "skopeo.tar"
    sh("skopeo", "copy", f"oci:{busybox_files.layout}:latest", f"oci-archive:{skopeo_made}:base")
    (context / "second.txt").write_text("second\n")
    (context / "Dockerfile").write_text(f"FROM oci-archive://{first}\nCOPY second.txt /second.txt\n")
    for name, args in (("flags", ["--from", f"oci-archive://{first}", "--copy", "second.txt:/second.txt"]),
                       ("skopeo", ["--from", f"oci-archive://{skopeo_made}:base", "--copy", "app:/app"]),
                       ("dockerfile", [])):
        layout = tmp_path / f"out-{name}"
        dockwright("build", context, *args, "-t", "example.com/second:1", "-o", f"type=oci,dest={layout},tar=false",
                   *cache_args(tmp_path), env=EPOCH_ENV)
        shown = run_oci_image(layout, "1", tmp_path, ["sh", "-c", "cat /app/data.txt /second.txt 2>&1; id -un app"])
        assert "some data\n" in shown and "app\n" in shown, (name, shown)
        assert ("second\n" in shown) == (name != "skopeo"), (name, shown)
    wrong = dockwright("build", context, "--from", f"docker-archive://{skopeo_made}", "--copy", "app:/app",
                       "-o", f"type=oci,dest={tmp_path / 'x.tar'}", *cache_args(tmp_path), check=False)
    assert wrong.returncode == 2 and "is an OCI archive, not a docker-archive" in wrong.stderr, wrong.stderr
    assert f"use oci-archive://{skopeo_made}" in wrong.stderr
    assert_user_error(wrong, "is an OCI archive, not a docker-archive")  # one error line, exit 2, no traceback
    wrong = dockwright("build", context, "--from", f"oci-archive://{busybox_files.archive}", "--copy", "app:/app",
                       "-o", f"type=oci,dest={tmp_path / 'x.tar'}", *cache_args(tmp_path), check=False)
    assert wrong.returncode == 2 and "is a docker-archive, not an OCI archive" in wrong.stderr, wrong.stderr
    assert_user_error(wrong, "is a docker-archive, not an OCI archive")


BUILDER_DOCKERFILE = """\
FROM golang:1.22 AS build
WORKDIR /src
COPY . .
RUN go build -o /out/app .

FROM busybox
COPY --from=build /out/app /app
ENTRYPOINT ["/app"]
"""


@pytest.mark.requires("runc")
def test_named_contexts_replace_a_builder_stage_and_a_base(dockwright: RunDockwright, busybox_base: BusyboxBase,
                                                           tmp_path: Path) -> None:
    """Three in ten real Dockerfiles compile in a builder stage and COPY --from it: with --build-context
    build=./out that stage (golang, RUN go build) is neither pulled, run nor refused; the directory is its
    root file system, read as a context (its .dockerignore applies, no symlink leads out). busybox comes
    from an oci-layout:// context, and then a builder from a docker-image:// one."""
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(BUILDER_DOCKERFILE)
    out = tmp_path / "ci-output"
    (out / "out").mkdir(parents=True)
    app = out / "out" / "app"
    app.write_text("#!/bin/sh\necho built by CI \"$@\"\nls /extra 2>/dev/null\nexit 0\n")
    app.chmod(0o755)
    base = ["--build-context", f"busybox=oci-layout://{busybox_base.layout}:latest"]

    def build_and_run(*args: str) -> str:
        layout = tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}"
        dockwright("build", context, *base, *args, "-t", "example.com/app:1",
                   "-o", f"type=oci,dest={layout},tar=false", *cache_args(tmp_path), env=EPOCH_ENV)
        return run_oci_image(layout, "1", tmp_path)

    assert build_and_run("--build-context", f"build={out}") == "built by CI\n"

    (out / ".dockerignore").write_text("out/secret.txt\n")
    (out / "out" / "secret.txt").write_text("not for the image\n")
    (context / "Dockerfile").write_text(BUILDER_DOCKERFILE.replace(
        'ENTRYPOINT ["/app"]', "COPY --from=build /out/ /extra/\nENTRYPOINT [\"/app\"]"))
    assert build_and_run("--build-context", f"build={out}") == "built by CI\napp\n"

    (out / "out" / "etc").symlink_to("/etc")
    (context / "Dockerfile").write_text(BUILDER_DOCKERFILE.replace("/out/app /app", "/out/etc/passwd /app"))
    escape = dockwright("build", context, *base, "--build-context", f"build={out}", "-o",
                        f"type=oci,dest={tmp_path / 'no.tar'}", *cache_args(tmp_path), check=False)
    assert escape.returncode != 0 and "Traceback" not in escape.stderr, escape.stderr
    assert_user_error(escape, "Dockerfile:7: COPY source '/out/etc/passwd' resolves to /etc/passwd, outside the build "
                      f"context {out}")
    assert not (tmp_path / "no.tar").exists()

    entrypoint = 'ENTRYPOINT ["/opt/busybox", "echo", "from image"]'
    (context / "Dockerfile").write_text(BUILDER_DOCKERFILE.replace("/out/app /app", "/bin/busybox /opt/busybox")
                                        .replace('ENTRYPOINT ["/app"]', entrypoint))
    assert build_and_run("--build-context", f"build=docker-image://{busybox_base.oci_ref}") == "from image\n"
