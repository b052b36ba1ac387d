"""`--layering auto`: dependencies go to their own layer, and splitting never loses or duplicates a file."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from dockwright.frontends.layering import dependency_paths, split_copy
from dockwright.layers.copy import CopySettings, collect_copy
from dockwright.layers.tar import TarEntry
from dockwright.plan import CopyStep


def _files(root: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def _node(root: Path) -> None:
    _files(root, {"package.json": "{}", "src/index.js": "require('left-pad')", "src/lib/util.js": "",
                  "node_modules/left-pad/index.js": "module.exports = 1", "node_modules/left-pad/package.json": "{}",
                  "node_modules/.package-lock.json": "{}"})
    (root / "node_modules" / ".bin").mkdir()
    os.symlink("../left-pad/index.js", root / "node_modules" / ".bin" / "left-pad")


def _dotnet(root: Path) -> None:
    deps = {
        "runtimeTarget": {"name": ".NETCoreApp,Version=v8.0"},
        "targets": {".NETCoreApp,Version=v8.0": {
            "MyApp/1.0.0": {"dependencies": {"Newtonsoft.Json": "13.0.3"}, "runtime": {"MyApp.dll": {}}},
            "Newtonsoft.Json/13.0.3": {"runtime": {"lib/net6.0/Newtonsoft.Json.dll": {"assemblyVersion": "13.0.0.0"}}},
        }},
        "libraries": {
            "MyApp/1.0.0": {"type": "project", "serviceable": False, "sha512": ""},
            "Newtonsoft.Json/13.0.3": {"type": "package", "serviceable": True, "sha512": "sha512-x",
                                       "path": "newtonsoft.json/13.0.3"},
        },
    }
    _files(root, {"MyApp.dll": "app", "MyApp.pdb": "", "MyApp.runtimeconfig.json": "{}", "appsettings.json": "{}",
                  "Newtonsoft.Json.dll": "lib", "runtimes/linux-x64/native/libe_sqlite3.so": "native",
                  "MyApp.deps.json": "\ufeff" + json.dumps(deps)})  # dotnet writes a BOM


def _java(root: Path) -> None:
    _files(root, {"app.jar": "main", "lib/guava.jar": "g", "lib/slf4j.jar": "s", "config/app.yaml": ""})


def _python(root: Path) -> None:
    _files(root, {"main.py": "print()", "pkg/__init__.py": "", ".venv/pyvenv.cfg": "home = /usr/bin",
                  ".venv/lib/python3.12/site-packages/requests/__init__.py": "", ".venv/bin/python": ""})


@pytest.mark.parametrize(
    ("make", "layout", "deps"),
    [
        (_node, "node", ["node_modules"]),
        (_dotnet, "dotnet", ["Newtonsoft.Json.dll", "runtimes"]),
        (_java, "java", ["lib"]),
        (_python, "python", [".venv"]),
    ],
)
def test_recognised_layouts(tmp_path: Path, make, layout: str, deps: list[str]) -> None:  # type: ignore[no-untyped-def]
    make(tmp_path)
    assert dependency_paths(tmp_path) == (layout, deps)


def test_site_packages_without_a_venv(tmp_path: Path) -> None:
    _files(tmp_path, {"app.py": "", "deps/lib/python3.12/site-packages/x.py": ""})
    assert dependency_paths(tmp_path) == ("python", ["deps/lib/python3.12/site-packages"])


def test_dotnet_project_references_stay_in_the_application_layer(tmp_path: Path) -> None:
    _dotnet(tmp_path)
    _, deps = dependency_paths(tmp_path)
    assert "MyApp.dll" not in deps


def test_unreadable_deps_json_is_not_a_dotnet_layout(tmp_path: Path) -> None:
    _files(tmp_path, {"MyApp.dll": "", "MyApp.deps.json": "{not json"})
    assert dependency_paths(tmp_path) == ("", [])


def test_unrecognised_directory_is_left_alone(tmp_path: Path) -> None:
    _files(tmp_path, {"site/index.html": "", "site/css/a.css": ""})
    step = CopyStep(("site",), "/usr/share/nginx/html")
    assert split_copy(tmp_path, step) == [step]


@pytest.mark.parametrize(
    "step",
    [
        CopyStep(("app", "other"), "/app/"),
        CopyStep(("app/package.json",), "/app/"),
        CopyStep(("app",), "/app", from_stage=0),
        CopyStep(("app",), "/app", from_image="node:22"),
        CopyStep(("missing",), "/app"),
    ],
)
def test_only_a_single_context_directory_is_split(tmp_path: Path, step: CopyStep) -> None:
    _node(tmp_path / "app")
    (tmp_path / "other").mkdir()
    assert split_copy(tmp_path, step) == [step]


def _collect(context: Path, step: CopyStep) -> list[TarEntry]:
    """The entries of one step, as the builder collects them (dest already absolute)."""
    settings = CopySettings(excludes=tuple(step.excludes), parents=step.parents,
                            chmod=int(step.chmod, 8) if step.chmod else None)
    return collect_copy(context, step.sources, step.dest, settings)


def _assert_same_files_as_unsplit(context: Path, step: CopyStep) -> tuple[list[TarEntry], list[TarEntry]]:
    """Applying the split layers in order gives exactly the unsplit layer's tree; no file is in both."""
    steps = split_copy(context, step)
    assert len(steps) == 2, "the layout was not recognised"
    deps, app = (_collect(context, s) for s in steps)
    unsplit = {e.path: e for e in _collect(context, step)}
    dep_files = {e.path for e in deps if e.kind != "dir"}
    app_files = {e.path for e in app if e.kind != "dir"}
    assert dep_files and app_files
    assert not dep_files & app_files, "a file is packed twice"
    merged = {e.path: e for e in deps}
    merged.update({e.path: e for e in app})  # the later layer wins, as in an overlay
    assert sorted(merged) == sorted(unsplit), "a file was lost or added by the split"
    assert merged == unsplit
    return deps, app


@pytest.mark.parametrize("dest", ["/app", "/app/", "/srv/my app"])
def test_node_split_keeps_every_file_once(tmp_path: Path, dest: str) -> None:
    _node(tmp_path / "app")
    step = CopyStep(("app",), dest, created_by="dockwright --copy app:/app")
    deps, app = _assert_same_files_as_unsplit(tmp_path, step)
    root = dest.strip("/")
    assert {e.path for e in deps if e.kind != "dir"} == {
        f"{root}/node_modules/left-pad/index.js", f"{root}/node_modules/left-pad/package.json",
        f"{root}/node_modules/.package-lock.json", f"{root}/node_modules/.bin/left-pad"}
    assert not any("node_modules" in e.path for e in app)
    first, second = split_copy(tmp_path, step)
    assert "node dependencies" in first.created_by and "application" in second.created_by


def test_split_of_the_context_root(tmp_path: Path) -> None:
    _node(tmp_path)
    _assert_same_files_as_unsplit(tmp_path, CopyStep((".",), "/app"))


def test_dotnet_split_keeps_every_file_once(tmp_path: Path) -> None:
    _dotnet(tmp_path / "publish")
    deps, app = _assert_same_files_as_unsplit(tmp_path, CopyStep(("publish/",), "/app"))
    assert {e.path for e in deps if e.kind != "dir"} == {
        "app/Newtonsoft.Json.dll", "app/runtimes/linux-x64/native/libe_sqlite3.so"}
    assert "app/MyApp.dll" in {e.path for e in app}


def test_java_split_keeps_every_file_once(tmp_path: Path) -> None:
    _java(tmp_path / "build")
    deps, _ = _assert_same_files_as_unsplit(tmp_path, CopyStep(("build",), "/opt/app", chmod="750"))
    assert {e.path for e in deps if e.kind != "dir"} == {"opt/app/lib/guava.jar", "opt/app/lib/slf4j.jar"}
    assert {e.mode for e in deps if e.path.startswith("opt/app/")} == {0o750}


def test_python_split_keeps_every_file_once(tmp_path: Path) -> None:
    _python(tmp_path / "svc")
    deps, app = _assert_same_files_as_unsplit(tmp_path, CopyStep(("svc",), "/srv"))
    assert all(e.path.startswith("srv/.venv") or e.path == "srv" for e in deps)
    assert not any(".venv" in e.path for e in app)


def test_existing_excludes_are_kept_in_the_application_step(tmp_path: Path) -> None:
    _node(tmp_path / "app")
    step = replace(CopyStep(("app",), "/app"), excludes=("*.md",))
    _, application = split_copy(tmp_path, step)
    assert application.excludes == ("*.md", "node_modules")
