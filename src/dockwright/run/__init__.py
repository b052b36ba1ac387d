"""RUN: commands run in a stage's file system through an OCI runtime; what they change is a layer.

snapshots.py  layer directories for overlayfs (whole trees for chroot), one per layer chain, kept in the cache
command.py    the argv, environment and history text of a RunStep
spec.py       the OCI runtime spec (config.json): process, user, mounts, namespaces
isolation.py  which runtime runs the container (--isolation, --runtime) and what is missing
userns.py     rootless: the build started again in a user namespace of its own
worker.py     rootless for a library caller: one RUN step in a child started in a user namespace
mounts.py     RUN --mount (cache, bind, secret, tmpfs): prepared on the host, mounted, cleaned up
contextview.py a context directory as a bind mount sees it: without what .dockerignore excludes
container.py  one container run: overlay mount, runtime, live output, clean-up
fuseoverlay.py fuse-overlayfs where the kernel's overlayfs cannot mount; its upper dir made the kernel's form
diff.py       the overlay upper directory -> the layer's tar entries
chroot.py     --isolation chroot: no runtime, overlay or namespace; a copied root file system per RUN
chrootfiles.py what a chroot run places over the root (/dev, /etc/hosts, mounts) and takes back
chrootexec.py the process that chroots, drops to the USER and execs the command
treediff.py   a plain tree's changes since a metadata snapshot -> the layer's tar entries
steps.py      the executor's RUN step: inputs, cache key, run -> layer (the executor calls it, and mounts.MountSources)
"""
