"""A short fuzz run (hypothesis) of everything that reads untrusted text: whatever the input, the
result is a value or a DockwrightError (one line for the user), never another exception.

Longer runs: DOCKWRIGHT_FUZZ_EXAMPLES=20000 python -m pytest tests/fuzz
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockwright.cli.describe import describe_text
from dockwright.frontends import flags
from dockwright.frontends.dockerfile import plan_from_dockerfile
from dockwright.model import documents, mediatypes
from dockwright.model.digest import is_digest
from dockwright.model.errors import DockwrightError, ImageFormatError, InvalidReferenceError, UsageError
from dockwright.model.platform import Platform, parse_platforms
from dockwright.model.reference import parse_reference

EXAMPLES = int(os.environ.get("DOCKWRIGHT_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DIGEST = "sha256:" + "a" * 64

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.sampled_from([DIGEST, mediatypes.OCI_MANIFEST, mediatypes.DOCKER_MANIFEST, mediatypes.OCI_INDEX,
                       mediatypes.OCI_LAYER_GZIP,
                       2, 1, "linux", "amd64"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
_descriptor = st.dictionaries(st.sampled_from(["mediaType", "digest", "size", "platform", "annotations", "urls"]),
                              _json | st.just({"os": "linux", "architecture": "arm64"}), max_size=6)
_document = st.dictionaries(
    st.sampled_from(["schemaVersion", "mediaType", "config", "layers", "manifests", "annotations"]),
    _json | _descriptor | st.lists(_descriptor, max_size=3), max_size=6)


def _reference_text() -> st.SearchStrategy[str]:
    alphabet = st.sampled_from([*"abcXYZ019._-:/@[]", DIGEST, "sha256:", "localhost", "docker.io", " ", "é"])
    return st.text(max_size=60) | st.lists(alphabet, max_size=20).map("".join)


@FUZZ
@given(_reference_text())
def test_parse_reference(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReferenceError as exc:
        assert "\n" not in exc.message
        return
    assert parse_reference(str(ref)) == ref
    assert ref.digest is None or is_digest(ref.digest)


@FUZZ
@given(st.one_of(st.binary(max_size=200), _json.map(lambda d: json.dumps(d).encode()),
                 _document.map(lambda d: json.dumps(d).encode())),
       st.none() | st.sampled_from([mediatypes.OCI_MANIFEST, mediatypes.DOCKER_LIST, mediatypes.DOCKER_SCHEMA1[0],
                                    "text/plain"]))
def test_parse_document(data: bytes, header: str | None) -> None:
    try:
        parsed = documents.parse_document(data, header, "fuzz")
    except ImageFormatError:
        return
    descriptors = parsed.manifests if isinstance(parsed, documents.Index) else [parsed.config, *parsed.layers]
    assert all(is_digest(d.digest) and d.size >= 0 for d in descriptors)
    assert all(isinstance(v, str) for v in parsed.annotations.values())
    for descriptor in descriptors:
        descriptor.to_json()


@FUZZ
@given(st.one_of(st.binary(max_size=100), _json.map(lambda d: json.dumps(d).encode()),
                 st.dictionaries(st.sampled_from(["architecture", "os", "config", "rootfs"]),
                                 _json | st.just({"type": "layers", "diff_ids": [DIGEST]})).map(
                                     lambda d: json.dumps(d).encode())))
def test_parse_config(data: bytes) -> None:
    try:
        config: dict[str, Any] = documents.parse_config(data, "fuzz")
    except ImageFormatError:
        return
    assert all(is_digest(d) for d in config["rootfs"]["diff_ids"])


@FUZZ
@given(st.text(max_size=30) | st.lists(st.sampled_from(["linux", "arm", "arm64", "v7", "/", "amd64", ","]),
                                       max_size=8).map("".join))
def test_platforms(text: str) -> None:
    try:
        platforms = parse_platforms(text)
    except UsageError:
        return
    assert platforms == "all" or all(isinstance(p, Platform) for p in platforms)


@FUZZ
@given(st.text(max_size=40) | st.sampled_from(['["a"', "[]", '["a", 1]', "[{}]", "[null]", "{}"]))
def test_command_form(text: str) -> None:
    try:
        form = flags.command_form("--cmd", text)
    except UsageError:
        return
    assert all(isinstance(part, str) for part in form)


_INSTRUCTIONS = ["FROM", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "CMD", "ENTRYPOINT", "LABEL", "EXPOSE", "USER",
                 "RUN", "HEALTHCHECK", "SHELL", "ONBUILD", "STOPSIGNAL", "VOLUME", "MAINTAINER", "# syntax=x",
                 "# escape=`", "FROM scratch AS", "COPY --from=0", "COPY --chmod=", "ENV A=$B", "ARG B=${C:-d}"]
_dockerfile = st.lists(
    st.tuples(st.sampled_from(_INSTRUCTIONS), st.text(st.characters(blacklist_categories=("Cs",)), max_size=25)),
    max_size=6,
).map(lambda lines: "FROM scratch\n" + "\n".join(f"{i} {a}" for i, a in lines) + "\n")


@pytest.mark.parametrize("line", ["HEALTHCHECK Å", "ONBUILD HEALTHCHECK xÅ"])
def test_dockerfile_healthcheck_with_non_ascii_argument(tmp_path: Path, line: str) -> None:
    """The parser wheel raises UnicodeDecodeError here; the user gets a Dockerfile:LINE error."""
    with pytest.raises(DockwrightError, match=r"Dockerfile:2:"):
        plan_from_dockerfile(tmp_path, f"FROM scratch\n{line}\n", platform=Platform("linux", "amd64"))


@settings(max_examples=max(50, EXAMPLES // 3), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=_dockerfile)
def test_dockerfile_plan(tmp_path: Path, text: str) -> None:
    try:
        plan = plan_from_dockerfile(tmp_path, text, platform=Platform("linux", "amd64"))
    except DockwrightError:
        return
    assert plan.stages
    describe_text([plan], [], [])
