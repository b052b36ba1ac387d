"""Sinks for a built image: a registry, a docker-archive, an OCI archive or layout, a local engine."""
