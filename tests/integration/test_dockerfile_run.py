"""Images built from Dockerfiles run for real: `dockwright build` pushes to a real registry, skopeo
pulls the result back, runc runs it, and the tests assert what the program printed. Then the
errors a user meets through the CLI: an unsupported RUN flag (before any network access), parse
errors naming file and line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from build_checks import assert_user_error, build_and_run, cache_args
from conftest import RunDockwright
from images import APP_UID, BASE_PATH_ENV, BusyboxBase

UNREACHABLE = "127.0.0.1:9"  # the discard port: nothing listens there

HELLO = """#!/bin/sh
echo "greeting=$GREETING"
echo "user=$(id -un) uid=$(id -u) gid=$(id -g)"
echo "pwd=$(pwd)"
echo "path=$PATH"
echo "args=$*"
"""


def _write(root: Path, files: dict[str, str], mode: int = 0o644) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    return root


@pytest.mark.requires("runc")
def test_shell_script_app_runs_with_env_workdir_user_entrypoint_and_cmd(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    context = _write(tmp_path / "context", {"bin/hello.sh": HELLO}, mode=0o755)
    (context / "Dockerfile").write_text(
        f"FROM {busybox_base.oci_ref}\n"
        'ENV GREETING="hello from a Dockerfile" PATH=/app/bin:$PATH\n'
        "WORKDIR /app\n"
        "COPY bin/ bin/\n"
        "USER app\n"
        'ENTRYPOINT ["hello.sh"]\n'  # found through the PATH the ENV above extended
        'CMD ["one", "two"]\n'
    )

    lines = build_and_run(dockwright, context, f"{busybox_base.host}/apps/script:1", tmp_path)

    assert lines == [
        "greeting=hello from a Dockerfile",
        f"user=app uid={APP_UID} gid={APP_UID}",
        "pwd=/app",
        f"path=/app/bin:{BASE_PATH_ENV.removeprefix('PATH=')}",
        "args=one two",
    ]


@pytest.mark.requires("runc")
def test_multi_stage_with_arg_driven_from_copy_from_a_stage_and_chown_names(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    """The base comes from a build arg (its default is unreachable, so the arg must win); files come
    from a scratch stage and the context, owned by `app` as named in the base's /etc/passwd; a stage
    with RUN that the target does not need is neither built nor pulled."""
    context = _write(tmp_path / "context", {"site/index.html": "<h1>hello</h1>\n", "notes.txt": "notes\n"})
    (context / "Dockerfile").write_text(
        f"ARG BASE={UNREACHABLE}/never/pulled:1\n"
        f"FROM {UNREACHABLE}/tools/compiler:1 AS build\n"
        "RUN make site\n"
        "FROM scratch AS assets\n"
        "COPY site/ /site/\n"
        "FROM ${BASE}\n"
        "COPY --from=assets --chown=app:app /site /srv/site\n"
        "COPY --chown=app:app --chmod=640 notes.txt /notes.txt\n"
        "USER app\n"
        'CMD ["sh", "-c", "cat /srv/site/index.html /notes.txt; '
        "stat -c '%U:%G %a %n' /srv/site /srv/site/index.html /notes.txt; id -un\"]\n"
    )

    lines = build_and_run(dockwright, context, f"{busybox_base.host}/apps/site:1", tmp_path,
                           "--build-arg", f"BASE={busybox_base.docker_ref}")

    assert lines == [
        "<h1>hello</h1>",
        "notes",
        "app:app 755 /srv/site",
        "app:app 644 /srv/site/index.html",
        "app:app 640 /notes.txt",
        "app",
    ]


# ---------------------------------------------------------------------------------------------
# Errors through the CLI


def test_an_unsupported_run_mount_fails_before_any_network_access(dockwright: RunDockwright, tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {UNREACHABLE}/base/image:1\n"
        "ENV A=1\n"
        "RUN --mount=type=ssh \\\n"
        "    git clone git@example.com:private/repo.git\n"
    )

    proc = dockwright("build", context, "-t", f"{UNREACHABLE}/out:1", "--push", *cache_args(tmp_path),
                      check=False)

    line = assert_user_error(proc, "Dockerfile:3: RUN --mount=type=ssh", "not supported")
    assert "secret" in line  # what to use instead
    assert UNREACHABLE not in proc.stderr  # the unreachable registry was never contacted


@pytest.mark.parametrize(
    ("dockerfile", "needles"),
    [
        ("FROM scratch\nFORM x\n", ["build.Dockerfile:2:", "unknown instruction: FORM"]),
        ("FROM scratch\nCOPY only-one\n", ["build.Dockerfile:2:", "COPY requires at least two arguments"]),
        ("FROM scratch\n\nHEALTHCHECK --interval=soon CMD true\n", ["build.Dockerfile:3:", "not a duration"]),
        ("FROM scratch\nCOPY <<EOF /x\nnever ends\n", ["build.Dockerfile:2:", "heredoc"]),
        ("FROM Not/A:Valid:Ref\n", ["build.Dockerfile:1:", "FROM", "invalid image reference"]),
        ("FROM scratch\nCOPY --from=Bad:Ref:x /a /b\n", ["build.Dockerfile:2:", "COPY --from"]),
        ("FROM scratch AS a\nFROM scratch\nCOPY --from=a --chown /a /b\n", ["build.Dockerfile:3:", "--chown"]),
        ("FROM scratch\nCOPY --bogus=1 a /b\n", ["build.Dockerfile:2:", "unknown flag: --bogus"]),
    ],
    ids=["unknown-instruction", "copy-one-argument", "bad-duration", "unterminated-heredoc", "bad-from-reference",
         "bad-copy-from-reference", "flag-without-value", "unknown-flag"],
)
def test_dockerfile_errors_name_the_file_and_line(
    dockwright: RunDockwright, tmp_path: Path, dockerfile: str, needles: list[str]
) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / "build.Dockerfile").write_text(dockerfile)

    proc = dockwright("build", context, "-f", context / "build.Dockerfile", "-o", f"type=oci,dest={tmp_path / 'out'}",
                      check=False)

    assert_user_error(proc, *needles)
    assert not (tmp_path / "out").exists()


def test_dockerfile_from_stdin_names_its_lines(dockwright: RunDockwright, tmp_path: Path) -> None:
    proc = dockwright("build", tmp_path, "-f", "-", input="FROM scratch\nWORKDIR\n", check=False)

    assert_user_error(proc, ":2:", "WORKDIR")
