"""The flags frontend: each flag means what the equivalent Dockerfile instruction means."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockwright.cli.describe import describe_text
from dockwright.frontends import flags
from dockwright.model.errors import UsageError
from dockwright.plan import ConfigEdit, ConfigStep, CopyStep


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('["/app/server", "--port", "8080"]', ("/app/server", "--port", "8080")),
        ('  ["node", "index.js"]  ', ("node", "index.js")),
        ("[]", ()),
        ("npm start", ("/bin/sh", "-c", "npm start")),
        ("echo $HOME && exec app", ("/bin/sh", "-c", "echo $HOME && exec app")),
        ("", ()),
    ],
)
def test_command_form_exec_and_shell(value: str, expected: tuple[str, ...]) -> None:
    assert flags.command_form("--cmd", value) == expected


@pytest.mark.parametrize("value", ['["unclosed"', "[1, 2]", '["a", null]', "[not json]"])
def test_command_form_bad_json_array_names_the_flag(value: str) -> None:
    with pytest.raises(UsageError) as info:
        flags.command_form("--entrypoint", value)
    assert "--entrypoint" in str(info.value)
    assert repr(value) in str(info.value)
    assert info.value.hint


@pytest.mark.parametrize(("value", "expected"), [("A=1", ("A", "1")), ("A=", ("A", "")),
                                                 ("URL=a=b?c=d", ("URL", "a=b?c=d"))])
def test_key_value(value: str, expected: tuple[str, str]) -> None:
    assert flags.key_value("--env", value) == expected


@pytest.mark.parametrize("value", ["A", "=1", ""])
def test_key_value_errors_name_flag_and_value(value: str) -> None:
    with pytest.raises(UsageError) as info:
        flags.key_value("--label", value)
    assert f"--label {value!r}" in str(info.value)
    assert "KEY=VALUE" in str(info.value)


@pytest.mark.parametrize(("value", "expected"), [("80", "80/tcp"), ("53/udp", "53/udp"), ("443/TCP", "443/tcp"),
                                                 ("0080", "80/tcp"), ("9/sctp", "9/sctp"), ("65535", "65535/tcp"),
                                                 ("80/", "80/tcp")])  # as Docker's nat.ParsePortSpec
def test_port_normalisation(value: str, expected: str) -> None:
    assert flags.ports(value) == [expected]


def test_port_ranges_expand_like_dockerfile_expose() -> None:
    assert flags.ports("8000-8002/udp") == ["8000/udp", "8001/udp", "8002/udp"]


@pytest.mark.parametrize("value", ["0", "65536", "http", "80/icmp", "-1", "", "/tcp", "8 0"])
def test_port_validation(value: str) -> None:
    with pytest.raises(UsageError) as info:
        flags.ports(value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(("value", "expected"), [("dist:/app", ("dist", "/app")), ("a:b:/srv/", ("a:b", "/srv/")),
                                                 (".:app", (".", "app"))])
def test_parse_copy(value: str, expected: tuple[str, str]) -> None:
    assert flags.parse_copy(value) == expected


@pytest.mark.parametrize("value", ["dist", ":/app", "dist:", ""])
def test_parse_copy_errors(value: str) -> None:
    with pytest.raises(UsageError) as info:
        flags.parse_copy(value)
    assert "SRC:DEST" in str(info.value)


def test_config_edit_translates_every_flag() -> None:
    edit = flags.config_edit(entrypoint='["/app"]', cmd="serve --port 80", env=["A=1", "B=x=y"], workdir="/srv",
                             user="app", expose=["80", "53/udp"], volumes=["/data"], labels=["k=v"],
                             stop_signal="SIGTERM")
    assert edit == ConfigEdit(entrypoint=("/app",), cmd=("/bin/sh", "-c", "serve --port 80"),
                              env=(("A", "1"), ("B", "x=y")), workdir="/srv", user="app",
                              exposed_ports=("80/tcp", "53/udp"), volumes=("/data",), labels=(("k", "v"),),
                              stop_signal="SIGTERM")
    assert flags.config_edit() == ConfigEdit()


def test_relative_workdir_is_refused() -> None:
    with pytest.raises(UsageError, match="--workdir 'app'"):
        flags.config_edit(workdir="app")


def test_plan_puts_the_config_step_first_and_one_copy_step_per_copy(tmp_path: Path) -> None:
    edit = flags.config_edit(workdir="/app", cmd='["./server"]')
    plan = flags.plan_from_flags(tmp_path, "alpine:3", ["bin:.", "static:/srv/static"], edit, chown="1000:1000",
                                 chmod="0755", annotations=["org.opencontainers.image.source=https://x"],
                                 dockerignore=["*.log"])
    (stage,) = plan.stages
    assert stage.base == "alpine:3"
    first, *copies = stage.steps
    assert first == ConfigStep(edit)
    assert [(c.sources, c.dest, c.chown, c.chmod) for c in copies if isinstance(c, CopyStep)] == [
        (("bin",), ".", "1000:1000", "0755"),
        (("static",), "/srv/static", "1000:1000", "0755"),
    ]
    assert len(copies) == 2
    assert plan.annotations == (("org.opencontainers.image.source", "https://x"),)
    assert plan.dockerignore == ("*.log",)
    assert plan.source == "flags"
    assert "COPY --chown=1000:1000 --chmod=0755 bin ." in describe_text([plan], [], [])


def test_plan_without_config_flags_has_only_copy_steps(tmp_path: Path) -> None:
    plan = flags.plan_from_flags(tmp_path, "scratch", ["a:/a"], ConfigEdit())
    assert [type(s) for s in plan.target.steps] == [CopyStep]
    assert flags.plan_from_flags(tmp_path, "scratch", [], ConfigEdit()).target.steps == ()


@pytest.mark.parametrize("chmod", ["8", "rwx", "-1", "-755", "77777", "", "0o755", " 755"])
def test_bad_chmod_is_refused(tmp_path: Path, chmod: str) -> None:
    with pytest.raises(UsageError) as info:
        flags.plan_from_flags(tmp_path, "scratch", ["a:/a"], ConfigEdit(), chmod=chmod)
    assert f"--chmod {chmod!r}" in str(info.value)


@pytest.mark.parametrize("chmod", ["755", "0644", "4755", "7777", "0"])
def test_good_chmod_is_kept_as_written(tmp_path: Path, chmod: str) -> None:
    plan = flags.plan_from_flags(tmp_path, "scratch", ["a:/a"], ConfigEdit(), chmod=chmod)
    (step,) = plan.target.steps
    assert isinstance(step, CopyStep) and step.chmod == chmod


def test_bad_annotation_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--annotation"):
        flags.plan_from_flags(tmp_path, "scratch", [], ConfigEdit(), annotations=["novalue"])


def test_layering_splits_a_recognised_copy(tmp_path: Path) -> None:
    (tmp_path / "app" / "node_modules" / "x").mkdir(parents=True)
    (tmp_path / "app" / "index.js").write_text("")
    plain = flags.plan_from_flags(tmp_path, "node:22", ["app:/app"], ConfigEdit())
    split = flags.plan_from_flags(tmp_path, "node:22", ["app:/app"], ConfigEdit(), layering=True)
    assert len(plain.target.steps) == 1
    assert len(split.target.steps) == 2


def test_entrypoint_resets_the_inherited_cmd_unless_cmd_is_given(tmp_path: Path) -> None:
    """Docker's rule (issue 11 item 1): ENTRYPOINT clears an inherited CMD; a CMD of the same build stays."""
    alone = flags.plan_from_flags(tmp_path, "scratch", [], flags.config_edit(entrypoint='["/app"]'))
    assert alone.target.steps == (ConfigStep(ConfigEdit(entrypoint=("/app",), cmd=())),)
    both = flags.plan_from_flags(tmp_path, "scratch", [], flags.config_edit(entrypoint='["/app"]', cmd='["x"]'))
    assert both.target.steps == (ConfigStep(ConfigEdit(entrypoint=("/app",), cmd=("x",))),)
    cmd_only = flags.plan_from_flags(tmp_path, "scratch", [], flags.config_edit(cmd='["x"]'))
    assert cmd_only.target.steps == (ConfigStep(ConfigEdit(cmd=("x",))),)


def test_entrypoint_overlay_on_a_dockerfile_keeps_the_dockerfile_cmd(tmp_path: Path) -> None:
    from dockwright.api.plans import dockerfile_planner
    from dockwright.model.platform import Platform

    overlay = flags.config_edit(entrypoint='["/app"]')
    for text, cmd in (("FROM alpine\n", ()), ('FROM alpine\nCMD ["serve"]\n', None),
                      ('FROM alpine AS a\nCMD ["serve"]\nFROM a\n', None)):
        plan = dockerfile_planner(tmp_path, text=text, overlay=overlay)(Platform("linux", "amd64"))
        assert plan.target.steps[-1] == ConfigStep(ConfigEdit(entrypoint=("/app",), cmd=cmd)), text
