"""`--layering auto`: split one --copy of an application directory into a dependency layer and an
application layer, for layouts we recognise, so that a code change moves only the small layer.

- Node: node_modules/
- Python: a virtualenv (a directory holding pyvenv.cfg) or site-packages directories
- .NET publish output: the NuGet packages' runtime assemblies named in *.deps.json, and runtimes/
- Java: lib/*.jar, BOOT-INF/lib, WEB-INF/lib
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from dataclasses import replace
from pathlib import Path

from dockwright.plan import CopyStep

log = logging.getLogger("dockwright")
_SITE_PACKAGES_DEPTH = 4


def dependency_paths(root: Path) -> tuple[str, list[str]]:
    """(layout name, paths relative to `root` that hold third-party dependencies)."""
    if (root / "node_modules").is_dir():
        return "node", ["node_modules"]
    venvs = sorted(p.name for p in _subdirs(root) if (p / "pyvenv.cfg").is_file())
    if venvs:
        return "python", venvs
    site = _site_packages(root)
    if site:
        return "python", site
    dotnet = _dotnet_packages(root)
    if dotnet:
        return "dotnet", dotnet
    java = [d for d in ("lib", "BOOT-INF/lib", "WEB-INF/lib") if any((root / d).glob("*.jar"))]
    if java:
        return "java", java
    return "", []


def _subdirs(root: Path) -> list[Path]:
    try:
        return [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []


def _site_packages(root: Path) -> list[str]:
    found = []
    for current, dirs, _ in os.walk(root):
        rel = os.path.relpath(current, root)
        depth = 0 if rel == "." else rel.count(os.sep) + 1
        if os.path.basename(current) == "site-packages":
            found.append(rel.replace(os.sep, "/"))
            dirs.clear()
        elif depth >= _SITE_PACKAGES_DEPTH:
            dirs.clear()
        dirs.sort()
    return found


def _dotnet_packages(root: Path) -> list[str]:
    """Runtime assemblies of NuGet packages (type "package" in *.deps.json) plus runtimes/."""
    names: set[str] = set()
    for deps_file in sorted(root.glob("*.deps.json")):
        try:
            deps = json.loads(deps_file.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError):
            continue
        libraries = deps.get("libraries") or {}
        packages = {name for name, lib in libraries.items() if isinstance(lib, dict) and lib.get("type") == "package"}
        for target in (deps.get("targets") or {}).values():
            for name, assets in (target or {}).items():
                if name in packages and isinstance(assets, dict):
                    names.update(posixpath.basename(path) for path in (assets.get("runtime") or {}))
    found = sorted(n for n in names if (root / n).is_file())
    if (root / "runtimes").is_dir() and (found or names):
        found.append("runtimes")
    return found


def split_copy(context: Path, step: CopyStep) -> list[CopyStep]:
    """The step itself, or [dependencies, application] when its single source is a recognised layout."""
    if len(step.sources) != 1 or step.from_stage is not None or step.from_image is not None:
        return [step]
    source = step.sources[0].strip("/") or "."
    root = context / source
    if not root.is_dir() or root.is_symlink():
        return [step]
    layout, deps = dependency_paths(root)
    if not deps:
        return [step]
    dest = step.dest if step.dest.endswith("/") else step.dest + "/"
    dependencies = replace(step, sources=tuple(f"{source}/./{d}" for d in deps), dest=dest, parents=True,
                           created_by=f"{step.created_by} ({layout} dependencies: {', '.join(deps)})")
    application = replace(step, excludes=(*step.excludes, *deps),
                          created_by=f"{step.created_by} ({layout} application)")
    log.debug("layering auto: %s -> %s dependencies [%s] + application", source, layout, ", ".join(deps))
    return [dependencies, application]
