"""Which source to trust where samples overlap: pure.

API.md ("User settings"): ``sourcePriority`` ranks the user's sources, most trusted first; sources it does
not name follow in the order they were first seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


def rank_sources(priority: Sequence[str], first_seen: Sequence[str]) -> dict[str, int]:
    """source id -> rank, 0 the most trusted: ``priority`` first, then the rest in first-seen order."""
    ranks: dict[str, int] = {}
    for source in (*priority, *first_seen):
        ranks.setdefault(source, len(ranks))
    return ranks


def source_order(ranks: Mapping[str, int], sources: Iterable[str]) -> list[str]:
    """``sources`` most trusted first. One the ranks do not know (a sample newer than the source list read
    beside it) comes after every ranked one, ties by id, so the order is total and deterministic."""
    last = len(ranks)
    return sorted(set(sources), key=lambda s: (ranks.get(s, last), s))


__all__ = ["rank_sources", "source_order"]
