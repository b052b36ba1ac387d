"""What knowing the base image's directories costs (layers/dirindex.py).

A WORKDIR, or a COPY with --chown/--chmod, on a directory the build did not make needs the base's
directory list: the first build streams every base layer once (download + gunzip + tar headers) and
keeps a small index per layer digest in the cache; later builds read the index. Builds without such
steps never read a base layer. This script shows the three cases against a local registry:

    python bench/dirindex.py                      # the bench's base (bench/work, prepared by run.py)
    python bench/dirindex.py --base oci:DIR:TAG   # any OCI layout as the base
    python bench/dirindex.py -n 5                 # runs per case (default 3), median shown

Each case is a Dockerfile build pushed to the registry; "cold" starts from an empty cache, "warm"
keeps it from the cold build (a rebuild of an unchanged context: layers and index from the cache).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests" / "integration"))

from measure import Step, run_step  # noqa: E402
from peers import compile_dockwright, dockwright_command  # noqa: E402
from servers import start_registry  # noqa: E402
from workloads import BASE_TAG, WORK  # noqa: E402

CASES = {
    "plain COPY": "COPY src /app/src\n",
    "USER + WORKDIR + COPY": "USER 1000\nWORKDIR /srv/app\nCOPY src ./src\n",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=f"oci:{WORK / 'debian-oci'}:{BASE_TAG}",
                        help="skopeo source of the base image (default: the bench's Debian base)")
    parser.add_argument("-n", "--runs", type=int, default=3)
    args = parser.parse_args()
    compile_dockwright()
    work = Path(tempfile.mkdtemp(prefix="dw-dirindex-"))
    log = work / "log"
    registry = start_registry(work / "registry")
    try:
        base = f"{registry.host}/base/image:latest"
        run_step(Step(["skopeo", "copy", "--dest-tls-verify=false", args.base, f"docker://{base}"]), log)
        context = work / "context"
        (context / "src").mkdir(parents=True)
        for i in range(25):
            (context / "src" / f"m{i}.js").write_text(f"module.exports = {i};\n")
        print(f"base {args.base}; {args.runs} runs per case, median (all runs)")
        for name, steps in CASES.items():
            (context / "Dockerfile").write_text(f"FROM {base}\n{steps}")
            cold, warm = [], []
            for run in range(args.runs):
                cache = work / f"cache-{run}"
                build = Step([dockwright_command(), "build", str(context), "-t", f"{registry.host}/bench/app:{run}",
                              "--push", "--cache-dir", str(cache), "-q"])
                cold.append(run_step(build, log).seconds)
                warm.append(run_step(build, log).seconds)
                indexed = len(list((cache / "dirindex").iterdir())) if (cache / "dirindex").is_dir() else 0
                shutil.rmtree(cache)
            for label, times in (("cold", cold), ("warm", warm)):
                shown = ", ".join(f"{t:.2f}" for t in times)
                print(f"  {name:24} {label}: {statistics.median(times):.2f} s ({shown})"
                      + (f"; layers indexed: {indexed}" if label == "cold" else ""))
    finally:
        registry.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
