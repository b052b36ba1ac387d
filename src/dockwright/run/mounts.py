"""RUN --mount, as BuildKit has them: what the host prepares before the container starts, the OCI
mounts the runtime gets, and the clean-up after it.

- cache: a directory under CACHE_DIR/run-cache (by id), never in the image; made with mode/uid/gid (default
  0755 root) or seeded from `from`+`source` the first time. `sharing`: shared (any number at once),
  locked (one build at a time, the others wait: a file lock), private (a build that finds it in use
  gets a fresh empty directory of its own, removed afterwards).
- bind: `source` below a stage's or an image's root (a read-only overlay of its layer directories), a
  named context directory (`--build-context NAME=DIR`) or the build context (never leaving it, without
  what its .dockerignore excludes: run/contextview.py); read-only unless `rw`, whose writes land in a
  throw-away upper directory.
- secret: the value of `--secret id=...` (a file or an environment variable) in a file on a tmpfs
  (/dev/shm) at `target` (default /run/secrets/ID, mode 0400) and/or in the variable `env`; never in a
  layer, a cache key, or a log line (`mask` hides it in the command's output, see masked_values).
- tmpfs: a fresh tmpfs of `size` bytes (no limit when 0).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import posixpath
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from dockwright.cache import RUN_CACHE
from dockwright.model.errors import DockwrightError, UsageError
from dockwright.model.image import BaseImage, Layer
from dockwright.parallel import POLL_SECONDS, check_cancelled
from dockwright.plan import RunMount, Secret
from dockwright.run.isolation import Isolation
from dockwright.run.snapshots import Snapshots, chain_ids, remove_tree

if TYPE_CHECKING:
    from dockwright.layers.dockerignore import IgnoreMatcher

OpenLayer = Callable[[Layer], Callable[[], Iterable[bytes]]]  # how a layer's blob is read for extraction
MASK = "****"
MIN_MASKED = 3  # shorter values are not masked: replacing every "a" or "42" would mangle the output
_SHM = Path("/dev/shm")


def masked_values(secret: str) -> set[str]:
    """What the command's output lines are searched for to hide a secret: its value, trimmed and not, and
    each line of a value of several lines (output is masked line by line), when at least MIN_MASKED
    characters long. BuildKit masks nothing in a command's output; dockwright does, as far as this
    goes: a secret the command transforms (base64, reversed, split) is not found."""
    values = {secret, secret.strip(), *(line.strip() for line in secret.splitlines())}
    return {value for value in values if len(value) >= MIN_MASKED}


def read_secret(secret: Secret) -> bytes | None:
    """The secret's value, or None when its variable is not set."""
    if secret.file is not None:
        try:
            return Path(secret.file).read_bytes()
        except OSError as exc:
            raise UsageError(f"--secret id={secret.id}: cannot read {secret.file}: {exc.strerror}") from None
    value = os.environ.get(secret.env or secret.id)
    return value.encode() if value is not None else None


def parse_secret(text: str) -> Secret:
    """`id=NAME[,src=FILE|,env=VAR][,type=file|env]` as `docker buildx build --secret` reads it; with
    neither src nor env, the variable NAME."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip().lower() not in ("id", "src", "source", "env", "type"):
            raise UsageError(f"--secret {text!r}: expected id=NAME,src=FILE or id=NAME,env=VAR")
        fields[{"source": "src"}.get(key.strip().lower(), key.strip().lower())] = value
    ident = fields.get("id") or (posixpath.basename(fields["src"]) if fields.get("src") else "")
    if not ident:
        raise UsageError(f"--secret {text!r}: no id=")
    kind = fields.get("type")
    if kind not in (None, "file", "env"):
        raise UsageError(f"--secret {text!r}: type must be file or env")
    if "src" in fields or kind == "file":
        return Secret(ident, file=fields.get("src", ident))
    return Secret(ident, env=fields.get("env", ident))


@dataclass(frozen=True)
class MountSources:
    """What RUN mounts read: the build context, the images of other stages (by plan index), images by
    reference, the named context directories (by name) and the secrets the build was given; `cache_dir`
    holds the cache mounts (the configured cache directory, also with --no-cache, which as in BuildKit
    does not empty them)."""

    cache_dir: Path
    context: Path | None
    stage: Callable[[int], BaseImage]
    image: Callable[[str], BaseImage]
    secrets: Mapping[str, Secret]
    contexts: Mapping[str, Path] = field(default_factory=dict)
    # the ignore patterns of each context directory: "" the build context's, NAME a named one's
    dockerignore: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def source_image(self, mount: RunMount) -> BaseImage | None:
        if mount.from_stage is not None:
            return self.stage(mount.from_stage)
        if mount.from_image is not None:
            return self.image(mount.from_image)
        return None

    def context_source(self, mount: RunMount) -> tuple[Path, str, IgnoreMatcher | None] | None:
        """For a mount without a source image: the context directory it reads (its named context, else the build
        context; resolved), its `source` in it (relative, symlinks followed inside it) and the context's ignore
        patterns; None when the build has no context."""
        from dockwright.layers.copy import resolve_in_root
        from dockwright.layers.dockerignore import compiled

        name = mount.from_context
        directory = self.contexts[name] if name is not None else self.context
        if directory is None:
            return None
        root = directory.resolve()
        rel = os.path.relpath(resolve_in_root(str(root), mount.source), root)
        return root, "" if rel == "." else rel, compiled(self.dockerignore.get(name or "", ()))


def key_parts(mounts: Sequence[RunMount], sources: MountSources) -> list[str]:
    """What the mounts add to the step's cache key besides their specs: the content of bind mounts (the
    source image's layer chain, or a digest of the context's files it sees). Never a secret's value."""
    from dockwright.layers.quickkey import tree_digest
    from dockwright.run.contextview import filters, view_digest

    parts = []
    for mount in mounts:
        seeded = mount.from_stage is not None or mount.from_image is not None or mount.from_context is not None
        if mount.type != "bind" and not (mount.type == "cache" and seeded):
            continue
        image = sources.source_image(mount)
        found = sources.context_source(mount) if image is None else None
        if image is not None:
            parts.append(chain_ids([layer.diff_id for layer in image.layers])[-1] if image.layers else "")
        elif found is not None:
            root, rel, ignore = found
            path = os.path.join(root, rel)
            if ignore is not None and rel and ignore.matches(rel):
                continue  # excluded: the mount fails
            if os.path.isdir(path):
                parts.append(view_digest(root, rel, ignore) if filters(ignore, rel) else tree_digest(path).hex())
            elif os.path.isfile(path):
                with open(path, "rb") as file:
                    parts.append(hashlib.file_digest(file, "sha256").hexdigest())
    return parts


class Mounts:
    """The host side of one RUN's mounts. `with Mounts(...) as mounts:` then `mounts.oci` (OCI mount
    objects), `mounts.env` (variables for secrets with env=), `mounts.mask(line)`."""

    def __init__(self, mounts: Sequence[RunMount], sources: MountSources, isolation: Isolation,
                 snapshots: Snapshots, cwd: str, open_layer: OpenLayer, cancel: threading.Event | None = None) -> None:
        self.mounts = mounts
        self.open_layer = open_layer
        self.cancel = cancel  # a wait for a cache mount's lock ends once set
        self.sources = sources
        self.isolation = isolation
        self.snapshots = snapshots
        self.cwd = cwd
        self.oci: list[dict[str, Any]] = []
        self.env: list[str] = []
        self._secrets: list[str] = []
        self._mounted: list[Path] = []
        self._temps: list[Path] = []
        self._locks: list[IO[str]] = []

    def __enter__(self) -> Mounts:
        try:
            for mount in self.mounts:
                target = posixpath.normpath(posixpath.join(self.cwd, mount.target)) if mount.target else ""
                if mount.type == "cache":
                    self._bind(target, self._cache(mount), readonly=False)
                elif mount.type == "bind":
                    self._bind(target, self._bind_source(mount), readonly=mount.readonly)
                elif mount.type == "secret":
                    self._secret(mount, target)
                elif mount.type == "tmpfs":
                    size = [f"size={mount.size}"] if mount.size else []
                    self.oci.append({"destination": target, "type": "tmpfs", "source": "tmpfs",
                                     "options": ["nosuid", "nodev", "mode=1777", *size]})
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def mask(self, line: str) -> str:
        """`line` with every secret value in it replaced by ****."""
        for value in self._secrets:
            line = line.replace(value, MASK)
        return line

    def close(self) -> None:
        """Unmount, remove temporary directories and release cache locks; safe to call twice."""
        errors = []
        for path in reversed(self._mounted):
            try:
                self.isolation.unmount(path)
            except DockwrightError as exc:
                errors.append(exc)
        self._mounted.clear()
        for path in self._temps:
            remove_tree(path)
        self._temps.clear()
        for lock in self._locks:
            lock.close()  # releases the flock
        self._locks.clear()
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------ one kind each

    def _bind(self, target: str, source: Path, readonly: bool) -> None:
        self.oci.append({"destination": target, "type": "bind", "source": str(source),
                         "options": ["rbind", "ro" if readonly else "rw"]})

    def _temp(self, prefix: str, parent: Path | None = None) -> Path:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent or self.snapshots.root))
        self._temps.append(path)
        return path

    def _overlay(self, lowers: list[Path], readonly: bool) -> Path:
        """A mount of `lowers` (top first): read-only, or with a throw-away upper directory."""
        work = self._temp("mnt-")
        merged = work / "merged"
        merged.mkdir()
        if len(lowers) < 2:  # overlayfs without an upper directory wants two lower directories
            (work / "empty").mkdir()
            lowers = [*lowers, work / "empty"]
        if readonly:
            self.isolation.mount_lowers(lowers, merged)
        else:
            for name in ("upper", "work"):
                (work / name).mkdir()
            self.isolation.mount_root(lowers, work / "upper", work / "work", merged)
        self._mounted.append(merged)
        return merged

    def _image_root(self, image: BaseImage, readonly: bool) -> Path:
        layers = [(layer.diff_id, self.open_layer(layer), layer.descriptor.digest) for layer in image.layers]
        return self._overlay(self.snapshots.layer_dirs(layers), readonly)

    def _bind_source(self, mount: RunMount) -> Path:
        from dockwright.layers.copy import resolve_in_root

        image = self.sources.source_image(mount)
        if image is None:
            path = self._context_path(mount)
            if mount.readonly:
                return path
            if path.is_dir():
                return self._overlay([path], readonly=False)
            return self._overlay([path.parent], readonly=False) / path.name
        path = Path(resolve_in_root(str(self._image_root(image, readonly=mount.readonly)), mount.source))
        if not path.exists():
            raise DockwrightError(f"RUN --mount=type={mount.type}: {mount.source or '/'} does not exist in its "
                                  "source image")
        return path

    def _context_path(self, mount: RunMount) -> Path:
        """`source` in the mount's context directory as BuildKit's context has it: without what the context's
        .dockerignore excludes (a view of the directory when that is anything below it)."""
        from dockwright.run.contextview import filters, make_view

        found = self.sources.context_source(mount)
        if found is None:
            raise DockwrightError(f"RUN --mount=type={mount.type}: this build has no context to read from")
        root, rel, ignore = found
        path = root / rel if rel else root
        if not path.exists() or (ignore is not None and rel and ignore.matches(rel)):
            where = f"the context {mount.from_context}" if mount.from_context is not None else "the context"
            raise DockwrightError(f"RUN --mount=type={mount.type}: {mount.source or '/'} does not exist in {where}"
                                  f"{' (.dockerignore excludes it)' if path.exists() else ''}")
        if ignore is None or not path.is_dir() or not filters(ignore, rel):
            return path
        view = self._temp("ctx-") / "view"
        view.mkdir()
        make_view(root, rel, ignore, view)
        return view

    def _cache(self, mount: RunMount) -> Path:
        name = hashlib.sha256(mount.id.encode()).hexdigest()[:32]
        base = self.sources.cache_dir / RUN_CACHE
        base.mkdir(parents=True, exist_ok=True)
        lock = open(base / f"{name}.lock", "a")  # noqa: SIM115 (held until close)
        self._locks.append(lock)
        if mount.sharing == "private":
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # in use: this RUN gets one of its own
                return self._new_cache(self._temp("cache-") / "dir", mount)
        else:
            self._wait_for(lock, fcntl.LOCK_EX if mount.sharing == "locked" else fcntl.LOCK_SH)
        directory = base / name
        if not directory.is_dir():
            # made under a lock of its own: RUNs starting at once (stages of a build, or builds) make it once,
            # and none replaces another's while it is still empty (a rename onto an empty directory would)
            with open(base / f"{name}.make", "a") as making:
                self._wait_for(making, fcntl.LOCK_EX)
                if not directory.is_dir():
                    self._new_cache(directory, mount)
        return directory

    def _wait_for(self, lock: IO[str], kind: int) -> None:
        """Take the flock, waiting while another RUN (of this build or another) holds it; a stage stopped
        meanwhile (another failed, Ctrl-C) stops waiting."""
        if self.cancel is None:
            fcntl.flock(lock, kind)
            return
        while True:
            try:
                fcntl.flock(lock, kind | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if self.cancel.wait(POLL_SECONDS):
                    check_cancelled(self.cancel)

    def _new_cache(self, directory: Path, mount: RunMount) -> Path:
        """Make a cache directory (under a temporary name, renamed into place): empty with mode/uid/gid,
        or a copy of `source` from the `from` image or named context."""
        temp = directory.with_name(f"{directory.name}.new-{os.getpid()}")
        remove_tree(temp)
        image = self.sources.source_image(mount)
        if image is not None:
            from dockwright.layers.copy import resolve_in_root

            source = Path(resolve_in_root(str(self._image_root(image, readonly=True)), mount.source))
            shutil.copytree(source, temp, symlinks=True)
        elif mount.from_context is not None:
            shutil.copytree(self._context_path(mount), temp, symlinks=True)
        else:
            temp.mkdir()
        os.chmod(temp, 0o755 if mount.mode is None else mount.mode)
        os.lchown(temp, mount.uid or 0, mount.gid or 0)
        try:
            os.rename(temp, directory)
        except OSError:  # another build made it first
            remove_tree(temp)
        return directory

    def _secret(self, mount: RunMount, target: str) -> None:
        secret = self.sources.secrets.get(mount.id)
        value = read_secret(secret) if secret is not None else None
        if value is None:
            if mount.required:
                raise UsageError(f"RUN --mount=type=secret,id={mount.id}: the secret is required and was not "
                                 "given", hint=f"pass --secret id={mount.id},src=FILE (or env=VARIABLE)")
            return  # as BuildKit: an optional secret that is not given is simply absent
        text = value.decode("utf-8", "replace")
        self._secrets.extend(masked_values(text))
        self._secrets.sort(key=len, reverse=True)
        if mount.env:
            self.env.append(f"{mount.env}={text}")
        if target:
            directory = self._temp("dw-secret-", _SHM if _SHM.is_dir() else None)
            path = directory / "value"
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400), "wb") as file:
                file.write(value)
            os.chmod(path, 0o400 if mount.mode is None else mount.mode)
            os.chown(path, mount.uid or 0, mount.gid or 0)
            self.oci.append({"destination": target, "type": "bind", "source": str(path),
                             "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]})

