"""What a RunStep runs: its argv (shell form through the SHELL), its environment (the config's Env, then
the build args) and the history text BuildKit writes for it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from dockwright.plan import RunStep

DEFAULT_SHELL = ("/bin/sh", "-c")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def argv(step: RunStep, config: Mapping[str, object]) -> list[str]:
    """Exec form as written; shell form through the step's SHELL, else the image's Shell, else /bin/sh -c."""
    if isinstance(step.command, tuple):
        return list(step.command)
    shell = step.shell or tuple(config.get("Shell") or ()) or DEFAULT_SHELL  # type: ignore[call-overload]
    return [*shell, step.command]


def environment(config_env: Sequence[str], args: Sequence[tuple[str, str]], order: Sequence[str] = ()) -> list[str]:
    """`K=V` items as BuildKit's env list has them: the config's Env, its values replaced by the build args'
    (`args`), the keys the stage set (`order`, by their last setting) after the others, which keep their
    order; PATH as BuildKit sets it when the image has none."""
    env: dict[str, str] = {}
    for item in config_env:
        key, _, value = item.partition("=")
        env[key] = value
    for key, value in args:
        env[key] = value
    keys = [key for key in env if key not in order] + [key for key in order if key in env]
    if "PATH" not in env:
        env["PATH"] = DEFAULT_PATH
        keys.append("PATH")
    return [f"{key}={env[key]}" for key in keys]


def history(args: Sequence[tuple[str, str]], command: Sequence[str]) -> str:
    """BuildKit's created_by: `RUN |N K=V ... ARGV # buildkit` (the build args are shown, as in Docker)."""
    shown = [f"|{len(args)}", *(f"{key}={value}" for key, value in args)] if args else []
    return "RUN " + " ".join([*shown, *command]) + " # buildkit"


def shown_args(names: Iterable[str], env: Sequence[str]) -> list[tuple[str, str]]:
    """What the history shows for the ARGs `names`: each with its value in the command's environment `env`
    (an ENV's or the base image's when that set it last), empty when it has none (BuildKit's
    runCommandString in frontend/dockerfile/dockerfile2llb/convert.go)."""
    values = dict(item.partition("=")[::2] for item in env)
    return [(name, values.get(name, "")) for name in dict.fromkeys(names)]


def summary(step: RunStep, limit: int = 60) -> str:
    """The command as the user wrote it, on one line and shortened, for messages."""
    text = step.command if isinstance(step.command, str) else " ".join(step.command)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
