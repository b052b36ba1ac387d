"""Run transfers on a few threads, and stop them when the caller cancels; locks by key for work done once."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import TypeVar

from dockwright.model.errors import Cancelled

T = TypeVar("T")
POLL_SECONDS = 0.1  # how often a wait looks at the cancel event


def run_parallel(calls: Sequence[Callable[[], T]], jobs: int, name: str,
                 cancel: threading.Event | None = None) -> list[T]:
    """Run `calls` on up to `jobs` threads; returns their results in order. Re-raises the first failure.
    On a failure, Ctrl-C or `cancel`, queued calls are cancelled and running ones are not waited for: a transfer
    held by a slow registry must not keep an interrupted build alive (each one stops at its next chunk)."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix=name)
    try:
        futures = [pool.submit(call) for call in calls]
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=POLL_SECONDS if cancel else None, return_when=FIRST_EXCEPTION)
            for future in done:
                if future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
            check_cancelled(cancel)
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def check_cancelled(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled: nothing was tagged and no partial output was left")


def cancellable(items: Iterable[T], cancel: threading.Event | None) -> Iterator[T]:
    """`items` (a transfer's chunks, a layer's entries), stopping with Cancelled at the next one once `cancel`
    is set."""
    if cancel is None:
        yield from items
        return
    for item in items:
        check_cancelled(cancel)
        yield item


class StopEvent(threading.Event):
    """An event that counts as set once it is set itself or `outer` (the caller's cancel event) is: a build's
    own stop, set when a stage fails, checked by everything that honours a cancel event in one look."""

    def __init__(self, outer: threading.Event | None = None) -> None:
        super().__init__()
        self._outer = outer

    def is_set(self) -> bool:
        return super().is_set() or (self._outer is not None and self._outer.is_set())

    def wait(self, timeout: float | None = None) -> bool:
        if self._outer is None:
            return super().wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = POLL_SECONDS if deadline is None else min(POLL_SECONDS, deadline - time.monotonic())
            if left <= 0:
                return False
            super().wait(left)
        return True


class KeyedLocks:
    """One lock per key: `with locks(key):` around work that threads should do once per key (resolving a base,
    extracting a layer), without one lock serialising the work on other keys."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[Hashable, threading.Lock] = {}

    @contextlib.contextmanager
    def __call__(self, key: Hashable) -> Iterator[None]:
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield
