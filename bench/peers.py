"""dockwright and the peer tools, each doing the same job: put `Content` onto a base image that
sits in the benchmark registry, then push the result or write a docker-archive.

Every tool gets a `state` directory of its own (dockwright's cache, buildah's storage, the OCI
layout of the skopeo/umoci pipeline, containerify's folders, crane's tarballs). A cold run starts
from an empty one; a warm run reuses it, as a developer's machine or a CI cache would. Tools that
work in steps (umoci, crane) keep the image with the dependency layers under a tag of its own and
redo only the code layers when warm, which is how a careful script would use them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from measure import Step, shell
from workloads import Content

ARCHIVE_NAME = "bench/app:latest"


def dockwright_command() -> str:
    """The console script of the Python running the benchmark, called directly: a version manager's
    shim on PATH (pyenv's runs a shell script and `pyenv exec`, ~60 ms a call) is not dockwright's time."""
    beside = Path(sys.executable).parent / "dockwright"
    return str(beside) if os.access(beside, os.X_OK) else "dockwright"


def compile_dockwright() -> None:
    """Byte-compile dockwright's modules once, as installing a wheel does: with PYTHONDONTWRITEBYTECODE
    set (as on some CI images), an editable install would otherwise compile them on every run (~60 ms)."""
    import compileall

    import dockwright

    compileall.compile_dir(Path(dockwright.__file__).parent, quiet=1)


@dataclass(frozen=True)
class Job:
    """One build: `base` and `target` are registry references (HOST/REPO:TAG); with `archive` set
    the result goes to that docker-archive file instead of `target`."""

    content: Content
    base: str
    target: str
    state: Path
    warm: bool = False
    archive: Path | None = None

    @property
    def registry(self) -> str:
        return self.base.split("/", 1)[0]


def _repo_and_tag(ref: str) -> tuple[str, str]:
    """("REPO", "TAG") of HOST/REPO:TAG."""
    path = ref.split("/", 1)[1]
    repo, _, tag = path.rpartition(":")
    return repo, tag


class Tool:
    """A tool under test. `steps` returns the commands of one timed run."""

    name = ""
    node_only = False

    def unavailable(self) -> str | None:
        """Why the tool cannot run on this machine, or None."""
        return None

    def version(self) -> str:
        raise NotImplementedError

    def steps(self, job: Job) -> list[Step]:
        raise NotImplementedError

    def cleanup(self, state: Path) -> None:
        """Remove what a run left behind (called when the state is no longer needed)."""
        shutil.rmtree(state, ignore_errors=True)


def _first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        return f"unavailable ({exc.strerror})"
    return (proc.stdout or proc.stderr).strip().splitlines()[0] if (proc.stdout or proc.stderr).strip() else "?"


class Dockwright(Tool):
    """The real CLI. `auto`: one `--copy .:/app --layering auto`; else one --copy per entry."""

    def __init__(self, auto: bool) -> None:
        self.auto = auto
        self.node_only = auto
        self.name = "dockwright (--layering auto)" if auto else "dockwright"

    def unavailable(self) -> str | None:
        return None if shutil.which(dockwright_command()) else "dockwright is not installed (pip install -e .)"

    def version(self) -> str:
        return _first_line([dockwright_command(), "--version"])

    def steps(self, job: Job) -> list[Step]:
        content = job.content
        if self.auto:
            copies = ["--copy", f".:{content.prefix}", "--layering", "auto"]
        else:
            copies = [arg for name in content.names for arg in ("--copy", f"{name}:{content.prefix}/{name}")]
        output = ["-t", ARCHIVE_NAME, "-o", f"type=docker,dest={job.archive}"] if job.archive else \
            ["-t", job.target, "--push"]
        argv = [dockwright_command(), "build", str(content.root), "--from", job.base, *copies, *output,
                "--cache-dir", str(job.state / "cache"), "-q"]
        return [Step(argv)]


class Buildah(Tool):
    """`buildah bud --layers` (vfs storage) then `buildah push`, from a RUN-free Dockerfile."""

    name = "buildah bud + push"

    def unavailable(self) -> str | None:
        return None if shutil.which("buildah") else "buildah is not installed"

    def version(self) -> str:
        return _first_line(["buildah", "--version"])

    def _runroot(self, state: Path) -> Path:
        # buildah keeps sockets and locks here: the path must stay short
        marker = state / "runroot"
        if not marker.exists():
            state.mkdir(parents=True, exist_ok=True)
            marker.write_text(tempfile.mkdtemp(prefix="bw-"))
        return Path(marker.read_text())

    def _buildah(self, state: Path, *args: str) -> list[str]:
        return ["buildah", "--root", str(state / "storage"), "--runroot", str(self._runroot(state)),
                "--storage-driver", "vfs", *args]

    def steps(self, job: Job) -> list[Step]:
        content = job.content
        dockerfile = job.state / "Dockerfile"
        job.state.mkdir(parents=True, exist_ok=True)
        dockerfile.write_text("ARG BASE\nFROM ${BASE}\n" + "".join(
            f"COPY {name} {content.prefix}/{name}\n" for name in content.names))
        bud = self._buildah(job.state, "bud", "--layers", "--tls-verify=false", "--build-arg", f"BASE={job.base}",
                            "-f", str(dockerfile), "-t", "localhost/bench-app", str(content.root))
        destination = f"docker-archive:{job.archive}:{ARCHIVE_NAME}" if job.archive else f"docker://{job.target}"
        push = self._buildah(job.state, "push", "--tls-verify=false", "localhost/bench-app", destination)
        return [Step(bud, {"BUILDAH_ISOLATION": "chroot"}), Step(push)]

    def cleanup(self, state: Path) -> None:
        if (state / "runroot").exists():
            runroot = Path((state / "runroot").read_text())
            # vfs leaves read-only directories and possibly mounts: let buildah remove its own storage
            subprocess.run(self._buildah(state, "rm", "--all"), capture_output=True, check=False)
            shutil.rmtree(runroot, ignore_errors=True)
        super().cleanup(state)


class SkopeoUmoci(Tool):
    """skopeo copy base -> OCI layout, `umoci insert` per entry, skopeo copy -> registry/archive."""

    name = "skopeo + umoci"

    def unavailable(self) -> str | None:
        missing = [t for t in ("skopeo", "umoci") if shutil.which(t) is None]
        return f"not installed: {', '.join(missing)}" if missing else None

    def version(self) -> str:
        return f"{_first_line(['skopeo', '--version'])}; {_first_line(['umoci', '--version'])}"

    def steps(self, job: Job) -> list[Step]:
        content, layout = job.content, job.state / "oci"
        steps: list[Step] = []
        current = "deps" if content.deps else "base"
        if not job.warm:
            steps.append(Step(["skopeo", "copy", "--src-tls-verify=false", f"docker://{job.base}",
                               f"oci:{layout}:base"]))
            for index, name in enumerate(content.deps):
                source = "base" if index == 0 else "deps"
                steps.append(self._insert(layout, source, "deps", content, name))
        for index, name in enumerate(content.code):
            source = current if index == 0 else "app"
            steps.append(self._insert(layout, source, "app", content, name))
        destination = f"docker-archive:{job.archive}:{ARCHIVE_NAME}" if job.archive else f"docker://{job.target}"
        steps.append(Step(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:app", destination]))
        return steps

    @staticmethod
    def _insert(layout: Path, source: str, tag: str, content: Content, name: str) -> Step:
        return Step(["umoci", "insert", "--image", f"{layout}:{source}", "--tag", tag,
                     str(content.root / name), f"{content.prefix}/{name}"])


class Containerify(Tool):
    """containerify (npm): its own Node layering (node_modules apart from the application)."""

    name = "containerify"
    node_only = True

    def __init__(self, cli: Path | None, note: str) -> None:
        self.cli, self.note = cli, note

    def unavailable(self) -> str | None:
        return None if self.cli else self.note

    def version(self) -> str:
        return f"containerify {_first_line([str(self.cli), '--version'])}" if self.cli else "unavailable"

    def steps(self, job: Job) -> list[Step]:
        from_repo, from_tag = _repo_and_tag(job.base)
        to_repo, to_tag = _repo_and_tag(job.target)
        registry = f"http://{job.registry}/v2/"
        build = job.state / "build"
        argv = [str(self.cli), "--fromImage", f"{from_repo}:{from_tag}", "--toImage", f"{to_repo}:{to_tag}",
                "--fromRegistry", registry, "--folder", str(job.content.root),
                "--buildFolder", str(build), "--layerCacheFolder", str(job.state / "layers"),
                "--allowInsecureRegistries", "--allowNoPushAuth", "--setTimeStamp", "2024-01-01T00:00:00Z"]
        argv += ["--toTar", str(job.archive)] if job.archive else ["--toRegistry", registry]
        # containerify refuses a build folder that exists
        return [shell(f"rm -rf {shlex.quote(str(build))}"), Step(argv)]


class CraneAppend(Tool):
    """`tar | crane append` (klauspost gzip at BestSpeed), the dependency layer under a tag of its
    own so that a warm run appends only the code. Runs only when CRANE=/path/to/crane is set."""

    name = "tar + crane append"

    def __init__(self) -> None:
        self.crane = os.environ.get("CRANE", "")

    def unavailable(self) -> str | None:
        if not self.crane:
            return "CRANE is not set (CRANE=/path/to/crane)"
        return None if os.access(self.crane, os.X_OK) else f"CRANE={self.crane} is not executable"

    def version(self) -> str:
        return f"crane {_first_line([self.crane, 'version'])}"

    @staticmethod
    def _tar(content: Content, names: tuple[str, ...]) -> str:
        """Process substitution streaming a tar of `names` placed under the content's prefix."""
        prefix = content.prefix.strip("/")
        quoted = " ".join(shlex.quote(n) for n in names)
        return f"<(tar -C {shlex.quote(str(content.root))} --transform 's,^,{prefix}/,' -cf - {quoted})"

    def steps(self, job: Job) -> list[Step]:
        content, crane = job.content, shlex.quote(self.crane)
        if job.archive:
            layers = " ".join(f"-f {self._tar(content, (name,))}" for name in content.deps) + \
                     f" -f {self._tar(content, content.code)}"
            return [shell(f"{crane} append --insecure -b {job.base} {layers} -t {ARCHIVE_NAME} "
                          f"-o {shlex.quote(str(job.archive))}")]
        steps = []
        base = job.base
        if content.deps:
            base = f"{job.target}-deps"
            if not job.warm:
                layers = " ".join(f"-f {self._tar(content, (name,))}" for name in content.deps)
                steps.append(shell(f"{crane} append --insecure -b {job.base} {layers} -t {base}"))
        steps.append(shell(f"{crane} append --insecure -b {base} -f {self._tar(content, content.code)} "
                           f"-t {job.target}"))
        return steps


def all_tools(containerify: Path | None, containerify_note: str) -> list[Tool]:
    """The reference (dockwright) first."""
    return [Dockwright(auto=True), Dockwright(auto=False), Buildah(), SkopeoUmoci(),
            Containerify(containerify, containerify_note), CraneAppend()]
