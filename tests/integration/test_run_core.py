"""RUN for real: Dockerfile RUN steps (and flags-mode --run) run through runc on the busybox base; the
built image is pushed, pulled back with skopeo and run with runc, and the tests assert what the
commands left behind as a user would see it. Then failures, interruption, leftovers and the step cache."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from build_checks import (
    EPOCH_ENV,
    assert_output_tail,
    assert_user_error,
    build_and_run,
    cache_args,
    cancel_on_log,
    dockerfile_context,
    hint_of,
    image_config,
    pushed_rootfs,
    raw_manifest,
    run_leftovers,
    run_pushed,
)
from conftest import SRC, RunDockwright
from debian import DebianBase
from images import APP_UID, BusyboxBase, sh

pytestmark = pytest.mark.requires("runc")
_GUARD = 120  # seconds: a guard against hangs, not an assertion


def _layer_members(ref: str, index: int = -1) -> dict[str, tarfile.TarInfo]:
    """The tar members of one layer of a pushed image, by name (directories without their slash)."""
    blob = _fetch_blob(ref, raw_manifest(ref)["layers"][index]["digest"])
    with tarfile.open(fileobj=io.BytesIO(blob)) as archive:
        return {member.name: member for member in archive}


def _fetch_blob(ref: str, digest: str) -> bytes:
    import urllib.request

    host, _, rest = ref.partition("/")
    repository = rest.rpartition(":")[0]
    with urllib.request.urlopen(f"http://{host}/v2/{repository}/blobs/{digest}") as response:
        return response.read()


def test_shell_exec_and_heredoc_runs_with_args_env_user_and_workdir(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    context = dockerfile_context(tmp_path, (
        f"FROM {busybox_base.oci_ref}\n"
        "ARG FLAVOUR=plain\n"
        "ENV GREETING=hello\n"
        'RUN echo "$GREETING $FLAVOUR from the shell form" > /shell.txt\n'
        'RUN ["/bin/sh", "-c", "echo exec form sees $GREETING > /exec.txt"]\n'
        "RUN <<EOF\n"
        "echo first line of a heredoc > /heredoc.txt\n"
        "echo second line >> /heredoc.txt\n"
        "EOF\n"
        "RUN <<EOF\n"
        "#!/bin/sh\n"
        "echo a script run as a file: $0 > /script.txt\n"
        "EOF\n"
        "RUN cat <<-ONE >/tabs.txt\n"
        "\tstripped $GREETING\n"
        "\tONE\n"
        "USER app\n"
        "WORKDIR /work\n"  # made owned by app, the USER then (as Docker does)
        "RUN id > ids.txt && pwd > pwd.txt && hostname > host.txt && ping -c1 -W1 $(hostname) | head -1 >> host.txt\n"
        'CMD ["sh", "-c", "cat /shell.txt /exec.txt /heredoc.txt /script.txt /tabs.txt ids.txt pwd.txt host.txt; '
        'env | grep -c FLAVOUR || true"]\n'
    ))
    tag = f"{busybox_base.host}/apps/run:1"

    proc = dockwright("build", context, "-t", tag, "--push", "--build-arg", "FLAVOUR=vanilla", *cache_args(tmp_path),
                      env=EPOCH_ENV)

    assert run_pushed(tag, tmp_path) == [
        "hello vanilla from the shell form",
        "exec form sees hello",
        "first line of a heredoc",
        "second line",
        "a script run as a file: /dev/pipes/EOF",
        "stripped hello",
        f"uid={APP_UID}(app) gid={APP_UID}(app) groups={APP_UID}(app)",  # the primary group, as BuildKit
        "/work",
        "buildkitsandbox",  # BuildKit's hostname, the same on every machine, resolvable
        "PING buildkitsandbox (127.0.0.1): 56 data bytes",
        "0",  # the build arg was visible to RUN, but is not in the image's Env
    ]
    assert "#1 RUN |1 FLAVOUR=vanilla /bin/sh -c echo" in proc.stderr  # the step, then its output lines
    history = [h["created_by"] for h in image_config(tag)["history"]]
    assert 'RUN |1 FLAVOUR=vanilla /bin/sh -c echo "$GREETING $FLAVOUR from the shell form" > /shell.txt ' \
           "# buildkit" in history


def test_removed_and_recreated_base_files_are_whiteouts_and_opaque_directories(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    context = dockerfile_context(tmp_path, (
        f"FROM {busybox_base.oci_ref}\n"
        "RUN rm /bin/vi && rm -rf /home && mkdir -p /home/fresh && echo new > /home/fresh/file\n"
        "RUN cp /bin/busybox /bin/suid && chmod 4755 /bin/suid && ln /bin/suid /bin/suid-link "
        "&& ln -s /bin/suid /bin/suid-sym && chown app:app /home/fresh\n"
        'CMD ["sh", "-c", "ls /home; ls /home/fresh; test -e /bin/vi || echo no vi; '
        "stat -c '%a %U %h' /bin/suid; readlink /bin/suid-sym; stat -c '%U' /home/fresh\"]\n"
    ))
    tag = f"{busybox_base.host}/apps/whiteouts:1"

    lines = build_and_run(dockwright, context, tag, tmp_path)

    assert lines == ["fresh", "file", "no vi", "4755 root 2", "/bin/suid", "app"]
    removal = _layer_members(tag, index=-2)
    assert {"bin/.wh.vi", "home/.wh..wh..opq", "home/fresh/file"} <= set(removal)
    assert "home/app" not in {name.rstrip("/") for name in removal}
    made = _layer_members(tag, index=-1)
    assert made["bin/suid"].mode & 0o7777 == 0o4755
    assert made["bin/suid-link"].islnk() and made["bin/suid-sym"].issym()
    for stub in ("proc", "sys", "dev", "etc/hosts", "etc/resolv.conf", "etc"):
        assert stub not in made and stub not in removal, stub  # the runtime's mount points are not layers


def test_a_failing_run_names_the_line_shows_its_output_and_leaves_nothing(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    context = dockerfile_context(tmp_path, (
        f"FROM {busybox_base.oci_ref}\n"
        "RUN echo fine > /fine\n"
        "RUN echo about to fail; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line $i; done; exit 3\n"
    ))
    out = tmp_path / "out.tar"

    proc = dockwright("build", context, "-t", f"{busybox_base.host}/apps/fails:1", "--push", "-o",
                      f"type=oci,dest={out}", *cache_args(tmp_path), check=False)

    assert_user_error(proc, "Dockerfile:3: RUN echo about to fail;", "exit code 3")
    assert_output_tail(proc, [f"line {i}" for i in range(3, 13)])  # the last ten lines of its output
    assert not out.exists()
    assert "apps/fails" not in sh("skopeo", "list-tags", "--tls-verify=false",
                                  f"docker://{busybox_base.host}/base/busybox")
    assert run_leftovers(tmp_path / "cache") == []


def test_a_stage_the_target_does_not_need_never_runs(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    context = dockerfile_context(tmp_path, (
        f"FROM {busybox_base.oci_ref} AS broken\n"
        "RUN echo this must not run; exit 1\n"
        f"FROM {busybox_base.oci_ref} AS tools\n"
        "RUN echo built by a needed stage > /tool.txt\n"
        f"FROM {busybox_base.oci_ref}\n"
        "COPY --from=tools /tool.txt /tool.txt\n"
        'CMD ["cat", "/tool.txt"]\n'
    ))
    tag = f"{busybox_base.host}/apps/stages:1"

    proc = dockwright("build", context, "-t", tag, "--push", *cache_args(tmp_path), env=EPOCH_ENV)

    assert "this must not run" not in proc.stderr
    assert run_pushed(tag, tmp_path) == ["built by a needed stage"]


def test_an_unchanged_run_is_cached_and_no_cache_runs_it_again(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    context = dockerfile_context(tmp_path, (
        f"FROM {busybox_base.oci_ref}\n"
        "RUN echo running the step; echo $RANDOM$RANDOM > /random\n"
    ))
    out = [tmp_path / f"out{i}.tar" for i in range(3)]

    first = dockwright("build", context, "-o", f"type=oci,dest={out[0]}", *cache_args(tmp_path), env=EPOCH_ENV)
    again = dockwright("build", context, "-o", f"type=oci,dest={out[1]}", *cache_args(tmp_path), env=EPOCH_ENV)
    fresh = dockwright("build", context, "-o", f"type=oci,dest={out[2]}", "--no-cache", *cache_args(tmp_path),
                       env=EPOCH_ENV)

    assert "#1 running the step" in first.stderr
    assert "#1 running the step" not in again.stderr and "#1 cached" in again.stderr
    assert again.stdout == first.stdout  # the same image digest
    assert "#1 running the step" in fresh.stderr
    assert fresh.stdout != first.stdout  # it ran again: another random number


def test_flags_mode_run_steps_in_order_with_copies(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    context = dockerfile_context(tmp_path, "", {"app.txt": "from the context\n"})
    tag = f"{busybox_base.host}/apps/flags-run:1"

    dockwright("build", context, "--from", busybox_base.oci_ref, "--run", "mkdir /app && echo before > /app/order",
               "--copy", "app.txt:/app/app.txt", "--run", "cat /app/app.txt >> /app/order",
               "--user", "app", "--cmd", "cat /app/order; id -un", "-t", tag, "--push", *cache_args(tmp_path),
               env=EPOCH_ENV)

    assert run_pushed(tag, tmp_path) == ["before", "from the context", "app"]


def test_ctrl_c_stops_the_container_at_once_and_leaves_nothing(busybox_base: BusyboxBase, tmp_path: Path) -> None:
    context = dockerfile_context(tmp_path, f"FROM {busybox_base.oci_ref}\nRUN echo started; sleep 600\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "dockwright", "build", str(context), "-o",
                             f"type=oci,dest={tmp_path / 'out.tar'}", *cache_args(tmp_path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # wait until the command runs
        seen.append(line)
        if "#1 started" in line:
            break

    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=_GUARD)  # far less than the command's 600 s

    assert proc.returncode == 130, "".join(seen) + stderr
    assert "interrupted" in stderr and "Traceback" not in stderr and stdout == ""
    assert run_leftovers(tmp_path / "cache") == []
    assert not (tmp_path / "out.tar").exists()


def test_run_for_another_architecture_needs_qemu_and_says_so(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    if Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        pytest.skip("qemu-aarch64 is registered here: arm64 binaries would run")
    context = dockerfile_context(tmp_path, f"FROM {busybox_base.multi_ref}\nRUN echo must not run\n")

    proc = dockwright("build", context, "--platform", "linux/arm64", "-o", f"type=oci,dest={tmp_path / 'o.tar'}",
                      *cache_args(tmp_path), check=False)

    assert_user_error(proc, "Dockerfile:2:", "linux/arm64", "qemu-aarch64")
    assert "qemu-user-static" in proc.stderr and "#1 must not run" not in proc.stderr
    assert run_leftovers(tmp_path / "cache") == []


def test_builds_at_once_share_the_cache_safely(busybox_base: BusyboxBase, tmp_path: Path) -> None:
    """Two builds of RUN steps on one cache at the same time: both extract the base's layer directories
    (one wins the rename), both run, both give the same image, nothing is left behind."""
    context = dockerfile_context(tmp_path, f"FROM {busybox_base.oci_ref}\nRUN mkdir /made && echo one > /made/f\n"
                                 "RUN rm /bin/vi && ls /made > /listing\n")
    env = {**os.environ, **EPOCH_ENV,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen([sys.executable, "-m", "dockwright", "build", str(context), "-o",
                               f"type=oci,dest={tmp_path / f'out{i}.tar'}", *cache_args(tmp_path)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = [proc.communicate(timeout=_GUARD) for proc in procs]

    assert [proc.returncode for proc in procs] == [0, 0], results
    assert results[0][0] == results[1][0]  # the same image digest
    assert run_leftovers(tmp_path / "cache") == []


def test_quiet_shows_a_commands_output_only_when_it_fails(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    context = dockerfile_context(tmp_path, f"FROM {busybox_base.oci_ref}\nRUN echo chatty output\n")
    quiet = dockwright("build", context, "-q", "-o", f"type=oci,dest={tmp_path / 'o.tar'}", *cache_args(tmp_path))
    assert quiet.stderr == ""

    (context / "Dockerfile").write_text(f"FROM {busybox_base.oci_ref}\nRUN echo chatty output; exit 2\n")
    failed = dockwright("build", context, "-q", "-o", f"type=oci,dest={tmp_path / 'o2.tar'}", *cache_args(tmp_path),
                        check=False)
    assert_user_error(failed, "Dockerfile:2: RUN echo chatty output; exit 2: exit code 2")
    assert "chatty output" in failed.stderr.splitlines()[-1]


def test_the_library_s_cancel_kills_a_running_command(busybox_base: BusyboxBase, tmp_path: Path) -> None:
    import dockwright

    context = dockerfile_context(tmp_path, f"FROM {busybox_base.oci_ref}\nRUN echo started; sleep 600\n")
    with cancel_on_log("#1 started") as cancel, pytest.raises(dockwright.Cancelled):
        dockwright.build(context, cancel=cancel, cache_dir=tmp_path / "cache")
    assert run_leftovers(tmp_path / "cache") == []


def test_network_modes_runtime_flag_and_a_missing_workdir(
    dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path
) -> None:
    """--network=none leaves only loopback; the default is the host's network; --runtime names the runtime;
    a --workdir the base lacks is made for the command (as BuildKit does)."""
    context = dockerfile_context(tmp_path, "")
    tag = f"{busybox_base.host}/apps/network:1"
    runc = shutil.which("runc")
    assert runc is not None

    dockwright("build", context, "--from", busybox_base.oci_ref, "--runtime", runc, "--workdir", "/srv/new",
               "--run", "ls /sys/class/net | sort > host-net && pwd > where",
               "--run", '["/bin/sh", "-c", "ls /sys/class/net | sort > /srv/new/default-net"]',
               "-t", tag, "--push", *cache_args(tmp_path), env=EPOCH_ENV)
    (context / "Dockerfile").write_text(f"FROM {tag}\nRUN --network=none ls /sys/class/net > /none-net\n"
                                        'CMD ["cat", "/none-net", "/srv/new/where"]\n')
    dockwright("build", context, "-t", f"{tag}-none", "--push", *cache_args(tmp_path), env=EPOCH_ENV)

    assert run_pushed(f"{tag}-none", tmp_path) == ["lo", "/srv/new"]
    host = sorted(os.listdir("/sys/class/net"))
    assert run_pushed(tag, tmp_path, "cat", "/srv/new/host-net", "/srv/new/default-net") == host + host


def test_a_relative_cache_dir_works_for_run(dockwright: RunDockwright, busybox_base: BusyboxBase,
                                           tmp_path: Path) -> None:
    """`--cache-dir cache` (relative): the overlay mount and the runtime's spec need absolute paths."""
    context = dockerfile_context(tmp_path, f"FROM {busybox_base.oci_ref}\nRUN echo made > /made\n")
    dockwright("build", context, "-o", f"type=oci,dest={tmp_path / 'o.tar'}", "--cache-dir", "cache",
               cwd=tmp_path)
    assert [p.name for p in (tmp_path / "cache" / "rootfs").iterdir() if p.is_dir()]
    assert (pushed_rootfs(f"oci-archive:{tmp_path / 'o.tar'}", tmp_path) / "made").read_text() == "made\n"
    assert run_leftovers(tmp_path / "cache") == []


def test_an_unknown_runtime_is_one_error_line(dockwright: RunDockwright, busybox_base: BusyboxBase,
                                              tmp_path: Path) -> None:
    context = dockerfile_context(tmp_path, f"FROM {busybox_base.oci_ref}\nRUN true\n")
    proc = dockwright("build", context, "--runtime", "/nonexistent/runc", "-o",
                      f"type=oci,dest={tmp_path / 'o.tar'}", *cache_args(tmp_path), check=False)
    assert_user_error(proc, "Dockerfile:2:", "--runtime /nonexistent/runc: no such executable")


def test_setcap_capabilities_survive_into_the_image(dockwright: RunDockwright, debian: DebianBase,
                                                    tmp_path: Path) -> None:
    """A file capability (the security.capability xattr) set by a command is in the layer and in the
    running image, on the Debian base with setcap from the Debian mirror."""
    context = dockerfile_context(tmp_path, (
        f"FROM {debian.ref}\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends libcap2-bin "
        "&& cp /bin/sleep /usr/local/bin/portsleep && setcap cap_net_bind_service+ep /usr/local/bin/portsleep "
        "&& rm -rf /var/lib/apt/lists/*\n"
        'CMD ["getcap", "/usr/local/bin/portsleep"]\n'
    ))
    tag = f"{debian.host}/apps/setcap:1"

    lines = build_and_run(dockwright, context, tag, tmp_path)

    member = _layer_members(tag)["usr/local/bin/portsleep"]
    assert "SCHILY.xattr.security.capability" in member.pax_headers
    assert lines == ["/usr/local/bin/portsleep cap_net_bind_service=ep"]


def test_a_cache_on_overlayfs_says_to_use_a_volume(dockwright: RunDockwright, busybox_base: BusyboxBase,
                                                   tmp_path: Path) -> None:
    """As in a CI job's container, whose own file system is overlayfs: an overlay's upper directory cannot
    live there, and the error says where to put the cache instead (with DOCKWRIGHT_OVERLAY=kernel; else
    fuse-overlayfs takes over, see below)."""
    layers = [tmp_path / name for name in ("lower", "upper", "work", "merged")]
    for directory in layers:
        directory.mkdir()
    lower, upper, work, merged = layers
    sh("mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}", merged)
    try:
        context = dockerfile_context(tmp_path, f"FROM {busybox_base.oci_ref}\nRUN true\n")
        proc = dockwright("build", context, "-o", f"type=oci,dest={tmp_path / 'o.tar'}", "--cache-dir",
                          merged / "cache", check=False, env={"DOCKWRIGHT_OVERLAY": "kernel"})
        assert_user_error(proc, "Dockerfile:2:", "cannot mount the overlay root file system")
        assert "--cache-dir" in proc.stderr and "volume" in proc.stderr
        assert hint_of(proc).startswith("dockwright's cache is on overlayfs"), proc.stderr
        assert "--cache-dir" in hint_of(proc) and "at a volume" in hint_of(proc)
        assert run_leftovers(merged / "cache") == []
    finally:
        sh("umount", merged)


@pytest.mark.requires("fuse-overlayfs")
def test_where_overlayfs_cannot_be_mounted_fuse_overlayfs_runs_the_step(
        dockwright: RunDockwright, busybox_base: BusyboxBase, tmp_path: Path) -> None:
    """The same cache on overlayfs: the kernel refuses the overlay (EINVAL), fuse-overlayfs mounts it, the
    log says so once, and the image is the one a cache on a volume gives; no mount or daemon is left."""
    layers = [tmp_path / name for name in ("lower", "upper", "work", "merged")]
    for directory in layers:
        directory.mkdir()
    lower, upper, work, merged = layers
    context = dockerfile_context(tmp_path, f"FROM {busybox_base.oci_ref}\n"
                                           "RUN rm /bin/vi && mkdir -p /srv/a && echo one > /srv/a/f\n"
                                           "RUN rm -r /srv/a && mkdir /srv/a && chown 7:8 /srv/a\n")
    dockwright("build", context, "-o", f"type=oci,dest={tmp_path / 'volume'},tar=false", "--cache-dir",
               tmp_path / "cache", env=EPOCH_ENV)
    sh("mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}", merged)
    try:
        proc = dockwright("build", context, "-o", f"type=oci,dest={tmp_path / 'fuse'},tar=false", "--cache-dir",
                          merged / "cache", env=EPOCH_ENV)
        assert proc.stderr.count("RUN uses fuse-overlayfs") == 1, proc.stderr
        assert "Invalid argument" in proc.stderr
        assert run_leftovers(merged / "cache") == []
        assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline_has(pid, str(merged))]
    finally:
        sh("umount", merged)
    index = [json.loads((tmp_path / name / "index.json").read_text()) for name in ("volume", "fuse")]
    assert index[0]["manifests"][0]["digest"] == index[1]["manifests"][0]["digest"]


def _cmdline_has(pid: str, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
