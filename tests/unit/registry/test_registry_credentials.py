"""Credential lookup from a Docker config directory: auths key forms, credsStore, credHelpers."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import sys
from pathlib import Path

import pytest

from dockwright.model.errors import AuthError
from dockwright.registry.credentials import Credential, CredentialStore, config_key

FAKE_HELPER = """\
#!{python}
# A docker-credential-* helper keeping credentials in a JSON file next to it.
import json, pathlib, sys
db = pathlib.Path(__file__).with_name("helper-db.json")
data = json.loads(db.read_text()) if db.exists() else {{}}
action, payload = sys.argv[1], sys.stdin.read()
with open(db.with_name("helper-calls.log"), "a") as log:
    log.write(action + " " + (payload if action != "store" else json.loads(payload)["ServerURL"]) + "\\n")
if action == "get":
    if payload not in data:
        print("credentials not found in native keychain")
        sys.exit(1)
    print(json.dumps({{"ServerURL": payload, **data[payload]}}))
elif action == "store":
    item = json.loads(payload)
    data[item["ServerURL"]] = {{"Username": item["Username"], "Secret": item["Secret"]}}
    db.write_text(json.dumps(data))
elif action == "erase":
    if payload not in data:
        print("credentials not found in native keychain")
        sys.exit(1)
    del data[payload]
    db.write_text(json.dumps(data))
"""


def install_fake_helper(directory: Path, monkeypatch: pytest.MonkeyPatch, name: str = "test",
                        secrets: dict[str, dict[str, str]] | None = None) -> Path:
    """Put `docker-credential-NAME` on PATH; returns the file its calls are logged to."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / f"docker-credential-{name}"
    script.write_text(FAKE_HELPER.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    if secrets is not None:
        (directory / "helper-db.json").write_text(json.dumps(secrets))
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    return directory / "helper-calls.log"


def write_config(directory: Path, config: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def auth(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize("key", ["registry.example:5000", "https://registry.example:5000",
                                 "http://registry.example:5000", "https://registry.example:5000/v1/",
                                 "https://registry.example:5000/v2/"])
def test_auths_entry_found_under_any_key_form(tmp_path: Path, key: str) -> None:
    store = CredentialStore(write_config(tmp_path, {"auths": {key: auth("ann", "pw:with:colons")}}))
    assert store.get("registry.example:5000") == Credential("ann", "pw:with:colons")
    assert store.get("registry.example") is None  # another port is another registry


@pytest.mark.parametrize("key", ["https://index.docker.io/v1/", "docker.io", "index.docker.io",
                                 "https://registry-1.docker.io"])
def test_docker_hub_credentials_under_any_of_its_names(tmp_path: Path, key: str) -> None:
    store = CredentialStore(write_config(tmp_path, {"auths": {key: auth("hubber", "pw")}}))
    assert store.get("registry-1.docker.io") == Credential("hubber", "pw")
    assert store.get("docker.io") == Credential("hubber", "pw")


def test_exact_key_wins_over_other_forms(tmp_path: Path) -> None:
    config = {"auths": {"https://r.example/v1/": auth("old", "x"), "r.example": auth("new", "y")}}
    assert CredentialStore(write_config(tmp_path, config)).get("r.example") == Credential("new", "y")


def test_username_password_fields_and_identity_token(tmp_path: Path) -> None:
    config = {"auths": {"a.example": {"username": "u", "password": "p"},
                        "b.example": {"auth": base64.b64encode(b"u:").decode(), "identitytoken": "refresh-me"}}}
    store = CredentialStore(write_config(tmp_path, config))
    assert store.get("a.example") == Credential("u", "p")
    assert store.get("b.example") == Credential("u", "refresh-me", identity_token=True)


def test_config_from_docker_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(write_config(tmp_path / "env", {"auths": {"r.example": auth("e", "v")}})))
    assert CredentialStore().get("r.example") == Credential("e", "v")


def test_missing_config_means_anonymous(tmp_path: Path) -> None:
    assert CredentialStore(tmp_path / "nowhere").get("r.example") is None


@pytest.mark.parametrize("content", ["{not json", "[]"])
def test_broken_config_names_the_file(tmp_path: Path, content: str) -> None:
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(AuthError, match=r"config\.json"):
        CredentialStore(tmp_path).get("r.example")


def test_bad_base64_auth_is_an_error_naming_the_registry(tmp_path: Path) -> None:
    store = CredentialStore(write_config(tmp_path, {"auths": {"r.example": {"auth": "%%%"}}}))
    with pytest.raises(AuthError, match=r"r\.example") as info:
        store.get("r.example")
    assert "login" in str(info.value)


def test_cred_helper_per_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = install_fake_helper(tmp_path / "bin", monkeypatch,
                                secrets={"ghcr.example": {"Username": "bot", "Secret": "ghp_x"}})
    config = {"credHelpers": {"ghcr.example": "test"}, "auths": {"ghcr.example": auth("stale", "file")}}
    store = CredentialStore(write_config(tmp_path / "cfg", config))
    assert store.get("ghcr.example") == Credential("bot", "ghp_x")
    assert store.get("ghcr.example") == Credential("bot", "ghp_x")
    assert calls.read_text().splitlines() == ["get ghcr.example"]  # looked up once, cached


def test_creds_store_for_docker_hub_and_identity_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = install_fake_helper(tmp_path / "bin", monkeypatch,
                                secrets={"https://index.docker.io/v1/": {"Username": "<token>", "Secret": "rt"}})
    store = CredentialStore(write_config(tmp_path / "cfg", {"credsStore": "test"}))
    assert store.get("registry-1.docker.io") == Credential("", "rt", identity_token=True)
    assert calls.read_text().splitlines() == ["get https://index.docker.io/v1/"]


def test_helper_without_credentials_means_anonymous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_helper(tmp_path / "bin", monkeypatch, secrets={})
    store = CredentialStore(write_config(tmp_path / "cfg", {"credsStore": "test"}))
    assert store.get("r.example") is None


def test_missing_helper_warns_and_goes_anonymous(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = CredentialStore(write_config(tmp_path, {"credsStore": "not-installed-anywhere"}))
    with caplog.at_level(logging.WARNING, logger="dockwright.registry"):
        assert store.get("r.example") is None
    assert "docker-credential-not-installed-anywhere" in caplog.text


def test_failing_helper_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker-credential-broken"
    script.write_text("#!/bin/sh\necho 'keychain is locked' >&2\nexit 3\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    store = CredentialStore(write_config(tmp_path / "cfg", {"credsStore": "broken"}))
    with pytest.raises(AuthError, match=r"docker-credential-broken get failed \(exit 3\): keychain is locked"):
        store.get("r.example")


def test_config_keys() -> None:
    assert config_key("docker.io") == "https://index.docker.io/v1/"
    assert config_key("registry-1.docker.io") == "https://index.docker.io/v1/"
    assert config_key("https://localhost:5000/v2/") == "localhost:5000"


def test_credentials_never_show_their_secret() -> None:
    assert "hunter2" not in repr(Credential("ann", "hunter2"))
