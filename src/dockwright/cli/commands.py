"""`dockwright login`, `logout` and `cache`, once their arguments are parsed (kept apart from main.py so that
`dockwright --help` imports nothing heavy)."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from pathlib import Path

from dockwright.model.errors import UsageError

log = logging.getLogger("dockwright")


def run_login(args: argparse.Namespace) -> int:
    from dockwright.registry.login import login

    username = args.username
    if args.password_stdin:
        if args.password:
            raise UsageError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.read().rstrip("\r\n")
    elif args.password is not None:
        log.warning("warning: --password on the command line is visible to other users; use --password-stdin")
        password = args.password
    else:
        if not sys.stdin.isatty():
            raise UsageError("no password given", hint="use --password-stdin or -p")
        username = username or input("Username: ")
        password = getpass.getpass("Password: ")
    if not username:
        raise UsageError("no username given", hint="use -u USER")
    login(args.registry, username, password, None, insecure=args.insecure_registry)
    print(f"Login Succeeded ({args.registry})", file=sys.stderr)
    return 0


def run_logout(args: argparse.Namespace) -> int:
    from dockwright.registry.login import logout

    if logout(args.registry, None):
        print(f"Removed login credentials for {args.registry}", file=sys.stderr)
    else:  # as `docker logout` says it, with status 0: the wanted state holds
        print(f"Not logged in to {args.registry}", file=sys.stderr)
    return 0


def run_cache(args: argparse.Namespace) -> int:
    from dockwright.cache import default_cache_dir, disk_usage, prune
    from dockwright.model.units import human_size, parse_size, plural

    root = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if args.cache_command == "du":
        print(disk_usage(root))
        return 0
    keep = parse_size(args.keep_storage, "--keep-storage") if args.keep_storage else 0
    removed, freed = prune(root, keep)
    print(f"removed {plural(removed, 'entry', 'entries')}, freed {human_size(freed)}")
    return 0
