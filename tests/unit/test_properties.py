"""Property tests: reference round trips, flags-plan construction, and the layer writer's round trip
through GNU tar (what is written extracts back identically)."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from pathlib import Path

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dockwright.cli.describe import describe_text
from dockwright.frontends import flags
from dockwright.layers.compress import Compression
from dockwright.layers.tar import TarEntry, write_layer
from dockwright.model.errors import UsageError
from dockwright.model.reference import Reference, parse_reference
from dockwright.plan import ConfigStep, CopyStep

# --------------------------------------------------------------------------- references (Docker's grammar)

_component = st.from_regex(r"[a-z0-9]{1,8}(?:(?:[._]|__|-{1,3})[a-z0-9]{1,8}){0,2}", fullmatch=True)
_host_label = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True)
_port = st.integers(1, 65535).map(lambda p: f":{p}")
_domain = st.one_of(
    st.tuples(st.lists(_host_label, min_size=2, max_size=4).map(".".join), st.just("") | _port).map("".join),
    st.tuples(st.just("localhost"), st.just("") | _port).map("".join),
    st.tuples(st.sampled_from(["[::1]", "[fe80::1]", "[2001:db8::42]"]), _port).map("".join),
)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}", fullmatch=True)
_digest = st.from_regex(r"[a-f0-9]{64}", fullmatch=True).map(lambda h: f"sha256:{h}")


@settings(max_examples=120, deadline=None)
@given(domain=st.none() | _domain, path=st.lists(_component, min_size=1, max_size=4).map("/".join),
       tag=st.none() | _tag, digest=st.none() | _digest)
def test_reference_round_trip(domain: str | None, path: str, tag: str | None, digest: str | None) -> None:
    # without a registry, a first component with a "." would be read as a host (Docker does the same)
    assume(domain or "/" not in path or "." not in path.partition("/")[0])
    name = f"{domain}/{path}" if domain else path
    text = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    ref = parse_reference(text)
    assert parse_reference(str(ref)) == ref
    assert parse_reference(ref.familiar) == ref
    assert ref.tag == (tag or (None if digest else "latest"))
    assert ref.digest == digest
    assert ref.repository.endswith(path.partition("/")[2] if "/" in path else path)
    if domain and domain != "index.docker.io":
        assert ref.registry == domain and ref.repository == path
    assert ref.api_host == ("registry-1.docker.io" if ref.registry == "docker.io" else ref.registry)
    assert "/" not in ref.registry and not ref.repository.startswith("/")


@settings(max_examples=80, deadline=None)
@given(st.builds(Reference, registry=_domain, repository=st.lists(_component, min_size=1, max_size=3).map("/".join),
                 tag=st.none() | _tag, digest=st.none() | _digest))
def test_formatted_reference_parses_back(ref: Reference) -> None:
    if ref.tag is None and ref.digest is None:
        ref = ref.with_tag("latest")
    assert parse_reference(str(ref)) == ref


# --------------------------------------------------------------------------- flags -> plan

_flag_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_copy = st.one_of(_flag_text, st.tuples(_flag_text, _flag_text).map(":".join))


@settings(max_examples=300, deadline=None)
@given(copies=st.lists(_copy, max_size=4), env=st.lists(_flag_text, max_size=3),
       expose=st.lists(st.one_of(_flag_text, st.integers(-5, 70000).map(str)), max_size=3),
       cmd=st.none() | _flag_text, entrypoint=st.none() | _flag_text, workdir=st.none() | _flag_text,
       chmod=st.none() | _flag_text | st.integers(0, 0o10000).map(lambda m: f"{m:o}"),
       annotations=st.lists(_flag_text, max_size=2))
def test_flags_plan_is_a_usage_error_or_a_faithful_plan(copies: list[str], env: list[str], expose: list[str],
                                                        cmd: str | None, entrypoint: str | None,
                                                        workdir: str | None, chmod: str | None,
                                                        annotations: list[str]) -> None:
    try:
        edit = flags.config_edit(entrypoint=entrypoint, cmd=cmd, env=env, workdir=workdir, expose=expose)
        plan = flags.plan_from_flags(Path("/nonexistent-context"), "scratch", copies, edit, chmod=chmod,
                                     annotations=annotations)
    except UsageError as exc:
        assert str(exc).strip()
        return
    steps = plan.target.steps
    config_steps = [s for s in steps if isinstance(s, ConfigStep)]
    copy_steps = [s for s in steps if isinstance(s, CopyStep)]
    assert len(steps) == len(config_steps) + len(copy_steps)
    assert len(config_steps) == (0 if edit == flags.ConfigEdit() else 1)
    assert steps[: len(config_steps)] == tuple(config_steps)  # config first: --workdir applies to --copy
    assert [(s.sources[0] + ":" + s.dest) for s in copy_steps] == copies
    assert all(s.chmod == chmod and 0 <= int(chmod or "0", 8) <= 0o7777 for s in copy_steps)
    assert all(p.count("/") == 1 and 0 < int(p.split("/")[0]) < 65536 for p in edit.exposed_ports)
    assert describe_text([plan], [], [])


# --------------------------------------------------------------------------- the layer writer and GNU tar

# file-system-safe names: at most 255 bytes per component once UTF-8 encoded
_name = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\0"),
                min_size=1, max_size=50).filter(lambda s: s not in (".", "..") and not s.startswith(".wh."))


def _tree(paths: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Keep only paths that are not a prefix of another (a name is either a file or a directory)."""
    unique = sorted(set(paths))
    return [p for p in unique if not any(q[: len(p)] == p and q != p for q in unique)]


@settings(max_examples=40, deadline=None)
@given(paths=st.lists(st.lists(_name, min_size=1, max_size=3).map(tuple), min_size=1, max_size=8).map(_tree),
       contents=st.lists(st.tuples(st.binary(max_size=3000), st.integers(0, 0o777), st.integers(0, 70000)),
                         min_size=8, max_size=8),
       algorithm=st.sampled_from(["gzip", "zstd", "none"]))
def test_gnu_tar_extracts_exactly_what_was_written(paths: list[tuple[str, ...]],
                                                   contents: list[tuple[bytes, int, int]], algorithm: str) -> None:
    files = {"/".join(p): contents[i] for i, p in enumerate(paths)}
    dirs = {"/".join(p[:n]) for p in paths for n in range(1, len(p))}
    entries = sorted([TarEntry(d, "dir", 0o755, mtime=1234) for d in dirs]
                     + [TarEntry(path, "file", mode, uid, uid, data=data, mtime=1234)
                        for path, (data, mode, uid) in files.items()], key=lambda e: e.path)
    with tempfile.TemporaryDirectory() as tmp:
        blob = write_layer(entries, Path(tmp) / "layer", Compression(algorithm))  # type: ignore[arg-type]
        out = Path(tmp) / "out"
        out.mkdir()
        tar_flag = {"gzip": ["-z"], "zstd": ["--zstd"], "none": []}[algorithm]
        subprocess.run(["tar", "-x", *tar_flag, "-f", str(blob.path), "-C", str(out), "--same-owner",
                        "--same-permissions"], check=True, capture_output=True,
                       env={**os.environ, "LC_ALL": "C.UTF-8"})
        found = {}
        for current, subdirs, names in os.walk(out):
            for name in subdirs:
                path = Path(current, name)
                assert path.relative_to(out).as_posix() in dirs
                assert stat.S_IMODE(path.stat().st_mode) == 0o755
            for name in names:
                path = Path(current, name)
                st_ = path.stat()
                found[path.relative_to(out).as_posix()] = (path.read_bytes(), stat.S_IMODE(st_.st_mode), st_.st_uid)
                assert st_.st_mtime == 1234
        assert found == files
