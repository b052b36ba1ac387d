"""Progress of a build, for people and for tools: a small interface the library reports to, and renderers.

Events: a step starts and finishes (`step`), a layer is packed (`packing`: the writer's counters of files and
bytes, read by the renderer, never pushed per file), bytes go over the wire (`track`). `Progress` itself
ignores them all (quiet: the library's default). Renderers, chosen with `make_progress(mode)`:
- plain: log lines on the "dockwright" logger; an activity that runs long gets a line at least every 5 s
  (bytes done/total and rate), so that CI logs show life;
- tty: a live display on stderr (rich): steps with their time, layers with files and bytes packed, transfer bars;
- rawjson: one JSON object per line on a stream, for tools (fields in README.md, "Progress");
- quiet: nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from dockwright.model.units import human_size, plural

log = logging.getLogger("dockwright")
LINE_THRESHOLD = 1_000_000  # in plain mode, smaller transfers are logged only with -v
HEARTBEAT = 5.0  # plain mode: seconds between lines about an activity still running
MODES = ("auto", "tty", "plain", "quiet", "rawjson")

Kind = Literal["step", "layer", "transfer"]
Counters = Callable[[], tuple[int, int]]  # a layer writer's (files, bytes) so far


class Progress:
    """Receives a build's progress events and ignores them (quiet). Use as a context manager: renderers run
    a thread while it is open. Every method may be called from any thread."""

    interval: float | None = None  # seconds between a renderer's ticks; None: no thread

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Around a build step (`COPY . /app`)."""
        yield

    @contextlib.contextmanager
    def packing(self, name: str, counters: Counters) -> Iterator[None]:
        """Around the writing of a layer; `counters()` gives (files, bytes) packed so far."""
        yield

    def track(self, label: str, size: int, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Pass `chunks` (a transfer of `size` bytes) through, reporting them under `label`."""
        yield from chunks


@dataclass(eq=False)
class Activity:
    """A step, a layer being packed or a transfer, as a renderer sees it."""

    id: int
    kind: Kind
    name: str
    total: int | None = None  # bytes expected (transfers)
    parent: int | None = None  # the step a layer is packed for
    counters: Counters | None = None
    done: int = 0  # bytes so far
    files: int = 0
    started: float = field(default_factory=time.monotonic)
    reported: float = 0.0  # when a renderer last said something about it
    task: Any = None  # the renderer's handle (a rich task)

    def poll(self) -> None:
        if self.counters is not None:
            self.files, self.done = self.counters()

    def elapsed(self, now: float | None = None) -> float:
        return (now or time.monotonic()) - self.started


class _Reporting(Progress):
    """Keeps the open activities and calls the renderer's hooks: started, finished, tick."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, Activity] = {}
        self._ids = itertools.count(1)
        self._current = threading.local()  # the step running in this thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Progress:
        if self.interval is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._ticks, name="dockwright-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _ticks(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick_all(time.monotonic())

    def tick_all(self, now: float) -> None:
        """Read the counters of everything running and let the renderer show them (its thread calls this)."""
        with self._lock:
            activities = list(self._open.values())
        for activity in activities:
            activity.poll()
            self.tick(activity, now)

    @contextlib.contextmanager
    def _activity(self, kind: Kind, name: str, **fields: Any) -> Iterator[Activity]:
        activity = Activity(next(self._ids), kind, name, **fields)
        with self._lock:
            self._open[activity.id] = activity
        self.started(activity)
        error: BaseException | None = None
        try:
            yield activity
        except BaseException as exc:
            error = exc
            raise
        finally:
            with self._lock:
                del self._open[activity.id]
            activity.poll()
            self.finished(activity, error)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        outer = getattr(self._current, "step", None)
        with self._activity("step", name) as activity:
            self._current.step = activity.id
            try:
                yield
            finally:
                self._current.step = outer

    @contextlib.contextmanager
    def packing(self, name: str, counters: Counters) -> Iterator[None]:
        parent = getattr(self._current, "step", None)
        with self._lock:
            step = self._open.get(parent) if parent is not None else None
        with self._activity("layer", step.name if step else name, counters=counters, parent=parent):
            yield

    def track(self, label: str, size: int, chunks: Iterable[bytes]) -> Iterator[bytes]:
        with self._activity("transfer", label, total=size) as activity:
            for chunk in chunks:
                activity.done += len(chunk)
                yield chunk

    # the renderer's hooks
    def started(self, activity: Activity) -> None:
        pass

    def finished(self, activity: Activity, error: BaseException | None) -> None:
        pass

    def tick(self, activity: Activity, now: float) -> None:
        pass


def describe(activity: Activity, now: float | None = None) -> str:
    """"COPY . /app: packing 1234 files, 56.0 MiB, 12.0 MiB/s, 4.7s": what an activity has done so far."""
    now = now or time.monotonic()
    detail = _detail(activity, now)
    return f"{activity.name}: {detail + ', ' if detail else ''}{activity.elapsed(now):.1f}s"


def _detail(activity: Activity, now: float) -> str:
    """Files and bytes packed, or bytes moved, and the rate (nothing for a step)."""
    if activity.kind == "step":
        return ""
    rate = f"{human_size(activity.done / max(activity.elapsed(now), 1e-6))}/s"
    if activity.kind == "layer":
        return f"packing {plural(activity.files, 'file')}, {human_size(activity.done)}, {rate}"
    total = f" of {human_size(activity.total)}" if activity.total else ""
    return f"{human_size(activity.done)}{total}, {rate}"


class PlainProgress(_Reporting):
    """Log lines (the "dockwright" logger): a finished transfer of 1 MB or more, and a line at least every
    HEARTBEAT seconds about anything still running by then (and one when it ends)."""

    interval = 1.0

    def tick(self, activity: Activity, now: float) -> None:
        if now - max(activity.started, activity.reported) < HEARTBEAT:
            return
        if activity.kind == "step" and self._busy_child(activity):
            return  # its layer's lines say more
        activity.reported = now
        log.info("%s", describe(activity, now))

    def _busy_child(self, step: Activity) -> bool:
        with self._lock:
            return any(other.parent == step.id for other in self._open.values())

    def finished(self, activity: Activity, error: BaseException | None) -> None:
        if error is not None:
            return
        if activity.kind == "transfer":
            level = logging.INFO if activity.done >= LINE_THRESHOLD else logging.DEBUG
            log.log(level, "%s: %s in %.1fs (%s/s)", activity.name, human_size(activity.done), activity.elapsed(),
                    human_size(activity.done / max(activity.elapsed(), 1e-6)))
        elif activity.reported:  # it ran long enough to be reported: say that it ended
            packed = f" ({plural(activity.files, 'file')}, {human_size(activity.done)})" \
                if activity.kind == "layer" else ""
            log.info("%s: done in %.1fs%s", activity.name, activity.elapsed(), packed)


class JsonProgress(_Reporting):
    """One JSON object per line on `stream`: "start" and "done" of each activity, "progress" every second
    while it runs. Fields: time (Unix seconds), event, id, kind (step, layer, transfer), name, and as known:
    parent (a layer's step), bytes, total, files, elapsed (seconds), error (on a failed "done")."""

    interval = 1.0

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self._stream = stream
        self._write_lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"time": round(time.time(), 3), "event": event, **fields}, ensure_ascii=False)
        with self._write_lock:
            stream = self._stream or sys.stderr
            stream.write(line + "\n")
            stream.flush()

    def _fields(self, activity: Activity, now: float | None = None) -> dict[str, Any]:
        fields: dict[str, Any] = {"id": activity.id, "kind": activity.kind, "name": activity.name}
        if activity.parent is not None:
            fields["parent"] = activity.parent
        if activity.kind != "step":
            fields["bytes"] = activity.done
        if activity.total is not None:
            fields["total"] = activity.total
        if activity.kind == "layer":
            fields["files"] = activity.files
        return fields

    def started(self, activity: Activity) -> None:
        self.emit("start", **self._fields(activity))

    def tick(self, activity: Activity, now: float) -> None:
        self.emit("progress", **self._fields(activity), elapsed=round(activity.elapsed(now), 3))

    def finished(self, activity: Activity, error: BaseException | None) -> None:
        fields = self._fields(activity)
        if isinstance(error, GeneratorExit):  # a transfer its reader stopped reading (it failed, or was cancelled)
            fields["error"] = "stopped"
        elif error is not None:
            fields["error"] = str(getattr(error, "message", error)) or type(error).__name__
        self.emit("done", **fields, elapsed=round(activity.elapsed(), 3))


class TtyProgress(_Reporting):
    """A live display on stderr (rich): each running step with its time, a layer being packed with its files
    and bytes, transfers as bars; a finished step leaves one line ("=> COPY . /app  1.2s")."""

    interval = 0.1

    def __init__(self) -> None:
        super().__init__()
        self._display: Any = None

    def __enter__(self) -> Progress:
        from rich.console import Console
        from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Display

        self._display = Display(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                                console=Console(stderr=True), transient=True)
        self._display.start()
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        if self._display is not None:
            self._display.stop()
            self._display = None

    def started(self, activity: Activity) -> None:
        if self._display is not None:
            from rich.markup import escape

            name = "  layer" if activity.kind == "layer" else activity.name
            activity.task = self._display.add_task(escape(name), total=activity.total, detail="")

    def tick(self, activity: Activity, now: float) -> None:
        if self._display is not None and activity.task is not None:
            self._display.update(activity.task, completed=activity.done, detail=_detail(activity, now))

    def finished(self, activity: Activity, error: BaseException | None) -> None:
        if self._display is None or activity.task is None:
            return
        self._display.remove_task(activity.task)
        if activity.kind == "step" and error is None:
            from rich.markup import escape

            self._display.console.print(f"=> {escape(activity.name)}  [dim]{activity.elapsed():.1f}s[/dim]",
                                        highlight=False)


def make_progress(mode: str, stream: TextIO | None = None) -> Progress:
    """The renderer for --progress MODE: auto (tty on a terminal, else plain), tty, plain, quiet or rawjson
    (to `stream`, default stderr)."""
    if mode == "auto":
        mode = "tty" if sys.stderr.isatty() else "plain"
    if mode == "tty":
        return TtyProgress()
    if mode == "plain":
        return PlainProgress()
    if mode == "rawjson":
        return JsonProgress(stream)
    if mode == "quiet":
        return Progress()
    raise ValueError(f"unknown progress mode {mode!r}; known: {', '.join(MODES)}")
