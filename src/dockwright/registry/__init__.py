"""The OCI distribution client: the only part of dockwright that speaks HTTP to registries."""

from dockwright.httpimport import httpx

httpx()  # before the client modules import it: see httpimport
from dockwright.registry.client import Registries, RegistryClient  # noqa: E402

__all__ = ["Registries", "RegistryClient"]
