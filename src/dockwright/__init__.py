"""dockwright: build OCI and Docker images without a daemon."""

__version__ = "0.1.0"
