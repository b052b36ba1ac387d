"""The machine's raw limit for making a layer: read a tar stream on stdin, gzip it with ISA-L
(level 1, one thread per CPU, as dockwright does by default) and sha256 both the uncompressed and the
compressed stream, writing the compressed bytes to the file named by argv[1].

Used as `tar -cf - DIR | python bench/raw_limit.py OUT` (see run.py).
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import BinaryIO

_CHUNK = 1 << 20


class _HashingFile:
    """A write-only file object that hashes what passes through to `out`."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def main() -> None:
    from isal import igzip_threaded

    diff_id = hashlib.sha256()
    with open(sys.argv[1], "wb") as out:
        compressed = _HashingFile(out)
        with igzip_threaded.open(compressed, "wb", compresslevel=1, threads=os.cpu_count() or 1) as gz:
            stdin = sys.stdin.buffer
            while chunk := stdin.read(_CHUNK):
                diff_id.update(chunk)
                gz.write(chunk)
    print(f"diff_id sha256:{diff_id.hexdigest()} digest sha256:{compressed.sha.hexdigest()}")


if __name__ == "__main__":
    main()
