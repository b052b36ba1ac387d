"""Sinks for a built image: a registry, a docker-archive, an OCI archive or layout, a local engine."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def run_parallel(calls: Sequence[Callable[[], object]], jobs: int, name: str) -> None:
    """Run `calls` on up to `jobs` threads and re-raise the first failure. On a failure or Ctrl-C,
    queued calls are cancelled and running ones are not waited for: a transfer held by a slow
    registry must not keep an interrupted build alive (the CLI exits without joining them)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix=name)
    try:
        for future in [pool.submit(call) for call in calls]:
            future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
