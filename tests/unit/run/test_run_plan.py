"""RUN without running anything: the Dockerfile frontend's RunSteps (shell, exec, heredocs, flags, mounts,
build args), flags mode --run, the command's argv/env/history, USER resolution and the platform check."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockwright.frontends import flags
from dockwright.frontends.dockerfile import plan_from_dockerfile
from dockwright.model.errors import DockwrightError
from dockwright.model.platform import Platform
from dockwright.plan import ConfigEdit, ConfigStep, CopyStep, RunMount, RunStep
from dockwright.run import command, isolation
from dockwright.run.spec import User, resolve_user

PASSWD = b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nbob:x:2000:3000::/home/bob:/bin/sh\n"
GROUP = b"root:x:0:\napp:x:1000:\nstaff:x:3000:\nextra:x:4000:app,bob\nmore:x:5000:bob\n"


def runs(text: str, **kwargs: object) -> list[RunStep]:
    plan = plan_from_dockerfile(Path("."), text, platform=Platform.parse("linux/amd64"),
                                build_platform=Platform.parse("linux/amd64"), **kwargs)  # type: ignore[arg-type]
    return [step for stage in plan.stages for step in stage.steps if isinstance(step, RunStep)]


def test_shell_and_exec_forms() -> None:
    shell, exec_form = runs('FROM scratch\nRUN echo a \\\n  b\nSHELL ["/bin/bash", "-c"]\nRUN ["ls", "-l"]\n')
    assert (shell.command, shell.shell, shell.line) == ("echo a   b", None, 2)
    assert (exec_form.command, exec_form.shell) == (("ls", "-l"), ("/bin/bash", "-c"))


@pytest.mark.parametrize(("text", "expected", "files"), [
    ("RUN <<EOF\necho $HOME\nEOF\n", "echo $HOME\n", ()),  # a simple heredoc: its content is the script
    ("RUN <<-EOF\n\techo tabs\n\tEOF\n", "echo tabs\n", ()),  # <<- strips leading tabs
    ("RUN <<'EOF'\necho $HOME\nEOF\n", "echo $HOME\n", ()),  # the shell expands (or not) at run time
    ("RUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n", "/dev/pipes/EOF",
     (("EOF", b"#!/usr/bin/env python3\nprint(1)\n"),)),  # a script with #! runs as a file
    ("RUN cat <<A <<B > /x\na\nA\nb\nB\n", "cat <<A <<B > /x\na\nA\nb\nB", ()),  # the shell reads them
])
def test_heredocs_as_buildkit_runs_them(text: str, expected: str, files: tuple[tuple[str, bytes], ...]) -> None:
    (step,) = runs("FROM scratch\n" + text)
    assert step.command == expected and step.files == files


def test_flags_and_mounts() -> None:
    (step,) = runs("FROM scratch AS tools\nFROM scratch\nARG CACHE=/root/.cache\n"
                   "RUN --network=none --mount=type=cache,target=$CACHE,sharing=locked,mode=0700,uid=1000 "
                   "--mount=type=bind,from=tools,source=/usr/bin,target=/tools "
                   "--mount=type=secret,id=token --mount=type=tmpfs,target=/tmp,size=64m make\n")
    assert step.network == "none"
    cache, bind, secret, tmpfs = step.mounts
    assert cache == RunMount("cache", "/root/.cache", id="/root/.cache", readonly=False, sharing="locked", mode=0o700,
                             uid=1000)
    assert bind == RunMount("bind", "/tools", source="/usr/bin", from_stage=0)
    assert (secret.type, secret.id, secret.target) == ("secret", "token", "/run/secrets/token")
    assert (tmpfs.type, tmpfs.target, tmpfs.size) == ("tmpfs", "/tmp", 64 << 20)


def test_build_args_reach_run_but_env_wins_and_base_env_defers() -> None:
    (step,) = runs("FROM busybox\nARG A=1\nARG B=2\nARG P=${PATH}:/x\nENV B=3\nRUN env\n")
    assert step.args == (("A", "1"), ("P", "${PATH}:/x")) and step.deferred  # B is the ENV's
    (plain,) = runs("FROM scratch\nARG A=1\nRUN env\n", build_args={"A": "cli"})
    assert plain.args == (("A", "cli"),) and not plain.deferred


def test_an_arg_after_an_env_of_its_name_wins_and_the_history_lists_every_arg() -> None:
    """BuildKit (frontend/dockerfile/dockerfile2llb/convert.go): dispatchArg adds an ARG with a value to the
    stage's env list as dispatchEnv adds an ENV, so the later one wins for RUN and for substitution; an
    ARG without a value adds nothing; runCommandString lists every declared ARG with its value in that
    env, empty when it has none, and the env list moves a key set again to the end."""
    text = ("FROM scratch\nENV A=env B=envb\nARG A=arg\nARG B\nARG C\nARG D=d\nENV D=envd\nRUN run\n"
            "ENV FROM_A=$A FROM_D=$D\n")
    (step,) = runs(text)
    assert (step.args, step.arg_names, step.env_order) == ((("A", "arg"),), ("A", "B", "C", "D"), ("B", "A", "D"))
    config_env = ["PATH=/bin", "A=env", "B=envb", "D=envd"]  # the image's Env at the RUN
    state = command.environment(config_env, step.args, step.env_order)
    assert state == ["PATH=/bin", "B=envb", "A=arg", "D=envd"]  # C is in no environment
    assert command.history(command.shown_args(step.arg_names, state), ["/bin/sh", "-c", "run"]) == \
        "RUN |4 A=arg B=envb C= D=envd /bin/sh -c run # buildkit"
    plan = plan_from_dockerfile(Path("."), text, platform=Platform.parse("linux/amd64"),
                                build_platform=Platform.parse("linux/amd64"))
    last = plan.stages[-1].steps[-1]
    assert isinstance(last, ConfigStep) and last.edit.env == (("FROM_A", "arg"), ("FROM_D", "envd"))


def test_a_build_arg_that_uses_the_base_images_env_is_substituted_whole() -> None:
    """ARG P=${PATH}:/x (PATH from the base image, unknown here): a later $P is P's template, since no config
    holds P to resolve ${P} against (it came out empty); an operator on it is refused, not guessed."""
    text = "FROM busybox\nARG P=${PATH}:/x\nARG Q=${P}:/y\nENV E=$P\nRUN run\n"
    (step,) = runs(text)
    assert dict(step.args)["Q"] == "${PATH}:/x:/y" and step.deferred
    plan = plan_from_dockerfile(Path("."), text, platform=Platform.parse("linux/amd64"),
                                build_platform=Platform.parse("linux/amd64"))
    env_edit = next(s for s in plan.stages[0].steps if isinstance(s, ConfigStep) and s.edit.env
                    and s.edit.env[0][0] == "E")
    assert env_edit.edit.env == (("E", "${PATH}:/x"),)
    with pytest.raises(DockwrightError, match="substitute it only whole"):
        runs("FROM busybox\nARG P=${PATH}:/x\nARG R=${P:-z}\n")


def test_a_stage_from_a_stage_inherits_its_args() -> None:
    """BuildKit (convert.go dispatchState.init): a stage FROM an earlier stage starts with its environment,
    ARGs included, with the config's Env set over them again; its RUN history lists them."""
    text = "FROM {base} AS base\nARG NAME=joe\nENV X=1\nARG X=argx\nFROM base\nRUN run\nENV HI=hi-$NAME\n"
    (_, known) = runs(text.format(base="scratch") + "RUN again\n")
    assert (known.args, known.arg_names, known.deferred) == ((("NAME", "joe"),), ("NAME", "X"), False)
    (unknown,) = runs(text.format(base="busybox"))
    assert unknown.args == (("NAME", "${NAME-joe}"),) and unknown.deferred  # the base's Env would win
    plan = plan_from_dockerfile(Path("."), text.format(base="scratch"), platform=Platform.parse("linux/amd64"),
                                build_platform=Platform.parse("linux/amd64"))
    last = plan.stages[-1].steps[-1]
    assert isinstance(last, ConfigStep) and last.edit.env == (("HI", "hi-joe"),)


def test_a_stage_the_target_does_not_need_is_not_planned() -> None:
    assert runs("FROM scratch AS broken\nRUN exit 1\nFROM scratch\nRUN true\n") == [RunStep("true", line=4)]


def test_flags_mode_runs_keep_their_order_and_user_comes_last(tmp_path: Path) -> None:
    edit = flags.config_edit(env=["A=1"], user="app")
    plan = flags.plan_from_flags(tmp_path, "scratch", ["a:/a"], edit,
                                 layer_steps=[("run", "useradd app"), ("copy", "a:/a"), ("run", '["ls", "/a"]')])
    first, run, copy, exec_run, last = plan.target.steps
    assert first == ConfigStep(ConfigEdit(env=(("A", "1"),)))
    assert (run.command, exec_run.command) == ("useradd app", ("ls", "/a"))  # type: ignore[union-attr]
    assert isinstance(copy, CopyStep) and last == ConfigStep(ConfigEdit(user="app"))


def test_argv_environment_and_history() -> None:
    step = RunStep("echo $A")
    assert command.argv(step, {}) == ["/bin/sh", "-c", "echo $A"]
    assert command.argv(step, {"Shell": ["/bin/bash", "-c"]}) == ["/bin/bash", "-c", "echo $A"]
    assert command.argv(RunStep(("ls",), shell=("x",)), {}) == ["ls"]
    assert command.environment(["PATH=/bin", "A=env"], [("A", "arg"), ("B", "2")]) == ["PATH=/bin", "A=arg", "B=2"]
    assert command.environment([], [])[0].startswith("PATH=/usr/local/sbin")
    assert command.history([("A", "1")], ["/bin/sh", "-c", "make"]) == "RUN |1 A=1 /bin/sh -c make # buildkit"


@pytest.mark.parametrize(("user", "expected"), [
    ("", User(0, 0)),
    ("app", User(1000, 1000, (4000,))),
    ("bob", User(2000, 3000, (4000, 5000))),  # supplementary groups: those listing the user
    ("2000", User(2000, 3000, (4000, 5000))),  # a uid with an entry is that user
    ("bob:extra", User(2000, 4000)),  # an explicit group: no supplementary ones (runc's rule)
    ("4242", User(4242, 0)),  # a uid without an entry: gid 0
    ("4242:4343", User(4242, 4343)),
    ("app:4343", User(1000, 4343)),
    ("app:", User(1000, 1000, (4000,))),  # moby/sys/user GetExecUser: an empty group part names no group
    (":extra", User(0, 4000)),  # and an empty user part is uid 0's entry
])
def test_user_resolution(user: str, expected: User) -> None:
    assert resolve_user(user, PASSWD, GROUP, "the image") == expected


@pytest.mark.parametrize(("user", "gids"), [
    ("", [0]), ("app", [1000, 4000]), ("bob", [3000, 4000, 5000]), ("bob:extra", [4000]), ("4242", [0]),
    ("4242:4343", [4343]), ("root:root", [0]), ("1000:root", [0]),
])
def test_the_primary_group_leads_the_supplementary_ones(user: str, gids: list[int]) -> None:
    # BuildKit's executor/oci/user.go: WithUIDGID puts the primary gid first in additionalGids
    # (ensureAdditionalGids), so `id` in a RUN prints groups=GID,... as under Docker
    from dockwright.run.spec import Process, runtime_spec

    process = Process(["id"], [], "/", resolve_user(user, PASSWD, GROUP, "the image"))
    assert runtime_spec("/rootfs", process, "/etc/hosts")["process"]["user"]["additionalGids"] == gids


@pytest.mark.parametrize(("user", "fragment"), [("nobody", "no user 'nobody'"), ("app:nogroup", "no group 'nogroup'")])
def test_unknown_users_and_groups_say_what_to_do(user: str, fragment: str) -> None:
    with pytest.raises(DockwrightError, match=fragment) as raised:
        resolve_user(user, PASSWD, GROUP, "the image")
    assert raised.value.hint


def test_a_foreign_platform_needs_a_registered_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = Platform.host()
    other = Platform("linux", "arm64" if host.architecture != "arm64" else "amd64")
    qemu = "aarch64" if other.architecture == "arm64" else "x86_64"
    monkeypatch.setattr(isolation, "_BINFMT", tmp_path)
    assert isolation.check_platform(host) is None
    with pytest.raises(isolation.RunUnavailable, match=f"qemu-{qemu}") as raised:
        isolation.check_platform(other)
    assert "qemu-user-static" in (raised.value.hint or "")
    interpreter = f"/usr/libexec/qemu-binfmt/{qemu}-binfmt-P"
    (tmp_path / f"qemu-{qemu}").write_text(f"enabled\ninterpreter {interpreter}\nflags: POCF\n")
    assert isolation.check_platform(other) == interpreter


def test_a_missing_runtime_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(isolation.RunUnavailable, match="neither runc nor crun") as raised:
        isolation.choose()
    assert "apt-get install runc" in (raised.value.hint or "")
    with pytest.raises(isolation.RunUnavailable, match="--runtime /no/such/runc"):
        isolation.choose("oci", "/no/such/runc")


def test_proxy_build_args_reach_run_without_an_arg_line() -> None:
    (step,) = runs("FROM scratch\nARG https_proxy\nRUN apt-get update\n",
                   build_args={"HTTP_PROXY": "http://proxy:3128", "https_proxy": "http://p:1", "OTHER": "x"})
    assert step.proxies == (("HTTP_PROXY", "http://proxy:3128"),)  # declared ones are ordinary args
    assert step.args == (("https_proxy", "http://p:1"),)
    assert command.environment([], [*step.args, *step.proxies])[:2] == ["https_proxy=http://p:1",
                                                                      "HTTP_PROXY=http://proxy:3128"]


def test_dry_run_json_names_proxy_args_without_their_values() -> None:
    from dockwright.cli.describe import step_json

    (step,) = runs("FROM scratch\nRUN true\n", build_args={"HTTP_PROXY": "http://user:secret@proxy:3128"})
    assert step_json(step)["proxies"] == ["HTTP_PROXY"]
    assert "secret" not in str(step_json(step))
