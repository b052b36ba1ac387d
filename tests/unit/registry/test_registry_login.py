"""login/logout: what ends up in config.json or in the credential helper."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from test_registry_credentials import install_fake_helper

from dockwright.model.errors import AuthError
from dockwright.registry import RegistryClient
from dockwright.registry.credentials import Credential, CredentialStore
from dockwright.registry.login import login, logout


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Credential | None]]:
    """Replace the network check with a record of what would have been checked."""
    seen: list[tuple[str, Credential | None]] = []

    def verify_access(self: RegistryClient) -> None:
        seen.append((self.host, self._registries.credentials.get(self.host)))

    monkeypatch.setattr(RegistryClient, "verify_access", verify_access)
    return seen


def test_login_writes_an_auths_entry_atomically_with_mode_0600(tmp_path: Path, checked: list) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"other.example": {"auth": "b3RoZXI6eA=="}},
                                                      "psFormat": "table {{.ID}}"}))
    login("r.example:5000", "ann", "pw", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auths"]["r.example:5000"] == {"auth": base64.b64encode(b"ann:pw").decode()}
    assert config["auths"]["other.example"] == {"auth": "b3RoZXI6eA=="}
    assert config["psFormat"] == "table {{.ID}}"
    assert stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temp file left behind
    assert checked == [("r.example:5000", Credential("ann", "pw"))]
    assert CredentialStore(tmp_path).get("r.example:5000") == Credential("ann", "pw")


@pytest.mark.parametrize("name", ["docker.io", "index.docker.io", "registry-1.docker.io"])
def test_docker_hub_logins_use_the_hub_key(tmp_path: Path, checked: list, name: str) -> None:
    login(name, "hubber", "pw", tmp_path / "new-dir")
    config = json.loads((tmp_path / "new-dir" / "config.json").read_text())
    assert list(config["auths"]) == ["https://index.docker.io/v1/"]
    assert checked[0][0] == "registry-1.docker.io"


def test_failed_verification_stores_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: RegistryClient) -> None:
        raise AuthError("logging in: bad credentials", registry=self.host, status=401)

    monkeypatch.setattr(RegistryClient, "verify_access", refuse)
    with pytest.raises(AuthError):
        login("r.example", "ann", "wrong", tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_login_and_logout_through_the_credential_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        checked: list) -> None:
    calls = install_fake_helper(tmp_path / "bin", monkeypatch)
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps({"credsStore": "test"}))
    login("r.example", "ann", "pw", config_dir)
    config = json.loads((config_dir / "config.json").read_text())
    assert config == {"credsStore": "test", "auths": {"r.example": {}}}  # no secret in the file
    assert CredentialStore(config_dir).get("r.example") == Credential("ann", "pw")
    assert logout("r.example", config_dir)
    assert CredentialStore(config_dir).get("r.example") is None
    assert json.loads((config_dir / "config.json").read_text())["auths"] == {}
    assert calls.read_text().splitlines() == ["store r.example", "get r.example", "erase r.example", "get r.example"]


def test_logout_removes_every_key_form_and_reports_when_nothing_was_there(tmp_path: Path) -> None:
    entry = {"auth": base64.b64encode(b"a:b").decode()}
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": entry, "docker.io": entry, "r.example": entry}}))
    assert logout("docker.io", tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["auths"] == {"r.example": entry}
    assert not logout("docker.io", tmp_path)


def test_login_follows_a_symlinked_config(tmp_path: Path, checked: list) -> None:
    real = tmp_path / "dotfiles" / "docker.json"
    real.parent.mkdir()
    real.write_text("{}")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").symlink_to(real)
    login("r.example", "ann", "pw", tmp_path / "cfg")
    assert (tmp_path / "cfg" / "config.json").is_symlink()
    assert "r.example" in json.loads(real.read_text())["auths"]
