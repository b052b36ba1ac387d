"""Differential testing of Dockerfile builds: the same Dockerfile built by buildah (a reference
implementation of Dockerfile semantics) and by dockwright, both written to OCI layouts, then read
back as plain data that can be compared: the config keys a Dockerfile sets, and the merged file
tree (unpacked with umoci; timestamps aside).

buildah runs here with the vfs driver and `--isolation chroot`, with its whole state (root, runroot)
in one short directory of its own, shared by every build of a test session.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from images import sh

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "dockerfiles"
CONFIG_KEYS = (
    "Env", "Entrypoint", "Cmd", "WorkingDir", "User", "ExposedPorts", "Volumes", "Labels",
    "StopSignal", "Healthcheck", "OnBuild", "Shell",
)  # fmt: skip
_REF_NAME = "org.opencontainers.image.ref.name"
IGNORED_LABELS = ("io.buildah.version",)  # buildah's own label, not in the Dockerfile


@dataclass(frozen=True)
class Case:
    """A Dockerfile ready to build: the (possibly adapted) Dockerfile, its context and options."""

    name: str
    dockerfile: Path
    context: Path
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    platform: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


def corpus_case(name: str, work: Path, substitute: Mapping[str, str] | None = None,
                build_args: Mapping[str, str] | None = None) -> Case:
    """Corpus case `name` (Dockerfile, context/, args.json), its Dockerfile copied to `work` with
    `substitute` applied (to point FROM at a local base, drop a URL ...) and `build_args` added to
    those of args.json."""
    source = CORPUS / name
    options = json.loads((source / "args.json").read_text()) if (source / "args.json").is_file() else {}
    work.mkdir(parents=True, exist_ok=True)
    dockerfile = work / "Dockerfile"
    dockerfile.write_text(_substituted(name, (source / "Dockerfile").read_text(), substitute or {}))
    return Case(
        name=name, dockerfile=dockerfile, context=source / "context",
        build_args={**options.get("build_args", {}), **(build_args or {})},
        target=options.get("target"), platform=options.get("platform"), labels=options.get("labels", {}),
    )  # fmt: skip


def _substituted(name: str, text: str, substitute: Mapping[str, str]) -> str:
    for old, new in substitute.items():
        assert old in text, f"{name}: {old!r} is not in its Dockerfile (stale adaptation)"
        text = text.replace(old, new)
    return text


@dataclass(frozen=True)
class Deviation:
    """Where buildah differs from Docker's documented behaviour in one case, and how the test copes:
    buildah builds an equivalent it can handle (`dockerfile` substitutions, `context` files written,
    or removed with None, in its own copies); `ignore` names config keys not compared
    ("Healthcheck.StartInterval" for one field of a key, "Env.order" to compare Env as a set) and
    `paths` the file system paths where buildah's tree differs from Docker's."""

    reason: str
    dockerfile: Mapping[str, str] = field(default_factory=dict)
    context: Mapping[str, str | None] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()


def buildah_variant(case: Case, deviation: Deviation, work: Path) -> Case:
    """`case` as buildah gets it: its own Dockerfile and context copies with the deviation applied."""
    if not deviation.dockerfile and not deviation.context:
        return case
    context = work / "buildah-context"
    shutil.copytree(case.context, context, symlinks=True)
    for name, content in deviation.context.items():
        path = context / name
        if content is None:
            assert path.exists(), f"{case.name}: {name} is not in its context (stale deviation)"
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    dockerfile = work / "buildah.Dockerfile"
    dockerfile.write_text(_substituted(case.name, case.dockerfile.read_text(), deviation.dockerfile))
    return replace(case, dockerfile=dockerfile, context=context)


def comparable(settings: dict[str, Any], ignore: tuple[str, ...]) -> dict[str, Any]:
    """`settings` (from dockerfile_config) without the ignored keys or fields."""
    result = dict(settings)
    for item in ignore:
        key, _, part = item.partition(".")
        if part == "order" and result.get(key) is not None:
            result[key] = sorted(result[key])
        elif part and isinstance(result.get(key), dict):
            result[key] = {k: v for k, v in result[key].items() if k != part}
        elif not part:
            result.pop(key, None)
    return result


def dockwright_args(case: Case, layout: Path, tag: str) -> list[str]:
    """`dockwright build` arguments that write `case` to the OCI layout directory `layout` as `tag`."""
    return ["build", str(case.context), "-f", str(case.dockerfile), "-t", f"diff:{tag}",
            "-o", f"type=oci,dest={layout},tar=false", *_option_args(case)]


def _option_args(case: Case) -> list[str]:
    """The options dockwright and `buildah bud` spell alike."""
    args = [a for k, v in case.build_args.items() for a in ("--build-arg", f"{k}={v}")]
    args += [a for k, v in case.labels.items() for a in ("--label", f"{k}={v}")]
    args += ["--target", case.target] if case.target else []
    args += ["--platform", case.platform] if case.platform else []
    return args


class Buildah:
    """buildah with private state in a short temporary directory (`close` removes it)."""

    def __init__(self) -> None:
        self.state = Path(tempfile.mkdtemp(prefix="dw-bah-"))

    def command(self, *args: str | Path) -> list[str]:
        return [
            "buildah", "--storage-driver", "vfs",
            "--root", str(self.state / "root"), "--runroot", str(self.state / "run"),
            *(str(a) for a in args),
        ]  # fmt: skip

    def build(self, case: Case, layout: Path, tag: str) -> dict[str, Any]:
        """`buildah bud` the case; push its file system to the OCI layout `layout` as `tag` and
        return its image config.

        buildah builds in Docker format because its OCI format drops Healthcheck, OnBuild and Shell
        (the OCI config spec has no such keys; Docker writes them in OCI images too); the config is
        read with `buildah inspect`, before the push converts the image to OCI for umoci."""
        image = f"localhost/dw-diff:{tag}"
        sh(*self.command(
            "bud", "--format", "docker", "--isolation", "chroot", "--tls-verify=false",
            "-f", case.dockerfile, "-t", image, *_option_args(case), case.context,
        ))  # fmt: skip
        config: dict[str, Any] = json.loads(sh(*self.command("inspect", "--type", "image", image)))["Docker"]
        sh(*self.command("push", image, f"oci:{layout}:{tag}"))
        sh(*self.command("rmi", image))
        return config

    def close(self) -> None:
        subprocess.run(self.command("rm", "--all"), capture_output=True, check=False)
        shutil.rmtree(self.state, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Reading an image back


def _blob(layout: Path, digest: str) -> dict[str, Any]:
    algorithm, _, hex_ = digest.partition(":")
    return json.loads((layout / "blobs" / algorithm / hex_).read_bytes())


def read_config(layout: Path, tag: str) -> dict[str, Any]:
    """The image config of `tag` in an OCI layout (the image, not an index)."""
    index = json.loads((layout / "index.json").read_text())
    tagged = [m for m in index["manifests"] if m.get("annotations", {}).get(_REF_NAME) == tag]
    assert len(tagged) == 1, f"{layout}: expected one manifest tagged {tag!r}, index: {index}"
    return _blob(layout, _blob(layout, tagged[0]["digest"])["config"]["digest"])


def dockerfile_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config keys a Dockerfile sets, absent and empty alike as None."""
    settings = config.get("config") or {}
    return {key: settings.get(key) or None for key in CONFIG_KEYS}


@dataclass(frozen=True)
class Entry:
    """One file system entry as a user inspects it (timestamps aside)."""

    kind: str  # dir | file | symlink
    mode: str  # octal permission bits, setuid/setgid/sticky included
    owner: str  # uid:gid
    content: str = ""  # sha256 of a file's bytes, or a symlink's target
    hardlink_of: str = ""  # the first path (sorted) that is the same file, for its other hard links

    def __str__(self) -> str:
        link = f" hardlink-of={self.hardlink_of}" if self.hardlink_of else ""
        return f"{self.kind} {self.mode} {self.owner} {self.content}".rstrip() + link


def file_tree(layout: Path, tag: str, work: Path) -> dict[str, Entry]:
    """The merged file tree of `tag`, unpacked by umoci: {"/path": Entry} (the root itself left out)."""
    rootfs = work / f"rootfs-{tag}"
    sh("umoci", "raw", "unpack", "--image", f"{layout}:{tag}", rootfs)
    try:
        tree, first_of_inode = {}, {}
        for path in sorted(rootfs.rglob("*")):
            name, entry, info = "/" + str(path.relative_to(rootfs)), _entry(path), path.lstat()
            if entry.kind == "file" and info.st_nlink > 1:
                first = first_of_inode.setdefault(info.st_ino, name)
                entry = replace(entry, hardlink_of=first) if first != name else entry
            tree[name] = entry
        return tree
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def _entry(path: Path) -> Entry:
    info = path.lstat()
    mode, owner = oct(stat.S_IMODE(info.st_mode)), f"{info.st_uid}:{info.st_gid}"
    if stat.S_ISLNK(info.st_mode):
        return Entry("symlink", mode, owner, os.readlink(path))
    if stat.S_ISDIR(info.st_mode):
        return Entry("dir", mode, owner)
    if stat.S_ISREG(info.st_mode):
        return Entry("file", mode, owner, hashlib.sha256(path.read_bytes()).hexdigest())
    return Entry(f"special({stat.S_IFMT(info.st_mode):o})", mode, owner)


def tree_differences(ours: dict[str, Entry], reference: dict[str, Entry]) -> list[str]:
    """Readable lines for every path that differs: `PATH: dockwright=... buildah=...`."""
    lines = []
    for path in sorted(ours.keys() | reference.keys()):
        mine, theirs = ours.get(path), reference.get(path)
        if mine != theirs:
            lines.append(f"{path}: dockwright={mine or 'missing'} buildah={theirs or 'missing'}")
    return lines


# ---------------------------------------------------------------------------------------------
# The comparison


def _settings(config: dict[str, Any], deviation: Deviation) -> dict[str, Any]:
    settings = dockerfile_config(config)
    labels = {k: v for k, v in (settings["Labels"] or {}).items() if k not in IGNORED_LABELS}
    return comparable({**settings, "Labels": labels or None}, deviation.ignore)


def assert_same_image(case: Case, deviation: Deviation, buildah: Buildah, dockwright: Callable[..., Any],
                      work: Path, skip: Callable[[str], bool] = lambda path: False) -> None:
    """Build `case` with both (buildah gets `deviation` applied) into OCI layouts under `work`; assert the
    same Dockerfile-set config, platform and file tree, paths `skip` accepts left out of both trees."""
    theirs = buildah.build(buildah_variant(case, deviation, work), work / "buildah", "buildah")
    dockwright(*dockwright_args(case, work / "dockwright", "dockwright"))
    ours = read_config(work / "dockwright", "dockwright")

    expected = _settings(theirs, deviation)
    if expected["WorkingDir"] is None:  # buildah leaves it unset on FROM scratch; Docker sets "/"
        expected["WorkingDir"] = "/"
    mine = _settings(ours, deviation)
    assert mine == expected, f"config differs: dockwright={mine} buildah={expected}"
    assert (ours["os"], ours["architecture"], ours.get("variant")) == (
        theirs["os"], theirs["architecture"], theirs.get("variant"))
    ours_tree = {p: e for p, e in file_tree(work / "dockwright", "dockwright", work).items() if not skip(p)}
    reference = {p: e for p, e in file_tree(work / "buildah", "buildah", work).items() if not skip(p)}
    for path in deviation.paths:
        assert ours_tree.pop(path, None) != reference.pop(path, None), f"{case.name}: {path} no longer differs"
    differences = tree_differences(ours_tree, reference)
    assert differences == [], "file trees differ:\n" + "\n".join(differences)
