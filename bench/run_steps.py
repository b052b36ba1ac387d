"""RUN against buildah, and materialising a base root filesystem against `tar -xzf`.

    python bench/run_steps.py              # median of 3 runs per tool and scenario
    python bench/run_steps.py -n 5
    python bench/run_steps.py --only materialise

Scenarios (the base is the bench's Debian minbase, 3 layers, ~210 MB: bench/workloads.py):
- cold: a Dockerfile whose RUN creates 3,000 files and a user (useradd), then a COPY of 200 files,
  built and pushed to a fresh local registry with no local state: dockwright (runc on an overlay root)
  against `buildah bud` + `buildah push` (runc too: --isolation oci) on the vfs driver, and on the
  overlay driver where it works here;
- one-change: after an untimed build, one of the 200 copied files changes; rebuild + push with warm
  state (dockwright's cache; buildah's storage with --layers): both reuse the RUN's layer;
- materialise: the base's layers made into directories a RUN can use (dockwright: one overlayfs layer
  directory per layer, from the compressed blobs), against `tar -xzf` of the same blobs into one
  directory, as root (owners kept).

Every command and its output go to bench/work/run-steps.log; results print as tables (each tool's time
over dockwright's) and go to the "RUN steps" section of docs/benchmarks.md (bench/run.py keeps it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests" / "integration"))

from measure import Step, run_step, shell  # noqa: E402
from peers import compile_dockwright  # noqa: E402
from report import RUN_SECTION, replace_section  # noqa: E402
from servers import RegistryServer, start_registry  # noqa: E402
from workloads import BASE_TAG, WORK, _debian_base  # noqa: E402

DOCKERFILE = """\
FROM {base}
RUN useradd --create-home --uid 1500 app && mkdir -p /opt/data \\
    && for i in $(seq 1 3000); do echo "generated file $i" > /opt/data/f$i; done && chown -R app /opt/data
COPY app/ /app/
"""
SRC = BENCH.parent / "src"
DOC = BENCH.parent / "docs" / "benchmarks.md"


def dockwright(*args: str) -> Step:
    """dockwright from this checkout (python -m, this interpreter)."""
    return Step([sys.executable, "-m", "dockwright", *args, "-q"], env={"PYTHONPATH": str(SRC)})


class Buildah:
    def __init__(self, driver: str, state: Path) -> None:
        self.driver, self.state = driver, state

    def command(self, *args: str) -> list[str]:
        return ["buildah", "--storage-driver", self.driver, "--root", str(self.state / "root"),
                "--runroot", str(self.state / "run"), *args]

    def build_and_push(self, context: Path, target: str) -> Step:
        image = "localhost/bench-run:latest"
        bud = self.command("bud", "--layers", "--isolation", "oci", "--tls-verify=false", "-q", "-t", image,
                           str(context))
        push = self.command("push", "--tls-verify=false", image, f"docker://{target}")
        return shell(" ".join(bud) + " >/dev/null && " + " ".join(push))

    def reset(self) -> None:
        if self.state.exists():
            run_step(shell(" ".join(self.command("rm", "--all")) + " >/dev/null 2>&1; "
                           + " ".join(self.command("rmi", "--all", "--force")) + " >/dev/null 2>&1; true"), LOG)
        shutil.rmtree(self.state, ignore_errors=True)


LOG = WORK / "run-steps.log"


def _registry(work: Path, base_layout: Path, name: str) -> tuple[RegistryServer, str]:
    registry = start_registry(work / f"registry-{name}")
    base = f"{registry.host}/base/image:{BASE_TAG}"
    run_step(Step(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{base_layout}:{BASE_TAG}",
                   f"docker://{base}"]), LOG)
    return registry, base


def _context(work: Path, base: str) -> Path:
    context = work / "context"
    shutil.rmtree(context, ignore_errors=True)
    (context / "app").mkdir(parents=True)
    for i in range(200):
        (context / "app" / f"module{i:03}.js").write_text(f"module.exports = {{ id: {i} }};\n" * 20)
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    return context


def _tools(work: Path, drivers: list[str]) -> dict[str, Callable[[Path, str, Path], Step]]:
    """name -> (context, target, state dir) -> the build + push step."""
    tools: dict[str, Callable[[Path, str, Path], Step]] = {
        "dockwright": lambda ctx, target, state: dockwright("build", str(ctx), "-t", target, "--push",
                                                            "--cache-dir", str(state / "cache")),
    }
    for driver in drivers:
        tools[f"buildah bud + push ({driver})"] = (
            lambda ctx, target, state, d=driver: Buildah(d, state).build_and_push(ctx, target))
    return tools


def _clean(state: Path, name: str) -> None:
    if name.startswith("buildah"):
        driver = name.rsplit("(", 1)[1].rstrip(")")
        Buildah(driver, state).reset()
    shutil.rmtree(state, ignore_errors=True)


def _overlay_works(work: Path, base_layout: Path) -> bool:
    probe = Buildah("overlay", work / "overlay-probe")
    try:
        run_step(Step(probe.command("from", f"oci:{base_layout}:{BASE_TAG}")), LOG)
        return True
    except Exception:  # any failure: the driver does not work here
        return False
    finally:
        probe.reset()


def _settle(*, drop_caches: bool) -> None:
    """Start a timed step from the same memory state for every tool: written data on disk, and (cold steps,
    as root) the page cache dropped. On this VM, building while free memory is short costs up to 4x more
    kernel time (page reclaim) than after a drop: without this, a tool's time depended on what the step
    before it left in memory (dockwright's cold build measured 1.8 s to 8.3 s back to back)."""
    run_step(shell("sync"), LOG)
    if drop_caches and os.geteuid() == 0:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def scenario_builds(work: Path, base_layout: Path, runs: int, drivers: list[str]) -> dict[str, dict[str, list[float]]]:
    """The tools take turns in each round (no tool runs all its repetitions under one load)."""
    results: dict[str, dict[str, list[float]]] = {"cold": {}, "one-change": {}}
    tools = _tools(work, drivers)
    for run in range(runs):
        for name, step_for in tools.items():
            state = work / "state"
            _clean(state, name)
            state.mkdir()
            registry, base = _registry(work, base_layout, f"{run}")
            try:
                context = _context(work, base)
                target = f"{registry.host}/bench/run:{run}"
                _settle(drop_caches=True)
                results["cold"].setdefault(name, []).append(run_step(step_for(context, target, state), LOG).seconds)
                changed = context / "app" / "module007.js"
                changed.write_text(changed.read_text() + f"// change {run}\n")
                _settle(drop_caches=False)
                results["one-change"].setdefault(name, []).append(
                    run_step(step_for(context, target, state), LOG).seconds)
            finally:
                registry.close()
                _clean(state, name)
                shutil.rmtree(work / f"registry-{run}", ignore_errors=True)
    return results


_MATERIALISE = """
import json, sys, time
from pathlib import Path
from dockwright.run.snapshots import Snapshots
layout, root = Path(sys.argv[1]), Path(sys.argv[2])
blob = lambda d: layout / "blobs" / "sha256" / d.partition(":")[2]
index = json.loads((layout / "index.json").read_text())
manifest = json.loads(blob(index["manifests"][0]["digest"]).read_bytes())
config = json.loads(blob(manifest["config"]["digest"]).read_bytes())
def chunks(path):
    def open_():
        with open(path, "rb") as f:
            while data := f.read(1 << 20):
                yield data
    return open_
layers = [(d, chunks(blob(l["digest"])), l["digest"]) for d, l in zip(config["rootfs"]["diff_ids"], manifest["layers"])]
Snapshots(root).layer_dirs(layers)
"""


def scenario_materialise(work: Path, base_layout: Path, runs: int) -> dict[str, list[float]]:
    index = json.loads((base_layout / "index.json").read_text())
    manifest_blob = base_layout / "blobs" / "sha256" / index["manifests"][0]["digest"].partition(":")[2]
    layers = [base_layout / "blobs" / "sha256" / layer["digest"].partition(":")[2]
              for layer in json.loads(manifest_blob.read_bytes())["layers"]]
    results: dict[str, list[float]] = {}
    for _ in range(runs):
        target = work / "materialised"
        for name, step in (
            ("dockwright (layer directories)", Step([sys.executable, "-c", _MATERIALISE, str(base_layout),
                                                     str(target)], env={"PYTHONPATH": str(SRC)})),
            ("tar -xzf of the layers", shell(" && ".join(f"tar -C {target} -xzf {layer}" for layer in layers))),
        ):
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            _settle(drop_caches=True)
            results.setdefault(name, []).append(run_step(step, LOG).seconds)
            shutil.rmtree(target, ignore_errors=True)
    return results


def _table(title: str, results: dict[str, list[float]], reference: str) -> list[str]:
    """Print a scenario's results; its Markdown table."""
    ours = statistics.median(results[reference])
    print(f"\n{title}")
    lines = [f"### {title}", "", f"| tool | median | runs | time / {reference}'s |", "|---|---|---|---|"]
    for name, times in results.items():
        median = statistics.median(times)
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(f"  {name:38} {median:7.2f} s  (runs: {runs})  {median / ours:.2f}x")
        lines.append(f"| {name} | {median:.2f} s | {runs} | {median / ours:.2f}x |")
    return [*lines, ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--runs", type=int, default=3)
    parser.add_argument("--only", choices=("builds", "materialise"))
    parser.add_argument("--no-write", dest="write", action="store_false", help=f"do not update {DOC.name}")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    compile_dockwright()
    base_layout, description = _debian_base(WORK, LOG)
    # every tool's state beside the bench's data, not in /tmp: on this machine files made below /tmp cost
    # up to twice the kernel time (dockwright's cold build: 3.3-4.1 s there, 2.0-2.5 s under /work)
    work = Path(tempfile.mkdtemp(prefix="dw-run-bench-", dir=WORK))
    tables: list[str] = []
    try:
        print(f"base: {description}; {args.runs} runs each, median (log {LOG})")
        if args.only != "materialise":
            drivers = ["vfs", *(["overlay"] if _overlay_works(work, base_layout) else [])]
            results = scenario_builds(work, base_layout, args.runs, drivers)
            tables += _table("RUN (3,000 files + useradd) + COPY of 200 files: cold build + push", results["cold"],
                             "dockwright")
            tables += _table("The same after one copied file changed (warm state)", results["one-change"],
                             "dockwright")
        if args.only != "builds":
            tables += _table("Materialise the base's root file system (as root)",
                             scenario_materialise(work, base_layout, args.runs), "dockwright (layer directories)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.write and not args.only:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        replace_section(DOC, RUN_SECTION, "\n".join([
            RUN_SECTION, "",
            f"Generated by `python bench/run_steps.py -n {args.runs}` on {when} (median of {args.runs} runs; load "
            f"average after: {load}). Base: {description}. Dockerfile: a RUN that creates 3,000 files and a "
            "user (`useradd`), then a COPY of 200 files; pushed to a fresh local registry. buildah: `bud "
            "--layers --isolation oci` (runc) + `buildah push`. The tools take turns; each cold step starts after "
            "`sync` and a dropped page cache, each warm one after `sync` (why, and how to read the ratios: "
            "bench/README.md).", "", *tables]))
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
