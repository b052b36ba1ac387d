"""The Dockerfile frontend: Dockerfile (+ .dockerignore) -> BuildPlan, with Docker's semantics."""

from dockwright.dockerfile.deferred import resolve_deferred
from dockwright.dockerfile.frontend import plan_from_dockerfile
from dockwright.dockerfile.ignore import parse_dockerignore, read_dockerignore
from dockwright.dockerfile.stages import parse_build_args

__all__ = ["parse_build_args", "parse_dockerignore", "plan_from_dockerfile", "read_dockerignore",
           "resolve_deferred"]
