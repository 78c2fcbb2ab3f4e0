"""``payloadHash``: SHA-256 of the RFC 8785 (JCS) canonical body without its ``payloadHash`` member.

Hashing a 500-sample body through the pure-Python ``rfc8785`` encoder costs several milliseconds,
more than the rest of the request. ``payload_hash_parsed`` encodes an already parsed body with
``orjson`` (sorted keys), whose output is the JCS encoding except where checked below, and falls
back to ``rfc8785`` for every case where the two may differ:

- numbers: ECMAScript prints integral doubles without ".0" and switches to exponents outside
  [1e-6, 1e21), orjson outside [1e-5, 1e16); both print the shortest round-trip digits. One walk
  over the parsed body turns integral floats within ±2**53 into ints (copying only the dicts and
  lists that change) and sends everything else unusual (|x| < 1e-4, beyond 2**53) to the slow path;
- key order: JCS sorts by UTF-16 code units, orjson by code points; they differ only around
  characters outside the BMP, so any of those take the slow path;
- strings: both escape exactly ``"``, ``\\`` and control characters, the same way.

Integers past ±(2**53 - 1), which JCS has no exact form for, are hashed as the doubles a JavaScript
client's JSON.parse makes of them (and NaN/Infinity as the null its JSON.stringify writes), so such a
body has the hash its sender computed rather than no hash at all.

The request path parses the body once (orjson) and hands the same document to validation and to
``payload_hash_parsed``; ``payload_hash_raw`` does both steps for callers holding bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

import orjson
import rfc8785

_SAFE_INT = 2**53 - 1
_NON_BMP_UTF8 = re.compile(rb"[\xf0-\xf4]")


def _as_javascript_numbers(value: Any) -> Any:
    """``value`` with its numbers as a JavaScript client's JSON.parse holds them: integers past
    ±(2**53 - 1) become the nearest double (past double range, Infinity), and JSON.stringify then
    sends NaN and Infinity as null. RFC 8785 canonicalizes doubles, so this is what a client hashes."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int) and not isinstance(value, bool) and not -_SAFE_INT <= value <= _SAFE_INT:
        try:
            return float(value)
        except OverflowError:
            return None
    if isinstance(value, dict):
        return {k: _as_javascript_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_javascript_numbers(v) for v in value]
    return value


def payload_hash(body: dict[str, Any]) -> str:
    """The lowercase hex hash a client must send; raises ``ValueError`` for bodies JCS cannot encode
    (strings with unpaired surrogates, nesting deeper than the interpreter's recursion limit)."""
    unsigned = {k: v for k, v in body.items() if k != "payloadHash"}
    try:
        try:
            canonical = rfc8785.dumps(unsigned)
        except (rfc8785.FloatDomainError, rfc8785.IntegerDomainError):
            canonical = rfc8785.dumps(_as_javascript_numbers(unsigned))
    except rfc8785.CanonicalizationError as exc:
        raise ValueError(f"the body has no RFC 8785 canonical form: {exc}") from exc
    except RecursionError:
        raise ValueError("the body is nested too deeply to canonicalize") from None
    return hashlib.sha256(canonical).hexdigest()


class _SlowPath(Exception):
    """The body leaves the subset where orjson's encoding equals RFC 8785's."""


def _js_float(value: float) -> float | int:
    if value.is_integer():
        if -_SAFE_INT <= value <= _SAFE_INT:
            return int(value)  # ECMAScript prints integral doubles without ".0" (and -0 as 0)
        raise _SlowPath
    if abs(value) < 1e-4:
        raise _SlowPath  # orjson writes exponents below 1e-5, ECMAScript below 1e-6
    return value


def _js_dict(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` with every number as ECMAScript prints it: itself when nothing needs changing
    (the common case: no copy), else a copy. Raises _SlowPath for numbers only the slow path
    encodes exactly."""
    changed: dict[str, Any] | None = None
    new: Any
    for key, item in value.items():
        kind = type(item)
        if kind is str:
            continue
        if kind is float:
            new = _js_float(item)
        elif kind is dict:
            new = _js_dict(item) if item else item
        elif kind is list:
            new = _js_list(item) if item else item
        elif kind is int:
            if not -_SAFE_INT <= item <= _SAFE_INT:
                raise _SlowPath  # ECMAScript would round it to a double
            continue
        else:
            continue  # None, bools
        if new is not item:
            if changed is None:
                changed = dict(value)
            changed[key] = new
    return value if changed is None else changed


def _js_list(value: list[Any]) -> list[Any]:
    changed: list[Any] | None = None
    new: Any
    for index, item in enumerate(value):
        kind = type(item)
        if kind is dict:
            new = _js_dict(item)
        elif kind is float:
            new = _js_float(item)
        elif kind is list:
            new = _js_list(item)
        elif kind is int:
            if not -_SAFE_INT <= item <= _SAFE_INT:
                raise _SlowPath
            continue
        else:
            continue
        if new is not item:
            if changed is None:
                changed = list(value)
            changed[index] = new
    return value if changed is None else changed


def _canonical(unsigned: dict[str, Any]) -> bytes:
    # Numbers made ECMAScript-shaped first: then orjson's output is JCS's (property-tested against
    # rfc8785), but for key order around characters outside the BMP.
    canonical = orjson.dumps(_js_dict(unsigned), option=orjson.OPT_SORT_KEYS)
    if not canonical.isascii() and _NON_BMP_UTF8.search(canonical):
        raise _SlowPath
    return canonical


def payload_hash_parsed(document: dict[str, Any], raw: bytes) -> str:
    """``payload_hash_raw(raw)`` for a ``document`` that :func:`parse_body` made of ``raw``: its
    fast path skips the second parse, and the slow path starts again from ``raw`` (the stdlib
    reads an integer literal past 2**53 as an int, which JCS refuses; orjson made it a float).

    ``document`` is not modified. Raises ``ValueError`` for bodies JCS cannot encode.
    """
    unsigned = {k: v for k, v in document.items() if k != "payloadHash"}
    try:
        canonical = _canonical(unsigned)
    except (_SlowPath, TypeError, RecursionError):
        return _reference(raw)
    return hashlib.sha256(canonical).hexdigest()


def parse_body(raw: bytes) -> dict[str, Any] | None:
    """``raw`` as a JSON object, or None when orjson refuses it (malformed, NaN, lone surrogates,
    numbers past double range, not an object): the caller's slow path then decides."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return document if type(document) is dict else None


def _reference(raw: bytes) -> str:
    body = json.loads(raw)  # the stdlib also takes NaN and Infinity (hashed as null) and lone surrogates
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return payload_hash(body)


def payload_hash_raw(raw: bytes) -> str:
    """``payload_hash(json.loads(raw))``, in one orjson pass whenever the body allows it."""
    document = parse_body(raw)
    return _reference(raw) if document is None else payload_hash_parsed(document, raw)
