"""The RUN step of the executor: its inputs and cache key, the container run, and the layer of what it changed.

A RUN whose inputs are unchanged (the layer chain below it, the command, its environment and build
args, user, working directory, network, mounts' specs, heredoc scripts, the platform and the epoch)
is not run again: its layer comes from the cache and the build says "cached". Secrets never count."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dockwright.cache import ROOTFS, ROOTFS_CHROOT, ROOTFS_USER
from dockwright.model.image import BaseImage, Layer
from dockwright.plan import RunStep

if TYPE_CHECKING:
    from dockwright.layers.compress import Compression, LayerBlob
    from dockwright.layers.tar import TarEntry
    from dockwright.run.chroot import ChrootBox
    from dockwright.run.container import Sandbox
    from dockwright.run.isolation import Isolation
    from dockwright.run.mounts import Mounts, MountSources, OpenLayer
    from dockwright.run.snapshots import Snapshots

log = logging.getLogger("dockwright")
RUN_KEY_VERSION = "dockwright-run-2"  # 2: BuildKit's ARG/ENV order and supplementary groups; extraction 2
EMPTY_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"  # a tar of no entries
Packed = Callable[[Callable[[Path, "Compression"], "LayerBlob"]], Layer]  # LayerCache.packed for one key


def _open(layer: Layer) -> Callable[[], Iterable[bytes]]:
    return layer.source.open


@dataclasses.dataclass
class RunInputs:
    """A RunStep resolved against the image so far: everything the command sees, its cache key, and how
    the build names it (`label` prefixes its output lines, `shown` names it in a failure)."""

    step: RunStep
    argv: list[str]
    env: list[str]
    user: str
    cwd: str
    created_by: str
    key: str
    label: str
    shown: str
    sources: MountSources | None = None  # what its mounts read


class RunSteps:
    """Runs the RUN steps of one build; the isolation is chosen on the first RUN that needs to run.
    `layer_settings` (the compression) is part of every cache key; `open_layer` gives how a layer's blob is
    read when its directory is extracted (the executor's shows downloads as transfers)."""

    def __init__(self, cache_root: Path, isolation: str, runtime: str | None, epoch: int,
                 layer_settings: str, open_layer: OpenLayer = _open) -> None:
        self.cache_root = cache_root
        self.isolation_name = isolation
        self.runtime = runtime
        self.epoch = epoch
        self.layer_settings = layer_settings
        self.open_layer = open_layer
        self._isolation: Isolation | None = None
        self._snapshots: Snapshots | None = None
        self._count = 0
        self._lock = threading.Lock()
        self._left: list[Path] = []  # --isolation chroot: trees RUNs left for a later RUN to take

    def prepare(self, step: RunStep, image: BaseImage, args: Sequence[tuple[str, str]], flag: bool,
                sources: MountSources | None = None) -> RunInputs:
        """The step's inputs (`args`: its build args, resolved); logs the step as it starts. `flag`: a --run.
        `sources`: what the step's mounts read (needed when it has any)."""
        from dockwright.run import command

        config = image.config.get("config") or {}
        argv = command.argv(step, config)
        state = command.environment(config.get("Env") or [], args, step.env_order)  # BuildKit's env of the stage
        env = command.environment(state, step.proxies)
        user, cwd = config.get("User") or "", config.get("WorkingDir") or "/"
        # the cache key: never secret values (mounts count by their specs and what bind mounts bind)
        mounts = [dataclasses.asdict(mount) for mount in step.mounts]
        if sources is not None:
            from dockwright.run.mounts import key_parts

            mounts += key_parts(step.mounts, sources)
        files = [(name, hashlib.sha256(data).hexdigest()) for name, data in step.files]
        text = json.dumps([RUN_KEY_VERSION, self.layer_settings, [layer.diff_id for layer in image.layers], argv,
                           env, user, cwd, step.network, mounts, files, str(image.platform), self.epoch])
        with self._lock:
            self._count += 1
            label = f"#{self._count}"
        created_by = step.created_by or command.history(
            command.shown_args([*step.arg_names, *(key for key, _ in args)], state), argv)
        log.info("%s %s", label, created_by.removesuffix(" # buildkit"))
        return RunInputs(step, argv, env, user, cwd, created_by, "run:" + hashlib.sha256(text.encode()).hexdigest(),
                         label, f"{'--run' if flag else 'RUN'} {command.summary(step)}", sources)

    def run(self, inputs: RunInputs, image: BaseImage, write: Callable[[Iterable[TarEntry]], Layer],
            cancel: threading.Event | None = None, packed: Packed | None = None) -> Layer:
        """Run the command in the image's file system; the layer `write` makes of what it changed. Setting
        `cancel` kills the command at once (Cancelled). As a user who is not root, outside a user namespace
        (a program calling the library), the step runs in a child in one (run/worker.py) that writes the
        layer where `packed` says (LayerCache.packed)."""
        from dockwright.parallel import check_cancelled
        from dockwright.run.container import Sandbox
        from dockwright.run.diff import upper_entries
        from dockwright.run.isolation import check_platform
        from dockwright.run.mounts import Mounts
        from dockwright.run.snapshots import chain_ids
        from dockwright.run.userns import in_user_namespace

        check_cancelled(cancel)  # it may have waited for the same step in another stage
        if packed is not None and os.geteuid() != 0 and not in_user_namespace() and self.isolation_name != "chroot":
            from dockwright.run.worker import run_outside

            return packed(lambda temp, compression: run_outside(self, inputs, image, temp, compression, cancel))
        isolation, snapshots = self._setup()
        interpreter = check_platform(image.platform)
        if interpreter is not None:
            log.info("%s running %s binaries through %s (qemu-user, binfmt_misc)", inputs.label, image.platform,
                     interpreter)
        sources = inputs.sources
        if isolation.name == "chroot":
            from dockwright.run.chroot import ChrootBox, ChrootMounts

            chroot_mounts = ChrootMounts(inputs.step.mounts, sources, isolation, snapshots, inputs.cwd,
                                         self.open_layer, cancel) if sources else None
            with chroot_mounts or contextlib.nullcontext(), ChrootBox(snapshots, image, self.open_layer) as chroot:
                self._execute(chroot, inputs, image, chroot_mounts, cancel)
                entries = chroot.entries(self.epoch)
                layer = write(entries)
                left = chroot.keep([*(lay.diff_id for lay in image.layers), *([layer.diff_id] if entries else [])])
                if left is not None:
                    with self._lock:
                        self._left.append(left)
                return layer
        lowers = snapshots.layer_dirs([(layer.diff_id, self.open_layer(layer), layer.descriptor.digest)
                                       for layer in image.layers])
        mounts = Mounts(inputs.step.mounts, sources, isolation, snapshots, inputs.cwd, self.open_layer, cancel) \
            if sources else None
        with mounts or contextlib.nullcontext(), Sandbox(isolation, snapshots, lowers) as box:
            self._execute(box, inputs, image, mounts, cancel)
            entries = upper_entries(box.upper, lowers, self.epoch, isolation.opaque_xattr)
            layer = write(entries)
            chain = chain_ids([*(lay.diff_id for lay in image.layers), layer.diff_id])[-1]
            if entries and not snapshots.path(chain).exists():
                snapshots.adopt(box.upper, chain)  # the next RUN on this chain needs no extraction
        return layer

    @staticmethod
    def _execute(box: Sandbox | ChrootBox, inputs: RunInputs, image: BaseImage, mounts: Mounts | None,
                 cancel: threading.Event | None) -> None:
        """Run the step's command in `box` as its USER, its output logged line by line; then `box.finish()`."""
        from dockwright.run.spec import Process, resolve_user

        user = resolve_user(inputs.user, box.read("etc/passwd"), box.read("etc/group"), image.name or "the image")
        process = Process(inputs.argv, [*inputs.env, *(mounts.env if mounts else [])], inputs.cwd, user,
                          inputs.step.network, mounts=list(mounts.oci) if mounts else [])
        box.run(process, inputs.shown, inputs.step.files, cancel=cancel, mask=mounts.mask if mounts else None,
                output=lambda line: log.info("%s %s", inputs.label, line))
        box.finish()

    def close(self) -> None:
        """At the build's end: remove what its RUNs left for later ones and none took."""
        if self._left and self._snapshots is not None:
            from dockwright.run.chroot import discard

            discard(self._snapshots, self._left)
            self._left.clear()

    def _setup(self) -> tuple[Isolation, Snapshots]:
        with self._lock:
            if self._isolation is None:
                from dockwright.run.isolation import choose
                from dockwright.run.snapshots import Snapshots

                self._isolation = choose(self.isolation_name, self.runtime)
                # overlayfs's marks differ (trusted.* as root, user.* rootless): separate directories; chroot's
                # are whole root file systems
                folder = {"rootless": ROOTFS_USER, "chroot": ROOTFS_CHROOT}.get(self._isolation.name, ROOTFS)
                self._snapshots = Snapshots(self.cache_root / folder, self._isolation.opaque_xattr)
            assert self._snapshots is not None
            return self._isolation, self._snapshots
