"""Timestamps at the storage boundary: the timezone-aware check, and the epoch-microsecond
form SQLite stores (also what sample cursors encode)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ._errors import InvalidData

__all__ = ["EPOCH", "MICROSECOND", "aware", "from_micros", "micros_unchecked", "to_micros"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def aware(field: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidData(field, f"expected a datetime, got {type(value).__name__}")
    if value.utcoffset() is None:
        raise InvalidData(field, "naive datetime refused: give a timezone-aware one")
    return value


def to_micros(value: object, field: str = "timestamp") -> int:
    """Microseconds since the epoch, UTC (SQLite's storage form; exact, no float rounding)."""
    return (aware(field, value) - EPOCH) // MICROSECOND


def micros_unchecked(value: datetime) -> int:
    """:func:`to_micros` for values already checked to be aware (the ingestion hot path)."""
    return (value - EPOCH) // MICROSECOND


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)
