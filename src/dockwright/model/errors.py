"""The error hierarchy. Every user-facing failure is a DockwrightError: the CLI prints
its message (one or two lines: what failed, where, what to do; a failed command's output between them)
and exits non-zero."""

from __future__ import annotations

from typing import Self


class DockwrightError(Exception):
    """A failure the user can act on. `hint` is the 'what to do about it' line; `details` are lines shown
    between the two (a failed RUN's last lines of output)."""

    exit_code = 1
    details: tuple[str, ...] = ()

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        hint = [f"  hint: {self.hint}"] if self.hint else []
        return "\n".join([self.message, *(f"  {line}" for line in self.details), *hint])

    def with_context(self, prefix: str) -> Self:
        """The same error (type, hint, fields) with `prefix` before its message, e.g. "Dockerfile:3: ".
        Raise it `from` this one; this one is left as it was."""
        error = type(self).__new__(type(self))
        error.__dict__.update(self.__dict__)
        error.message = f"{prefix}{self.message}"
        error.args = (error.message,)
        return error


class UsageError(DockwrightError):
    """Bad command-line input: a flag, a reference, a platform, conflicting outputs."""

    exit_code = 2


class Cancelled(DockwrightError):
    """The embedding program cancelled the operation (its cancel event was set)."""

    exit_code = 130


class InvalidReferenceError(UsageError):
    """A malformed image reference."""


class ContextError(DockwrightError):
    """A problem with a file in the build context (names the path)."""


class DockerfileError(DockwrightError):
    """A Dockerfile that cannot be built (names file and line)."""


class ImageFormatError(DockwrightError):
    """A manifest, index, config or archive that does not follow the spec."""


class DigestMismatchError(DockwrightError):
    """Downloaded bytes do not match their digest or size."""


class RegistryError(DockwrightError):
    """A registry answered with an error, or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        registry: str | None = None,
        repository: str | None = None,
        status: int | None = None,
        digest: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = " ".join(
            part
            for part in (
                f"{registry}/{repository}" if registry and repository else registry or repository,
                f"HTTP {status}" if status else None,
                digest,
            )
            if part
        )
        super().__init__(f"{message} ({where})" if where else message, hint)
        self.registry = registry
        self.repository = repository
        self.status = status
        self.digest = digest
        self.retry_after: float | None = None  # the registry's Retry-After hint, when it sent one


class AuthError(RegistryError):
    """Authentication or authorisation failed."""


class NotFoundError(RegistryError):
    """A manifest or blob does not exist."""
