"""Dockerfiles that more than one RUN test builds (`{base}` stands for the base image's reference)."""

from __future__ import annotations

# users, groups and removed files on the debootstrapped Debian base: useradd, groupadd, install with setuid
DEBIAN_USERADD_AND_REMOVED_DOCS = (
    "FROM {base}\n"
    "RUN groupadd --gid 1500 crew && useradd --create-home --uid 1500 --gid crew --groups users"
    " --shell /bin/bash alice\n"
    "RUN rm -rf /usr/share/doc/* /usr/share/man /usr/share/locale && chmod 0700 /root"
    " && install -m 4750 -g crew /bin/true /usr/local/bin/crew-true\n"
    "USER alice\n"
    "WORKDIR /home/alice/project\n"
    'RUN id > ids && echo "home=$HOME shell=$SHELL" >> ids && install -d -m 0750 private\n'
)
