"""What materialising a base's root file system for RUN costs, against `tar -xzf` of the same layers.

dockwright extracts each layer once into a layer directory in its cache (run/snapshots.py: owners,
modes, xattrs, mtimes, whiteouts in overlayfs's form); every later RUN on that layer chain reuses it.
This script times that extraction from an empty cache, and GNU tar extracting the same blobs in order
(`--numeric-owner --xattrs`, as root), into the same file system:

    python bench/rootfs.py --base oci:DIR:TAG   # an OCI layout (default: the Debian test base if cached)
    python bench/rootfs.py -n 5 --dir /dev/shm  # runs per tool (default 3, median shown); where to write

Run as root (owners and device nodes). Not a test: the ratio is the number to watch (target: 2x).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))

from dockwright.run.snapshots import Snapshots  # noqa: E402


def _layers(base: str) -> list[tuple[str, Path]]:
    """(diff_id, blob path) of the image's layers, bottom first."""
    layout, _, tag = base.removeprefix("oci:").rpartition(":")
    root = Path(layout)
    index = json.loads((root / "index.json").read_text())
    (manifest,) = [m for m in index["manifests"]
                   if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]

    def blob(digest: str) -> Path:
        return root / "blobs" / digest.replace(":", "/")

    document = json.loads(blob(manifest["digest"]).read_text())
    diff_ids = json.loads(blob(document["config"]["digest"]).read_text())["rootfs"]["diff_ids"]
    return [(diff_id, blob(layer["digest"])) for diff_id, layer in zip(diff_ids, document["layers"], strict=True)]


def _default_base() -> str:
    cached = sorted(p for p in (Path.home() / ".cache" / "dockwright-tests").glob("debian-*") if p.is_dir())
    if not cached:
        raise SystemExit("no --base given and no cached Debian test base (run tests/integration/test_run_programs.py)")
    return f"oci:{cached[0]}:latest"


def _chunks(path: Path):  # type: ignore[no-untyped-def]
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            yield block


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="oci:DIR:TAG")
    parser.add_argument("-n", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to extract (default: the system's temporary dir)")
    args = parser.parse_args()
    layers = _layers(args.base or _default_base())
    size = sum(path.stat().st_size for _, path in layers)
    times: dict[str, list[float]] = {"tar -xzf": [], "dockwright": []}
    for _ in range(args.n):
        for tool in times:
            work = Path(tempfile.mkdtemp(prefix="dw-rootfs-", dir=args.dir))
            try:
                start = time.perf_counter()
                if tool == "tar -xzf":
                    for _, blob in layers:
                        subprocess.run(["tar", "-xzf", str(blob), "-C", str(work), "--numeric-owner", "--xattrs",
                                        "--xattrs-include=*"], check=True)
                else:
                    Snapshots(work).layer_dirs([(d, lambda b=blob: _chunks(b), str(blob)) for d, blob in layers])
                times[tool].append(time.perf_counter() - start)
            finally:
                shutil.rmtree(work)
    medians = {tool: statistics.median(values) for tool, values in times.items()}
    print(f"{len(layers)} layers, {size / 1e6:.1f} MB compressed; median of {args.n}:")
    for tool, value in medians.items():
        print(f"  {tool:12} {value:6.2f} s")
    print(f"  ratio        {medians['dockwright'] / medians['tar -xzf']:6.2f}x (target: at most 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
