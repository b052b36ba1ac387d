"""`dockwright --version` and `--help` must start fast: no HTTP, compression or Docker libraries."""

import subprocess
import sys

import pytest

HEAVY = ("http", "ssl", "isal", "zstandard", "docker", "rich", "dockerfile")

PROBE = """
import sys
from dockwright.cli.main import main
try:
    main({args!r})
except SystemExit:
    pass
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print("HEAVY:" + ",".join(heavy))
"""


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["build", "--help"], []])
def test_help_and_version_import_nothing_heavy(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-c", PROBE.format(args=args, heavy=set(HEAVY))],
                            capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "HEAVY:", result.stdout
