"""Run a plan's stages, each as soon as the stages it needs are done, several at once on threads.

A stage needs its base stage, the stages it copies from and those its RUN mounts read; a plan holds only the
stages its target needs, in build order, so a stage needs earlier ones only. Threads are worth it: a stage's
time goes to its RUN commands (in the runtime's processes) and to compressing layers (zlib and ISA-L leave
the GIL), so two builder stages overlap even on two CPUs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from dockwright.model.errors import UsageError
from dockwright.plan import CopyStep, RunStep, Stage

T = TypeVar("T")
JOBS_VARIABLE = "DOCKWRIGHT_STAGE_JOBS"


def needs(stage: Stage) -> frozenset[int]:
    """The indexes of the stages `stage` reads: its base stage, COPY --from and RUN --mount from= stages."""
    found = {stage.base_stage} if stage.base_stage is not None else set()
    for step in stage.steps:
        if isinstance(step, CopyStep) and step.from_stage is not None:
            found.add(step.from_stage)
        elif isinstance(step, RunStep):
            found.update(mount.from_stage for mount in step.mounts if mount.from_stage is not None)
    return frozenset(found)


def stage_jobs() -> int:
    """How many stages may run at once: $DOCKWRIGHT_STAGE_JOBS (1: one after another), else the CPUs this
    process may use, at least 2. One stage per CPU: a RUN that compiles keeps a CPU busy itself (often all of
    them: make -j), so more stages than CPUs only share them and add up their memory; but 2 even on one CPU,
    as a stage waiting on the network or a registry leaves its CPU to the other. (BuildKit sets no limit.)"""
    text = os.environ.get(JOBS_VARIABLE, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise UsageError(f"{JOBS_VARIABLE}={text!r} is not a number of stages", hint="use 1 or more")
        return int(text)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(2, cores)


def run_stages(stages: Sequence[Stage], run: Callable[[int, Mapping[int, T]], T], jobs: int,
               stop: threading.Event) -> dict[int, T]:
    """`run(index, done)` for every stage, where `done` holds the results of the stages it needs (and only
    those); returns the results by index. Up to `jobs` run at once on threads. The first stage to fail ends
    the build with its error: `stop` is set, which makes the running ones stop at their next step, chunk or
    output line (a RUN's container is killed), and they are waited for, so that nothing of theirs is left.
    Ctrl-C in the calling thread does the same. `stop` also stops the stages when its owner sets it."""
    wanted = [needs(stage) for stage in stages]
    if any(i >= index for index, indexes in enumerate(wanted) for i in indexes):
        raise ValueError("a stage can only need stages before it")
    results: dict[int, T] = {}
    if jobs <= 1 or len(stages) <= 1:
        for index in range(len(stages)):
            results[index] = run(index, {i: results[i] for i in wanted[index]})
        return results
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    failures: list[BaseException] = []  # in the order they happened: the first is the build's error
    lock = threading.Lock()

    def task(index: int, done: Mapping[int, T]) -> T:
        try:
            return run(index, done)
        except BaseException as exc:
            with lock:
                failures.append(exc)
            stop.set()  # after the append: the other stages' Cancelled comes after this failure
            raise

    # No deadlock with a bounded pool: a stage is submitted only once every stage it needs is done (they all
    # come earlier in the plan), so no thread ever waits for a stage that has not got a thread yet.
    pool = ThreadPoolExecutor(max_workers=min(jobs, len(stages)), thread_name_prefix="dockwright-stage")
    running: dict[Future[T], int] = {}
    waiting = list(range(len(stages)))
    try:
        while (waiting or running) and not stop.is_set():
            for index in [i for i in waiting if wanted[i] <= results.keys()][:jobs - len(running)]:
                waiting.remove(index)
                running[pool.submit(task, index, {i: results[i] for i in wanted[index]})] = index
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                index = running.pop(future)
                if future.exception() is None:
                    results[index] = future.result()
    except BaseException:  # Ctrl-C (or SIGTERM) while waiting: stop the stages too
        stop.set()
        raise
    finally:
        wait(running)  # each one stops soon after `stop`; then its containers, mounts and temporary files are gone
        pool.shutdown()
    if failures:
        raise failures[0]
    if len(results) < len(stages):  # stopped by its owner before a stage failed: the stages stop as it asks
        from dockwright.parallel import check_cancelled

        check_cancelled(stop)
    return results
