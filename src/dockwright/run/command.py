"""What a RunStep runs: its argv (shell form through the SHELL), its environment (the config's Env, then
the build args) and the history text BuildKit writes for it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dockwright.plan import RunStep

DEFAULT_SHELL = ("/bin/sh", "-c")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def argv(step: RunStep, config: Mapping[str, object]) -> list[str]:
    """Exec form as written; shell form through the step's SHELL, else the image's Shell, else /bin/sh -c."""
    if isinstance(step.command, tuple):
        return list(step.command)
    shell = step.shell or tuple(config.get("Shell") or ()) or DEFAULT_SHELL  # type: ignore[call-overload]
    return [*shell, step.command]


def environment(config_env: Sequence[str], args: Sequence[tuple[str, str]]) -> list[str]:
    """`K=V` items: the config's Env, then build args (a later key replaces an earlier one in place);
    PATH as BuildKit sets it when the image has none."""
    env: dict[str, str] = {}
    for item in config_env:
        key, _, value = item.partition("=")
        env[key] = value
    for key, value in args:
        env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    return [f"{key}={value}" for key, value in env.items()]


def history(args: Sequence[tuple[str, str]], command: Sequence[str]) -> str:
    """BuildKit's created_by: `RUN |N K=V ... ARGV # buildkit` (the build args are shown, as in Docker)."""
    shown = [f"|{len(args)}", *(f"{key}={value}" for key, value in args)] if args else []
    return "RUN " + " ".join([*shown, *command]) + " # buildkit"


def summary(step: RunStep, limit: int = 60) -> str:
    """The command as the user wrote it, on one line and shortened, for messages."""
    text = step.command if isinstance(step.command, str) else " ".join(step.command)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
