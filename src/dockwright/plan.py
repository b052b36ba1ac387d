"""The build plan: what to build, as pure data. Frontends (flags, Dockerfile) produce it; build.py
executes it. No I/O here.

A plan is made for one target platform (Dockerfile ARGs such as TARGETARCH depend on it). It holds
the stages the target needs, in build order; the last stage is the target. Each stage starts from a
base (a registry reference, `scratch`, an `oci-layout://` / `docker-archive://` source, or an earlier
stage) and applies its steps in order: every CopyStep makes one layer, a MkdirStep one unless its
directory exists (see MkdirStep), every ConfigStep
edits the config (and, when it has `created_by`, adds an empty-layer history entry), every RunStep
runs a command and makes one layer of what it changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

PullPolicy = Literal["always", "missing", "never"]


@dataclass(frozen=True)
class ConfigEdit:
    """Changes to the image config. None / empty means "leave as inherited from the base".

    `cmd=()` clears Cmd (Docker's rule: ENTRYPOINT resets an inherited CMD). `env` and `labels` are
    applied in order, later keys replacing earlier ones; values are already expanded by the frontend.
    `healthcheck` is Docker's Healthcheck object ({"Test": ["NONE"]} disables an inherited one).

    `deferred`: the Dockerfile frontend cannot know the base image's Env, so `ENV PATH=/x:$PATH`
    cannot be expanded up front. Such an edit has deferred=True: its env values, label values,
    workdir and user are templates (`${NAME}` references, literal `\\`, `$`, `}` backslash-escaped)
    and a relative workdir is relative to the inherited one. The executor
    calls `dockwright.deferred.resolve_deferred(edit, inherited_env, inherited_workdir)` first.
    """

    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    workdir: str | None = None
    user: str | None = None
    exposed_ports: tuple[str, ...] = ()  # "80/tcp" (the frontend adds /tcp when no protocol is given)
    volumes: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    stop_signal: str | None = None
    healthcheck: dict[str, object] | None = None
    onbuild: tuple[str, ...] = ()  # appended to the inherited OnBuild list
    shell: tuple[str, ...] | None = None
    author: str | None = None  # MAINTAINER
    deferred: bool = False


@dataclass(frozen=True)
class ConfigStep:
    edit: ConfigEdit
    created_by: str = ""  # non-empty: add an empty_layer history entry with this text


@dataclass(frozen=True)
class CopyStep:
    """One layer of files, with Dockerfile COPY/ADD semantics.

    `sources` are paths (wildcards allowed) relative to the build context, or to the root of
    `from_stage` / `from_image` when set. `dest` is as written: a relative dest is resolved against
    the WorkingDir in force when the step runs; a dest ending in `/` is a directory.
    `chown` is "USER[:GROUP]" (names resolved against the image's /etc/passwd and /etc/group, numbers
    used as they are); `chmod` an octal string. `inline_files` are heredoc files (name, content)
    that take the place of sources.
    """

    sources: tuple[str, ...]
    dest: str
    chown: str | None = None
    chmod: str | None = None
    from_stage: int | None = None  # index into BuildPlan.stages
    from_image: str | None = None  # an image reference (COPY --from=IMAGE)
    from_context: str | None = None  # a directory named with --build-context: BuildPlan.contexts, by name
    parents: bool = False
    excludes: tuple[str, ...] = ()
    add: bool = False  # ADD: extract local tar archives; sources may be URLs
    checksum: str | None = None  # ADD --checksum for a URL source
    inline_files: tuple[tuple[str, bytes], ...] = ()
    created_by: str = ""
    line: int | None = None  # Dockerfile line, for error messages


def is_octal_mode(text: str) -> bool:
    """Whether a --chmod value is a mode BuildKit takes: octal digits (leading zeros allowed), 0 to 7777."""
    return text.isascii() and text.isdigit() and "8" not in text and "9" not in text and int(text, 8) <= 0o7777


@dataclass(frozen=True)
class MkdirStep:
    """Dockerfile WORKDIR: a layer with the directory and its missing parents, owned by the stage's USER
    at build time, unless they exist (then an empty-layer history entry). `covered`: a later COPY/ADD of
    the stage writes into the directory, which creates it anyway when root would own it."""

    path: str
    covered: bool = False
    created_by: str = ""


@dataclass(frozen=True)
class RunMount:
    """A RUN --mount, as BuildKit names its options. `type`: bind | cache | secret | tmpfs.

    bind: `source` below the root of `from_stage` / `from_image` / `from_context` (a directory named with
    --build-context: BuildPlan.contexts, by name) / the build context (none of them set), read-only
    unless `readonly=False` (then writes are discarded). cache: `id` (default: target), `sharing`
    shared|private|locked, seeded from `from_*`+`source`. secret: `id` names the secret, `env` exposes it
    as a variable instead of (or besides) a file at `target`. tmpfs: `size` in bytes (0: no limit).
    `mode`/`uid`/`gid` are None when not given (each type has its default). A relative `target` is
    relative to the WORKDIR in force."""

    type: str
    target: str = ""
    source: str = ""
    from_stage: int | None = None  # index into BuildPlan.stages
    from_image: str | None = None
    from_context: str | None = None
    readonly: bool = True
    id: str = ""
    sharing: str = "shared"
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    required: bool = False
    env: str = ""
    size: int = 0


@dataclass(frozen=True)
class RunStep:
    """A command run in the stage's file system (through an OCI runtime); what it changes is one layer.

    `command` is the shell form's string (run through `shell`, else the image config's Shell, else
    /bin/sh -c) or the exec form's argv (a tuple). `files` are heredoc scripts (name, content) the
    command finds at /dev/pipes/NAME. `args` are the build args whose values the command sees as
    environment variables (over the config's Env, never written to the config): those with a value,
    declared after any ENV of the same name; when `deferred` their values are templates as in ConfigEdit
    (they used the base image's Env). `env_order`: the keys the stage's ENV and ARG set, by their last
    setting (BuildKit orders the command's environment so). `arg_names`: every ARG the stage declared,
    with a value or not, for the history (`RUN |N K=V ...`). `network`: default | none | host."""

    command: str | tuple[str, ...]
    shell: tuple[str, ...] | None = None
    files: tuple[tuple[str, bytes], ...] = ()
    args: tuple[tuple[str, str], ...] = ()
    deferred: bool = False
    proxies: tuple[tuple[str, str], ...] = ()  # HTTP_PROXY & co. from --build-arg: in the env, not the history
    arg_names: tuple[str, ...] = ()
    env_order: tuple[str, ...] = ()
    network: str = "default"
    mounts: tuple[RunMount, ...] = ()
    line: int | None = None
    created_by: str = ""  # "" : the executor writes BuildKit's `RUN [|N K=V ...] ARGV # buildkit`


Step = ConfigStep | CopyStep | MkdirStep | RunStep


@dataclass(frozen=True)
class Stage:
    base: str  # registry reference, "scratch", "oci-layout://DIR[:TAG]", "oci-archive://FILE[:TAG]", "docker-archive://FILE"
    steps: tuple[Step, ...] = ()
    name: str | None = None
    base_stage: int | None = None  # when FROM names an earlier stage: its index in BuildPlan.stages
    platform: str | None = None  # FROM --platform=..., already expanded
    line: int | None = None  # where the stage starts in the Dockerfile, for messages


@dataclass(frozen=True)
class NamedContext:
    """`--build-context NAME=...` (buildx): what `FROM NAME` and `COPY --from=NAME` use instead of the stage or
    image of that name. `source` is a base spec (a registry reference, `oci-layout://DIR[:TAG]`,
    `oci-archive://FILE[:TAG]`) or, when `directory`, a directory read like the build context, with its own
    `.dockerignore` patterns (`dockerignore`, read by the caller)."""

    name: str
    source: str
    directory: bool = False
    dockerignore: tuple[str, ...] = ()


@dataclass(frozen=True)
class BuildPlan:
    context: Path
    stages: tuple[Stage, ...]
    platform: str | None = None  # the target platform the plan was made for ("linux/amd64")
    annotations: tuple[tuple[str, str], ...] = ()  # manifest (and index) annotations
    dockerignore: tuple[str, ...] = ()  # .dockerignore patterns, applied to context sources
    source: str = "flags"  # "flags" or the Dockerfile path, for messages
    contexts: tuple[NamedContext, ...] = ()  # the named contexts the plan's steps use

    def context_of(self, step: CopyStep) -> tuple[Path, tuple[str, ...]]:
        """The directory a context COPY reads and its ignore patterns: a named context's, or the build context's."""
        if step.from_context is None:
            return self.context, self.dockerignore
        named = next(c for c in self.contexts if c.name == step.from_context)
        return Path(named.source), named.dockerignore

    @property
    def target(self) -> Stage:
        return self.stages[-1]


@dataclass(frozen=True)
class Secret:
    """`--secret id=ID,src=FILE` or `--secret id=ID,env=VARIABLE`: where a secret's value is read, when a
    RUN mounts it (run/mounts.py)."""

    id: str
    file: str | None = None
    env: str | None = None


@dataclass
class BuildOptions:
    """How to build (not what to build, nor where the result goes)."""

    platforms: str | None = None  # --platform text; None = host
    format: str | None = None  # "oci" | "docker" | None (follow the base)
    insecure_registries: tuple[str, ...] = ()
    compression: str = "gzip"
    compression_level: int | None = None
    jobs: int = 4
    cache_dir: Path | None = None
    use_cache: bool = True
    source_date_epoch: int = 0
    isolation: str = "oci"  # how RUN steps run: see dockwright.run.isolation
    runtime: str | None = None  # the OCI runtime for RUN (a path); None: runc or crun from PATH
    pull: PullPolicy = "always"  # always: check base tags with HEAD; missing: trust cached tags; never: no asking
    secrets: tuple[Secret, ...] = ()  # what RUN --mount=type=secret may read (where from, never the value)
