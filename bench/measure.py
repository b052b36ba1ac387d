"""Run a tool's steps in fresh subprocesses and measure wall time and peak RSS.

Peak RSS comes from `os.wait4` on each step: the kernel reports the largest resident set of that
child and of every descendant it waited for (so a `bash -c 'tar | crane'` pipeline counts its
largest member). A run's peak is the largest over its steps.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

Command = Sequence[str | Path]


class StepFailed(RuntimeError):
    """A measured or preparatory command exited non-zero."""


@dataclass(frozen=True)
class Step:
    """One command line; `env` is added to the harness's environment."""

    argv: Command
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None

    def describe(self) -> str:
        return " ".join(str(a) for a in self.argv)


def shell(script: str, **kwargs: object) -> Step:
    """A bash pipeline step (`set -o pipefail`, so a failing producer fails the step)."""
    return Step(["bash", "-c", f"set -euo pipefail; {script}"], **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Sample:
    seconds: float
    peak_rss_kib: int


def run_step(step: Step, log: Path) -> Sample:
    """Run `step` with stdout/stderr appended to `log`; raise StepFailed on a non-zero exit."""
    env = {**os.environ, **step.env}
    with log.open("ab") as out:
        out.write(f"\n$ {step.describe()}\n".encode())
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(
            [str(a) for a in step.argv], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=step.cwd,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2500:]
        raise StepFailed(f"{step.describe()} exited with {proc.returncode} (log {log}):\n{tail}")
    return Sample(seconds, usage.ru_maxrss)


def run_steps(steps: Sequence[Step], log: Path) -> Sample:
    """Run the steps one after another: total wall time, largest peak RSS."""
    samples = [run_step(step, log) for step in steps]
    return Sample(sum(s.seconds for s in samples), max((s.peak_rss_kib for s in samples), default=0))


@dataclass
class Measurement:
    """All repetitions of one tool in one scenario."""

    tool: str
    samples: list[Sample] = field(default_factory=list)
    uploaded_blobs: list[int] = field(default_factory=list)  # blob count of each repetition
    uploaded_bytes: list[int] = field(default_factory=list)
    error: str | None = None

    @property
    def median_seconds(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def peak_rss_mib(self) -> float:
        return max(s.peak_rss_kib for s in self.samples) / 1024

    @property
    def ok(self) -> bool:
        return bool(self.samples) and self.error is None
