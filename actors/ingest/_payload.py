"""``payloadHash``: SHA-256 of the RFC 8785 (JCS) canonical body without its ``payloadHash`` member."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import rfc8785


def _finite_or_null(value: Any) -> Any:
    # JCS has no NaN or Infinity; a JavaScript client's JSON.stringify sends them as null, so hash the same.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(v) for v in value]
    return value


def payload_hash(body: dict[str, Any]) -> str:
    """The lowercase hex hash a client must send; raises ``ValueError`` for bodies JCS cannot encode."""
    unsigned = {k: v for k, v in body.items() if k != "payloadHash"}
    try:
        try:
            canonical = rfc8785.dumps(unsigned)
        except rfc8785.FloatDomainError:
            canonical = rfc8785.dumps(_finite_or_null(unsigned))
    except rfc8785.CanonicalizationError as exc:
        raise ValueError(f"the body has no RFC 8785 canonical form: {exc}") from exc
    return hashlib.sha256(canonical).hexdigest()
