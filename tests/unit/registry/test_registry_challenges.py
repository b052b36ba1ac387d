"""WWW-Authenticate parsing and the bearer token cache."""

from __future__ import annotations

import pytest

from dockwright.registry.auth import Challenge, TokenCache, parse_challenges, pull_scope, push_scope


def test_bearer_challenge_with_quoted_commas_and_escapes() -> None:
    header = ('Bearer realm="https://auth.example.com/token",service="registry.example.com",'
              'scope="repository:team/app:pull,push",error="insufficient_scope",note="say \\"hi\\""')
    assert parse_challenges(header) == [Challenge("bearer", {
        "realm": "https://auth.example.com/token",
        "service": "registry.example.com",
        "scope": "repository:team/app:pull,push",
        "error": "insufficient_scope",
        "note": 'say "hi"',
    })]


def test_several_challenges_in_one_header_and_case_insensitive_names() -> None:
    header = 'Basic realm="Registry Realm", BEARER Realm=https://a/token , service = svc'
    assert parse_challenges(header) == [
        Challenge("basic", {"realm": "Registry Realm"}),
        Challenge("bearer", {"realm": "https://a/token", "service": "svc"}),
    ]


def test_token68_and_bare_scheme() -> None:
    assert parse_challenges("Negotiate YIIabc==, Basic") == [
        Challenge("negotiate", {"": "YIIabc=="}),
        Challenge("basic", {}),
    ]


@pytest.mark.parametrize("header", ["", "  ,  ", '="x"'])
def test_empty_or_garbage_headers_give_no_challenge(header: str) -> None:
    assert parse_challenges(header) == []


def test_token_for_more_scopes_serves_fewer_but_not_the_other_way() -> None:
    cache = TokenCache(clock=lambda: 100.0)
    cache.put("r.example", [push_scope("a"), pull_scope("b")], "big", ttl=300)
    assert cache.get("r.example", [pull_scope("a")]) == "big"
    assert cache.get("r.example", [push_scope("a"), pull_scope("b")]) == "big"
    assert cache.get("r.example", [push_scope("b")]) is None
    assert cache.get("other.example", [pull_scope("a")]) is None


def test_tokens_expire_before_their_lifetime_ends() -> None:
    now = [0.0]
    cache = TokenCache(clock=lambda: now[0])
    cache.put("r.example", [pull_scope("a")], "t", ttl=60)
    now[0] = 45.0
    assert cache.get("r.example", [pull_scope("a")]) == "t"
    now[0] = 55.0  # inside the safety margin: a request would race the expiry
    assert cache.get("r.example", [pull_scope("a")]) is None


def test_discard_drops_a_refused_token() -> None:
    cache = TokenCache(clock=lambda: 0.0)
    cache.put("r.example", [pull_scope("a")], "t", ttl=300)
    cache.discard("r.example", "t")
    assert cache.get("r.example", [pull_scope("a")]) is None
