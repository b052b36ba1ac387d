"""`dockwright build --dry-run`, in process, on mutated real Dockerfiles (the corpus in
tests/fixtures/dockerfiles) and on random flag combinations: whatever the input, exit 0, or exit 1 or 2
with an `error:` line (and at most a hint line), or argparse's usage error (exit 2); never a traceback.

Longer runs: DOCKWRIGHT_FUZZ_EXAMPLES=20000 python -m pytest tests/fuzz
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockwright.cli.main import main

EXAMPLES = int(os.environ.get("DOCKWRIGHT_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CORPUS = sorted((Path(__file__).parent.parent / "fixtures" / "dockerfiles").glob("*/Dockerfile"))
EMPTY_CONTEXT = tempfile.mkdtemp(prefix="dockwright-fuzz-")


def run_cli(argv: list[str]) -> tuple[int, str]:
    """(exit status, stderr) of dockwright.cli.main.main(argv)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse rejected the arguments
            status = exc.code if isinstance(exc.code, int) else 1
    return status, err.getvalue()


def assert_clean(status: int, stderr: str, argv: list[str]) -> None:
    assert "Traceback" not in stderr, (argv, stderr)
    assert status in (0, 1, 2), (argv, status, stderr)
    if status == 0:
        return
    if "usage: dockwright" in stderr:  # argparse: usage line(s), then one error line
        assert stderr.rstrip("\n").splitlines()[-1].startswith("dockwright"), (argv, stderr)
        return
    if stderr.startswith("{"):  # --progress rawjson: JSON lines, the last one the error
        last = json.loads(stderr.splitlines()[-1])
        assert last["event"] == "error" and last["message"], (argv, stderr)
        return
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, (argv, stderr)
    after = stderr.split(lines[0], 1)[1].strip("\n").splitlines()
    assert all(line.startswith("  hint: ") for line in after), (argv, stderr)


# ------------------------------------------------------------------ Dockerfiles

_SNIPPETS = ["\0", "\\\n", "\n", " ", "$", "${", "}", "'", '"', "[", "]", "<<EOF\n", "\nEOF\n", "--from=", "=",
             "#", "\t", "é", "\U0001f600", "\r\n", "AS ", "FROM ", "COPY ", "ARG ", "ENV ", "\ufeff", ":", "/"]
_insert = st.tuples(st.just("insert"), st.floats(0, 1), st.sampled_from(_SNIPPETS) | st.text(max_size=8))
_delete = st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 12))
_repeat = st.tuples(st.just("repeat"), st.floats(0, 1), st.integers(1, 40))


def mutate(text: str, edits: list[tuple[str, float, object]]) -> str:
    for kind, where, what in edits:
        at = int(where * len(text))
        if kind == "insert":
            text = text[:at] + str(what) + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + int(what):]  # type: ignore[call-overload]
        else:
            text = text[:at] + text[at:at + int(what)] * 2 + text[at + int(what):]  # type: ignore[call-overload]
    return text


@FUZZ
@given(st.sampled_from(CORPUS), st.lists(_insert | _delete | _repeat, min_size=1, max_size=4))
def test_mutated_dockerfiles(dockerfile: Path, edits: list[tuple[str, float, object]]) -> None:
    text = mutate(dockerfile.read_text(), edits)
    context = dockerfile.parent / "context"
    with tempfile.TemporaryDirectory(prefix="dockwright-fuzz-") as scratch:
        path = Path(scratch) / "Dockerfile"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        argv = ["build", "--dry-run", "-f", str(path), str(context if context.is_dir() else scratch)]
        assert_clean(*run_cli(argv), argv)


# ------------------------------------------------------------------ flags

_word = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_value = st.sampled_from(["", "a", ".", "..", "/", "x:/y", "app:/app", "0", "42", "-1", "1000:1000", "0755", "9",
                          '["a"]', "[", "K=V", "=", "linux/amd64", "all", "linux/arm64,linux/amd64", "80/tcp",
                          "scratch", "busybox", "registry.lan:5000/a:b", "oci-layout:///nope", "type=oci,dest=x",
                          "type=docker", "type=registry", "type=oci,dest=x,tar=maybe", "SIGKILL", "gzip", "zstd",
                          "none", "auto", "off", "oci", "docker", "rawjson", "plain", "quiet", "tty",
                          "a" * 300]) | _word
_flag = st.sampled_from(["--from", "--copy", "--chown", "--chmod", "-f", "--build-arg", "--target", "--entrypoint",
                         "--cmd", "--env", "--workdir", "--user", "--expose", "--volume", "--label", "--annotation",
                         "--stop-signal", "-t", "-o", "--platform", "--format", "--compression",
                         "--compression-level", "--jobs", "--layering", "--insecure-registry", "--progress"])
_switch = st.sampled_from(["--push", "--load", "--no-cache", "-q", "-v", "--bogus"])
_args = st.lists(st.tuples(_flag, _value).map(list) | _switch.map(lambda s: [s]), max_size=8)


@FUZZ
@given(_args, st.booleans())
def test_flag_combinations(pairs: list[list[str]], flags_mode: bool) -> None:
    argv = ["build", "--dry-run", EMPTY_CONTEXT, *(["--from", "scratch"] if flags_mode else [])]
    argv += [word for pair in pairs for word in pair]
    assert_clean(*run_cli(argv), argv)
