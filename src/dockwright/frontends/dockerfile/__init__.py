"""The Dockerfile frontend: Dockerfile (+ .dockerignore) -> BuildPlan, with Docker's semantics."""

from dockwright.frontends.dockerfile.frontend import plan_from_dockerfile
from dockwright.frontends.dockerfile.stages import parse_build_args
from dockwright.layers.dockerignore import parse_dockerignore, read_dockerignore

__all__ = ["parse_build_args", "parse_dockerignore", "plan_from_dockerfile", "read_dockerignore"]
