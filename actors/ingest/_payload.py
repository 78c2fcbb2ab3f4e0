"""``payloadHash``: SHA-256 of the RFC 8785 (JCS) canonical body without its ``payloadHash`` member.

Hashing a 500-sample body through the pure-Python ``rfc8785`` encoder costs several milliseconds,
more than the rest of the request. ``payload_hash_raw`` parses the raw bytes once with the stdlib
(C) decoder into values whose stdlib encoding *is* the JCS encoding, and falls back to ``rfc8785``
for every case where the two differ:

- numbers: ECMAScript prints integral doubles without ".0" (so they are parsed as ints) and uses
  exponents only outside [1e-7, 1e21), while ``repr`` switches below 1e-4: such floats, integers
  beyond ±2**53 and NaN/Infinity take the slow path;
- key order: JCS sorts by UTF-16 code units, Python by code points; they differ only around
  characters outside the BMP, so any of those take the slow path (as do lone surrogates);
- strings: both escape exactly ``"``, ``\\`` and control characters, the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

import rfc8785

_SAFE_INT = 2**53 - 1
_NON_BMP_UTF8 = re.compile(rb"[\xf0-\xf4]")


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


class _SlowPath(Exception):
    """The body leaves the subset where the stdlib encoding equals RFC 8785's."""


def _jcs_float(text: str) -> Any:
    value = float(text)
    if value.is_integer():
        if -_SAFE_INT <= value <= _SAFE_INT:
            return int(value)
        raise _SlowPath
    if not math.isfinite(value) or abs(value) < 1e-4:
        raise _SlowPath
    return value  # shortest round-trip digits, positional: what ECMAScript prints in this range


def _jcs_int(text: str) -> int:
    value = int(text)
    if not -_SAFE_INT <= value <= _SAFE_INT:
        raise _SlowPath
    return value


def _no_constant(text: str) -> Any:
    raise _SlowPath


def payload_hash_raw(raw: bytes) -> str:
    """``payload_hash(json.loads(raw))``, in one stdlib pass whenever the body allows it."""
    try:
        body = json.loads(raw, parse_float=_jcs_float, parse_int=_jcs_int, parse_constant=_no_constant)
        if not isinstance(body, dict):
            raise _SlowPath
        body.pop("payloadHash", None)
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if not canonical.isascii() and _NON_BMP_UTF8.search(canonical):
            raise _SlowPath
    except (_SlowPath, UnicodeEncodeError, RecursionError):
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object") from None
        return payload_hash(body)
    return hashlib.sha256(canonical).hexdigest()
