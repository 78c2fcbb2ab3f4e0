"""Bearer credentials: user JWTs (HS256, ``sub`` = user id) and the operator token.

Pure functions over header values, so HTTP routes and WebSockets share them; the route registry
(``_routes``) calls them and hands the handler its ``user_id``.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict

import jwt

from ._errors import Unauthenticated

ALGORITHM = "HS256"
DEFAULT_TOKEN_TTL = 24 * 3600
MAX_USER_ID_LENGTH = 256


def bearer_token(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def issue_token(secret: str, user_id: str, *, ttl_seconds: int = DEFAULT_TOKEN_TTL,
                now: float | None = None) -> str:
    """A user JWT for local use and tests. ``now`` is Unix time: JWT expiry is wall-clock by nature."""
    _check_user_id(user_id)
    if ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
    issued = int(time.time() if now is None else now)
    return jwt.encode({"sub": user_id, "iat": issued, "exp": issued + ttl_seconds}, secret, algorithm=ALGORITHM)


def verify_user_token(secret: str, token: str | None) -> str:
    """The user id (``sub``) of a valid, unexpired token; otherwise ``Unauthenticated``."""
    if not token:
        raise Unauthenticated("a bearer token is required")
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]})
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("the token has expired") from None
    except jwt.PyJWTError:
        # No detail: which check failed is of use to an attacker, not to a legitimate client.
        raise Unauthenticated("the token is invalid") from None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not _valid_user_id(sub):
        raise Unauthenticated("the token is invalid")
    return sub


class TokenVerifier:
    """``verify_user_token`` with a bounded cache of tokens already verified.

    Clients send the same token on every request; checking its HS256 signature and claims each time
    is the largest cost of a cheap request. A cached token is still refused once its ``exp`` passes.
    """

    def __init__(self, secret: str, *, capacity: int = 10_000) -> None:
        self._secret = secret
        self._capacity = capacity
        self._verified: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def user_id(self, token: str | None) -> str:
        if token:
            hit = self._verified.get(token)
            if hit is not None and hit[1] > time.time():
                self._verified.move_to_end(token)
                return hit[0]
        sub = verify_user_token(self._secret, token)
        assert token is not None
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        self._verified[token] = (sub, float(exp))
        if len(self._verified) > self._capacity:
            self._verified.popitem(last=False)
        return sub


def authenticate_user(secret: str, authorization: str | None, query_token: str | None = None) -> str:
    """User id from an ``Authorization`` header value (or, for WebSockets, a ``?token=``);
    raises Unauthenticated."""
    token = bearer_token(authorization) or query_token
    return verify_user_token(secret, token)


def ops_token_valid(expected: str, presented: str | None) -> bool:
    """Constant-time comparison, so response timing does not leak the token's prefix."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def authenticate_ops(expected: str, authorization: str | None, query_token: str | None = None) -> None:
    token = bearer_token(authorization) or query_token
    if not ops_token_valid(expected, token):
        raise Unauthenticated("a valid operator token is required")


def _valid_user_id(user_id: str) -> bool:
    return 0 < len(user_id) <= MAX_USER_ID_LENGTH and user_id.isprintable() and not user_id.isspace()


def _check_user_id(user_id: str) -> None:
    if not _valid_user_id(user_id):
        raise ValueError(f"a user id is 1..{MAX_USER_ID_LENGTH} printable characters, got {user_id!r}")
