"""Import httpx without the ~250 ms of modules it would pull in and we never use.

httpx's package __init__ imports its own command-line tool when click is installed (click, rich,
pygments), and httpcore imports trio when trio is installed. Both imports are optional in those
packages (guarded by `except ImportError`), so we hide click and trio while httpx loads, then un-hide
them. Measured here: `import httpx` 365 ms -> 100 ms. Every httpx user imports it through this."""

from __future__ import annotations

import sys
from types import ModuleType

_UNUSED_OPTIONAL = ("click", "trio")


def httpx() -> ModuleType:
    if "httpx" in sys.modules:
        return sys.modules["httpx"]
    hidden = [name for name in _UNUSED_OPTIONAL if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` raise ImportError
    try:
        import httpcore  # noqa: F401  (httpx imports it lazily; load it while trio is hidden)
        import httpx as module
    finally:
        for name in hidden:
            if sys.modules.get(name) is None:
                del sys.modules[name]
    return module
