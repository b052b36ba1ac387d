"""The OCI distribution client: the only part of dockwright that speaks HTTP to registries."""

from dockwright.registry.client import Registries, RegistryClient

__all__ = ["Registries", "RegistryClient"]
