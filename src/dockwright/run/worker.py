"""One RUN step in a user namespace for a build that runs outside one: the library's rootless RUN.

The command line starts a whole build again in a user namespace (run/userns.py). A program that calls
dockwright.build() as a user who is not root cannot be started again, so each RUN step it needs runs in
a child, `python -m dockwright.run.worker`, started as root of a user namespace (same id mappings):
- the parent sends the step (its inputs, the images it reads: the stage's and its mounts' sources, the
  secrets' values in private files) as one JSON line on the child's stdin, and the layers whose
  directories the cache lacks through pipes, one each, in frames (8-byte length, data; a 0 length ends a
  layer whose digest the parent's source has checked: a stream that ends without it is an error);
- the child extracts them, runs the step as run/steps.py does in the namespace (overlay, runtime,
  diff, layer snapshot) and writes the layer with the parent's compression to the temporary file the
  parent's layer cache gave it; it answers in JSON lines on stdout: log records (the command's output
  among them), then the layer's blob, or the error;
- files the child writes belong to the user outside (root inside maps to it): the parent files the blob
  in its cache as if it had written it. Cancelling sends the child SIGTERM; it cleans up and exits.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from dockwright.model.errors import Cancelled, DockwrightError, UsageError

if TYPE_CHECKING:
    from dockwright.layers.compress import Compression, LayerBlob
    from dockwright.model.image import BaseImage, Layer
    from dockwright.run.steps import RunInputs, RunSteps

log = logging.getLogger("dockwright")
_FRAME = struct.Struct(">Q")
Feed = Callable[[], Iterable[bytes]]  # how the parent reads a layer blob the child needs
_CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------- the parent


def run_outside(steps: RunSteps, inputs: RunInputs, image: BaseImage, temp: Path, compression: Compression,
                cancel: threading.Event | None) -> LayerBlob:
    """Run the step in a child in a user namespace; the blob of its layer, written to `temp`."""
    from dockwright.cache import ROOTFS_USER
    from dockwright.layers.compress import LayerBlob
    from dockwright.run.container import RunFailed
    from dockwright.run.isolation import RunUnavailable
    from dockwright.run.mounts import read_secret
    from dockwright.run.snapshots import chain_ids, dir_name

    images = {"": image}
    sources = inputs.sources
    for mount in inputs.step.mounts:
        source = sources.source_image(mount) if sources is not None else None
        if source is not None:
            images[_image_key(mount.from_stage, mount.from_image)] = source
    feeds: dict[str, tuple[Feed, int, int]] = {}  # chain id -> (how to read the layer, read end, write end)
    described = {}
    secrets_dir = Path(tempfile.mkdtemp(prefix="dockwright-secrets-", dir="/dev/shm" if os.path.isdir("/dev/shm")
                                        else None))
    try:
        for key, each in images.items():
            layers = []
            for chain, layer in zip(chain_ids([lay.diff_id for lay in each.layers]), each.layers, strict=True):
                if chain not in feeds and not (steps.cache_root / ROOTFS_USER / dir_name(chain)).is_dir():
                    feeds[chain] = (steps.open_layer(layer), *os.pipe())  # a download shows as one
                layers.append({"diff_id": layer.diff_id, "descriptor": layer.descriptor.to_json(),
                               "fd": feeds[chain][1] if chain in feeds else None})
            described[key] = {"platform": str(each.platform), "name": each.name, "layers": layers}
        secrets = {}
        for mount in inputs.step.mounts:
            secret = sources.secrets.get(mount.id) if sources is not None and mount.type == "secret" else None
            value = read_secret(secret) if secret is not None else None
            if value is not None:
                path = secrets_dir / str(len(secrets))
                path.touch(mode=0o600)
                path.write_bytes(value)
                secrets[mount.id] = str(path)
        step = inputs.step
        request = {
            "cache_root": str(steps.cache_root), "isolation": steps.isolation_name, "runtime": steps.runtime,
            "epoch": steps.epoch, "temp": str(temp), "compression": dataclasses.asdict(compression),
            "argv": inputs.argv, "env": inputs.env, "user": inputs.user, "cwd": inputs.cwd, "label": inputs.label,
            "shown": inputs.shown, "network": step.network, "mounts": [dataclasses.asdict(m) for m in step.mounts],
            "files": [[name, base64.b64encode(data).decode()] for name, data in step.files],
            "images": described, "secrets": secrets,
            "sources": None if sources is None else {"cache_dir": str(sources.cache_dir),
                                                     "context": str(sources.context) if sources.context else None,
                                                     "contexts": {k: str(v) for k, v in sources.contexts.items()},
                                                     "dockerignore": dict(sources.dockerignore)},
        }  # fmt: skip
        answer = _converse(request, feeds, cancel)
    finally:
        for _, read_end, write_end in feeds.values():
            for fd in (read_end, write_end):
                with contextlib.suppress(OSError):
                    os.close(fd)
        for path in secrets_dir.iterdir():
            path.unlink()
        secrets_dir.rmdir()
    if "result" in answer:
        return LayerBlob(temp, **answer["result"])
    error = answer.get("error") or {}
    if error.get("kind") == "RunFailed":
        raise RunFailed(inputs.shown, error["exit_code"], error["tail"])
    if error.get("kind") == "Cancelled" or (cancel is not None and cancel.is_set()):
        raise Cancelled("cancelled")
    kind = {"RunUnavailable": RunUnavailable, "UsageError": UsageError}.get(error.get("kind", ""))
    failure = (kind or DockwrightError)(error.get("message") or "rootless RUN: the worker failed",
                                        hint=error.get("hint"))
    failure.details = tuple(error.get("details") or ())
    raise failure


def _converse(request: dict[str, Any], feeds: dict[str, tuple[Feed, int, int]],
              cancel: threading.Event | None) -> dict[str, Any]:
    """Start the child, feed it, relay its log records; its last answer (result or error)."""
    from dockwright.run import userns

    with tempfile.TemporaryFile() as errors:
        child = userns.start("dockwright.run.worker", [], pass_fds=[read for _, read, _ in feeds.values()],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
        jobs = list(feeds.values())
        feeds.clear()  # from here on, this function closes the read ends and the threads the write ends
        for _, read_end, _ in jobs:
            os.close(read_end)
        failures: list[BaseException] = []
        threads = [threading.Thread(target=_feed, args=(blob, write_end, failures), daemon=True,
                                    name="dockwright-run-feed") for blob, _, write_end in jobs]
        for thread in threads:
            thread.start()
        ended = threading.Event()
        if cancel is not None:
            threading.Thread(target=_watch, args=(child, cancel, ended), daemon=True,
                             name="dockwright-run-cancel").start()
        answer: dict[str, Any] = {}
        try:
            assert child.stdin is not None and child.stdout is not None
            with contextlib.suppress(BrokenPipeError):
                child.stdin.write(json.dumps(request).encode() + b"\n")
                child.stdin.close()
            for raw in child.stdout:
                message = json.loads(raw)
                if "log" in message:
                    log.log(message["log"][0], "%s", message["log"][1])
                else:
                    answer = message
            child.wait()
        except BaseException:  # Ctrl-C reaches the child too; it cleans up before this returns
            child.send_signal(signal.SIGTERM)
            child.wait()
            raise
        finally:
            ended.set()
            if child.stdout is not None:
                child.stdout.close()
            for thread in threads:
                thread.join()
        if failures:
            raise failures[0]
        if not answer:
            errors.seek(0)
            tail = errors.read().decode(errors="replace").strip().splitlines()[-5:]
            answer = {"error": {"message": f"rootless RUN: the worker exited with status {child.returncode}",
                                "details": tail}}
        return answer


def _feed(blob: Feed, fd: int, failures: list[BaseException]) -> None:
    """Send a layer's blob in frames, then the end frame once its source has checked it."""
    try:
        with open(fd, "wb", buffering=0) as pipe:
            for chunk in blob():
                if chunk:
                    pipe.write(_FRAME.pack(len(chunk)) + chunk)
            pipe.write(_FRAME.pack(0))
    except BrokenPipeError:
        pass  # the child did not need it (another build extracted it meanwhile), or it failed
    except BaseException as exc:
        failures.append(exc)


def _watch(child: subprocess.Popen[bytes], cancel: threading.Event, ended: threading.Event) -> None:
    from dockwright.parallel import POLL_SECONDS

    while not ended.wait(POLL_SECONDS):
        if cancel.is_set():
            child.send_signal(signal.SIGTERM)
            return


def _image_key(stage: int | None, image: str | None) -> str:
    return f"stage:{stage}" if stage is not None else f"image:{image}"


# ----------------------------------------------------------------------------------------- the child


class _Pipe:
    """A layer's blob from the parent, as a BlobSource (see the module's docstring for the frames)."""

    def __init__(self, fd: int | None, what: str) -> None:
        self.fd = fd
        self.what = what

    def open(self) -> Iterator[bytes]:
        if self.fd is None:  # its directory was there when the parent looked
            raise DockwrightError(f"the layer directory of {self.what} went away meanwhile (cache pruned?)",
                                  hint="run the build again")
        with open(self.fd, "rb", buffering=0) as pipe:
            while True:
                size = _FRAME.unpack(_read(pipe, _FRAME.size, self.what))[0]
                if size == 0:
                    return
                yield _read(pipe, size, self.what)


def _read(pipe: IO[bytes], size: int, what: str) -> bytes:
    data = bytearray()  # grown in place: a pipe gives a large frame in many short reads
    while len(data) < size:
        chunk = pipe.read(min(size - len(data), _CHUNK))
        if not chunk:
            raise DockwrightError(f"{what}: the layer's data ended early (its source failed)")
        data += chunk
    return bytes(data)


class _Relay(logging.Handler):
    def __init__(self, out: IO[str]) -> None:
        super().__init__(logging.DEBUG)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        _say(self.out, {"log": [record.levelno, record.getMessage()]})


def _say(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def _step(request: dict[str, Any]) -> LayerBlob:
    from dockwright.layers.compress import Compression
    from dockwright.layers.tar import write_layer
    from dockwright.model.blobs import FileBlob
    from dockwright.model.documents import Descriptor
    from dockwright.model.image import BaseImage, Layer
    from dockwright.model.platform import Platform
    from dockwright.plan import RunMount, RunStep, Secret
    from dockwright.run.mounts import MountSources
    from dockwright.run.steps import RunInputs, RunSteps

    images = {}
    for key, described in request["images"].items():
        layers = [Layer(Descriptor.from_json(item["descriptor"], "the parent's request"), item["diff_id"],
                        _Pipe(item["fd"], item["descriptor"]["digest"])) for item in described["layers"]]
        images[key] = BaseImage(Platform.parse(described["platform"]), "oci", {}, layers,  # type: ignore[arg-type]
                                name=described["name"])
    sources = None
    if request["sources"] is not None:
        context = request["sources"]["context"]
        sources = MountSources(Path(request["sources"]["cache_dir"]), Path(context) if context else None,
                               lambda index: images[_image_key(index, None)],
                               lambda ref: images[_image_key(None, ref)],
                               {ident: Secret(ident, file=path) for ident, path in request["secrets"].items()},
                               {name: Path(path) for name, path in request["sources"]["contexts"].items()},
                               {name: tuple(patterns) for name, patterns in request["sources"]["dockerignore"].items()})
    step = RunStep("", files=tuple((name, base64.b64decode(data)) for name, data in request["files"]),
                   network=request["network"], mounts=tuple(RunMount(**mount) for mount in request["mounts"]))
    inputs = RunInputs(step, request["argv"], request["env"], request["user"], request["cwd"], "", "",
                       request["label"], request["shown"], sources)
    temp, compression = Path(request["temp"]), Compression(**request["compression"])
    written: list[LayerBlob] = []

    def write(entries: Any) -> Layer:
        blob = write_layer(entries, temp, compression)
        written.append(blob)
        return Layer(Descriptor("application/vnd.oci.image.layer.v1.tar", blob.digest, blob.size), blob.diff_id,
                     FileBlob(temp, blob.digest, blob.size, "built layer", fresh=True))

    RunSteps(Path(request["cache_root"]), request["isolation"], request["runtime"], request["epoch"], "").run(
        inputs, images[""], write)
    return written[0]


def main() -> int:
    """The child: one request on stdin, answers on stdout."""
    from dockwright.run.container import RunFailed

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    out = os.fdopen(os.dup(1), "w")  # the answers; nothing else may write into them, nor a program started here
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logger = logging.getLogger("dockwright")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(_Relay(out))
    logger.propagate = False
    try:
        blob = _step(json.loads(sys.stdin.readline()))
        _say(out, {"result": {"digest": blob.digest, "size": blob.size, "diff_id": blob.diff_id,
                              "compression": blob.compression, "entries": blob.entries, "machines": blob.machines}})
        return 0
    except RunFailed as exc:
        _say(out, {"error": {"kind": "RunFailed", "exit_code": exc.command_exit_code, "tail": list(exc.details)}})
    except DockwrightError as exc:
        _say(out, {"error": {"kind": type(exc).__name__, "message": exc.message, "hint": exc.hint,
                             "details": list(exc.details)}})
    except KeyboardInterrupt:
        _say(out, {"error": {"kind": "Cancelled"}})
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
