"""Registry names that are not loopback names: a line in /etc/hosts aliasing a unique name to 127.0.0.1,
made for one test and removed afterwards, even when the test fails.

Other test runs may edit /etc/hosts at the same time: every edit holds an exclusive lock, re-reads the
file, changes only its own line and replaces the file atomically (a temporary file renamed over it)."""

from __future__ import annotations

import fcntl
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

HOSTS = Path("/etc/hosts")
_LOCK = Path(tempfile.gettempdir()) / "dockwright-tests-etc-hosts.lock"


@contextmanager
def host_alias(address: str = "127.0.0.1") -> Iterator[str]:
    """A fresh name (`dw-<random>.lan`) that resolves to `address` while the block runs."""
    if not os.access(HOSTS, os.W_OK) or not os.access(HOSTS.parent, os.W_OK):
        pytest.skip(f"cannot edit {HOSTS} to alias a registry name (run the tests as root)")
    name = f"dw-{uuid.uuid4().hex[:12]}.lan"
    line = f"{address} {name}\n"
    _edit(lambda lines: [*lines, line])
    try:
        yield name
    finally:
        _edit(lambda lines: [kept for kept in lines if kept != line])


def _edit(change: Callable[[list[str]], list[str]]) -> None:
    with _LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = HOSTS.read_text()
        lines = (text if text.endswith("\n") or not text else text + "\n").splitlines(keepends=True)
        fd, temp = tempfile.mkstemp(prefix=".hosts.", dir=HOSTS.parent)
        try:
            with os.fdopen(fd, "w") as file:
                file.write("".join(change(lines)))
            os.chmod(temp, HOSTS.stat().st_mode & 0o7777)
            os.replace(temp, HOSTS)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
