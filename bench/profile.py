"""Where dockwright spends its time: cProfile of the real CLI on the Node workload, cold (empty
cache) and after changing one source file (warm cache), against a fresh local registry.

    python bench/profile.py [--quick] [--top 25]

Prints the top functions by cumulative and by own time for each case and keeps the .prof files in
bench/work/profiles/ (open them with `python -m pstats` or snakeviz). cProfile sees the main thread
only: time spent waiting for compression or upload threads shows up as lock/queue waits.
"""

from __future__ import annotations

import argparse
import io
import pstats
import shutil
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests" / "integration"))

from measure import Step, run_step  # noqa: E402
from peers import Dockwright, Job  # noqa: E402
from run import Bench  # noqa: E402
from workloads import WORK, prepare, warm_page_cache  # noqa: E402


def _profile(name: str, argv: list[str], out: Path, log: Path, top: int) -> None:
    target = out / f"{name}.prof"
    step = Step([sys.executable, "-m", "cProfile", "-o", str(target), "-m", "dockwright", *argv[1:]])
    sample = run_step(step, log)
    text = io.StringIO()
    stats = pstats.Stats(str(target), stream=text).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    print(f"===== {name}: {sample.seconds:.2f} s wall (under cProfile), {sample.peak_rss_kib / 1024:.0f} MiB peak")
    print(text.getvalue())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the small workloads")
    parser.add_argument("--top", type=int, default=25, help="functions to show per table")
    args = parser.parse_args()
    log = WORK / "profile.log"
    log.write_text("")
    workloads = prepare(args.quick, log)
    content = workloads.node
    assert content.changed_file is not None
    out = WORK / "profiles"
    state = WORK / "runs" / "profile"
    shutil.rmtree(state, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    warm_page_cache(content)
    changed = content.root / content.changed_file
    original = changed.read_bytes()
    tool = Dockwright(auto=True)
    bench = Bench(workloads, [tool], 1, log)
    try:
        with bench.registry("bench/app") as (registry, base):
            job = Job(content, base, f"{registry.host}/bench/app:app", state)
            (argv,) = (s.argv for s in tool.steps(job))
            _profile("cold", [str(a) for a in argv], out, log, args.top)
            changed.write_bytes(original + b"// profiled change\n")
            _profile("one-change", [str(a) for a in argv], out, log, args.top)
    finally:
        changed.write_bytes(original)
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
