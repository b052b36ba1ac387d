"""The `dockwright build` command as a user runs it: argument errors are one line and exit 2, offline
builds onto scratch are reproducible and follow SOURCE_DATE_EPOCH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from dockwright.cli.main import main


@pytest.fixture
def context(tmp_path: Path) -> Path:
    root = tmp_path / "context"
    (root / "app").mkdir(parents=True)
    (root / "app" / "hello.txt").write_text("hello\n")
    (root / "app" / "run.sh").write_text("#!/bin/sh\necho hello\n")
    return root


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user cache, credentials or SOURCE_DATE_EPOCH from the machine running the tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)


def _error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 2) -> str:
    """Run in-process; assert the exit code and a one-line error (plus an optional hint line)."""
    assert main(argv) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = [line for line in captured.err.splitlines() if not line.startswith("no output given")]
    assert lines and lines[0].startswith("error: "), captured.err
    assert len(lines) <= 2 and all(line.startswith("  hint: ") for line in lines[1:]), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("output", "says"),
    [
        ("type=bogus,dest=x.tar", "unknown type 'bogus'"),
        ("dest=x.tar", "no type= given"),
        ("type=docker", "needs dest=PATH"),
        ("type=oci,dest=", "needs dest=PATH"),
        ("type=docker,dest=x.tar,tar=false", "tar=false is only for type=oci"),
        ("type=oci,dest=x,tar=maybe", "tar must be true or false"),
        ("type=oci,dest=x.tar,compression=zstd", "unknown option(s) compression"),
        ("x.tar", "expected key=value pairs"),
    ],
)
def test_bad_output_specs(capsys: pytest.CaptureFixture[str], context: Path, output: str, says: str) -> None:
    line = _error(capsys, ["build", str(context), "--from", "scratch", "-o", output])
    assert says in line
    assert repr(output) in line


def test_duplicate_destinations(capsys: pytest.CaptureFixture[str], context: Path, tmp_path: Path) -> None:
    same = tmp_path / "out.tar"
    line = _error(capsys, ["build", str(context), "--from", "scratch", "-o", f"type=oci,dest={same}",
                           "-o", f"type=docker,dest={os.path.relpath(same)}"])
    assert "same destination" in line
    assert not same.exists()


def test_push_needs_a_tag(capsys: pytest.CaptureFixture[str], context: Path) -> None:
    assert "--push needs at least one -t" in _error(capsys, ["build", str(context), "--from", "scratch", "--push"])
    assert "--push needs" in _error(capsys, ["build", str(context), "--from", "scratch", "-o", "type=registry"])


@pytest.mark.parametrize("output", [["-o", "type=docker,dest=x.tar"], ["--load"]])
@pytest.mark.parametrize("platforms", ["linux/amd64,linux/arm64", "all"])
def test_several_platforms_do_not_fit_a_docker_archive(capsys: pytest.CaptureFixture[str], context: Path,
                                                       output: list[str], platforms: str) -> None:
    line = _error(capsys, ["build", str(context), "--from", "scratch", "--platform", platforms, *output])
    assert "one platform" in line


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "1e9", " 10"])
def test_invalid_source_date_epoch(capsys: pytest.CaptureFixture[str], context: Path,
                                   monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    assert f"SOURCE_DATE_EPOCH={value!r}" in _error(capsys, ["build", str(context), "--from", "scratch"])


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--from", "scratch", "-t", "Bad/Name"], "invalid image reference 'Bad/Name'"),
        (["--from", "scratch", "--platform", "linux/bogus"], "unknown platform 'linux/bogus'"),
        (["--from", "scratch", "--expose", "99999"], "--expose '99999'"),
        (["--from", "scratch", "--env", "NOVALUE"], "--env 'NOVALUE'"),
        (["--from", "scratch", "--workdir", "rel"], "--workdir 'rel'"),
        (["--from", "scratch", "--cmd", "[1]"], "--cmd '[1]'"),
        (["--from", "scratch", "--chmod", "9"], "--chmod '9'"),
        (["--from", "scratch", "--copy", "app"], "--copy 'app'"),
        (["--from", "scratch", "--target", "x"], "cannot be combined"),
        (["--from", "scratch", "--build-context", "b=."], "cannot be combined"),
        (["--build-context", "b=/no/such/dir"], "/no/such/dir is not a directory"),
        (["--from", "scratch", "--ignore-file", "/no/such.ignore"], "--ignore-file /no/such.ignore: no such file"),
        (["--copy", "app:/app"], "--copy needs --from"),
        ([], "no Dockerfile"),
    ],
)
def test_argument_errors_name_the_argument(capsys: pytest.CaptureFixture[str], context: Path, args: list[str],
                                           says: str) -> None:
    assert says in _error(capsys, ["build", str(context), *args])


def test_missing_context(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert "is not a directory" in _error(capsys, ["build", str(tmp_path / "nope"), "--from", "scratch"])


def test_missing_copy_source_is_a_context_error(capsys: pytest.CaptureFixture[str], context: Path,
                                                tmp_path: Path) -> None:
    dest = tmp_path / "out.tar"
    line = _error(capsys, ["build", str(context), "--from", "scratch", "--copy", "nope:/app",
                           "-o", f"type=oci,dest={dest}"], code=1)
    assert "'nope'" in line
    assert not dest.exists()


def test_dry_run_prints_the_plan(capsys: pytest.CaptureFixture[str], context: Path) -> None:
    assert main(["build", str(context), "--from", "scratch", "--copy", "app:/app", "--env", "A=1",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "FROM scratch" in out
    assert "COPY app /app" in out
    assert "ENV A=1" in out
    assert "outputs: none" in out


def test_dry_run_shows_every_flag_config_line_and_output(capsys: pytest.CaptureFixture[str], context: Path,
                                                         tmp_path: Path) -> None:
    """Issue 11 item 12: Dockerfile-like lines, no Python reprs; --dry-run=json is one JSON document."""
    (context / "Dockerfile").write_text(
        "FROM alpine:3 AS build\nRUN --mount=type=cache,target=/root/.cache echo hi\n"
        "FROM scratch\nCOPY --from=build --parents --chown=1:2 --chmod=755 --exclude=*.md /a/ /b\n"
        "ADD --checksum=sha256:" + "0" * 64 + " https://example.com/x.tgz /x\n"
        "COPY <<EOF /etc/motd\nhello\nEOF\n"
        'ENTRYPOINT ["/app"]\nENV K="v w"\nHEALTHCHECK --interval=30s CMD ["/app", "check"]\n')
    argv = ["build", str(context), "--platform", "linux/amd64", "-t", "example.com/a:1", "--push",
            "-o", f"type=oci,dest={tmp_path / 'a.tar'}"]
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    for line in ("FROM alpine:3 AS build",
                 "RUN --mount=type=cache,target=/root/.cache,readonly=false,id=/root/.cache echo hi",
                 "COPY --from=build --parents --chown=1:2 --chmod=755 --exclude=*.md /a/ /b",
                 f"ADD --checksum=sha256:{'0' * 64} https://example.com/x.tgz /x", "COPY <<EOF /etc/motd",
                 'ENTRYPOINT ["/app"]', "CMD []", 'ENV K="v w"', 'HEALTHCHECK --interval=30s CMD ["/app", "check"]',
                 "tags: example.com/a:1", "push to every tag", f"OCI archive {tmp_path / 'a.tar'}"):
        assert line in out, (line, out)
    assert "(" not in out.replace("(Dockerfile)", "")
    assert main([*argv, "--dry-run=json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["version"] == 1
    assert document["outputs"] == [{"type": "oci", "dest": str(tmp_path / "a.tar")}, {"type": "registry", "dest": None}]
    (plan,) = document["plans"]
    assert plan["platform"] == "linux/amd64"
    copy = plan["stages"][1]["steps"][1]
    assert (copy["type"], copy["from_stage"], copy["chown"], copy["excludes"]) == ("copy", 0, "1:2", ["*.md"])
    assert plan["stages"][1]["steps"][3]["inline_files"] == [["EOF", "hello\n"]]


# --------------------------------------------------------------------------- as a subprocess


def _dockwright(*args: str, cwd: Path, epoch: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = epoch
    return subprocess.run([sys.executable, "-m", "dockwright", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def _build(context: Path, out: Path, epoch: str | None, *extra: str) -> str:
    proc = _dockwright("build", str(context), "--from", "scratch", "--copy", "app:/app", "--platform", "linux/amd64",
                       "--cmd", '["/app/run.sh"]', "--no-cache", "-o", f"type=oci,dest={out}", *extra,
                       cwd=context.parent, epoch=epoch)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    (digest,) = proc.stdout.splitlines()
    return digest


def test_offline_builds_are_reproducible_and_follow_source_date_epoch(context: Path, tmp_path: Path) -> None:
    first = _build(context, tmp_path / "a.tar", None)
    second = _build(context, tmp_path / "b.tar", None)
    later = _build(context, tmp_path / "c.tar", "1700000000")
    assert first.startswith("sha256:") and len(first) == 71
    assert first == second
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert later != first
    with tarfile.open(tmp_path / "c.tar") as archive:
        index = json.load(archive.extractfile("index.json"))  # type: ignore[arg-type]
        assert index["manifests"][0]["digest"] == later
        manifest = json.load(archive.extractfile("blobs/sha256/" + later[7:]))  # type: ignore[arg-type]
        config = json.load(archive.extractfile(  # type: ignore[arg-type]
            "blobs/sha256/" + manifest["config"]["digest"][7:]))
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert config["config"]["Cmd"] == ["/app/run.sh"]
    assert config["architecture"] == "amd64" and config["os"] == "linux"


def test_changed_file_changes_the_digest(context: Path, tmp_path: Path) -> None:
    before = _build(context, tmp_path / "a.tar", "0")
    (context / "app" / "hello.txt").write_text("changed\n")
    assert _build(context, tmp_path / "b.tar", "0") != before


def test_a_streamed_layer_is_the_collected_one(context: Path, tmp_path: Path) -> None:
    """A COPY of one directory streams into the writer unless ignore patterns reach into it; a
    .dockerignore pattern below the source that matches nothing takes the collect-first path, and the
    image must not change."""
    (context / "app" / "lib").mkdir()
    (context / "app" / "lib" / "mod.js").write_text("exports.x = 1\n")
    (context / "app" / "lib-extra.js").write_text("// sorts between lib and lib/\n")
    streamed = _build(context, tmp_path / "a.tar", "0")
    (context / ".dockerignore").write_text("app/nothing-matches-this\n")
    assert _build(context, tmp_path / "b.tar", "0") == streamed


def test_metadata_and_iidfile(context: Path, tmp_path: Path) -> None:
    digest = _build(context, tmp_path / "a.tar", "0", "--metadata-file", str(tmp_path / "meta.json"),
                    "--iidfile", str(tmp_path / "iid"), "-t", "example.com/app:1")
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["containerimage.digest"] == digest == meta["digest"]
    assert meta["platforms"] == ["linux/amd64"]
    assert (tmp_path / "iid").read_text() == meta["config_digest"]


@pytest.mark.parametrize("flag", ["--metadata-file", "--iidfile"])
def test_a_metadata_file_that_cannot_be_written_fails_like_an_archive_that_cannot(
        context: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str) -> None:
    """Both are file-system failures (exit 1), not usage mistakes (exit 2)."""
    (tmp_path / "file").write_text("not a directory\n")
    base = ["build", str(context), "--from", "scratch", "--copy", "app:/app"]
    for argv in ([*base, "-o", f"type=oci,dest={tmp_path / 'file' / 'a.tar'}"],
                 [*base, "-o", f"type=oci,dest={tmp_path / 'a.tar'}", flag, str(tmp_path / "file" / "meta")]):
        assert main(argv) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and errors[0].startswith(f"error: cannot write {tmp_path / 'file'}/"), errors


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["build", ".", "--from", "scratch", "-o", "type=bogus,dest=x"], 2, "unknown type 'bogus'"),
        (["build", ".", "--from", "nginx@sha256:xyz"], 2, "invalid image reference"),
        (["build", ".", "--from", "scratch", "--copy", "../etc:/etc", "-o", "type=oci,dest=x.tar"], 1, "outside"),
    ],
)
def test_bad_input_is_one_line_on_stderr(context: Path, args: list[str], code: int, says: str) -> None:
    proc = _dockwright(*args, cwd=context)
    assert proc.returncode == code
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and says in errors[0], proc.stderr
    assert not (context / "x.tar").exists()


def test_usage_error_from_argparse_exits_2(context: Path) -> None:
    proc = _dockwright("build", "--no-such-flag", cwd=context)
    assert proc.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in proc.stderr
    assert "Traceback" not in proc.stderr
