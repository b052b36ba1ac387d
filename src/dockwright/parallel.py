"""Sinks for a built image: a registry, a docker-archive, an OCI archive or layout, a local engine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def run_parallel(calls: Sequence[Callable[[], T]], jobs: int, name: str) -> list[T]:
    """Run `calls` on up to `jobs` threads; returns their results in order. Re-raises the first failure.
    On a failure or Ctrl-C, queued calls are cancelled and running ones are not waited for: a transfer held by a slow
    registry must not keep an interrupted build alive (the CLI exits without joining them)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix=name)
    try:
        return [future.result() for future in [pool.submit(call) for call in calls]]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
