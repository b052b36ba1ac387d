"""Layer directories for overlayfs, kept in the cache by chain ID (the OCI image spec's
ChainID(L0) = DiffID(L0), ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln))).

Each directory holds one layer in overlayfs's form (whiteouts as 0/0 character devices, opaque
directories marked by an xattr), so a stage's root file system is an overlay of its layers' directories
with nothing copied: extracted once, reused by every later RUN, stage and build on the same chain.
A directory is extracted under a temporary name and renamed into place, so concurrent builds never
see a partial one (the loser of a race removes its copy); in one build, stages on the same chain wait for
the one extracting it."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from dockwright.cache import TEMP_PREFIX
from dockwright.parallel import KeyedLocks

log = logging.getLogger("dockwright")

OPAQUE_XATTR = "trusted.overlay.opaque"  # user.overlay.opaque with the `userxattr` mount option (rootless)


# How layers are extracted into their directories; a change to that (what a RUN then sees) changes every
# directory's name, so a cache made by an older dockwright is not reused (its directories age out).
# 2: a hard link into a lower layer is a link across the layer directories, not a copy.
EXTRACTION_VERSION = 2


def dir_name(chain_id: str) -> str:
    """The name of a chain's layer directory (or tree) in a snapshots root."""
    return f"{chain_id.partition(':')[2]}-{EXTRACTION_VERSION}"


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The chain ID of every prefix of `diff_ids` (bottom first)."""
    chains: list[str] = []
    for diff_id in diff_ids:
        chains.append(diff_id if not chains else
                      "sha256:" + hashlib.sha256(f"{chains[-1]} {diff_id}".encode()).hexdigest())
    return chains


class Snapshots:
    """The layer directories below `root` (e.g. CACHE/rootfs); `opaque_xattr` names the overlay xattrs'
    namespace the directories are written for (a separate root per namespace)."""

    def __init__(self, root: Path, opaque_xattr: str = OPAQUE_XATTR) -> None:
        self.root = root.absolute()  # the overlay's lower directories are symlinks to it
        self.opaque_xattr = opaque_xattr
        self._extracting = KeyedLocks()
        root.mkdir(parents=True, exist_ok=True)

    def path(self, chain_id: str) -> Path:
        return self.root / dir_name(chain_id)

    def temp_dir(self) -> Path:
        """A fresh directory on the snapshots' file system (an upper directory that may be adopted)."""
        return Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=self.root))

    def layer_dirs(self, layers: Sequence[tuple[str, Callable[[], Iterable[bytes]], str]]) -> list[Path]:
        """The directories of `layers` ((diff_id, open chunks, name) bottom first), extracting the missing
        ones; returned top first, as overlayfs's lowerdir lists them."""
        dirs: list[Path] = []
        for chain_id, (_, open_chunks, name) in zip(chain_ids([d for d, _, _ in layers]), layers, strict=True):
            final = self.path(chain_id)
            if not final.is_dir():
                with self._extracting(chain_id):
                    if not final.is_dir():
                        self._extract(open_chunks(), chain_id, name, dirs)
            else:
                with contextlib.suppress(OSError):
                    os.utime(final)  # recently used (for pruning)
            dirs.append(final)
        return list(reversed(dirs))

    def _extract(self, chunks: Iterable[bytes], chain_id: str, name: str, below: list[Path]) -> None:
        from dockwright.layers.rootfs import extract_layer

        started = time.monotonic()
        temp = self.temp_dir()
        try:
            extract_layer(chunks, temp, name=name, opaque_xattr=self.opaque_xattr, lower_dirs=list(reversed(below)))
            self.adopt(temp, chain_id)
        finally:
            remove_tree(temp)
        log.debug("extracted %s for RUN in %.2fs", name, time.monotonic() - started)

    def adopt(self, directory: Path, chain_id: str) -> None:
        """Move a complete layer directory into place under `chain_id`, unless one is there already."""
        os.chmod(directory, 0o755)
        try:
            os.rename(directory, self.path(chain_id))
        except OSError:
            if not self.path(chain_id).is_dir():
                raise


def remove_tree(path: Path) -> None:
    """Remove a directory tree the build made, including read-only directories a command left behind."""
    if not os.path.lexists(path):
        return

    def retry(function: Callable[..., object], name: str, exc: BaseException) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(name), 0o700)
            function(name)

    shutil.rmtree(path, onerror=lambda f, n, e: retry(f, n, e[1]))
