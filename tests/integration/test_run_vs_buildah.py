"""Differential tests for RUN: the same Dockerfile built by buildah (`bud`, which runs RUN for real)
and by dockwright; both images must have the same Dockerfile-set config and the same merged file tree
(paths, types, modes with setuid/setgid/sticky, owners, contents, link targets, hard links;
timestamps aside).

Cases here complement test_run_buildah.py: base files and whole directories removed or replaced
(whiteouts, opaque directories, also of an earlier RUN's layer), ARG/ENV visibility in detail, a
failing stage the target does not need, owners kept by COPY --from a RUN stage, and users, groups and
USER on the debootstrapped Debian base (useradd, groupadd, install).

buildah 1.28 leaves the runtime's mount points (/dev, /proc, /sys, /run, /etc/hosts, /etc/hostname,
/etc/resolv.conf) in its layers where BuildKit removes its stubs: those paths are left out of both
trees. It has no RUN heredocs: heredocs are tested in test_run.py against what the command wrote.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import RunDockwright
from debian import DebianBase
from dockerfile_compare import Buildah, Case, Deviation, assert_same_image
from images import BusyboxBase, cross_layer_link_layout, sh
from run_cases import DEBIAN_USERADD_AND_REMOVED_DOCS
from servers import RegistryServer, start_registry

RUNTIME_PATHS = ("/dev", "/proc", "/sys", "/run", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")


def runtime_path(path: str) -> bool:
    """A runtime mount point or anything below one."""
    return any(path == p or path.startswith(p + "/") for p in RUNTIME_PATHS)


@dataclass(frozen=True)
class RunCase:
    """A Dockerfile (`{base}` stands for the base image's reference) with its context files."""

    dockerfile: str
    files: Mapping[str, str] = field(default_factory=dict)
    build_args: Mapping[str, str] = field(default_factory=dict)
    base: str = "busybox"  # or "debian", or "cross-link" (busybox + /data/b a hard link to a lower layer's /data/a)
    deviation: Deviation = field(default_factory=lambda: Deviation(""))


CASES: dict[str, RunCase] = {
    "whiteouts-of-base-files": RunCase(
        "FROM {base}\n"
        "RUN rm /etc/group && rm -r /usr/sbin && chmod 0600 /etc/passwd && chown 1000:1000 /root"
        " && ln -s /bin/busybox /usr/bin/bb && mkdir -p /opt/tree/deeper && echo made > /opt/tree/deeper/file"
        " && ln -s ../tree /opt/link\n"
        "RUN rm /opt/tree/deeper/file && rmdir /opt/tree/deeper && touch /opt/tree/new && rm /usr/bin/bb\n"
    ),
    "opaque-directories": RunCase(
        "FROM {base}\n"
        "RUN mkdir -p /data/old && echo one > /data/old/a && echo two > /data/keep\n"
        "RUN rm -rf /data && mkdir /data && echo three > /data/new\n"
        "RUN rm -rf /usr/bin && mkdir -m 0750 /usr/bin && ln -s /bin/busybox /usr/bin/env\n"
    ),
    "arg-env-visibility": RunCase(
        "ARG GLOBAL=global-default\n"
        "ARG GLOBAL_UNDECLARED=not-seen\n"
        "FROM {base}\n"
        "ARG GLOBAL\n"
        "ARG BUILD=build-default\n"
        "ARG OVERRIDDEN=dockerfile\n"
        "ENV FROM_ENV=env-value PATH=/opt/tools:$PATH\n"
        "ARG FROM_ENV=arg-wins\n"
        'RUN echo "global=$GLOBAL undeclared=${GLOBAL_UNDECLARED:-unset} build=$BUILD overridden=$OVERRIDDEN'
        ' env=$FROM_ENV path=$PATH home=$HOME" > /visible.txt\n'
        "ARG LATE\n"
        'RUN echo "late=${LATE:-unset} not-declared=${NOT_DECLARED:-unset}" > /late.txt\n',
        build_args={"OVERRIDDEN": "cli", "LATE": "late-value", "NOT_DECLARED": "x"},
        deviation=Deviation("buildah moves a redefined ENV variable (PATH) to the end of Env; Docker replaces it "
                            "in place. buildah lets an ENV win over an ARG of its name declared after it; BuildKit "
                            "gives the command the ARG's value (test_run_parity checks it)", ignore=("Env.order",),
                            dockerfile={" env=$FROM_ENV ": " env=arg-wins "}),
    ),
    "unneeded-failing-stage": RunCase(
        "FROM {base} AS build\n"
        "RUN mkdir -p /out/bin && printf '#!/bin/sh\\necho hi from build\\n' > /out/bin/hi && chmod 755 /out/bin/hi\n"
        "FROM {base} AS unused\n"
        "RUN echo this stage is not needed && exit 7\n"
        "FROM {base}\n"
        "COPY --from=build /out/ /usr/local/\n"
        "RUN /usr/local/bin/hi > /hi.txt\n"
    ),
    "copy-from-keeps-owners": RunCase(
        "FROM {base} AS build\n"
        "RUN mkdir /out && echo x > /out/owned && chown 3000:3001 /out/owned && echo builder:x:3000:3000::/:/bin/false"
        " >> /etc/passwd\n"
        "FROM {base}\n"
        "COPY --from=build /out/ /opt/\n"
        "COPY --from=build /etc/passwd /etc/passwd.build\n"
    ),
    # BuildKit's supplementary groups (executor/oci/user.go): the primary gid first, then the /etc/group
    # memberships of a USER given without a group; buildah gives the same
    "supplementary-groups": RunCase(
        "FROM {base}\n"
        "RUN echo bob:x:2000:3000::/home/bob:/bin/sh >> /etc/passwd && echo staff2:x:3000: >> /etc/group"
        " && echo extra:x:4000:app,bob >> /etc/group && mkdir -m 1777 /ids\n"
        + "".join(f"USER {user}\nRUN (id; grep Groups /proc/self/status) > /ids/{name}\n"
                  for name, user in (("bob", "bob"), ("app", "app"), ("numbers", "2000:3000"), ("no-entry", "4242"),
                                     ("explicit-group", "bob:extra"), ("root", "root")))
    ),
    # a base layer's hard link to a file of a layer below is one file with two links in the RUN's root file
    # system (buildah's vfs driver applies the layers to one directory; overlay drivers refuse such a base)
    "hard-link-to-a-lower-layer": RunCase(
        "FROM {base}\n"
        "RUN cp -a /data /copy && stat -c '%h %n' /data/a /data/b > /links\n",
        base="cross-link",
    ),
    "debian-useradd-and-removed-docs": RunCase(DEBIAN_USERADD_AND_REMOVED_DOCS, base="debian"),
}


# where dockwright differs from Docker and buildah: strict xfails, so the list shrinks when they are fixed
KNOWN_DEFECTS: dict[str, str] = {}


def _case_param(name: str) -> Any:
    defect = KNOWN_DEFECTS.get(name)
    return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=defect)) if defect else name


@pytest.fixture(scope="module")
def module_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server = start_registry(tmp_path_factory.mktemp("run-diff-registry"), None)
    try:
        yield server
    finally:
        server.close()


def _base(kind: str, request: pytest.FixtureRequest, registry: RegistryServer) -> str:
    if kind == "cross-link":
        busybox_files: BusyboxBase = request.getfixturevalue("busybox_files")
        layout = cross_layer_link_layout(busybox_files.layout, request.getfixturevalue("tmp_path"))
        ref = f"{registry.host}/base/cross-link:1"
        sh("skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:cross-link", f"docker://{ref}")
        return ref
    if kind == "debian":
        debian: DebianBase = request.getfixturevalue("debian_files")
        return debian.seed(registry).ref
    busybox: BusyboxBase = request.getfixturevalue("busybox_files")
    return busybox.seed(registry).oci_ref


@pytest.mark.requires("buildah", "runc", "umoci", "skopeo", "docker-registry")
@pytest.mark.parametrize("name", [_case_param(name) for name in sorted(CASES)])
def test_run_gives_the_same_image_as_buildah(name: str, buildah: Buildah, module_registry: RegistryServer,
                                             dockwright: RunDockwright, request: pytest.FixtureRequest,
                                             tmp_path: Path) -> None:
    case = CASES[name]
    base = _base(case.base, request, module_registry)
    context = tmp_path / "context"
    context.mkdir()
    for path, text in case.files.items():
        (context / path).write_text(text)
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(case.dockerfile.replace("{base}", base))
    assert_same_image(Case(name, dockerfile, context, build_args=case.build_args), case.deviation, buildah,
                      dockwright, tmp_path, skip=runtime_path)
