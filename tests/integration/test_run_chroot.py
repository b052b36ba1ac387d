"""`--isolation chroot`: RUN without a runtime, an overlay or a namespace, for CI pods that run as root
without CAP_SYS_ADMIN.

The same Dockerfiles built with chroot isolation and with the default (runc on an overlay root) give the
same images: Dockerfile-set config, history and merged file tree (paths, types, modes with setuid, owners,
contents, link targets, hard links; timestamps aside), over the cases the oci tests cover. Then it runs
with CAP_SYS_ADMIN dropped from the whole process tree (setpriv, util-linux), where the oci path cannot
mount; a failing command, Ctrl-C and processes a command leaves running leave nothing behind; RUN mounts
and --network=none."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from build_checks import (
    EPOCH_ENV,
    assert_output_tail,
    assert_user_error,
    cache_args,
    cancel_on_log,
    dockerfile_context,
)
from conftest import SRC, RunDockwright
from debian import DebianBase
from dockerfile_compare import file_tree, read_config, tree_differences
from images import BusyboxBase, run_oci_image, sh
from run_cases import DEBIAN_USERADD_AND_REMOVED_DOCS

pytestmark = pytest.mark.requires("runc", "umoci")
_GUARD = 120  # seconds: a guard against hangs, not an assertion
_NO_SYS_ADMIN = ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin"]

CASES = {
    "whiteouts-opaque-and-in-place-changes": (
        "FROM {base}\n"
        "RUN rm /etc/group && rm -r /usr/sbin && chmod 0600 /etc/passwd && chown 1000:1000 /root"
        " && ln -s /bin/busybox /usr/bin/bb && mkdir -p /opt/tree/deeper /opt/dir && echo made > /opt/tree/deeper/file"
        " && ln -s ../tree /opt/link && echo old > /opt/file && echo keep > /opt/dir/keep\n"
        "RUN rm /opt/tree/deeper/file && rmdir /opt/tree/deeper && touch /opt/tree/new && rm /usr/bin/bb"
        " && echo appended >> /etc/passwd && rm -rf /opt/dir && echo now-a-file > /opt/dir"
        " && rm /opt/file && mkdir /opt/file && echo inside > /opt/file/x && mkfifo /opt/fifo\n"
        "RUN rm -rf /usr/bin && mkdir -m 0750 /usr/bin && ln -s /bin/busybox /usr/bin/env"
        " && mv /opt/tree /opt/moved && chmod 0700 /opt/moved\n"
    ),
    "setuid-hardlinks-heredoc-shell-user": (
        "FROM {base}\n"
        "RUN cp /bin/busybox /bin/suid && chmod 4755 /bin/suid && ln /bin/suid /bin/suid-link"
        " && ln -s /bin/suid /bin/suid-sym && mkdir -m 1777 /shared && chown app:app /home/app\n"
        "RUN <<EOF\n"
        "echo first line of a heredoc > /heredoc.txt\n"
        "echo second line >> /heredoc.txt\n"
        "EOF\n"
        'SHELL ["/bin/sh", "-ec"]\n'
        'RUN echo "shell $0 with -e" > /shell.txt\n'
        'RUN ["/bin/sh", "-c", "echo exec form > /exec.txt"]\n'
        "USER app\n"
        "WORKDIR /home/app/work\n"
        "RUN id > ids && echo home=$HOME >> ids && touch /shared/by-app && ln ids ids-link\n"
        "USER root\n"
        "RUN ln /heredoc.txt /heredoc-link && echo more >> /heredoc.txt && chown 1000:1000 /heredoc.txt\n"
    ),
    "debian-useradd-and-removed-docs": DEBIAN_USERADD_AND_REMOVED_DOCS,
}


def _base(name: str, request: pytest.FixtureRequest) -> str:
    if name.startswith("debian"):
        debian: DebianBase = request.getfixturevalue("debian_files")
        return f"oci-layout://{debian.layout}:latest"
    busybox: BusyboxBase = request.getfixturevalue("busybox_files")
    return f"oci-layout://{busybox.layout}:latest"


def _leftovers(cache: Path, marker: str = "") -> list[str]:
    """What a chroot RUN could leave behind: temporary trees, trees left for a later RUN that none took, mounts,
    processes rooted in the cache or running `marker`."""
    temps = [p.name for name in ("rootfs-chroot", "tmp") for p in (cache / name).glob("*")
             if name == "tmp" or p.name.startswith(("tmp-", "left-"))]
    mounts = [line for line in Path("/proc/mounts").read_text().splitlines() if str(cache) in line]
    processes = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            root = os.readlink(f"/proc/{pid}/root")
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if root.startswith(str(cache)) or (marker and marker in command):
            processes.append(f"{pid} {command}")
    return temps + mounts + processes


def _build(dockwright: RunDockwright, context: Path, layout: Path, name: str, *options: str) -> None:
    dockwright("build", context, "-t", f"diff:{name}", "-o", f"type=oci,dest={layout},tar=false",
               *cache_args(layout.parent, f"cache-{name}"), *options, env=EPOCH_ENV)


@pytest.mark.parametrize("name", sorted(CASES))
def test_chroot_gives_the_same_image_as_the_oci_runtime(name: str, dockwright: RunDockwright,
                                                        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    context = dockerfile_context(tmp_path, CASES[name].replace("{base}", _base(name, request)))

    _build(dockwright, context, tmp_path / "oci", "oci")
    _build(dockwright, context, tmp_path / "chroot", "chroot", "--isolation", "chroot")

    ours, reference = read_config(tmp_path / "chroot", "chroot"), read_config(tmp_path / "oci", "oci")
    assert ours["config"] == reference["config"]
    assert [h["created_by"] for h in ours["history"]] == [h["created_by"] for h in reference["history"]]
    chroot_tree, oci_tree = (file_tree(tmp_path / kind, kind, tmp_path) for kind in ("chroot", "oci"))
    assert len(oci_tree) > 10
    differences = tree_differences(chroot_tree, oci_tree)
    assert differences == [], "file trees differ (dockwright= is chroot, buildah= is oci):\n" + "\n".join(differences)
    assert _leftovers(tmp_path / "cache-chroot") == []


def _unprivileged(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`python -m dockwright ARGS` as root without CAP_SYS_ADMIN (nor can anything it starts get it back)."""
    env = {**os.environ, **EPOCH_ENV,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([*_NO_SYS_ADMIN, sys.executable, "-m", "dockwright", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=_GUARD * 3, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.mark.requires("setpriv")
def test_it_needs_no_mount_or_namespace_privilege(busybox_files: BusyboxBase, tmp_path: Path) -> None:
    context = dockerfile_context(tmp_path, (
        f"FROM oci-layout://{busybox_files.layout}:latest\n"
        "RUN grep CapEff /proc/self/status || echo no /proc here\n"
        "RUN (unshare -m true 2>/dev/null && echo can unshare) || echo cannot unshare\n"
        "RUN echo builder:x:1500:1500::/srv:/bin/sh >> /etc/passwd && echo builder:x:1500: >> /etc/group"
        " && mkdir -p /srv/data && chown builder:builder /srv/data && rm /bin/vi"
        " && mknod /srv/data/null c 1 3\n"
        "USER builder\n"
        "RUN id > /srv/data/id && cat /dev/null && echo ok > /dev/null\n"
        "RUN head -c 4 /dev/urandom | wc -c > /srv/data/n\n"
    ))

    oci = _unprivileged("build", context, "-o", f"type=oci,dest={tmp_path / 'oci.tar'}",
                        *cache_args(tmp_path, "oci-cache"), check=False)
    proc = _unprivileged("build", context, "--isolation", "chroot", "-t", "diff:chroot", "-o",
                         f"type=oci,dest={tmp_path / 'image'},tar=false", *cache_args(tmp_path))

    assert_user_error(oci, "--isolation oci needs CAP_SYS_ADMIN")  # what chroot isolation is for
    assert "hint: use --isolation chroot" in oci.stderr
    assert "#1 no /proc here" in proc.stderr and "#2 cannot unshare" in proc.stderr
    assert {"#1 no /proc here", "#2 cannot unshare"} <= set(proc.stderr.splitlines())  # the commands' whole lines
    assert "RUN commands get no /proc and no /sys" in proc.stderr
    tree = file_tree(tmp_path / "image", "chroot", tmp_path)
    assert tree["/srv/data"].owner == "1500:1500" and "/bin/vi" not in tree
    assert tree["/srv/data/null"].kind == "special(20000)"
    rootfs = tmp_path / "rootfs"
    sh("umoci", "raw", "unpack", "--image", f"{tmp_path / 'image'}:chroot", rootfs)
    assert (rootfs / "srv/data/id").read_text() == "uid=1500(builder) gid=1500(builder) groups=1500(builder)\n"
    assert (rootfs / "srv/data/n").read_text().strip() == "4"
    assert not (rootfs / "dev").exists() or not any((rootfs / "dev").iterdir())
    assert _leftovers(tmp_path / "cache") == []


@pytest.mark.requires("setpriv")
def test_apt_get_install_without_mount_privilege_and_the_program_runs(debian_files: DebianBase,
                                                                      tmp_path: Path) -> None:
    """The usual CI Dockerfile, with apt's caches as cache mounts, where no container could start; a file
    capability set by one RUN (CAP_SETFCAP is a default capability) is in the image and seen by the next."""
    context = dockerfile_context(tmp_path, (
        f"FROM oci-layout://{debian_files.layout}:latest\n"
        "RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\\n"
        "    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \\\n"
        "    apt-get update && apt-get install -y --no-install-recommends hello libcap2-bin\n"
        "RUN cp /bin/sleep /usr/local/bin/portsleep && setcap cap_net_bind_service+ep /usr/local/bin/portsleep\n"
        "RUN getcap /usr/local/bin/portsleep > /caps-seen-by-the-next-run\n"
        'CMD ["hello"]\n'
    ))

    _unprivileged("build", context, "--isolation", "chroot", "-t", "diff:chroot", "-o",
                  f"type=oci,dest={tmp_path / 'image'},tar=false", *cache_args(tmp_path))

    assert run_oci_image(tmp_path / "image", "chroot", tmp_path).splitlines() == ["Hello, world!"]
    assert run_oci_image(tmp_path / "image", "chroot", tmp_path, ["sh", "-c", "getcap /usr/local/bin/portsleep; "
                         "cat /caps-seen-by-the-next-run"]).splitlines() == \
        ["/usr/local/bin/portsleep cap_net_bind_service=ep"] * 2  # setcap's xattr: in the layer, and in the tree
    tree = file_tree(tmp_path / "image", "chroot", tmp_path)
    assert "/usr/bin/hello" in tree and not any(path.endswith(".deb") for path in tree)
    assert any((tmp_path / "cache/run-cache").rglob("hello_*.deb"))  # kept in the cache mount
    assert _leftovers(tmp_path / "cache") == []


def test_a_failing_command_names_the_line_and_leaves_nothing(dockwright: RunDockwright, busybox_files: BusyboxBase,
                                                             tmp_path: Path) -> None:
    context = dockerfile_context(tmp_path, (
        f"FROM oci-layout://{busybox_files.layout}:latest\n"
        "RUN echo fine > /fine\n"
        "RUN echo about to fail; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line $i; done; exit 3\n"
    ))
    out = tmp_path / "out.tar"

    proc = dockwright("build", context, "--isolation", "chroot", "-o", f"type=oci,dest={out}", *cache_args(tmp_path),
                      check=False)

    assert_user_error(proc, "Dockerfile:3: RUN echo about to fail;", "exit code 3")
    assert_output_tail(proc, [f"line {i}" for i in range(3, 13)])  # the last ten lines of its output
    assert not out.exists()
    assert _leftovers(tmp_path / "cache") == []


def test_processes_a_command_leaves_running_are_ended_with_it(dockwright: RunDockwright, busybox_files: BusyboxBase,
                                                              tmp_path: Path) -> None:
    """As a container's end would: a background job and a daemon in a session of its own."""
    context = dockerfile_context(tmp_path, (
        f"FROM oci-layout://{busybox_files.layout}:latest\n"
        "RUN sleep 3171 & setsid sleep 3172 & echo started > /started\n"
    ))
    # the build ends with the command, not with the sleeps it left (a wait for them times out the guard)
    dockwright("build", context, "--isolation", "chroot", "-o", f"type=oci,dest={tmp_path / 'out.tar'}",
               *cache_args(tmp_path), timeout=_GUARD)

    assert _leftovers(tmp_path / "cache", "sleep 317") == []


def test_ctrl_c_kills_the_command_at_once_and_leaves_nothing(busybox_files: BusyboxBase, tmp_path: Path) -> None:
    context = dockerfile_context(tmp_path, f"FROM oci-layout://{busybox_files.layout}:latest\n"
                                           "RUN echo started; sleep 3173\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "dockwright", "build", str(context), "--isolation", "chroot", "-o",
                             f"type=oci,dest={tmp_path / 'out.tar'}", *cache_args(tmp_path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "#1 started" in line:
            break

    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=_GUARD)

    assert proc.returncode == 130, "".join(seen) + stderr
    assert "interrupted" in stderr and "Traceback" not in stderr and stdout == ""
    assert _leftovers(tmp_path / "cache", "sleep 3173") == []
    assert not (tmp_path / "out.tar").exists()


def test_the_library_s_cancel_kills_the_command(busybox_files: BusyboxBase, tmp_path: Path) -> None:
    import dockwright

    context = dockerfile_context(tmp_path, f"FROM oci-layout://{busybox_files.layout}:latest\n"
                                           "RUN echo started; sleep 3174\n")
    with cancel_on_log("#1 started") as cancel, pytest.raises(dockwright.Cancelled):
        dockwright.build(context, cancel=cancel, cache_dir=tmp_path / "cache", isolation="chroot")
    assert _leftovers(tmp_path / "cache", "sleep 3174") == []


def test_run_mounts_without_mounting(dockwright: RunDockwright, busybox_files: BusyboxBase, tmp_path: Path) -> None:
    """cache (moved in and out: persists, never in the image), secret (copied in, removed, never in a blob),
    tmpfs (an empty directory), bind from a stage and from the context (copies: writes are discarded)."""
    base = f"oci-layout://{busybox_files.layout}:latest"
    context = dockerfile_context(tmp_path, (
        f"FROM {base} AS tools\n"
        "RUN mkdir /out && echo from-the-stage > /out/tool\n"
        f"FROM {base}\n"
        "RUN --mount=type=cache,id=runs,target=/var/cache/runs \\\n"
        "    echo run >> /var/cache/runs/log && wc -l < /var/cache/runs/log > /runs\n"
        "RUN --mount=type=secret,id=token,uid=1000 --mount=type=tmpfs,target=/scratch \\\n"
        "    stat -c '%u %a' /run/secrets/token > /secret-stat && wc -c < /run/secrets/token > /secret-size"
        " && touch /scratch/x && ls -ld /scratch | cut -c1-10 > /scratch-mode\n"
        "RUN --mount=type=bind,from=tools,source=/out,target=/mnt/tools \\\n"
        "    --mount=type=bind,source=data,target=/mnt/data,rw \\\n"
        "    cat /mnt/tools/tool /mnt/data/file > /bound && echo changed > /mnt/data/file\n"
    ), {"data/file": "from-the-context\n"})
    secret = tmp_path / "token.txt"
    secret.write_text("s3cr3t-value-42")
    layout = tmp_path / "image"

    def build() -> subprocess.CompletedProcess[str]:
        return dockwright("build", context, "--isolation", "chroot", "--no-cache", "--cache-dir", tmp_path / "cache",
                          "--secret", f"id=token,src={secret}", "-t", "diff:chroot", "-o",
                          f"type=oci,dest={layout},tar=false", env=EPOCH_ENV)

    build()
    proc = build()

    rootfs = tmp_path / "rootfs"
    sh("umoci", "raw", "unpack", "--image", f"{layout}:chroot", rootfs)
    assert (rootfs / "runs").read_text().strip() == "2"  # the cache persisted across the builds
    assert not (rootfs / "var/cache/runs").exists()
    assert (rootfs / "secret-stat").read_text() == "1000 400\n"
    assert (rootfs / "secret-size").read_text().strip() == "15"
    assert not (rootfs / "run/secrets").exists() and not (rootfs / "scratch").exists()
    assert (rootfs / "scratch-mode").read_text() == "drwxrwxrwt\n"
    assert (rootfs / "bound").read_text() == "from-the-stage\nfrom-the-context\n"
    assert (context / "data/file").read_text() == "from-the-context\n"
    assert not list(rootfs.glob("mnt/*/*"))
    assert all(b"s3cr3t-value-42" not in path.read_bytes() for path in (layout / "blobs/sha256").iterdir())
    assert "s3cr3t-value-42" not in proc.stderr
    assert (tmp_path / "cache/run-cache").is_dir() and _leftovers(tmp_path / "cache") == []


def test_network_none_cannot_be_honoured(dockwright: RunDockwright, busybox_files: BusyboxBase, tmp_path: Path) -> None:
    context = dockerfile_context(tmp_path, f"FROM oci-layout://{busybox_files.layout}:latest\n"
                                           "RUN --network=none echo must not run\n")

    proc = dockwright("build", context, "--isolation", "chroot", "-o", f"type=oci,dest={tmp_path / 'o.tar'}",
                      *cache_args(tmp_path), check=False)

    assert_user_error(proc, "Dockerfile:2: RUN echo must not run: --network=none", "--isolation chroot")
    assert "#1 must not run" not in proc.stderr
    assert _leftovers(tmp_path / "cache") == []
