"""Benchmark dockwright against peer tools on this machine and write docs/benchmarks.md.

    python bench/run.py            # full workloads, median of 3 (under 25 minutes once prepared)
    python bench/run.py --quick    # small workloads, one run each: a smoke test of the harness
    CRANE=/path/to/crane python bench/run.py   # adds `tar + crane append`

See bench/README.md for what each scenario does.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests" / "integration"))

from latency import LatencyProxy  # noqa: E402
from measure import Measurement, Step, StepFailed, run_step, run_steps, shell  # noqa: E402
from peers import Dockwright, Job, Tool, all_tools, compile_dockwright, dockwright_command  # noqa: E402
from report import RawLimit, ScenarioResult, write_report  # noqa: E402
from servers import RegistryServer, start_registry  # noqa: E402
from workloads import BASE_TAG, WORK, Content, Workloads, prepare, warm_page_cache  # noqa: E402

BASE_REPOSITORY = "base/image"
_UPLOAD = re.compile(r'"(?:PUT|POST) /v2/\S*/blobs/uploads/\S*[?&]digest=sha256(?::|%3A)([0-9a-f]{64})\S* '
                     r'HTTP/[\d.]+" 201')


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    content: str  # "node" | "large"
    same_repository: bool = True  # base and target in one repository (else: base/image -> another)
    archive: bool = False


COLD_SCENARIOS = (
    Scenario("cold", "Node app: cold build + push (no local state; base in the target repository)", "node"),
    Scenario("cross-repo", "Node app: cold build + push, base and target in different repositories", "node",
             same_repository=False),
    Scenario("archive", "Node app: cold build to a docker-archive file", "node", archive=True),
    Scenario("large-file", "One large file: cold build + push", "large"),
)
NO_CHANGE = Scenario("no-change", "Node app: rebuild + push with no change (warm local state)", "node")
ONE_CHANGE = Scenario("one-change", "Node app: rebuild + push after changing one source file (warm local state)",
                      "node")
REMOTE_DELAY = 0.015  # each way: a registry 30 ms away (another region), through bench/latency.py
REMOTE = f" — registry {2000 * REMOTE_DELAY:.0f} ms away"


class Bench:
    """Runs the scenarios. Every cold run gets a registry of its own (fresh storage, new port),
    so no tool can mount or skip blobs that an earlier run left behind."""

    def __init__(self, workloads: Workloads, tools: list[Tool], runs: int, log: Path) -> None:
        self.workloads, self.tools, self.runs, self.log = workloads, tools, runs, log
        self.runs_dir = WORK / "runs"
        self._registries = 0

    def content(self, scenario: Scenario) -> Content:
        return self.workloads.node if scenario.content == "node" else self.workloads.large

    def tools_for(self, scenario: Scenario) -> list[Tool]:
        return [t for t in self.tools if scenario.content == "node" or not t.node_only]

    def state(self, tool: Tool) -> Path:
        return self.runs_dir / _slug(tool.name)

    @contextmanager
    def registry(self, base_repository: str) -> Iterator[tuple[RegistryServer, str]]:
        """A new registry holding the base under `base_repository`; yields (registry, base ref).
        The base goes in as Docker schema 2, like most bases (containerify cannot read the OCI
        manifests umoci writes: they have no mediaType)."""
        self._registries += 1
        root = WORK / "registries" / str(self._registries)
        shutil.rmtree(root, ignore_errors=True)
        registry = start_registry(root)
        try:
            base = f"{registry.host}/{base_repository}:{BASE_TAG}"
            run_step(Step(["skopeo", "copy", "--dest-tls-verify=false", "--format", "v2s2",
                           f"oci:{self.workloads.base_layout}:{BASE_TAG}", f"docker://{base}"]), self.log)
            yield registry, base
        finally:
            registry.close()
            shutil.rmtree(root, ignore_errors=True)

    def measure(self, tool: Tool, job: Job, registry: RegistryServer, into: Measurement) -> None:
        """One timed run; the registry log tells which blobs were uploaded during it."""
        offset = registry.log.stat().st_size
        sample = run_steps(tool.steps(job), self.log)
        into.samples.append(sample)
        blobs = _uploads_since(registry, offset)
        into.uploaded_blobs.append(len(blobs))
        into.uploaded_bytes.append(sum(_blob_size(registry, d) for d in blobs))
        print(f"    {tool.name}: {sample.seconds:.2f} s, {sample.peak_rss_kib / 1024:.0f} MiB, "
              f"{len(blobs)} blobs uploaded", flush=True)

    def cold(self, scenario: Scenario) -> ScenarioResult:
        print(f"== {scenario.title}", flush=True)
        content = self.content(scenario)
        warm_page_cache(content)
        tools = self.tools_for(scenario)
        results = {t.name: Measurement(t.name) for t in tools}
        target_repository = "bench/app"
        base_repository = target_repository if scenario.same_repository else BASE_REPOSITORY
        for _ in range(self.runs):
            for tool in tools:
                result = results[tool.name]
                if result.error:
                    continue
                state = self.state(tool)
                tool.cleanup(state)
                state.mkdir(parents=True)
                with _recording(result), self.registry(base_repository) as (registry, base):
                    job = Job(content, base, f"{registry.host}/{target_repository}:app", state,
                              archive=state / "app.tar" if scenario.archive else None)
                    self.measure(tool, job, registry, result)
                tool.cleanup(state)
        return ScenarioResult(scenario.key, scenario.title, list(results.values()))

    def warm(self, delay: float = 0.0) -> tuple[ScenarioResult, ScenarioResult]:
        """No change and one changed file, from the same warm state: per tool, one untimed build,
        then per run a rebuild with nothing changed and a rebuild after editing one source file.
        `delay`: every tool talks to the registry through a proxy that delays each way by this much."""
        suffix, key = (REMOTE, "-remote") if delay else ("", "")
        print(f"== {NO_CHANGE.title} / {ONE_CHANGE.title}{suffix}", flush=True)
        content = self.workloads.node
        assert content.changed_file is not None
        changed = content.root / content.changed_file
        original = changed.read_bytes()
        warm_page_cache(content)
        tools = self.tools_for(ONE_CHANGE)
        same = {t.name: Measurement(t.name) for t in tools}
        one = {t.name: Measurement(t.name) for t in tools}
        try:
            for tool in tools:
                state = self.state(tool)
                tool.cleanup(state)
                state.mkdir(parents=True)
                with _recording(same[tool.name], one[tool.name]), self.registry("bench/app") as (registry, base), \
                        LatencyProxy(registry.host, delay) if delay else nullcontext() as proxy:
                    host = proxy.host if proxy else registry.host
                    base = base.replace(registry.host, host, 1)
                    job = Job(content, base, f"{host}/bench/app:app", state)
                    run_steps(tool.steps(job), self.log)
                    warm_job = Job(content, base, job.target, state, warm=True)
                    for run in range(self.runs):
                        self.measure(tool, warm_job, registry, same[tool.name])
                        changed.write_bytes(original + f"// change {run} by {tool.name}\n".encode())
                        self.measure(tool, warm_job, registry, one[tool.name])
                tool.cleanup(state)
        finally:
            changed.write_bytes(original)
        return (ScenarioResult(NO_CHANGE.key + key, NO_CHANGE.title + suffix, list(same.values())),
                ScenarioResult(ONE_CHANGE.key + key, ONE_CHANGE.title + suffix, list(one.values())))

    def layer_creation(self) -> RawLimit:
        """dockwright making the node_modules layer from scratch into an OCI layout directory,
        against `tar | ISA-L gzip + sha256 of both streams` over the same directory."""
        print("== layer creation vs the raw machine limit", flush=True)
        content = self.workloads.node
        warm_page_cache(content)
        state = self.runs_dir / "layer-creation"
        raw, made = Measurement("raw limit: tar + ISA-L gzip + 2x sha256"), Measurement("dockwright")
        dockwright = [dockwright_command(), "build", str(content.root), "--from", "scratch",
                      "--copy", "node_modules:/app/node_modules", "--no-cache", "-q"]
        tar = f"tar -C {content.root} -cf - node_modules | {sys.executable} {BENCH / 'raw_limit.py'}"
        for _ in range(self.runs):
            for measurement, step in (
                (raw, shell(f"{tar} {state / 'raw.gz'}")),
                (made, Step([*dockwright, "-o", f"type=oci,dest={state / 'layout'},tar=false"])),
            ):
                shutil.rmtree(state, ignore_errors=True)
                state.mkdir(parents=True)
                with _recording(measurement):
                    measurement.samples.append(run_steps([step], self.log))
        shutil.rmtree(state, ignore_errors=True)
        return RawLimit(raw, made, f"node_modules ({content.root / 'node_modules'})")


@contextmanager
def _recording(*measurements: Measurement) -> Iterator[None]:
    """A failing tool is reported in its table row, not fatal to the benchmark."""
    try:
        yield
    except StepFailed as exc:
        first = str(exc).splitlines()[0]
        print(f"    FAILED: {first}", flush=True)
        for measurement in measurements:
            measurement.error = first


def _uploads_since(registry: RegistryServer, offset: int) -> set[str]:
    """Digests of the blob uploads the registry completed after log position `offset`."""
    with registry.log.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    return {f"sha256:{m}" for m in _UPLOAD.findall(text)}


def _blob_size(registry: RegistryServer, digest: str) -> int:
    path = registry.blob_data_path(digest)
    return path.stat().st_size if path.exists() else 0


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small workloads, one run each")
    parser.add_argument("-n", "--runs", type=int, help="runs per tool and scenario (default 3, --quick 1)")
    parser.add_argument("--output", type=Path, default=BENCH.parent / "docs" / "benchmarks.md",
                        help="markdown report (default docs/benchmarks.md; --quick: bench/work/benchmarks-quick.md)")
    parser.add_argument("--only", action="append", metavar="SCENARIO",
                        help="run only these scenarios: cold, cross-repo, archive, large-file, warm, "
                        "warm-remote, layer")
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    output = WORK / "benchmarks-quick.md" if args.quick and "--output" not in sys.argv else args.output
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "bench.log"
    log.write_text("")
    print(f"commands and their output: {log}", flush=True)
    started = time.perf_counter()
    workloads = prepare(args.quick, log)
    compile_dockwright()
    print(f"workloads ready after {time.perf_counter() - started:.0f} s", flush=True)
    shutil.rmtree(WORK / "registries", ignore_errors=True)
    shutil.rmtree(WORK / "runs", ignore_errors=True)
    tools = all_tools(workloads.containerify, workloads.containerify_note)
    skipped = {t.name: reason for t in tools if (reason := t.unavailable())}
    for name, reason in skipped.items():
        print(f"skipping {name}: {reason}", flush=True)
    bench = Bench(workloads, [t for t in tools if t.name not in skipped], runs, log)
    wanted = set(args.only or ("cold", "cross-repo", "archive", "large-file", "warm", "warm-remote", "layer"))
    load_before = os.getloadavg()
    scenarios = [bench.cold(s) for s in COLD_SCENARIOS if s.key in wanted]
    if "warm" in wanted:
        scenarios.extend(bench.warm())
    if "warm-remote" in wanted:
        scenarios.extend(bench.warm(REMOTE_DELAY))
    raw = bench.layer_creation() if "layer" in wanted else None
    versions = {t.name: t.version() for t in tools
                if t.name not in skipped and not (isinstance(t, Dockwright) and t.auto)}
    command = " ".join(["python bench/run.py", *sys.argv[1:]])
    write_report(output, command=command, quick=args.quick, runs=runs, workloads=workloads, versions=versions,
                 skipped=skipped, scenarios=scenarios, raw=raw, load=(load_before, os.getloadavg()))
    print(f"wrote {output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
