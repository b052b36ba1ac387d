"""The Dockerfile frontend: Dockerfile (+ .dockerignore) -> BuildPlan, with Docker's semantics."""

from dockwright.frontends.dockerfile.frontend import plan_from_dockerfile
from dockwright.frontends.dockerfile.stages import parse_build_args

__all__ = ["parse_build_args", "plan_from_dockerfile"]
