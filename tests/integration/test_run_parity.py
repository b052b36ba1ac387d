"""RUN as BuildKit does it where buildah 1.28 does otherwise, asserted directly (each test names the BuildKit
source it follows): ARG/ENV precedence and the RUN history, the supplementary groups of the command, and
more. The busybox base comes from its OCI layout; images are written to an OCI layout and read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from build_checks import cache_args, dockerfile_context
from conftest import RunDockwright
from images import BusyboxBase, run_oci_image, sh
from rootless import Unprivileged

pytestmark = pytest.mark.requires("runc")


def _build(dockwright: RunDockwright, tmp_path: Path, dockerfile: str, *args: str,
           files: dict[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    """Build `dockerfile` in tmp_path/context (written with `files` the first time) into an OCI layout: the
    build's stderr (the commands' output) and the image config."""
    out = tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}"
    context = tmp_path / "context"
    if not (context / "Dockerfile").exists():
        dockerfile_context(tmp_path, dockerfile, files)
    proc = dockwright("build", context, "-o", f"type=oci,dest={out},tar=false", *cache_args(tmp_path), *args)
    index = json.loads((out / "index.json").read_text())
    manifest = _blob(out, index["manifests"][0]["digest"])
    return proc.stderr, _blob(out, manifest["config"]["digest"])


def _blob(layout: Path, digest: str) -> dict[str, Any]:
    return json.loads((layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_text())


def test_an_arg_after_an_env_wins_and_the_history_lists_every_arg(
    dockwright: RunDockwright, busybox_files: BusyboxBase, tmp_path: Path
) -> None:
    # BuildKit, frontend/dockerfile/dockerfile2llb/convert.go: dispatchArg adds an ARG with a value to the
    # stage's env as dispatchEnv adds an ENV (the later wins, for RUN and for substitution); an ARG without
    # a value adds nothing; runCommandString writes every declared ARG into the RUN's history with its value
    # in that env, empty when it has none. (buildah lets the ENV win and lists only ARGs with values.)
    stderr, config = _build(dockwright, tmp_path, (
        f"FROM oci-layout://{busybox_files.layout}:latest\n"
        "ENV A=env B=envb\n"
        "ARG A=arg\n"
        "ARG B\n"
        "ARG C\n"
        "ARG D=d\n"
        "ENV D=envd\n"
        'RUN echo "A=$A B=$B C=${C-unset} D=$D"\n'
        "ENV FROM_A=$A\n"
    ))
    assert "#1 A=arg B=envb C=unset D=envd" in stderr.splitlines()  # the RUN's output line
    assert 'RUN |4 A=arg B=envb C= D=envd /bin/sh -c echo "A=$A B=$B C=${C-unset} D=$D" # buildkit' in \
        [entry.get("created_by") for entry in config["history"]]
    assert config["config"]["Env"][-4:] == ["A=env", "B=envb", "D=envd", "FROM_A=arg"]  # ARGs stay out of Env


def test_a_stage_from_a_stage_inherits_its_args(dockwright: RunDockwright, busybox_files: BusyboxBase,
                                               tmp_path: Path) -> None:
    # BuildKit, convert.go: dispatchState.init starts a stage FROM another with its state (ARGs in its env)
    # and its build args; the config's Env is then set over them (dispatchStages). The Docker docs' example
    # (build/building/variables, "Scoping"); buildah 1.28 does not inherit them
    stderr, config = _build(dockwright, tmp_path, (
        f"FROM oci-layout://{busybox_files.layout}:latest AS base\n"
        'ARG NAME="joe"\n'
        "ENV X=env\n"
        "ARG X=arg\n"
        "FROM base AS build\n"
        'RUN echo "hello $NAME! X=$X"\n'
        "ENV GREETING=hi-$NAME\n"
    ))
    assert "#1 hello joe! X=env" in stderr.splitlines()  # the config's X is set over the inherited ARG
    assert 'RUN |2 NAME=joe X=env /bin/sh -c echo "hello $NAME! X=$X" # buildkit' in \
        [entry.get("created_by") for entry in config["history"]]
    assert "GREETING=hi-joe" in config["config"]["Env"] and "NAME=joe" not in config["config"]["Env"]


def test_a_build_arg_from_the_base_images_env_reaches_later_substitutions(
    dockwright: RunDockwright, busybox_files: BusyboxBase, tmp_path: Path
) -> None:
    # BuildKit expands ARG P=${PATH}:/x with the base's PATH at once and $P after it is that value; dockwright
    # knows the base's Env only when it builds, and substituted an empty P into Q and E
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # the busybox base's
    stderr, config = _build(dockwright, tmp_path, (
        f"FROM oci-layout://{busybox_files.layout}:latest\n"
        "ARG P=${PATH}:/x\n"
        "ARG Q=${P}:/y\n"
        "ENV E=$P\n"
        'RUN echo "Q=$Q"\n'
    ))
    assert stderr.splitlines()[1] == f"#1 Q={path}:/x:/y"
    assert f"E={path}:/x" in config["config"]["Env"]


def test_run_mounts_a_named_context_directory(dockwright: RunDockwright, busybox_files: BusyboxBase,
                                              tmp_path: Path) -> None:
    # BuildKit, frontend/dockerfile/dockerfile2llb/convert_runmount.go: a mount's from= names a stage, an image
    # or a named context (--build-context NAME=DIR), as COPY --from does; bind and cache mounts both take it
    tools = tmp_path / "tools"
    (tools / "bin").mkdir(parents=True)
    (tools / "bin" / "greet").write_text("#!/bin/sh\necho hello from the tools context\n")
    (tools / "bin" / "greet").chmod(0o755)
    (tools / "seed").mkdir()
    (tools / "seed" / "first").write_text("seeded\n")
    dockerfile = (
        f"FROM oci-layout://{busybox_files.layout}:latest\n"
        "RUN --mount=from=tools,source=bin,target=/opt/tools "
        "--mount=type=cache,from=tools,source=seed,target=/cache,id=parity-seeded "
        "/opt/tools/greet && cat /cache/first && (touch /opt/tools/x 2>/dev/null || echo read-only)\n"
    )
    stderr, _ = _build(dockwright, tmp_path, dockerfile, "--build-context", f"tools={tools}")
    lines = stderr.splitlines()
    assert {"#1 hello from the tools context", "#1 seeded", "#1 read-only"} <= set(lines)
    (tools / "bin" / "greet").write_text("#!/bin/sh\necho changed tools\n")
    stderr, _ = _build(dockwright, tmp_path, dockerfile, "--build-context", f"tools={tools}")
    assert "#1 changed tools" in stderr.splitlines()  # what the mount binds counts for the step cache


def test_run_mounts_of_the_context_leave_out_what_dockerignore_excludes(
    dockwright: RunDockwright, busybox_files: BusyboxBase, tmp_path: Path
) -> None:
    # BuildKit, frontend/dockerui/config.go: the build context is an llb.Local with the .dockerignore patterns
    # as ExcludePatterns, and a RUN --mount=type=bind (no from=) binds that context (convert_runmount.go)
    dockerfile = (
        f"FROM oci-layout://{busybox_files.layout}:latest\n"
        "RUN --mount=type=bind,target=/src find /src | sort\n"
        "RUN --mount=type=bind,target=/src,rw rm -rf /src/app && touch /src/new && find /src/app 2>&1 | head -1\n"
    )
    files = {".dockerignore": "**/*.log\nsecrets\n", "app/main.py": "print()\n", "app/debug.log": "x\n",
             "secrets/key": "k\n"}
    stderr, _ = _build(dockwright, tmp_path, dockerfile, files=files)
    context = tmp_path / "context"
    listed = [line.split(" ", 1)[1] for line in stderr.splitlines() if line.startswith("#1 /src")]
    assert listed == ["/src", "/src/.dockerignore", "/src/Dockerfile", "/src/app", "/src/app/main.py"]
    assert (context / "app" / "main.py").exists() and not (context / "new").exists()  # rw writes are discarded
    (context / "app" / "debug.log").write_text("a change the command cannot see\n")
    stderr, _ = _build(dockwright, tmp_path, dockerfile)
    assert stderr.count(" cached") == 2  # nor does the step cache


@pytest.mark.requires("docker-registry", "skopeo")
@pytest.mark.parametrize("instruction", ["RUN true", "WORKDIR /srv/made"])
def test_a_base_layer_downloaded_for_a_step_shows_as_a_transfer(instruction: str, dockwright: RunDockwright,
                                                               busybox_base: BusyboxBase, tmp_path: Path) -> None:
    """The base's layers, downloaded when RUN extracts them or WORKDIR reads which directories they hold, are
    reported as `pull DIGEST` transfers, as the blobs an output needs are (README, Progress)."""
    context = dockerfile_context(tmp_path, f"FROM {busybox_base.oci_ref}\n{instruction}\n")
    proc = dockwright("build", context, "--progress", "rawjson", "-o", f"type=oci,dest={tmp_path / 'out'},tar=false",
                      *cache_args(tmp_path))
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    done = {e["name"]: e.get("bytes") for e in events if e.get("kind") == "transfer" and e["event"] == "done"}
    manifest = json.loads(sh("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{busybox_base.oci_ref}"))
    assert {f"pull {layer['digest'][7:19]}": layer["size"] for layer in manifest["layers"]}.items() <= done.items()


LIBRARY_PROGRAM = """\
import sys

import dockwright

context, layout, cache, tools = sys.argv[1:5]
image = dockwright.build(context, cache_dir=cache, build_contexts={"tools": tools})
dockwright.save(image, layout, tags=["parity:1"], tar=False)
"""


@pytest.mark.requires("docker-registry", "skopeo", "umoci")
def test_the_library_s_rootless_run_mounts_a_named_context(unprivileged: Unprivileged, busybox_base: BusyboxBase,
                                                           tmp_path: Path) -> None:
    """The same named-context mount in dockwright.build() by a user who is not root (the step runs in a child
    in a user namespace, run/worker.py, which must learn the context's directory)."""
    work = unprivileged.workdir()
    tools = work / "tools"
    tools.mkdir()
    (tools / "greet").write_text("#!/bin/sh\necho hello from the tools context\n")
    (tools / "greet").chmod(0o755)
    context = work / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {busybox_base.oci_ref}\n"
                                        "RUN --mount=from=tools,target=/opt/tools /opt/tools/greet > /greeting\n")
    (work / "build.py").write_text(LIBRARY_PROGRAM)
    unprivileged.give(work)
    unprivileged.run(unprivileged.python, work / "build.py", context, work / "layout", work / "cache", tools)
    assert run_oci_image(work / "layout", "1", tmp_path, ["cat", "/greeting"]) == "hello from the tools context\n"
