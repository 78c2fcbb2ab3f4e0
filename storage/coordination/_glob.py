"""Redis glob patterns (PSUBSCRIBE) for the in-process bus.

A port of Redis' ``stringmatchlen`` rules to a compiled regex, byte-wise like Redis:
``*`` any run, ``?`` one byte, ``[abc]``/``[^a-z]`` classes (reversed ranges allowed,
unterminated class runs to the end), ``\\x`` literal x. Matching the same way as
Redis keeps the two implementations interchangeable.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["compile_glob", "escape_glob", "glob_matches"]

_SPECIAL = frozenset(b"*?[]\\")


def escape_glob(text: str) -> str:
    """Quote ``text`` so it matches only itself inside a pattern (used for key prefixes)."""
    return "".join("\\" + ch if ord(ch) < 128 and ord(ch) in _SPECIAL else ch for ch in text)


def _byte(b: int) -> bytes:
    return re.escape(bytes([b]))


def _class(pattern: bytes, i: int) -> tuple[bytes, int]:
    """Translate the class starting after '[' at index i; return (regex, next index)."""
    n = len(pattern)
    negate = i < n and pattern[i] == ord("^")
    if negate:
        i += 1
    items: list[bytes] = []
    while i < n:
        c = pattern[i]
        if c == ord("\\") and n - i >= 2:
            items.append(_byte(pattern[i + 1]))
            i += 2
        elif c == ord("]"):
            i += 1
            break
        elif n - i >= 3 and pattern[i + 1] == ord("-"):
            lo, hi = sorted((c, pattern[i + 2]))
            items.append(_byte(lo) + b"-" + _byte(hi))
            i += 3
        else:
            items.append(_byte(c))
            i += 1
    body = b"".join(items)
    if not body:
        # Redis: "[]" matches nothing, "[^]" any single byte.
        return (b"(?s:.)" if negate else b"(?!)"), i
    return b"[" + (b"^" if negate else b"") + body + b"]", i


@lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> re.Pattern[bytes]:
    raw = pattern.encode()
    out: list[bytes] = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == ord("*"):
            while i < n and raw[i] == ord("*"):
                i += 1
            out.append(b".*")
            continue
        if c == ord("?"):
            out.append(b".")
        elif c == ord("["):
            regex, i = _class(raw, i + 1)
            out.append(regex)
            continue
        elif c == ord("\\") and n - i >= 2:
            i += 1
            out.append(_byte(raw[i]))
        else:
            out.append(_byte(c))
        i += 1
    return re.compile(b"".join(out), re.DOTALL)


def glob_matches(pattern: str, channel: str) -> bool:
    return compile_glob(pattern).fullmatch(channel.encode()) is not None
