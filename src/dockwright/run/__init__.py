"""RUN: commands run in a stage's file system through an OCI runtime; what they change is a layer.

snapshots.py  layer directories for overlayfs, one per layer chain, kept in the cache
command.py    the argv, environment and history text of a RunStep
spec.py       the OCI runtime spec (config.json): process, user, mounts, namespaces
isolation.py  which runtime runs the container (--isolation, --runtime) and what is missing
userns.py     rootless: the build started again in a user namespace of its own
mounts.py     RUN --mount (cache, bind, secret, tmpfs): prepared on the host, mounted, cleaned up
container.py  one container run: overlay mount, runtime, live output, clean-up
diff.py       the overlay upper directory -> the layer's tar entries
chroot.py     --isolation chroot: no runtime, overlay or namespace; a copied root file system per RUN
chrootfiles.py what a chroot run places over the root (/dev, /etc/hosts, mounts) and takes back
chrootexec.py the process that chroots, drops to the USER and execs the command
treediff.py   a plain tree's changes since a metadata snapshot -> the layer's tar entries
steps.py      the executor's RUN step: inputs, cache key, run -> layer (the only module the executor calls)
"""
