"""The stage scheduler: independent stages run at once, a stage sees only the finished stages it needs, the
first failure is the build's error and the stages still running are stopped and waited for."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import pytest

from dockwright.model.errors import Cancelled, DockwrightError
from dockwright.parallel import StopEvent, check_cancelled
from dockwright.plan import CopyStep, RunMount, RunStep, Stage
from dockwright.stages import needs, run_stages, stage_jobs

GUARD = 30  # seconds: a guard against a hang, not an assertion


def _stages(*deps: tuple[int, ...]) -> list[Stage]:
    """Stages copying from the stages of their tuple."""
    return [Stage("scratch", tuple(CopyStep(("/x",), "/x", from_stage=d) for d in ds)) for ds in deps]


def test_a_stage_needs_its_base_stage_and_the_stages_it_copies_or_mounts_from() -> None:
    stage = Stage("scratch", (CopyStep(("/a",), "/a", from_stage=0), CopyStep(("/b",), "/b", from_image="alpine"),
                              RunStep("true", mounts=(RunMount("bind", "/m", from_stage=2), RunMount("tmpfs", "/t")))),
                  base_stage=1)
    assert needs(stage) == {0, 1, 2}
    assert needs(Stage("alpine")) == set()


def test_independent_stages_run_at_once_and_a_stage_sees_only_what_it_needs_finished() -> None:
    both_running = threading.Barrier(2, timeout=GUARD)  # broken (an error) unless stages 0 and 1 overlap
    seen: dict[int, Mapping[int, str]] = {}

    def run(index: int, done: Mapping[int, str]) -> str:
        seen[index] = dict(done)
        if index < 2:
            both_running.wait()
        return f"stage {index}"

    results = run_stages(_stages((), (), (0,), (1, 2)), run, 2, StopEvent())

    assert results == {i: f"stage {i}" for i in range(4)}
    assert seen == {0: {}, 1: {}, 2: {0: "stage 0"}, 3: {1: "stage 1", 2: "stage 2"}}


def test_one_job_runs_the_stages_in_order_on_the_calling_thread() -> None:
    order: list[tuple[int, threading.Thread]] = []
    run_stages(_stages((), (), (0, 1)), lambda i, done: order.append((i, threading.current_thread())), 1,
               StopEvent())
    assert order == [(i, threading.current_thread()) for i in range(3)]


def test_the_first_failure_stops_the_running_stages_waits_for_them_and_starts_no_other() -> None:
    stop = StopEvent()
    started = threading.Event()
    cleaned_up = threading.Event()
    ran: list[int] = []

    def run(index: int, done: Mapping[int, str]) -> str:
        ran.append(index)
        if index == 0:  # long: runs until stopped, then cleans up
            started.set()
            try:
                stop.wait(GUARD)
                check_cancelled(stop)
            finally:
                cleaned_up.set()
        if index == 1:
            started.wait(GUARD)
            raise DockwrightError("Dockerfile:4: RUN exit 3: exit code 3")
        return "never"

    with pytest.raises(DockwrightError) as caught:
        run_stages(_stages((), (), (0,)), run, 2, stop)

    assert str(caught.value) == "Dockerfile:4: RUN exit 3: exit code 3"  # not stage 0's Cancelled
    assert cleaned_up.is_set()  # waited for
    assert sorted(ran) == [0, 1]  # stage 2 never started


def test_the_caller_s_cancel_stops_the_stages() -> None:
    cancel = threading.Event()
    stop = StopEvent(cancel)

    def run(index: int, done: Mapping[int, str]) -> str:
        cancel.set()
        assert stop.wait(GUARD)
        check_cancelled(stop)
        return "never"

    with pytest.raises(Cancelled):
        run_stages(_stages((), ()), run, 2, stop)


def test_stage_jobs_follows_the_variable_and_is_at_least_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKWRIGHT_STAGE_JOBS", raising=False)
    assert stage_jobs() >= 2
    monkeypatch.setenv("DOCKWRIGHT_STAGE_JOBS", "1")
    assert stage_jobs() == 1
    monkeypatch.setenv("DOCKWRIGHT_STAGE_JOBS", "none")
    with pytest.raises(DockwrightError, match="DOCKWRIGHT_STAGE_JOBS"):
        stage_jobs()
