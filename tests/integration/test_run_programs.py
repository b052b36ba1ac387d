"""Real package managers inside RUN, on the debootstrapped Debian base: apt-get from the Debian mirror
this machine uses, pip from PyPI and npm from npm's registry. Each image is pushed to a real registry,
pulled back with skopeo, run with runc, and the installed program must print what it prints.

The container reaches the network as the host does (RUN's default network); an index or registry
this machine's pip or npm is configured with is passed as a build arg (PIP_INDEX_URL,
NPM_CONFIG_REGISTRY), as a user behind a mirror would. Where HTTPS goes through an intercepting proxy,
the host's CA bundle (the one pip uses here) is bind-mounted from the context into the RUNs that
download (`--mount=type=bind,source=host-ca.crt`), as users behind such proxies do: it stays out
of the image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from build_checks import build_and_run
from conftest import RunDockwright
from debian import DebianBase

pytestmark = pytest.mark.requires("runc", "umoci", "skopeo", "docker-registry", "debootstrap")


def _configured(command: list[str]) -> str:
    """A setting of the host's pip or npm ("" when unset or the tool is missing)."""
    if not shutil.which(command[0]):
        return ""
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    value = proc.stdout.strip() if proc.returncode == 0 else ""
    return "" if value in ("undefined", "https://registry.npmjs.org/") else value


def _host_ca_bundle() -> Path:
    """The CA bundle pip trusts here (PIP_CERT, pip's `cert` setting, else the system's)."""
    configured = os.environ.get("PIP_CERT") or _configured(["pip", "config", "get", "global.cert"])
    return Path(configured or "/etc/ssl/certs/ca-certificates.crt")


CA_MOUNT = "--mount=type=bind,source=host-ca.crt,target=/host-ca.crt"


def _build_and_run(dockwright: RunDockwright, debian: DebianBase, dockerfile: str, tag: str, tmp_path: Path,
                   *build_args: str) -> list[str]:
    context = tmp_path / "context"
    context.mkdir()
    shutil.copyfile(_host_ca_bundle(), context / "host-ca.crt")
    (context / "Dockerfile").write_text(dockerfile.replace("{base}", debian.ref))
    return build_and_run(dockwright, context, f"{debian.host}/apps/{tag}:1", tmp_path, *build_args)


def test_apt_get_install_from_the_debian_mirror(dockwright: RunDockwright, debian: DebianBase,
                                                tmp_path: Path) -> None:
    dockerfile = (
        "FROM {base}\n"
        "RUN apt-get update \\\n"
        " && apt-get install -y --no-install-recommends hello jq \\\n"
        " && rm -rf /var/lib/apt/lists/*\n"
        """CMD ["sh", "-c", "hello && echo '{\\"tools\\": [\\"hello\\", \\"jq\\"]}' | jq -c .tools"]\n"""
    )
    lines = _build_and_run(dockwright, debian, dockerfile, "apt", tmp_path)
    assert lines == ["Hello, world!", '["hello","jq"]']


def test_pip_install_from_pypi(dockwright: RunDockwright, debian: DebianBase, tmp_path: Path) -> None:
    index = _configured(["pip", "config", "get", "global.index-url"])
    dockerfile = (
        "FROM {base}\n"
        "ARG PIP_INDEX_URL\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends python3-venv \\\n"
        " && rm -rf /var/lib/apt/lists/*\n"
        f"RUN {CA_MOUNT} python3 -m venv /opt/venv \\\n"
        " && PIP_CERT=/host-ca.crt /opt/venv/bin/pip install --no-cache-dir six==1.16.0\n"
        'CMD ["/opt/venv/bin/python", "-c", "import six; print(six.__version__, six.PY3)"]\n'
    )
    lines = _build_and_run(dockwright, debian, dockerfile, "pip", tmp_path,
                           *(["--build-arg", f"PIP_INDEX_URL={index}"] if index else []))
    assert lines == ["1.16.0 True"]


_NPM = "https://registry.npmjs.org/npm/-/npm-10.9.2.tgz"
_FETCH_NPM = (f"fetch(process.env.NPM_CONFIG_REGISTRY ? process.env.NPM_CONFIG_REGISTRY.replace(/\\/$/, '')"
              f" + '/npm/-/npm-10.9.2.tgz' : '{_NPM}').then(r => r.arrayBuffer())"
              ".then(b => require('fs').writeFileSync('/tmp/npm.tgz', Buffer.from(b)))")


def test_npm_install_from_the_npm_registry(dockwright: RunDockwright, debian: DebianBase, tmp_path: Path) -> None:
    registry = _configured(["npm", "config", "get", "registry"])
    dockerfile = (
        "FROM {base}\n"
        "ARG NPM_CONFIG_REGISTRY\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends nodejs ca-certificates \\\n"
        " && rm -rf /var/lib/apt/lists/*\n"
        # Debian's own npm package pulls ~370 node-* packages: npm itself comes from its registry instead
        f"RUN {CA_MOUNT} NODE_EXTRA_CA_CERTS=/host-ca.crt node -e \"{_FETCH_NPM}\" \\\n"
        " && mkdir /opt/npm && tar -xzf /tmp/npm.tgz -C /opt/npm --strip-components=1 && rm /tmp/npm.tgz \\\n"
        " && ln -s /opt/npm/bin/npm-cli.js /usr/local/bin/npm\n"
        "WORKDIR /app\n"
        f"RUN {CA_MOUNT} NODE_EXTRA_CA_CERTS=/host-ca.crt npm install --no-audit --no-fund semver@7.6.3\n"
        'CMD ["node_modules/.bin/semver", "-r", "^1.2", "1.1.9", "1.2.9", "1.3.0", "2.0.0"]\n'
    )
    lines = _build_and_run(dockwright, debian, dockerfile, "npm", tmp_path,
                           *(["--build-arg", f"NPM_CONFIG_REGISTRY={registry}"] if registry else []))
    assert lines == ["1.2.9", "1.3.0"]
