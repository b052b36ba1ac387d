"""Progress for people and for tools: plain lines that show life at least every 5 s, JSON lines with the
documented fields, the layer writer's counters, and --progress / -q on the command line."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import pytest

from dockwright.cli.main import main
from dockwright.layers.compress import Compression
from dockwright.layers.tar import PackCounters, TarEntry, write_layer
from dockwright.progress import HEARTBEAT, JsonProgress, PlainProgress, Progress, make_progress


def test_quiet_progress_passes_chunks_through() -> None:
    progress = Progress()
    with progress, progress.step("COPY . /app"), progress.packing("layer", lambda: (0, 0)):
        assert list(progress.track("push", 6, [b"abc", b"def"])) == [b"abc", b"def"]


def test_plain_shows_a_long_layer_at_least_every_5_seconds(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dockwright")
    progress = PlainProgress()  # not entered: no thread; ticks are driven with made-up times below
    packed = [(3, 2 * 2**20)]
    with progress.step("COPY node_modules /app/node_modules"), progress.packing("layer", lambda: packed[0]):
        start = time.monotonic()
        progress.tick_all(start + HEARTBEAT - 1)
        assert caplog.messages == []  # nothing to say about a short step
        progress.tick_all(start + HEARTBEAT + 0.1)
        packed[0] = (40_000, 512 * 2**20)
        progress.tick_all(start + HEARTBEAT + 1)  # said a second ago
        progress.tick_all(start + 2 * HEARTBEAT + 0.2)
    lines = caplog.messages
    assert lines[0].startswith("COPY node_modules /app/node_modules: packing 3 files, 2.0 MiB, ")
    assert lines[1].startswith("COPY node_modules /app/node_modules: packing 40000 files, 512.0 MiB, ")
    assert lines[2].startswith("COPY node_modules /app/node_modules: done in ")
    assert lines[2].endswith("s (40000 files, 512.0 MiB)")
    assert len(lines) == 3  # the step itself: its layer's lines said it all


def test_plain_logs_a_finished_transfer_with_size_and_rate(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dockwright")
    progress = PlainProgress()
    start = time.monotonic()
    for _ in progress.track("push 0123456789ab", 3 * 2**20, [bytes(2**20)] * 3):
        pass
    progress.tick_all(start)
    assert len(caplog.messages) == 1
    assert caplog.messages[0].startswith("push 0123456789ab: 3.0 MiB in ")


def test_rawjson_events_have_the_documented_fields() -> None:
    stream = io.StringIO()
    progress = JsonProgress(stream)
    with pytest.raises(OSError), progress.step("RUN make"):
        with progress.packing("layer", lambda: (7, 4096)):
            progress.tick_all(time.monotonic())
        for _ in progress.track("pull 0123456789ab", 10, [b"12345"]):
            raise OSError("connection reset")
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["event"], e["kind"]) for e in events] == [
        ("start", "step"), ("start", "layer"), ("progress", "step"), ("progress", "layer"), ("done", "layer"),
        ("start", "transfer"), ("done", "transfer"), ("done", "step")]
    step, layer = events[0], events[1]
    assert step["name"] == layer["name"] == "RUN make" and layer["parent"] == step["id"]
    assert {k: events[4][k] for k in ("files", "bytes")} == {"files": 7, "bytes": 4096}
    assert {k: events[6][k] for k in ("bytes", "total", "error")} == {"bytes": 5, "total": 10, "error": "stopped"}
    assert all(isinstance(e["time"], float) for e in events) and events[-1]["error"] == "connection reset"
    assert events[4]["elapsed"] >= 0


def test_the_layer_writer_counts_files_and_tar_bytes(tmp_path: Path) -> None:
    counters = PackCounters()
    entries = [TarEntry("app", "dir", 0o755), *(TarEntry(f"app/{n}", "file", 0o644, data=bytes(3000))
                                                 for n in range(5))]
    blob = write_layer(entries, tmp_path / "layer.tar", Compression("none"), counters)
    assert counters() == (6, blob.size)  # uncompressed: the tar is the blob


def test_auto_is_plain_when_stderr_is_not_a_terminal() -> None:
    assert type(make_progress("auto")) is PlainProgress
    with pytest.raises(ValueError, match="unknown progress mode"):
        make_progress("fancy")


def _build(tmp_path: Path, *extra: str) -> list[str]:
    context = tmp_path / "context"
    (context / "app").mkdir(parents=True, exist_ok=True)
    (context / "app" / "hello.txt").write_text("hello\n")
    return ["build", str(context), "--from", "scratch", "--copy", "app:/app", "--cache-dir", str(tmp_path / "cache"),
            "-o", f"type=oci,dest={tmp_path / 'out'},tar=false", *extra]


def test_cli_rawjson_is_json_lines_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_build(tmp_path, "--progress", "rawjson")) == 0
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert {(e["event"], e.get("kind")) for e in events} >= {("start", "step"), ("done", "layer"), ("log", None)}
    assert any(e["event"] == "log" and e["message"].startswith("built sha256:") for e in events)

    assert main(_build(tmp_path, "--progress", "rawjson", "--platform", "linux/mips99")) == 2
    (error,) = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert error["event"] == "error" and "mips99" in error["message"]


@pytest.mark.parametrize("quiet", [["-q"], ["--progress", "quiet"]])
def test_cli_quiet_says_nothing_unless_it_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                quiet: list[str]) -> None:
    assert main(_build(tmp_path, *quiet)) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.startswith("sha256:")
    assert main([*_build(tmp_path, *quiet), "--copy", "missing:/x"]) == 1
    assert capsys.readouterr().err.startswith("error: ")
