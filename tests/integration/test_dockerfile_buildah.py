"""Differential tests: every corpus Dockerfile (tests/fixtures/dockerfiles) that can be built offline
is built by buildah (`bud`, a reference implementation of Dockerfile semantics) and by dockwright;
both images must have the same Dockerfile-set config and the same file tree (paths, types, modes,
owners, contents, link targets; timestamps aside).

ADAPT points cases whose base is a public image at the local busybox base, for both builders.
Where buildah (1.28, Debian 12) deviates from Docker's documented behaviour, dockwright follows
Docker and DEVIATIONS records the case with the reason; buildah then builds an equivalent
Dockerfile it can handle, so the rest of the image is still compared.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunDockwright
from dockerfile_compare import (
    CORPUS,
    Buildah,
    Case,
    Deviation,
    assert_same_image,
    corpus_case,
)
from images import BusyboxBase, sh
from servers import RegistryServer, start_registry

CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "Dockerfile").is_file())

BASE = "{base}"  # stands for the local busybox base (HOST/base/busybox:oci) in ADAPT
# case -> (Dockerfile substitutions, extra build args), for both builders: no public images here
ADAPT: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "add-forms": ({"ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d "
                   "https://example.com/tool.tar.gz /opt/\n": ""}, {}),  # offline: the URL ADD is left out
    "copy-flags": ({}, {"OWNER": "1000"}),  # scratch has no /etc/passwd: `app` is unknown (to Docker too)
    "copy-from-image": ({"busybox:1.36": BASE}, {}),
    "deferred-base-env": ({"python:3.12-slim": BASE}, {}),
    "java-runtime": ({"eclipse-temurin:21-jre": BASE}, {}),
    "multistage-copy-from-stage": ({"busybox:1.36": BASE}, {}),
    "node-runtime": ({"node:node": "app:app", "USER node": "USER app"}, {"BASE": BASE}),  # busybox has `app`
    "python-runtime": ({}, {"BASE": BASE}),
    "workdir-relative-to-base-image": ({"busybox:1.36": BASE}, {}),
}
# cases neither can build offline as they are: their RUN steps need public base images and package
# mirrors, and buildah 1.28 builds every stage before the target (it would run these commands)
NOT_BUILDABLE = {
    "dotnet-aspnet-runtime": "RUN in the build stage",
    "run-only-in-unused-stage": "RUN in the builder stage",
    "target-skips-run-stages": "RUN in the build stage",
}
_HEREDOCS = """COPY <<EOF /etc/greeting
hello $NAME
EOF
COPY <<'EOF' /etc/literal
hello $NAME
EOF
COPY <<-EOT /etc/stripped
\tindented $NAME
\tEOT
COPY <<one.txt <<two.txt /multi/
first
one.txt
second
two.txt
"""
_APP_STAGE = "FROM scratch AS app\nCOPY --from=tools /tool /usr/bin/tool\n"
DEVIATIONS: dict[str, Deviation] = {
    "case-insensitive-instructions-and-stages": Deviation(
        "buildah matches stage names case-sensitively; Docker's stage names are case-insensitive",
        dockerfile={"--from=BUILD": "--from=Build"}),
    "copy-flags": Deviation(
        "buildah 1.28 has no COPY --link / --exclude: it copies a context without the excluded files; "
        "and it leaves a copied directory 0755 where Docker applies --chmod to it (moby/buildkit#4945)",
        paths=("/docs",),
        dockerfile={"--link --exclude=*.md --exclude=tmp/ ": ""},
        context={"docs/README.md": None, "docs/tmp": None}),
    "copy-from-later-stage": Deviation(
        "buildah resolves COPY --from only against earlier stages; Docker against every stage",
        dockerfile={_APP_STAGE: "", "COPY tool /tool\n": "COPY tool /tool\n" + _APP_STAGE}),
    "copy-heredocs": Deviation(
        "buildah 1.28 has no heredocs: it copies files holding what Docker writes for them",
        dockerfile={_HEREDOCS: "COPY greeting literal stripped /etc/\nCOPY one.txt two.txt /multi/\n"},
        context={"greeting": "hello world\n", "literal": "hello $NAME\n", "stripped": "indented world\n",
                 "one.txt": "first\n", "two.txt": "second\n"}),
    "copy-parents": Deviation(
        "buildah 1.28 has no COPY --parents: it copies the kept directories explicitly",
        dockerfile={"COPY --parents ./src/./pkg/a.txt ./src/./pkg/b.txt /out/":
                    "COPY src/pkg/a.txt src/pkg/b.txt /out/pkg/"}),
    "escape-directive-backtick": Deviation(
        "buildah ignores the escape directive when it expands ENV values (`$A became `one, C:\\path "
        "became C:path); it builds the same instructions written with the default escape",
        dockerfile={"# escape=`\n": "", "one `\n": "one \\\n", "C=`$A D=C:\\path": "C=\\$A D=C:\\\\path"}),
    "expansion-modifiers": Deviation(
        "buildah 1.28 only knows ${VAR:-x} and ${VAR:+x}; it gets the values Docker documents for "
        "${VAR-x}, ${VAR+x} and ${VAR:?x}",
        dockerfile={"b=${EMPTY-default} c=${NOPE-default}": "b= c=default",
                    "f=${EMPTY+alt} g=${NOPE+alt} h=${SET:?required}": "f=alt g= h=value"}),
    "expose-forms": Deviation(
        "buildah keeps EXPOSE words verbatim (443/TCP, 8000-8002/tcp); Docker lowercases the protocol "
        "and expands a range into its ports (nat.ParsePortSpecs)",
        dockerfile={"443/TCP": "443/tcp", "8000-8002": "8000 8001 8002"}),
    "healthcheck-all-options": Deviation(
        "buildah 1.28 has no HEALTHCHECK --start-interval (Docker 25+)",
        dockerfile={"--start-interval=500ms ": ""}, ignore=("Healthcheck.StartInterval",)),
    "python-runtime": Deviation(
        "buildah moves a redefined ENV variable (PATH) to the end of Env; Docker replaces it in place",
        ignore=("Env.order",)),
    "volume-forms": Deviation(
        "buildah creates VOLUME directories in the image; Docker only records them in the config",
        paths=("/cache", "/var", "/var/lib", "/var/lib/app")),
    "shell-instruction": Deviation(
        "buildah ignores SHELL for shell-form CMD/ENTRYPOINT; Docker documents that SHELL applies to "
        "them: buildah gets the exec forms Docker makes",
        dockerfile={"CMD echo hi | cat": 'CMD ["/bin/bash", "-o", "pipefail", "-c", "echo hi | cat"]',
                    "ENTRYPOINT exec /app": 'ENTRYPOINT ["/bin/bash", "-o", "pipefail", "-c", "exec /app"]'}),
}
# where dockwright differs from Docker (and buildah agrees with Docker): expected failures, so the
# test turns red the day they are fixed and this list must shrink
KNOWN_DEFECTS: dict[str, str] = {}


@pytest.fixture(scope="module")
def diff_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server: RegistryServer = start_registry(tmp_path_factory.mktemp("diff-registry"), None)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def local_base(busybox_files: BusyboxBase, diff_registry: RegistryServer) -> str:
    """The busybox base in a registry shared by this module's builds: its `oci` reference."""
    return busybox_files.seed(diff_registry).oci_ref


@pytest.fixture(scope="module")
def nonroot_base(busybox_files: BusyboxBase, diff_registry: RegistryServer,
                 tmp_path_factory: pytest.TempPathFactory) -> str:
    """The busybox base with `USER app` in its config (as distroless :nonroot, node images run as
    their user): its reference in the module's registry."""
    layout = tmp_path_factory.mktemp("nonroot") / "layout"
    shutil.copytree(busybox_files.layout, layout)
    sh("umoci", "config", "--image", f"{layout}:latest", "--tag", "nonroot", "--config.user", "app")
    reference = f"{diff_registry.host}/base/busybox:nonroot"
    sh("skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:nonroot", f"docker://{reference}")
    return reference


def _case_param(name: str) -> Any:
    defect = KNOWN_DEFECTS.get(name)
    return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=defect)) if defect else name


@pytest.mark.requires("buildah", "umoci", "skopeo", "docker-registry")
@pytest.mark.parametrize("name", [_case_param(c) for c in CASES if c not in NOT_BUILDABLE])
def test_same_image_as_buildah(name: str, buildah: Buildah, local_base: str, dockwright: RunDockwright,
                               tmp_path: Path) -> None:
    substitute, build_args = ADAPT.get(name, ({}, {}))
    case = corpus_case(name, tmp_path, {k: v.replace(BASE, local_base) for k, v in substitute.items()},
                       {k: v.replace(BASE, local_base) for k, v in build_args.items()})
    assert_same_image(case, DEVIATIONS.get(name, Deviation("")), buildah, dockwright, tmp_path)


@pytest.mark.requires("buildah", "umoci", "skopeo", "docker-registry")
def test_existing_directories_keep_their_mode_and_owner(buildah: Buildah, local_base: str,
                                                        dockwright: RunDockwright, tmp_path: Path) -> None:
    """busybox has /tmp (1777) and /home/app (owned by app): copying below them must not change them."""
    assert_same_image(_existing_dirs_case(tmp_path, "COPY f /home/app/f\nCOPY f /tmp/sub/f\n", local_base),
                      Deviation(""), buildah, dockwright, tmp_path)


@pytest.mark.requires("buildah", "umoci", "skopeo", "docker-registry")
def test_workdir_on_an_existing_directory_keeps_its_owner(buildah: Buildah, local_base: str,
                                                          dockwright: RunDockwright, tmp_path: Path) -> None:
    assert_same_image(_existing_dirs_case(tmp_path, "WORKDIR /home/app\n", local_base),
                      Deviation(""), buildah, dockwright, tmp_path)


# WORKDIR and COPY --chown against a base with existing directories (/tmp 1777, /home/app owned by app)
_OWNERSHIP_CASES = {
    "workdir-existing-and-new": "WORKDIR /tmp\nWORKDIR /home/app\nWORKDIR /srv/data/cache\nUSER app\n"
                                "WORKDIR /home/app/work\nWORKDIR /opt/x/y\nWORKDIR /srv/data\n",
    "workdir-after-chown-copy": "COPY --chown=1000:1000 dir /app\nWORKDIR /app\nWORKDIR sub\n",
    "user-workdir-then-copy": "USER app\nWORKDIR /app\nCOPY --chown=app:app f .\nCOPY f /app/root-owned/\n",
    "copy-chown-into-new-parents": "COPY --chown=app:app f /new/a/b/f\nCOPY --chown=1000 dir /tmp/x/y\n"
                                   "COPY --chown=app f /home/app/sub/deeper/\nCOPY --chown=app:app f f2 /opt/d/e/\n"
                                   "ADD --chown=app f /var/lib/added/f\n",
}
_NONROOT_CASES = {  # on a base whose config says USER app
    "base-user-workdir": "WORKDIR /home/app\nWORKDIR /srv/app\nCOPY f .\nWORKDIR /tmp/cache\n",
    "base-user-covered-workdir": "WORKDIR /app\nCOPY f /app/\nCOPY --chown=0:0 f /app/sub/\n",
}


@pytest.mark.requires("buildah", "umoci", "skopeo", "docker-registry")
@pytest.mark.parametrize("name", sorted(_OWNERSHIP_CASES))
def test_workdir_and_chown_create_directories_as_docker(name: str, buildah: Buildah, local_base: str,
                                                        dockwright: RunDockwright, tmp_path: Path) -> None:
    """Created directories (parents included) belong to the USER (WORKDIR) or the --chown user; existing
    ones, in the base or made by an earlier step, keep their owner and mode."""
    assert_same_image(_existing_dirs_case(tmp_path, _OWNERSHIP_CASES[name], local_base),
                      Deviation(""), buildah, dockwright, tmp_path)


@pytest.mark.requires("buildah", "umoci", "skopeo", "docker-registry")
@pytest.mark.parametrize("name", sorted(_NONROOT_CASES))
def test_workdir_owned_by_the_base_images_user(name: str, buildah: Buildah, nonroot_base: str,
                                               dockwright: RunDockwright, tmp_path: Path) -> None:
    assert_same_image(_existing_dirs_case(tmp_path, _NONROOT_CASES[name], nonroot_base),
                      Deviation(""), buildah, dockwright, tmp_path)


def _existing_dirs_case(tmp_path: Path, instructions: str, local_base: str) -> Case:
    context = tmp_path / "context"
    context.mkdir()
    (context / "f").write_text("x\n")
    (context / "f2").write_text("y\n")
    (context / "dir" / "inner").mkdir(parents=True)
    (context / "dir" / "inner" / "g").write_text("z\n")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {local_base}\n{instructions}")
    return Case("existing-directories", dockerfile, context)
