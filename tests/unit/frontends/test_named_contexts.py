"""Named build contexts (--build-context, issue 11 item 8) in the Dockerfile frontend: which FROM and COPY
--from they replace, matched as BuildKit matches names; a replaced stage is never translated (its RUN
neither runs nor fails)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockwright.api.plans import named_contexts
from dockwright.frontends.dockerfile import plan_from_dockerfile
from dockwright.frontends.dockerfile.contexts import context_key
from dockwright.model.errors import UsageError
from dockwright.model.platform import Platform
from dockwright.plan import ConfigStep, CopyStep, NamedContext, RunStep

BUILDER = """\
FROM golang:1.22 AS build
RUN go build -o /out/app .
FROM alpine:3.20 AS runtime
COPY --from=build /out/app /app
FROM runtime
COPY --from=0 /out/app /app0
"""
OUT = NamedContext("build", "/ci/out", directory=True, dockerignore=("*.tmp",))


def plan(text: str, *contexts: NamedContext):  # type: ignore[no-untyped-def]
    return plan_from_dockerfile(Path("/ctx"), text, platform=Platform("linux", "amd64"), contexts=contexts)


def test_a_directory_replaces_a_builder_stage_that_has_run() -> None:
    built = plan(BUILDER, OUT)
    assert [(stage.base, stage.base_stage) for stage in built.stages] == [("alpine:3.20", None), ("runtime", 0)]
    assert not any(isinstance(step, RunStep) for stage in built.stages for step in stage.steps)
    copies = [step for stage in built.stages for step in stage.steps if isinstance(step, CopyStep)]
    assert [(c.from_context, c.from_stage, c.sources) for c in copies] == [
        ("build", None, ("/out/app",)), ("build", None, ("/out/app",))]
    assert built.contexts == (OUT,)
    assert built.context_of(copies[0]) == (Path("/ci/out"), ("*.tmp",))
    assert built.context_of(CopyStep(("a",), "/a")) == (Path("/ctx"), ())


def test_an_image_replaces_a_stage_and_a_base() -> None:
    built = plan(BUILDER, NamedContext("build", "registry.example/ci/app:7"),
                 NamedContext("alpine:3.20", "oci-layout:///images/alpine:3.20"))
    first, second, third = built.stages
    assert (first.name, first.base, [type(s) for s in first.steps]) == ("build", "registry.example/ci/app:7",
                                                                        [ConfigStep])
    assert second.base == "oci-layout:///images/alpine:3.20"
    assert [s.from_stage for s in second.steps if isinstance(s, CopyStep)] == [0]
    assert third.base_stage == 1


def test_a_directory_as_a_base_is_an_empty_image_holding_its_files() -> None:
    built = plan("FROM tools\nCOPY --from=tools /bin/x /x\n", NamedContext("tools", "/t", directory=True))
    (stage,) = built.stages
    assert stage.base == "scratch"
    setup, files, copy = stage.steps
    assert isinstance(setup, ConfigStep) and setup.edit.workdir == "/"
    assert (files.sources, files.dest, files.from_context) == ((".",), "/", "tools")  # type: ignore[union-attr]
    assert copy.from_context == "tools"  # type: ignore[union-attr]


@pytest.mark.parametrize(("name", "key"), [("golang", "golang"), ("docker.io/library/golang:latest", "golang"),
                                           ("golang:1.22", "golang:1.22"), ("Build", "build"),
                                           ("ghcr.io/acme/app:1", "ghcr.io/acme/app:1")])
def test_names_match_as_buildkit_matches_them(name: str, key: str) -> None:
    assert context_key(name) == key


def test_run_mounts_a_directory_context_as_buildkit_does() -> None:
    # BuildKit (frontend/dockerfile/dockerfile2llb/convert_runmount.go) resolves a mount's from= to a
    # named context like COPY --from (bind, and cache seeded from it); dockwright refused this before
    built = plan("FROM alpine\nRUN --mount=from=build,target=/b --mount=type=cache,from=build,source=out,target=/c "
                 "ls /b /c\n", OUT)
    (run,) = [step for step in built.stages[0].steps if isinstance(step, RunStep)]
    assert [(m.type, m.from_context, m.from_stage, m.from_image) for m in run.mounts] == [
        ("bind", "build", None, None), ("cache", "build", None, None)]
    assert built.contexts == (OUT,)


def test_command_line_values(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".dockerignore").write_text("*.log\n")
    parsed = named_contexts([f"build={tmp_path / 'out'}", "base=docker-image://alpine:3", "l=oci-layout://x:1"])
    assert parsed == [NamedContext("build", str(tmp_path / "out"), True, ("*.log",)),
                      NamedContext("base", "alpine:3"), NamedContext("l", "oci-layout://x:1")]
    for bad, says in (("build", "expected NAME=DIR"), (f"a={tmp_path / 'nope'}", "is not a directory"),
                      ("a=https://github.com/x/y.git", "not supported"), ("a=docker-image://Bad Ref", "invalid"),
                      (f"a={tmp_path}", None)):
        if says is None:
            with pytest.raises(UsageError, match="named twice"):
                named_contexts([bad, bad])
            continue
        with pytest.raises(UsageError, match=says):
            named_contexts([bad])


def test_the_library_builds_with_a_named_context(tmp_path: Path) -> None:
    """dockwright.build(build_contexts=...) as --build-context: the builder stage is neither pulled nor run."""
    import dockwright

    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text(BUILDER.split("FROM runtime")[0].replace("alpine:3.20", "scratch"))
    (tmp_path / "out" / "out").mkdir(parents=True)
    (tmp_path / "out" / "out" / "app").write_text("binary\n")
    image = dockwright.build(tmp_path / "ctx", build_contexts={"build": str(tmp_path / "out")}, platforms="linux/amd64",
                             cache_dir=tmp_path / "cache")
    dockwright.save(image, tmp_path / "app.tar")
    assert (tmp_path / "app.tar").stat().st_size > 0
    assert len(image.config["rootfs"]["diff_ids"]) == 1
