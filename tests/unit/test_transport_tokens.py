"""The verified-token cache must never accept what verification would refuse."""

from __future__ import annotations

import time

import jwt
import pytest

from transport import Unauthenticated, issue_token
from transport._auth import TokenVerifier

SECRET = "token-cache-test-secret-" + "0123456789abcdef" * 2


def test_a_cached_token_is_refused_once_it_expires() -> None:
    verifier = TokenVerifier(SECRET)
    fresh = issue_token(SECRET, "alice", ttl_seconds=60)
    assert verifier.user_id(fresh) == "alice"
    assert verifier.user_id(fresh) == "alice"  # from the cache
    # A token cached while valid and expired since: the cache must not vouch for it.
    stale = issue_token(SECRET, "alice", ttl_seconds=60, now=time.time() - 120)
    verifier._verified[stale] = ("alice", time.time() - 60)
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.user_id(stale)


def test_bad_tokens_are_never_cached() -> None:
    verifier = TokenVerifier(SECRET)
    forged = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, "another-secret-" + "x" * 32,
                        algorithm="HS256")
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            verifier.user_id(forged)
    with pytest.raises(Unauthenticated):
        verifier.user_id(None)


def test_the_cache_is_bounded() -> None:
    verifier = TokenVerifier(SECRET, capacity=3)
    tokens = [issue_token(SECRET, f"u{i}", ttl_seconds=60) for i in range(5)]
    assert [verifier.user_id(t) for t in tokens] == [f"u{i}" for i in range(5)]
    assert len(verifier._verified) == 3
