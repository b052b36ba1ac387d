"""Command line: parse arguments into a plan and options, run, print results.

stdout carries results only (pushed references or the image digest); logs go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn, TextIO

from dockwright import __version__
from dockwright.model.errors import DockwrightError

log = logging.getLogger("dockwright")


class _InOrder(argparse.Action):
    """Appends to its own list and to `layer_steps` ((dest, value) pairs), so that --copy and --run steps
    keep their command-line order."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, [*getattr(namespace, self.dest), values])
        namespace.layer_steps = [*(getattr(namespace, "layer_steps", None) or []), (self.dest, values)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dockwright",
        description="Build OCI and Docker images without a daemon: base image + your files -> registry, "
                    "archive, OCI layout or local engine.",
    )
    parser.add_argument("--version", action="version", version=f"dockwright {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    build = commands.add_parser("build", help="build an image (flags mode with --from, else from a Dockerfile)")
    build.add_argument("context", nargs="?", default=".", help="build context directory (default: .)")
    what = build.add_argument_group("what to build")
    what.add_argument("--from", dest="base", metavar="REF",
                      help="base image: REF, scratch, oci-layout://DIR[:TAG], oci-archive://FILE[:TAG] or "
                           "docker-archive://FILE")
    what.add_argument("--copy", action=_InOrder, default=[], metavar="SRC:DEST",
                      help="copy SRC (relative to the context) to DEST; one layer each, in order")
    what.add_argument("--run", action=_InOrder, default=[], metavar="CMD",
                      help="run CMD (a shell string, or a JSON array) as a Dockerfile RUN; one layer each, "
                           "in order with --copy")
    what.add_argument("--chown", metavar="UID:GID", help="owner of copied files (default 0:0)")
    what.add_argument("--chmod", metavar="MODE", help="octal mode of copied files and directories")
    what.add_argument("-f", "--file", metavar="PATH", help="Dockerfile (default CONTEXT/Dockerfile; - for stdin)")
    what.add_argument("--build-arg", action="append", default=[], metavar="K[=V]", help="Dockerfile build argument")
    what.add_argument("--target", metavar="STAGE", help="Dockerfile stage to build")
    what.add_argument("--build-context", action="append", default=[], metavar="NAME=DIR|docker-image://REF|...",
                      help="a named context (as buildx): FROM NAME and COPY --from=NAME use it instead of the stage "
                           "or image NAME; a DIR, docker-image://REF, oci-layout://DIR[:TAG] or oci-archive://FILE")
    what.add_argument("--ignore-file", metavar="PATH",
                      help="ignore patterns instead of CONTEXT/.dockerignore (a <Dockerfile>.dockerignore still "
                           "comes first)")
    config = build.add_argument_group("image config (inherited from the base unless set)")
    config.add_argument("--entrypoint", metavar="CMD", help="JSON array (exec form) or a shell string")
    config.add_argument("--cmd", metavar="CMD", help="JSON array (exec form) or a shell string (/bin/sh -c)")
    config.add_argument("--env", action="append", default=[], metavar="K=V")
    config.add_argument("--workdir", metavar="DIR")
    config.add_argument("--user", metavar="USER[:GROUP]")
    config.add_argument("--expose", action="append", default=[], metavar="PORT[/PROTO]")
    config.add_argument("--volume", action="append", default=[], metavar="PATH")
    config.add_argument("--label", action="append", default=[], metavar="K=V")
    config.add_argument("--annotation", action="append", default=[], metavar="K=V", help="manifest annotation")
    config.add_argument("--stop-signal", metavar="SIG")
    out = build.add_argument_group("outputs (several at once)")
    out.add_argument("-t", "--tag", action="append", default=[], metavar="REF", help="name of the result")
    out.add_argument("--push", action="store_true", help="push to every tag (same as -o type=registry)")
    out.add_argument("-o", "--output", action="append", default=[], metavar="SPEC",
                     help="type=registry | type=docker,dest=FILE | type=oci,dest=FILE[,tar=false]")
    out.add_argument("--load", action="store_true", help="load into the engine at DOCKER_HOST (Docker or Podman)")
    out.add_argument("--metadata-file", metavar="FILE", help="write digests, tags and pushed references as JSON")
    out.add_argument("--iidfile", metavar="FILE", help="write the image ID (config digest) to FILE")
    how = build.add_argument_group("how")
    how.add_argument("--platform", metavar="LIST", help="linux/amd64,linux/arm64/v8 or all (default: host)")
    how.add_argument("--format", choices=("docker", "oci"), help="media types of the result (default: the base's)")
    how.add_argument("--pull", choices=("always", "missing", "never"), default="always",
                     help="always: check base tags with the registry (a HEAD; cached documents are reused); "
                          "missing: use a base tag's cached digest without asking; never: use only the cache")
    how.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                     help="allow plain HTTP to this registry (loopback hosts always may)")
    how.add_argument("--compression", choices=("gzip", "zstd", "none"), default="gzip")
    how.add_argument("--compression-level", type=int, metavar="N",
                     help="gzip 0-3 (ISA-L's levels, default 1: 0 fastest, 3 smallest), zstd 1-22 (default 3)")
    how.add_argument("--jobs", type=int, default=min(8, (os.cpu_count() or 2) * 2), metavar="N",
                     help="parallel blob transfers")
    how.add_argument("--cache-dir", metavar="DIR", help="layer and blob cache (default $XDG_CACHE_HOME/dockwright)")
    how.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    how.add_argument("--layering", choices=("off", "auto"), default="off",
                     help="auto: split --copy trees into dependency and application layers")
    how.add_argument("--isolation", default="oci", metavar="KIND",
                     help="how RUN steps run: oci (an OCI runtime on an overlay root; the default as root), "
                          "rootless (the same in a user namespace; the default otherwise), chroot (no runtime "
                          "and no namespace, for unprivileged CI pods running as root: isolates only the file system)")
    how.add_argument("--runtime", metavar="PATH", help="the OCI runtime for RUN (default: runc or crun from PATH)")
    how.add_argument("--secret", action="append", default=[], metavar="id=NAME,src=FILE|env=VAR",
                     help="a secret for RUN --mount=type=secret (never in the image, the cache or the logs)")
    how.add_argument("--dry-run", dest="dry_run", action="store_const", const="text",
                     help="print the build plan and its outputs, and stop (no network); --dry-run=json: the "
                          "same as one JSON document, for tools")
    how.add_argument("--dry-run=json", dest="dry_run", action="store_const", const="json", help=argparse.SUPPRESS)
    how.add_argument("--progress", choices=("auto", "tty", "plain", "quiet", "rawjson"), default="auto",
                     help="auto: tty on a terminal, else plain (a line at least every 5 s about what runs long); "
                          "rawjson: one JSON object per line on stderr, for tools; quiet: only errors")
    how.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr (--progress quiet)")
    how.add_argument("-v", "--verbose", action="store_true", help="detailed logs on stderr")

    login = commands.add_parser("login", help="store credentials for a registry in Docker's config.json")
    login.add_argument("registry")
    login.add_argument("-u", "--username")
    login.add_argument("-p", "--password")
    login.add_argument("--password-stdin", action="store_true")
    login.add_argument("--insecure-registry", action="store_true",
                       help="the registry speaks plain HTTP or has an unverifiable certificate, and you trust the "
                            "network: credentials may go to it unencrypted")
    logout = commands.add_parser("logout", help="remove stored credentials for a registry")
    logout.add_argument("registry")

    cache = commands.add_parser("cache", help="inspect or prune the local cache")
    cache_dir = {"metavar": "DIR", "help": "the cache (default $XDG_CACHE_HOME/dockwright)"}
    cache.add_argument("--cache-dir", **cache_dir)  # type: ignore[arg-type]
    cache_commands = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    du = cache_commands.add_parser("du", help="show the cache's size, per kind of entry, and its cap")
    prune = cache_commands.add_parser("prune", help="remove cached entries (least recently used first)")
    for action in (du, prune):  # before or after the action: `cache du --cache-dir DIR` too
        action.add_argument("--cache-dir", default=argparse.SUPPRESS, **cache_dir)  # type: ignore[arg-type]
    prune.add_argument("--keep-storage", metavar="SIZE", help="keep at most SIZE (e.g. 2GB); default: remove all")
    for command in (build, login, logout, cache, du, prune):
        command.set_defaults(usage_of=command)
    return parser


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to sys.stderr as it is at each message: a live progress display redirects it, to print log
    lines above itself."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


class _JsonLines(logging.Formatter):
    """--progress rawjson: every log message as {"time", "event": "log", "level", "message"}."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        return json.dumps({"time": round(record.created, 3), "event": "log", "level": record.levelname.lower(),
                           "message": record.getMessage()}, ensure_ascii=False)


def _setup_logging(quiet: bool, verbose: bool, rawjson: bool = False) -> None:
    """Plain messages on stderr (JSON lines with --progress rawjson). Idempotent, so that calling main() twice
    in one process (tests, embedding) neither duplicates lines nor writes to a stream that has since been
    replaced."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    for handler in [h for h in log.handlers if getattr(h, "dockwright", False)]:
        log.removeHandler(handler)
    handler = _Stderr()
    handler.dockwright = True  # type: ignore[attr-defined]
    handler.setFormatter(_JsonLines() if rawjson else logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(level)


def _error(args: argparse.Namespace, message: str, hint: str | None = None, details: Sequence[str] = ()) -> None:
    """The one error line (its details, e.g. a failed RUN's last output lines, and its hint) on stderr; a JSON
    object with --progress rawjson."""
    if getattr(args, "progress", None) == "rawjson":
        import json

        print(json.dumps({"event": "error", "message": message, **({"details": list(details)} if details else {}),
                          **({"hint": hint} if hint else {})}, ensure_ascii=False), file=sys.stderr)
        return
    print(f"error: {_printable(message)}", file=sys.stderr)
    for line in details:
        print(f"  {_printable(line)}", file=sys.stderr)
    if hint:
        print(f"  hint: {_printable(hint)}", file=sys.stderr)


INTERRUPTED, INTERRUPTED_BY_SIGTERM = 130, 143


class _Terminated(KeyboardInterrupt):
    """SIGTERM: unwound like Ctrl-C (temporary files removed, no tag pushed), exit status 128 + 15."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


# control characters (newlines too) a message may quote from the input: printed escaped, so that an error
# stays one line and cannot move the terminal's cursor
_CONTROLS = {c: repr(chr(c))[1:-1] for c in (*range(0x20), 0x7f, 0x85, 0x2028, 0x2029) if c != 0x09}


def _printable(message: str) -> str:
    return message.translate(_CONTROLS)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status. Callable from any thread and more than once: it installs
    no signal handler and never exits the process (`run` is the `dockwright` program)."""
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported with the usage of the command given, not the top level's
        getattr(args, "usage_of", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to start the build again (rootless RUN)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if getattr(args, "quiet", False):  # -q is --progress quiet
        args.progress = "quiet"
    mode = getattr(args, "progress", "auto")
    _setup_logging(mode == "quiet", getattr(args, "verbose", False), rawjson=mode == "rawjson")
    try:
        if args.command == "build":
            from dockwright.cli.build import run_build

            return run_build(args)
        if args.command in ("login", "logout"):
            from dockwright.cli.commands import run_login, run_logout

            return run_login(args) if args.command == "login" else run_logout(args)
        from dockwright.cli.commands import run_cache

        return run_cache(args)
    except DockwrightError as exc:
        _error(args, exc.message, exc.hint, exc.details)
        return exc.exit_code
    except BrokenPipeError:  # stdout closed early (| head): not worth a message
        return 1
    except OSError as exc:  # a file-system problem no module turned into a DockwrightError: still no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        _error(args, f"{where}{exc.strerror or exc}")
        return 1
    except KeyboardInterrupt as exc:
        print("interrupted: nothing was tagged and no partial output was left", file=sys.stderr)
        return INTERRUPTED_BY_SIGTERM if isinstance(exc, _Terminated) else INTERRUPTED


def run() -> NoReturn:
    """The `dockwright` program: SIGTERM unwinds like Ctrl-C; after an interruption the process exits at once,
    without waiting for transfer threads (temporary files were removed on the way out)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        status = main()
    except KeyboardInterrupt as exc:  # arrived while main() was already returning
        status = INTERRUPTED_BY_SIGTERM if isinstance(exc, _Terminated) else INTERRUPTED
    if status in (INTERRUPTED, INTERRUPTED_BY_SIGTERM):
        sys.stderr.flush()
        with contextlib.suppress(OSError):
            sys.stdout.flush()
        os._exit(status)
    sys.exit(status)
