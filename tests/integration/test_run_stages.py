"""Stages that need none of each other run at once (through runc, on the busybox base): they overlap and
give the image a build one stage after another gives; the first stage to fail ends the build with its
error while the others are killed; Ctrl-C stops them all; nothing is left behind.

Overlap is shown without clocks: each RUN marks its start in a cache mount both share, then waits (at most
30 s, a guard) for the other's mark; it can see it only if the other has started before it ended."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from build_checks import (
    EPOCH_ENV,
    assert_output_tail,
    assert_user_error,
    cache_args,
    dockerfile_context,
    run_leftovers,
)
from conftest import SRC, RunDockwright
from images import BusyboxBase

pytestmark = pytest.mark.requires("runc")
_GUARD = 120  # seconds: a guard against hangs, not an assertion
_SYNC = "--mount=type=cache,id=sync,target=/sync"


def _wait_for(mark: str) -> str:
    """Shell: wait until /sync/MARK exists, 30 s at most."""
    return f"i=0; while [ ! -e /sync/{mark} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done"


def _meeting_stage(name: str, other: str, base: str) -> str:
    return (f"FROM {base} AS {name}\n"
            f"RUN {_SYNC} touch /sync/{name}; {_wait_for(other)}; "
            f"test -e /sync/{other} && echo {name} saw {other} running; echo built by {name} > /{name}.txt\n")


def test_independent_stages_overlap_and_give_the_image_of_a_build_one_stage_at_a_time(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    context = dockerfile_context(tmp_path, (
        _meeting_stage("one", "two", busybox_base.oci_ref)
        + _meeting_stage("two", "one", busybox_base.oci_ref)
        + f"FROM {busybox_base.oci_ref}\n"
        "COPY --from=one /one.txt /\n"
        "COPY --from=two /two.txt /\n"
    ))

    parallel = dockwright("build", context, "-o", f"type=oci,dest={tmp_path / 'parallel.tar'}",
                          *cache_args(tmp_path), env=EPOCH_ENV)
    # the marks are in the cache mount now: one stage after another, no RUN waits
    serial = dockwright("build", context, "-o", f"type=oci,dest={tmp_path / 'serial.tar'}", "--no-cache",
                        *cache_args(tmp_path), env={**EPOCH_ENV, "DOCKWRIGHT_STAGE_JOBS": "1"})

    met = dict(re.findall(r"^(#\d+) (\w+ saw \w+ running)$", parallel.stderr, re.MULTILINE))
    assert sorted(met.values()) == ["one saw two running", "two saw one running"], parallel.stderr
    assert len(met) == 2  # each RUN has its own label
    assert serial.stdout == parallel.stdout  # the same image digest
    assert run_leftovers(tmp_path / "cache") == []


def test_a_failing_stage_ends_the_build_with_its_error_and_kills_the_other_stages(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    context = dockerfile_context(tmp_path, (
        f"FROM {busybox_base.oci_ref} AS slow\n"
        f"RUN {_SYNC} touch /sync/slow; echo slow started; sleep 60; echo slow finished\n"
        f"FROM {busybox_base.oci_ref} AS broken\n"
        f"RUN {_SYNC} {_wait_for('slow')}; echo broken fails; exit 5\n"
        f"FROM {busybox_base.oci_ref}\n"
        "COPY --from=slow /etc/passwd /slow\n"
        "COPY --from=broken /etc/passwd /broken\n"
    ))
    out = tmp_path / "out.tar"

    proc = dockwright("build", context, "-o", f"type=oci,dest={out}", *cache_args(tmp_path), env=EPOCH_ENV,
                      check=False)

    assert_user_error(proc, "Dockerfile:4: RUN ", "exit code 5")
    assert "broken fails" in proc.stderr.splitlines()[-1]  # its output's last lines
    assert_output_tail(proc, ["broken fails"])  # and nothing of the stage that was killed
    output = re.findall(r"^#\d+ (.*)$", proc.stderr, re.MULTILINE)  # the commands' lines (and the steps')
    assert "slow started" in output  # it ran alongside ...
    assert "slow finished" not in output  # ... and was killed, 60 s before its end
    assert not out.exists()
    assert run_leftovers(tmp_path / "cache") == []


def test_ctrl_c_stops_every_running_stage_and_leaves_nothing(busybox_base: BusyboxBase, tmp_path: Path) -> None:
    context = dockerfile_context(tmp_path, (
        f"FROM {busybox_base.oci_ref} AS one\nRUN echo one started; sleep 600\n"
        f"FROM {busybox_base.oci_ref} AS two\nRUN echo two started; sleep 600\n"
        f"FROM {busybox_base.oci_ref}\nCOPY --from=one /etc/passwd /one\nCOPY --from=two /etc/passwd /two\n"
    ))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "dockwright", "build", str(context), "-o",
                             f"type=oci,dest={tmp_path / 'out.tar'}", *cache_args(tmp_path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # wait until both commands run
        seen.append(line)
        if sum(" started" in line and line.startswith("#") for line in seen) == 2:
            break

    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=_GUARD)  # far less than the commands' 600 s

    assert proc.returncode == 130, "".join(seen) + stderr
    assert "interrupted" in stderr and "Traceback" not in stderr and stdout == ""
    assert run_leftovers(tmp_path / "cache") == []
    assert not (tmp_path / "out.tar").exists()
