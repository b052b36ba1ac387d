"""The error types: context is added by wrapping (DockwrightError.with_context), never by editing an error."""

from __future__ import annotations

import pytest

from dockwright.model.errors import AuthError, DockwrightError, UsageError


def test_with_context_keeps_the_type_the_hint_and_the_fields() -> None:
    original = AuthError("wrong password", registry="r.example", repository="app", status=401, hint="log in")
    wrapped = original.with_context("Dockerfile:3: ")
    assert type(wrapped) is AuthError and wrapped is not original
    assert wrapped.message == "Dockerfile:3: wrong password (r.example/app HTTP 401)"
    assert str(wrapped) == "Dockerfile:3: wrong password (r.example/app HTTP 401)\n  hint: log in"
    assert (wrapped.registry, wrapped.status, wrapped.hint, wrapped.exit_code) == ("r.example", 401, "log in", 1)
    assert str(original) == "wrong password (r.example/app HTTP 401)\n  hint: log in"  # left as it was
    assert UsageError("bad flag").with_context("x: ").exit_code == 2


def test_a_failed_step_is_wrapped_with_its_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dockwright.cache import Cache
    from dockwright.executor import Builder
    from dockwright.frontends.dockerfile import plan_from_dockerfile
    from dockwright.model.platform import Platform
    from dockwright.plan import BuildOptions

    amd64 = Platform.parse("linux/amd64")
    plan = plan_from_dockerfile(tmp_path, "FROM scratch\nCOPY missing /x\n", platform=amd64, build_platform=amd64)
    with pytest.raises(DockwrightError) as info:
        Builder(BuildOptions(platforms="linux/amd64"), Cache(tmp_path / "cache"), None, tmp_path).build(
            lambda platform: plan)
    assert info.value.message.startswith("Dockerfile:2: COPY source 'missing' not found")
    assert isinstance(info.value.__cause__, DockwrightError)
    assert info.value.__cause__.message.startswith("COPY source 'missing' not found")


def test_a_platform_the_base_lacks_is_a_usage_error_only_when_asked_for() -> None:
    """`--platform linux/s390x` on an amd64-only base is the user's argument (exit 2); the host's platform,
    picked by default, missing from the base is the base's shortcoming (exit 1)."""
    from dockwright.formats.resolve import select_platforms
    from dockwright.model.documents import Descriptor, Index
    from dockwright.model.mediatypes import OCI_INDEX, OCI_MANIFEST
    from dockwright.model.platform import Platform

    amd64 = Descriptor(OCI_MANIFEST, "sha256:" + "a" * 64, 10, platform=Platform.parse("linux/amd64"))
    index = Index(OCI_INDEX, [amd64])
    s390x = [Platform.parse("linux/s390x")]
    with pytest.raises(UsageError, match="has no linux/s390x image; it has: linux/amd64"):
        select_platforms(index, s390x, "base", explicit=True)
    with pytest.raises(DockwrightError, match="has no linux/s390x image") as info:
        select_platforms(index, s390x, "base", explicit=False)
    assert info.value.exit_code == 1
    assert select_platforms(index, [Platform.parse("linux/amd64")], "base", explicit=False) == index.manifests
