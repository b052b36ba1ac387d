"""The benchmark's inputs, prepared once and cached under bench/work/ (a `.ready` file marks a
finished preparation; delete the directory to redo it).

Full workloads:
- base: a Debian bookworm `debootstrap --variant=minbase` root filesystem split into three layers
  with umoci (/usr; the rest of the system; apt's package lists and downloaded .deb archives);
- node: a real `node_modules` tree from the npm registry plus package.json and a small src/;
- large: one 512 MiB file, three quarters random (incompressible) and one quarter text.

Quick workloads (`--quick`, no downloads but npm's containerify): the busybox base of the
integration tests, a generated 2,000-file node_modules tree and a 64 MiB file.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from measure import Step, run_step, shell

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
WORK = BENCH / "work"
CONTAINERIFY_VERSION = "4.1.0"
BASE_TAG = "latest"
_DEFAULT_MIRROR = "http://deb.debian.org/debian"

# Pinned so that every run installs the same tree (about 13,000 files, 120 MB).
NODE_PACKAGE = {
    "name": "bench-app",
    "version": "1.0.0",
    "private": True,
    "main": "src/index.js",
    "scripts": {"start": "node src/index.js"},
    "dependencies": {
        "express": "4.21.2",
        "lodash": "4.17.21",
        "typescript": "5.8.3",
        "@babel/core": "7.27.1",
        "@babel/preset-env": "7.27.2",
        "webpack": "5.99.8",
        "jest": "29.7.0",
        "eslint": "9.27.0",
        "rxjs": "7.8.2",
    },
}


@dataclass(frozen=True)
class Content:
    """What goes into the application image: `deps` then `code` (names relative to `root`), each
    copied to `prefix/name`. Every tool makes one layer per dependency entry and at least one for
    the code, so a code change can move only the code layer."""

    root: Path
    prefix: str
    deps: tuple[str, ...]
    code: tuple[str, ...]
    changed_file: str | None = None  # relative to root: the file the one-change scenario edits

    @property
    def names(self) -> tuple[str, ...]:
        return self.deps + self.code

    @property
    def is_node(self) -> bool:
        return "node_modules" in self.deps


@dataclass(frozen=True)
class TreeStats:
    files: int
    bytes: int

    def describe(self) -> str:
        return f"{self.files:,} files, {self.bytes / 1e6:,.0f} MB"


@dataclass(frozen=True)
class Workloads:
    base_layout: Path  # an OCI layout, tag BASE_TAG
    base_description: str
    node: Content
    large: Content
    containerify: Path | None  # the containerify CLI, or None when it could not be installed
    containerify_note: str

    def describe(self) -> dict[str, str]:
        modules = tree_stats(self.node.root / "node_modules")
        src = tree_stats(self.node.root / "src")
        return {
            "base": self.base_description,
            "node": f"node_modules: {modules.describe()}; src/: {src.describe()}",
            "large": f"one file: {tree_stats(self.large.root).bytes / 2**20:,.0f} MiB "
                     "(3/4 random bytes, 1/4 text)",
        }


def tree_stats(root: Path) -> TreeStats:
    files = size = 0
    for current, _, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(current, name))
            files += 1
            size += st.st_size
    return TreeStats(files, size)


def _ready(path: Path) -> bool:
    return (path / ".ready").is_file()


def _mark_ready(path: Path) -> None:
    (path / ".ready").write_text("ok\n")


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _run(step: Step, log: Path) -> None:
    run_step(step, log)


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb822 `URIs:` or one-line `deb URL bookworm`)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for source in sources:
        try:
            text = source.read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            if uris and re.search(r"^Suites:.*\bbookworm\b(?!-)", stanza, re.M) and "security" not in uris[1]:
                return uris[1]
        line = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", text, re.M)
        if line:
            return line[1]
    return _DEFAULT_MIRROR


# ---------------------------------------------------------------------------------------------
# Base images


_DEBIAN_LAYERS = (
    ("debian /usr", "-C {root} ./usr"),
    ("debian system", "-C {root} --exclude=./usr --exclude=./var/cache/apt/archives "
                      "--exclude=./var/lib/apt/lists ."),
    ("apt lists and .deb archives", "-C {root} ./var/cache/apt/archives ./var/lib/apt/lists"),
)


def _debian_base(work: Path, log: Path) -> tuple[Path, str]:
    rootfs, layout = work / "debian-rootfs", work / "debian-oci"
    if not _ready(rootfs):
        shutil.rmtree(rootfs, ignore_errors=True)
        _run(Step(["debootstrap", "--variant=minbase", "bookworm", rootfs, debian_mirror()]), log)
        _mark_ready(rootfs)
    if not _ready(layout):
        shutil.rmtree(layout, ignore_errors=True)
        bundle = work / "debian-bundle"
        image = f"{layout}:{BASE_TAG}"
        _run(Step(["umoci", "init", "--layout", layout]), log)
        _run(Step(["umoci", "new", "--image", image]), log)
        for created_by, selection in _DEBIAN_LAYERS:
            shutil.rmtree(bundle, ignore_errors=True)
            _run(Step(["umoci", "unpack", "--image", image, bundle]), log)
            files = selection.format(root=rootfs)
            _run(shell(f"tar --exclude=./.ready -cf - {files} | tar -C {bundle}/rootfs -xpf -"), log)
            _run(Step(["umoci", "repack", "--history.created_by", created_by, "--image", image, bundle]), log)
        shutil.rmtree(bundle, ignore_errors=True)
        _run(Step(["umoci", "config", "--image", image, "--config.cmd", "bash",
                   "--config.env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]), log)
        _run(Step(["umoci", "gc", "--layout", layout]), log)
        _mark_ready(layout)
    stats = tree_stats(rootfs)
    return layout, (f"Debian bookworm minbase (debootstrap), 3 layers: /usr; the rest; apt lists + .deb "
                    f"archives — {stats.describe()} uncompressed")


def _busybox_base(work: Path) -> tuple[Path, str]:
    from images import build_busybox_layout  # tests/integration: the integration tests' base image

    layout = work / "busybox-oci"
    if not _ready(layout):
        scratch = _fresh(work / "busybox-build")
        built = build_busybox_layout(scratch)
        shutil.rmtree(layout, ignore_errors=True)
        shutil.move(built, layout)
        shutil.rmtree(scratch)
        _mark_ready(layout)
    return layout, "busybox-static, 2 layers (the integration tests' base)"


# ---------------------------------------------------------------------------------------------
# Application content


_SRC_FILES = 24


def _write_src(app: Path) -> None:
    """A small but real Express application: an entry point and routes."""
    routes = app / "src" / "routes"
    routes.mkdir(parents=True, exist_ok=True)
    names = [f"route{i:02d}" for i in range(_SRC_FILES)]
    for name in names:
        (routes / f"{name}.js").write_text(
            "const express = require('express');\nconst _ = require('lodash');\n"
            "const router = express.Router();\n"
            f"router.get('/{name}', (req, res) => res.json(_.range(10).map((i) => `{name}-${{i}}`)));\n"
            "module.exports = router;\n"
        )
    uses = "".join(f"app.use(require('./routes/{name}'));\n" for name in names)
    (app / "src" / "index.js").write_text(
        "const express = require('express');\nconst app = express();\n" + uses
        + "app.listen(process.env.PORT || 3000);\n"
    )


def _synthetic_modules(app: Path, files: int = 2000) -> None:
    """A generated node_modules tree for --quick: 100 packages of 20 files."""
    rng = random.Random(4)
    for index in range(files):
        package = app / "node_modules" / f"pkg{index // 20:03d}" / "lib"
        package.mkdir(parents=True, exist_ok=True)
        words = " ".join(rng.choice(("const", "let", "function", "return", "x", "y", "=>")) for _ in range(400))
        (package / f"f{index % 20:02d}.js").write_text(f"// {index}\n{words}\n")


def _node_app(work: Path, quick: bool, log: Path) -> Content:
    app = work / ("node-quick" if quick else "node") / "app"
    if not _ready(app.parent):
        _fresh(app)
        (app / "package.json").write_text(json.dumps(NODE_PACKAGE, indent=2) + "\n")
        if quick:
            _synthetic_modules(app)
        else:
            _run(Step(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--package-lock=false"],
                      cwd=app), log)
        _write_src(app)
        _mark_ready(app.parent)
    return Content(app, "/app", deps=("node_modules",), code=("package.json", "src"),
                   changed_file="src/index.js")


def _write_large_file(path: Path, size: int) -> None:
    """3/4 seeded random bytes, then 1/4 repeated text: deterministic, mostly incompressible."""
    rng = random.Random(512)
    chunk = 1 << 20
    random_part = size * 3 // 4
    text = (b"dockwright benchmark large file: a line of ordinary text to compress.\n" * 16000)[:chunk]
    with path.open("wb") as out:
        for _ in range(random_part // chunk):
            out.write(rng.randbytes(chunk))
        for _ in range((size - random_part) // chunk):
            out.write(text)


def _large(work: Path, quick: bool) -> Content:
    root = work / ("large-quick" if quick else "large") / "data"
    if not _ready(root.parent):
        _fresh(root)
        _write_large_file(root / "big.bin", (64 if quick else 512) << 20)
        _mark_ready(root.parent)
    return Content(root, "/data", deps=(), code=("big.bin",))


def _containerify(work: Path, log: Path) -> tuple[Path | None, str]:
    home = work / "tools" / "containerify"
    cli = home / "node_modules" / ".bin" / "containerify"
    if not _ready(home):
        _fresh(home)
        try:
            _run(Step(["npm", "install", "--no-audit", "--no-fund", f"containerify@{CONTAINERIFY_VERSION}"],
                      cwd=home), log)
        except (OSError, RuntimeError) as exc:
            return None, f"npm install containerify failed: {str(exc).splitlines()[0]}"
        _mark_ready(home)
    return cli, ""


def prepare(quick: bool, log: Path) -> Workloads:
    """Build (or reuse) every workload."""
    WORK.mkdir(parents=True, exist_ok=True)
    if quick:
        layout, description = _busybox_base(WORK)
    else:
        layout, description = _debian_base(WORK, log)
    containerify, note = (None, "npm not installed") if shutil.which("npm") is None else _containerify(WORK, log)
    return Workloads(layout, description, _node_app(WORK, quick, log), _large(WORK, quick), containerify, note)


def warm_page_cache(content: Content) -> None:
    """Read every input once so that the first measured tool does not pay for the disk."""
    names = " ".join(content.names)
    subprocess.run(["bash", "-c", f"tar -C {content.root} -cf - {names} | cat > /dev/null"], check=True)
