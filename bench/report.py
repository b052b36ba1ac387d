"""Render the benchmark results as markdown: machine, versions, workloads, the issue-4 targets,
then one table per scenario."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

from measure import Measurement
from workloads import Workloads

RSS_LIMIT_MIB = 200
FAST_LIMIT_S = 0.4


@dataclass(frozen=True)
class ScenarioResult:
    key: str
    title: str
    measurements: list[Measurement]

    def get(self, tool: str) -> Measurement | None:
        found = next((m for m in self.measurements if m.tool == tool), None)
        return found if found is not None and found.ok else None

    @property
    def reference(self) -> Measurement | None:
        """The dockwright row the ratios refer to: `--layering auto` where it ran, else plain."""
        return self.get("dockwright (--layering auto)") or self.get("dockwright")


@dataclass(frozen=True)
class RawLimit:
    raw: Measurement
    dockwright: Measurement
    what: str


def _proc_field(path: str, key: str) -> str:
    """The value of the first `key: value` line of a /proc file, or "?"."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return "?"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(key)), "?")


def machine() -> dict[str, str]:
    memory = _proc_field("/proc/meminfo", "MemTotal")
    if memory.endswith(" kB"):
        memory = f"{int(memory.split()[0]) / 2**20:.1f} GiB"
    return {"CPU": _proc_field("/proc/cpuinfo", "model name"), "cores (nproc)": str(os.cpu_count()),
            "memory": memory, "kernel": platform.release(), "Python": platform.python_version()}


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "not installed"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def _isal_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("isal")
    except PackageNotFoundError:
        return "not installed"


def _load(values: tuple[float, ...]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def _ratio(measurement: Measurement, reference: Measurement | None) -> str:
    if reference is None or not measurement.ok:
        return "—"
    if measurement is reference:
        return "1.00"
    return f"{measurement.median_seconds / reference.median_seconds:.2f}"


def _uploaded(measurement: Measurement) -> str:
    if not measurement.uploaded_blobs:
        return "—"
    blobs = statistics.median(measurement.uploaded_blobs)
    megabytes = statistics.median(measurement.uploaded_bytes) / 1e6
    return f"{blobs:g} ({megabytes:,.1f} MB)"


def _table(result: ScenarioResult) -> list[str]:
    reference = result.reference
    lines = [f"### {result.title}", "",
             "| tool | median time | runs | time ÷ dockwright's | peak RSS | blobs uploaded (MB) |",
             "|---|--:|---|--:|--:|--:|"]
    for m in result.measurements:
        if m.error or not m.samples:
            lines.append(f"| {m.tool} | failed | `{(m.error or 'no run')[:150]}` | — | — | — |")
            continue
        runs = ", ".join(f"{s.seconds:.2f}" for s in m.samples)
        lines.append(f"| {m.tool} | {m.median_seconds:.2f} s | {runs} | {_ratio(m, reference)} "
                     f"| {m.peak_rss_mib:.0f} MiB | {_uploaded(m)} |")
    return [*lines, ""]


def _check(ok: bool | None) -> str:
    return "n/a" if ok is None else "met" if ok else "**not met**"


def _faster(result: ScenarioResult | None, peer: str, factor: float) -> tuple[str, bool | None]:
    if result is None or result.reference is None:
        return "not run", None
    other = result.get(peer)
    if other is None:
        return f"{peer} did not run", None
    speedup = other.median_seconds / result.reference.median_seconds
    return f"{speedup:.2f}x faster", speedup >= factor


def _targets(scenarios: dict[str, ScenarioResult], raw: RawLimit | None) -> list[str]:
    rows: list[tuple[str, str, bool | None]] = []
    cold = scenarios.get("cold")
    rows.append(("cold build + push ≥ 3x faster than buildah", *_faster(cold, "buildah bud + push", 3)))
    rows.append(("cold build + push ≥ 1.5x faster than tar + crane append",
                 *_faster(cold, "tar + crane append", 1.5)))
    one = scenarios.get("one-change")
    rows.append(("one changed file ≥ 3x faster than tar + crane append", *_faster(one, "tar + crane append", 3)))
    for key, label, blobs in (("one-change", "one changed file", 2), ("no-change", "no change", 0)):
        reference = scenarios[key].reference if key in scenarios else None
        if reference is None:
            rows.append((f"{label} under {FAST_LIMIT_S} s", "not run", None))
            continue
        median = reference.median_seconds
        rows.append((f"{label} under {FAST_LIMIT_S} s", f"{median:.2f} s", median < FAST_LIMIT_S))
        uploaded = sorted(set(reference.uploaded_blobs))
        expected = "the changed layer + config" if blobs else "nothing"
        rows.append((f"{label}: uploads {expected} ({blobs} blobs)", f"{uploaded} blobs per run",
                     uploaded == [blobs]))
    peaks = [(r.title, m.peak_rss_mib) for r in scenarios.values() for m in r.measurements
             if m.tool.startswith("dockwright") and m.ok]
    if raw is not None and raw.dockwright.ok:
        peaks.append(("layer creation", raw.dockwright.peak_rss_mib))
    if peaks:
        worst = max(peaks, key=lambda p: p[1])
        rows.append((f"peak RSS under {RSS_LIMIT_MIB} MB in every dockwright run",
                     f"{worst[1]:.0f} MiB at most ({worst[0]})", worst[1] < RSS_LIMIT_MIB))
    if raw is not None and raw.raw.ok and raw.dockwright.ok:
        ratio = raw.dockwright.median_seconds / raw.raw.median_seconds
        rows.append(("layer creation within 1.5x of the raw limit", f"{ratio:.2f}x the raw limit", ratio <= 1.5))
    return ["| target | measured | |", "|---|---|---|",
            *(f"| {label} | {measured} | {_check(ok)} |" for label, measured, ok in rows), ""]


def write_report(path: Path, *, command: str, quick: bool, runs: int, workloads: Workloads, versions: dict[str, str],
                 skipped: dict[str, str], scenarios: list[ScenarioResult], raw: RawLimit | None,
                 load: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
    """`load`: the 1/5/15-minute load averages before and after the measurements (other work on
    the machine shows up there and in the spread of the runs)."""
    by_key = {s.key: s for s in scenarios}
    versions = {**versions, "docker-registry": _version(["docker-registry", "--version"]),
                "node": _version(["node", "--version"]), "isal (Python)": _isal_version()}
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{command}` on {when}: {'QUICK smoke run (small workloads), ' if quick else ''}"
        f"median of {runs} run{'s' if runs > 1 else ''} per tool and scenario, every tool on the same machine in "
        "the same run, against a local `docker-registry` on 127.0.0.1 (a fresh one for every cold run). "
        "Times are wall-clock for the whole job (all of a tool's commands); peak RSS is the largest resident "
        "set of any process of the job; uploaded blobs come from the registry's access log. "
        "See bench/README.md for the method.",
        "",
        "## Machine",
        "",
        *(f"- {key}: {value}" for key, value in machine().items()),
        f"- load average (1/5/15 min) before: {_load(load[0])}; after: {_load(load[1])}",
        "",
        "## Versions",
        "",
        "| tool | version |",
        "|---|---|",
        *(f"| {name} | {version} |" for name, version in versions.items()),
        "",
        *([f"Not run: {'; '.join(f'{n} ({r})' for n, r in skipped.items())}.", ""] if skipped else []),
        "## Workloads",
        "",
        *(f"- {key}: {value}" for key, value in workloads.describe().items()),
        "",
        "## Targets (issue 4)",
        "",
        *_targets(by_key, raw),
        "## Scenarios",
        "",
        "`time ÷ dockwright's` above 1 means the tool is slower than dockwright (`--layering auto` for the Node "
        "app, one `--copy` per entry for the large file).",
        "",
    ]
    for scenario in scenarios:
        lines += _table(scenario)
    if raw is not None:
        lines += [
            "### Layer creation against the machine's raw limit",
            "",
            f"One layer of {raw.what}, made from scratch into an OCI layout directory (`--no-cache`), against "
            "`tar -cf - | ISA-L gzip (level 1, threaded) + sha256 of both streams`, writing the compressed file.",
            "",
            "| | median time | runs | time ÷ raw limit | peak RSS |",
            "|---|--:|---|--:|--:|",
        ]
        for m in (raw.raw, raw.dockwright):
            if not m.ok:
                lines.append(f"| {m.tool} | failed | `{(m.error or 'no run')[:150]}` | — | — |")
                continue
            runs_text = ", ".join(f"{s.seconds:.2f}" for s in m.samples)
            lines.append(f"| {m.tool} | {m.median_seconds:.2f} s | {runs_text} | {_ratio(m, raw.raw)} "
                         f"| {m.peak_rss_mib:.0f} MiB |")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = section(path.read_text(), RUN_SECTION) if path.exists() else ""  # bench/run_steps.py writes it
    path.write_text("\n".join(lines) + (f"\n{kept}" if kept else ""))


RUN_SECTION = "## RUN steps"


def section(text: str, heading: str) -> str:
    """The part of a Markdown document from `heading` to the next heading of its level ("" if absent)."""
    start = text.find(f"\n{heading}\n")
    if start < 0:
        return ""
    end = text.find("\n## ", start + len(heading) + 2)
    return text[start + 1:] if end < 0 else text[start + 1:end + 1]


def replace_section(path: Path, heading: str, body: str) -> None:
    """Put `body` (starting with `heading`) in place of that section of `path`, or at its end."""
    text = path.read_text() if path.exists() else ""
    old = section(text, heading)
    text = text.replace(old, body) if old else text.rstrip("\n") + "\n\n" + body
    path.write_text(text)
