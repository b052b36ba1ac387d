"""RUN --mount's host side that needs no runtime: --secret parsing as buildx reads it, secret values
read from files and variables, and masking of command output."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockwright.model.errors import UsageError
from dockwright.plan import Secret
from dockwright.run.mounts import MASK, parse_secret, read_secret


@pytest.mark.parametrize("text, expected", [
    ("id=token,src=/run/token.txt", Secret("token", file="/run/token.txt")),
    ("id=token,source=t.txt", Secret("token", file="t.txt")),
    ("id=aws,env=AWS_SECRET_ACCESS_KEY", Secret("aws", env="AWS_SECRET_ACCESS_KEY")),
    ("id=GITHUB_TOKEN", Secret("GITHUB_TOKEN", env="GITHUB_TOKEN")),
    ("src=/home/me/.netrc", Secret(".netrc", file="/home/me/.netrc")),
    ("id=npmrc,type=file", Secret("npmrc", file="npmrc")),
])
def test_secret_flags_as_buildx_reads_them(text: str, expected: Secret) -> None:
    assert parse_secret(text) == expected


@pytest.mark.parametrize("text", ["token", "id=x,colour=red", "type=env", "id=x,type=ssh"])
def test_bad_secret_flags_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--secret"):
        parse_secret(text)


def test_secret_values_come_from_files_and_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t").write_bytes(b"from a file\n")
    monkeypatch.setenv("DW_TEST_SECRET", "from a variable")
    monkeypatch.delenv("DW_TEST_UNSET", raising=False)
    assert read_secret(Secret("a", file=str(tmp_path / "t"))) == b"from a file\n"
    assert read_secret(Secret("b", env="DW_TEST_SECRET")) == b"from a variable"
    assert read_secret(Secret("c", env="DW_TEST_UNSET")) is None
    with pytest.raises(UsageError, match="cannot read"):
        read_secret(Secret("d", file=str(tmp_path / "missing")))


def test_mask_hides_every_secret_value() -> None:
    from dockwright.run.mounts import Mounts

    mounts = Mounts.__new__(Mounts)
    mounts._secrets = ["s3cr3t-long", "s3cr3t"]
    assert mounts.mask("token s3cr3t-long and s3cr3t") == f"token {MASK} and {MASK}"


def test_short_secrets_are_not_masked_and_long_ones_line_by_line() -> None:
    """BuildKit masks no secret in a command's output; dockwright masks values of 3 characters or more (README,
    RUN mounts): a 1-2 character one would turn every such piece of output into ****."""
    from dockwright.run.mounts import Mounts, masked_values

    assert masked_values("ab") == set() and masked_values("x\n") == set()
    assert masked_values("abc\n") == {"abc\n", "abc"}
    assert masked_values("-----BEGIN KEY-----\nMIIEv\nab\n-----END KEY-----\n") >= {"MIIEv", "-----BEGIN KEY-----"}
    mounts = Mounts.__new__(Mounts)
    mounts._secrets = sorted(masked_values("ab") | masked_values("line-one\nline-two\n"), key=len, reverse=True)
    assert mounts.mask("a tab: ab") == "a tab: ab"
    assert mounts.mask("got line-two") == f"got {MASK}"
