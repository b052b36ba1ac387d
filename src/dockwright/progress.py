"""Transfer progress on stderr: per-blob bars with bytes and speed on a terminal (rich), plain lines
when stderr is not a terminal (CI logs), nothing with -q."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("dockwright")
LINE_THRESHOLD = 1_000_000  # in plain-line mode, smaller transfers are logged only with -v


def _human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


class Progress:
    """Reports byte streams. `mode` is "bars", "lines" or "off"."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._bars: Any = None
        self._lock = threading.Lock()

    @classmethod
    def for_stderr(cls, quiet: bool) -> Progress:
        if quiet:
            return cls("off")
        return cls("bars" if sys.stderr.isatty() else "lines")

    def __enter__(self) -> Progress:
        if self.mode == "bars":
            from rich.progress import BarColumn, DownloadColumn, TextColumn, TransferSpeedColumn
            from rich.progress import Progress as Bars

            self._bars = Bars(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                              TransferSpeedColumn(), transient=True)
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    def track(self, label: str, size: int, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Pass `chunks` through, reporting progress under `label`."""
        if self.mode == "off":
            yield from chunks
            return
        start = time.monotonic()
        task = None
        if self._bars is not None:
            with self._lock:
                task = self._bars.add_task(label, total=size)
        done = 0
        try:
            for chunk in chunks:
                done += len(chunk)
                if task is not None:
                    self._bars.update(task, completed=done)
                yield chunk
        finally:
            if task is not None:
                with self._lock:
                    self._bars.remove_task(task)
        if self.mode == "lines":
            elapsed = max(time.monotonic() - start, 1e-6)
            level = logging.INFO if done >= LINE_THRESHOLD else logging.DEBUG
            log.log(level, "%s: %s in %.1fs (%s/s)", label, _human(done), elapsed, _human(done / elapsed))
