"""Differential tests for RUN: the same Dockerfile built by `buildah bud` (which runs RUN itself) and by
dockwright (through runc), on the busybox base; both images must have the same Dockerfile-set config
and the same file tree (timestamps aside).

Around buildah 1.28's known quirks: it leaves the runtime's mount points (/dev, /proc, /sys, /run,
/etc/hosts, /etc/hostname, /etc/resolv.conf) in its layers where BuildKit removes its stubs, and has
no RUN heredocs (those cases give buildah the equivalent shell form)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunDockwright
from dockerfile_compare import Buildah, Case, Deviation, assert_same_image
from images import BusyboxBase
from servers import RegistryServer, start_registry

pytestmark = pytest.mark.requires("buildah", "umoci", "skopeo", "docker-registry", "runc")

# what buildah's runtime leaves in its layers and dockwright (as BuildKit) does not (test_run_core checks
# that dockwright's layers hold none of them)
RUNTIME_STUBS = ("/dev", "/proc", "/sys", "/run", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")

CASES = {
    "whiteouts-and-opaque-dirs": (
        "RUN rm /bin/vi /etc/group && rm -rf /home && mkdir -p /home/fresh && echo new > /home/fresh/f\n"
        "RUN rm -rf /tmp && mkdir -m 1777 /tmp && touch /tmp/kept\n"
    ),
    "modes-owners-links": (
        "RUN mkdir -p /srv/data && chmod 0750 /srv/data && chown 1000:1000 /srv/data "
        "&& cp /bin/busybox /bin/suid && chmod 4755 /bin/suid && chmod g+s /srv/data "
        "&& ln /bin/suid /bin/suid-hard && ln -s ../bin/suid /srv/sym && echo x > /srv/data/f "
        "&& chmod 640 /srv/data/f\n"
    ),
    "users-groups-and-user-switches": (
        "RUN echo bob:x:2000:3000::/home/bob:/bin/sh >> /etc/passwd && echo staff2:x:3000: >> /etc/group "
        "&& echo extra:x:4000:app,bob >> /etc/group && mkdir -p /home/bob && chown bob:staff2 /home/bob\n"
        "USER bob\n"
        "RUN (id -un; id -gn; id -G | tr ' ' '\\n' | grep -x 4000) > /home/bob/id-by-name && touch /home/bob/mine\n"
        "USER 2000:3000\n"
        "RUN id -u > /home/bob/id-by-number\n"
        "USER root\n"
        "RUN chown root /home/bob/id-by-number\n"
    ),
    "shell-exec-args-env": (
        "ARG FLAVOUR=plain\n"
        "ENV GREETING=hello\n"
        'SHELL ["/bin/sh", "-e", "-c"]\n'
        'RUN echo "$GREETING $FLAVOUR" > /shell.txt\n'
        'RUN ["/bin/sh", "-c", "echo exec $GREETING $FLAVOUR > /exec.txt"]\n'
        "WORKDIR /work\n"
        "RUN pwd > here && env | sort | grep -E '^(GREETING|FLAVOUR|PATH)=' > env.txt\n"
    ),
    "multi-stage-copy-from-a-run-stage": (
        "RUN mkdir /out && echo built > /out/artifact && chmod 600 /out/artifact\n"
        "FROM {base}\n"
        "COPY --from=0 /out /opt/out\n"
        "RUN cat /opt/out/artifact > /copied\n"
    ),
    "heredocs": (
        "RUN <<EOF\n"
        "echo one > /one\n"
        "echo two >> /one\n"
        "EOF\n"
    ),
}
# buildah 1.28 has no RUN heredocs: it builds what Docker runs for them
BUILDAH_DOCKERFILE = {"heredocs": "RUN echo one > /one; echo two >> /one\n"}


@pytest.fixture(scope="module")
def local_base(busybox_files: BusyboxBase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server: RegistryServer = start_registry(tmp_path_factory.mktemp("run-diff-registry"), None)
    try:
        yield busybox_files.seed(server).oci_ref
    finally:
        server.close()


@pytest.mark.parametrize("name", sorted(CASES))
def test_run_makes_the_image_buildah_makes(name: str, buildah: Buildah, local_base: str,
                                           dockwright: RunDockwright, tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {local_base}\n" + CASES[name].format(base=local_base))
    deviation = Deviation("buildah 1.28 has no RUN heredocs: it runs what Docker runs for them",
                          dockerfile={CASES[name]: BUILDAH_DOCKERFILE[name]}) if name in BUILDAH_DOCKERFILE \
        else Deviation("")

    assert_same_image(Case(name, dockerfile, context), deviation, buildah, dockwright, tmp_path,
                      skip=lambda path: path in RUNTIME_STUBS)
