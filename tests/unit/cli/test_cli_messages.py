"""Messages that blame the right thing (issue 12 item 8, the command line's half): a bad compression level is
the build's, not a --copy's; an unknown option shows the usage of the command it was given to; counts agree
with their nouns."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from dockwright.cli.main import main


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exc:
            status = int(exc.code or 0)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "context" / "app").mkdir(parents=True)
    (tmp_path / "context" / "app" / "hello.txt").write_text("hello\n")
    return tmp_path / "context"


def _build(context: Path, *extra: str) -> list[str]:
    return ["build", str(context), "--from", "scratch", "--copy", "app:/app", "--cache-dir",
            str(context.parent / "cache"), "-o", f"type=oci,dest={context.parent / 'out.tar'}", *extra]


def test_a_bad_compression_level_is_not_blamed_on_a_copy(context: Path) -> None:
    status, _, err = run(_build(context, "--compression-level", "42"))
    assert status == 2
    assert err.startswith("error: invalid gzip compression level 42\n  hint: use 0..3")
    assert "--copy" not in err and not (context.parent / "out.tar").exists()


def test_help_gives_the_compression_levels() -> None:
    _, out, _ = run(["build", "--help"])
    assert "gzip 0-3" in " ".join(out.split()) and "zstd 1-22" in " ".join(out.split())


@pytest.mark.parametrize(("argv", "usage"), [
    (["build", ".", "--bogus"], "usage: dockwright build "),
    (["cache", "du", "--bogus"], "usage: dockwright cache du "),
    (["login", "example.com", "--bogus"], "usage: dockwright login "),
    (["--bogus"], "usage: dockwright "),
])
def test_an_unknown_option_shows_the_usage_of_its_command(argv: list[str], usage: str) -> None:
    status, _, err = run(argv)
    assert status == 2
    assert err.startswith(usage)
    assert err.rstrip().endswith(f"{usage.removeprefix('usage: ').rstrip()}: error: unrecognized arguments: --bogus")


def test_one_layer_is_one_layer(context: Path) -> None:
    status, _, err = run(_build(context))
    assert status == 0
    assert "(1 layer built, 0 from cache)" in err
    assert "built layer sha256:" in err and "(1 entry, " in err  # app/hello.txt (the extractor makes /app)
