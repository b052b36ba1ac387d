"""dockwright: build OCI and Docker images without a daemon, from Python or the command line.

    import dockwright
    base = dockwright.pull("registry.example.com/base:1")
    img = base.append(dockwright.Layer.from_directory("app", "/app")).with_config(cmd=["/app/run"])
    dockwright.push(img, "registry.example.com/app:1")

See docs/api.md. Names are imported on first use, so that `import dockwright` and the command line start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from dockwright.api import Image, ImageIndex, Layer, build, load, publish, pull, push, save
    from dockwright.api.session import Settings
    from dockwright.model.errors import Cancelled, DockwrightError

__all__ = ["Cancelled", "DockwrightError", "Image", "ImageIndex", "Layer", "Settings", "build", "load", "publish",
           "pull", "push", "save"]

_HOMES = {"Cancelled": "dockwright.model.errors", "DockwrightError": "dockwright.model.errors",
          "Settings": "dockwright.api.session"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'dockwright' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_HOMES.get(name, "dockwright.api")), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
