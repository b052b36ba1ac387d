"""Dockerfiles Docker would reject: one `Dockerfile:LINE: ...` error each."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockwright.frontends.dockerfile import plan_from_dockerfile
from dockwright.model.errors import DockerfileError
from dockwright.model.platform import Platform
from dockwright.plan import CopyStep


def plan(text: str, **kwargs: object):  # type: ignore[no-untyped-def]
    return plan_from_dockerfile(Path("."), text, platform=Platform.parse("linux/amd64"),
                                build_platform=Platform.parse("linux/amd64"), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "where", "fragment"), [
    ("FROM scratch\nCOPY a /a\nRUN --network=bridge apt-get update\n", "Dockerfile:3:",
     "RUN --network=bridge: not supported"),
    ("FROM alpine AS build\nRUN --mount=type=ssh git clone x\nFROM scratch\nCOPY --from=build /out /out\n",
     "Dockerfile:2:", "type=ssh is not supported"),
    ("FROM scratch\nRUN --mount=type=cache make\n", "Dockerfile:2:", "a mount needs target="),
    ("FROM scratch\nRUN --mount=type=volume,target=/x make\n", "Dockerfile:2:", "unsupported mount type 'volume'"),
    ("FROM scratch\nRUN --device=/dev/fuse make\n", "Dockerfile:2:", "RUN: unknown flag: --device"),
    ("FROM scratch\nCOPPY a /a\n", "Dockerfile:2:", "unknown instruction: COPPY"),
    ("FROM scratch\nCOPY a\0b /a\n", "Dockerfile:2:", "NUL byte"),  # the parser would drop "b /a"
    ("FROM scratch\n\0\n", "Dockerfile:2:", "NUL byte"),
    ("FROM scratch\nENV A=${B\n", "Dockerfile:2:", "missing '}'"),
    ("FROM scratch\nENV A=${:-x}\n", "Dockerfile:2:", "bad substitution"),
    ("FROM scratch\nENV A=${B:?required}\n", "Dockerfile:2:", "B: required"),
    ("FROM scratch\nENV A=${B:/x/y}\n", "Dockerfile:2:", "unsupported modifier (:/)"),
    ("FROM scratch\nENV A=${B#\\x}\n", "Dockerfile:2:", "invalid escape"),
    ("FROM scratch\nENV A='unterminated\n", "Dockerfile:2:", "matching single-quote"),
    ("# just a comment\nARG X=1\n", "Dockerfile:", "no FROM instruction"),
    ("COPY a /a\nFROM scratch\n", "Dockerfile:1:", "only ARG may come before FROM"),
    ("FROM scratch\nCOPY --form=x a /a\n", "Dockerfile:2:", "unknown flag: --form"),
    ("FROM scratch\nCOPY --from a /a\n", "Dockerfile:2:", "missing a value on flag: --from"),
    ("FROM scratch\nCOPY a\n", "Dockerfile:2:", "COPY requires at least two arguments"),
    ("FROM scratch\nCOPY --chmod=999 a /a\n", "Dockerfile:2:", "invalid chmod parameter"),
    ("FROM scratch\nCOPY https://example.com/x /x\n", "Dockerfile:2:", "source can't be a URL for COPY"),
    ("FROM scratch\nADD --checksum=sha256:00 local.tar /x\n", "Dockerfile:2:", "--checksum needs exactly one"),
    ("FROM scratch AS a\nCOPY --from=b /x /x\nFROM a AS b\n", "Dockerfile:", "circular dependency"),
    ("FROM scratch\nCOPY --from=7 /x /x\n", "Dockerfile:2:", "invalid stage index 7"),
    ("FROM alpine\nCOPY --chown=$APP_UID a /a\n", "Dockerfile:2:", "$APP_UID is not defined in this Dockerfile"),
    ("FROM alpine\nARG VERSION\nCOPY app-$VERSION.jar /app.jar\n", "Dockerfile:3:",
     "app-$VERSION.jar: ARG VERSION (line 2) has no value"),
    ("FROM alpine\nARG DIR\nCOPY a ${DIR%/}/\n", "Dockerfile:3:", "ARG DIR (line 2) has no value"),
    ("ARG VERSION\nFROM node:${VERSION}-slim\n", "Dockerfile:2:",
     "FROM node:${VERSION}-slim: ARG VERSION (line 1) has no value, which leaves 'node:-slim'"),
    ("FROM scratch AS x\nFROM scratch AS X\n", "Dockerfile:2:", "duplicate stage name"),
    ("FROM scratch AS 1st\n", "Dockerfile:1:", "invalid name for build stage"),
    ("ARG BASE\nFROM $BASE\n", "Dockerfile:2:", "base name ($BASE) should not be blank"),
    ("FROM scratch\nENV A\n", "Dockerfile:2:", "ENV must have two arguments"),
    ("FROM scratch\nCOPY <<EOF /x\nno end\n", "Dockerfile:2:", "unterminated heredoc"),
    ("FROM scratch\nHEALTHCHECK --interval=5 CMD true\n", "Dockerfile:2:", "not a duration"),
    ("FROM scratch\nHEALTHCHECK --timeout=10us CMD true\n", "Dockerfile:2:", "cannot be less than 1ms"),
    ("FROM scratch\nHEALTHCHECK --retries=-1 CMD true\n", "Dockerfile:2:", "cannot be negative"),
    ("FROM scratch\nHEALTHCHECK NONE extra\n", "Dockerfile:2:", "HEALTHCHECK NONE takes no arguments"),
    ("FROM scratch\nHEALTHCHECK RUN true\n", "Dockerfile:2:", "unknown type 'RUN' in HEALTHCHECK"),
    ("FROM scratch\nONBUILD FROM alpine\n", "Dockerfile:2:", "FROM isn't allowed as an ONBUILD trigger"),
    ("FROM scratch\nSHELL /bin/bash -c\n", "Dockerfile:2:", "SHELL requires the arguments to be in JSON form"),
    ("FROM scratch\nSTOPSIGNAL SIGNOPE\n", "Dockerfile:2:", "invalid signal"),
    ("FROM scratch\nEXPOSE 80/xtp\n", "Dockerfile:2:", "invalid proto: xtp"),
    ("FROM scratch\nEXPOSE 70000\n", "Dockerfile:2:", "invalid containerPort"),
    ("FROM scratch\nVOLUME $NOTHING\n", "Dockerfile:2:", "VOLUME specified can not be an empty string"),
    ("FROM scratch\nENV --x=1 A=b\n", "Dockerfile:2:", "unknown flag"),
    ("FROM scratch\nCOPY --link=maybe a /a\n", "Dockerfile:2:", "expecting boolean value"),
    ("", "Dockerfile:", "file with no instructions"),
])
def test_error_names_file_line_and_cause(text: str, where: str, fragment: str) -> None:
    with pytest.raises(DockerfileError) as raised:
        plan(text)
    message = raised.value.message
    assert message.startswith(where), message
    assert fragment in message, message
    assert "\n" not in message


def test_error_uses_the_dockerfile_name() -> None:
    with pytest.raises(DockerfileError, match=r"^build/App\.Dockerfile:2: unknown instruction: BOGUS"):
        plan("FROM scratch\nBOGUS x\n", dockerfile_name="build/App.Dockerfile")


def test_unknown_target_lists_the_stages() -> None:
    with pytest.raises(DockerfileError) as raised:
        plan("FROM scratch AS build\nFROM scratch AS final\n", target="tests")
    assert "target stage 'tests' could not be found" in raised.value.message
    assert "build, final" in raised.value.message


def test_run_in_a_stage_the_target_does_not_need_is_fine() -> None:
    result = plan("FROM alpine AS tools\nRUN apk add curl\nFROM scratch\nCOPY a /a\n")
    assert [stage.base for stage in result.stages] == ["scratch"]


@pytest.mark.parametrize(("chmod", "valid"), [("755", True), ("00755", True), ("7777", True), ("00007777", True),
                                              ("10000", False), ("0o755", False), ("8", False), ("u+x", False)])
def test_copy_chmod_takes_the_modes_buildkit_takes(chmod: str, valid: bool) -> None:
    """BuildKit parses --chmod as an octal number (leading zeros allowed) up to 07777; the flags frontend's
    --chmod uses the same check (plan.is_octal_mode)."""
    text = f"FROM scratch\nCOPY --chmod={chmod} a /a\n"
    if valid:
        assert [s.chmod for s in plan(text).target.steps if isinstance(s, CopyStep)] == [chmod]
    else:
        with pytest.raises(DockerfileError, match="invalid chmod parameter"):
            plan(text)


def test_an_arg_without_a_value_suggests_a_build_arg() -> None:
    """Issue 11 item 6: the error names the ARG's line and the --build-arg that gives it a value; with that
    value (or an ENV, or a scratch base, where BuildKit's empty expansion is known) there is no error."""
    text = "FROM alpine\nARG VERSION\nCOPY app-$VERSION.jar /app.jar\n"
    with pytest.raises(DockerfileError) as raised:
        plan(text)
    assert raised.value.hint == "pass --build-arg VERSION=..., or give it a default: ARG VERSION=..."
    assert plan(text, build_args={"VERSION": "1.2"}).target.steps[-1].sources == ("app-1.2.jar",)
    assert plan(text.replace("alpine", "scratch")).target.steps[-1].sources == ("app-.jar",)
    assert plan(text.replace("ARG VERSION\n", "ARG VERSION\nENV VERSION=3\n")).target.steps[-1].sources == (
        "app-3.jar",)


def test_a_global_arg_without_a_value_in_from() -> None:
    text = "ARG VERSION\nFROM node:${VERSION}-slim\n"
    with pytest.raises(DockerfileError) as raised:
        plan(text)
    assert raised.value.hint == "pass --build-arg VERSION=..., or give it a default: ARG VERSION=..."
    assert plan(text, build_args={"VERSION": "22"}).stages[0].base == "node:22-slim"
    assert plan("ARG BASE\nFROM ${BASE:-alpine}\n").stages[0].base == "alpine"
