"""Input checks and value conversions shared by both backends.

Everything a repository writes passes through here first, on the caller's side of the
thread/bridge crossing, so bad data raises InvalidData before any statement runs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from datetime import date, datetime
from functools import lru_cache
from typing import Any, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from ._config import Limits
from ._errors import InvalidData
from ._model import SampleIn, SampleKey
from ._time import EPOCH, MICROSECOND, aware

_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode
_dumps_sorted = json.JSONEncoder(
    separators=(",", ":"), allow_nan=False, ensure_ascii=False, sort_keys=True
).encode
load_json = json.loads


def text(field: str, value: object, limit: int) -> str:
    if type(value) is not str:
        raise InvalidData(field, f"expected a string, got {type(value).__name__}")
    if not value:
        raise InvalidData(field, "must not be empty")
    if len(value) > limit:
        raise InvalidData(field, f"longer than {limit} characters")
    if "\x00" in value:
        raise InvalidData(field, "contains a NUL character")
    return value


def opt_text(field: str, value: object, limit: int) -> str | None:
    return None if value is None else text(field, value, limit)


def error_text(value: object, limit: int) -> str:
    """Stored error messages are truncated rather than refused: the failure must be recorded."""
    message = str(value).replace("\x00", "")
    return message if len(message) <= limit else message[: limit - 1] + "…"


def opt_aware(field: str, value: object) -> datetime | None:
    return None if value is None else aware(field, value)


def day(field: str, value: object) -> date:
    # A datetime is a date subclass; refusing it keeps "local date" from silently meaning UTC.
    if type(value) is not date:
        raise InvalidData(field, f"expected a date, got {type(value).__name__}")
    return value


def finite(field: str, value: object) -> float:
    if type(value) is not float:
        if type(value) is not int:  # bool is refused too
            raise InvalidData(field, f"expected a number, got {type(value).__name__}")
        value = float(value)
    if not math.isfinite(value):
        raise InvalidData(field, "NaN and infinity are refused")
    return value


def integer(field: str, value: object, minimum: int | None = 0) -> int:
    if type(value) is not int:
        raise InvalidData(field, f"expected an integer, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise InvalidData(field, f"must be >= {minimum}")
    if value >= 2**63:
        raise InvalidData(field, "does not fit in 64 bits")
    return value


def seconds(field: str, value: object) -> float:
    number = finite(field, value)
    if number <= 0:
        raise InvalidData(field, "must be positive")
    return number


def positive_limit(field: str, value: object, maximum: int) -> int:
    number = integer(field, value, 1)
    return min(number, maximum)


# orjson handles plain JSON values; datetimes, dataclasses and subclasses of the JSON types go to
# ``default``, which sends them (like anything else orjson refuses) to the stdlib encoder.
_ORJSON_PLAIN = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def _not_plain(value: object) -> NoReturn:
    raise TypeError


def dump_json(field: str, value: object, limit: int) -> str:
    """Compact JSON text of ``value``; NaN, Infinity and values JSON cannot hold are refused."""
    encoded: str | None
    try:
        encoded = orjson.dumps(value, default=_not_plain, option=_ORJSON_PLAIN).decode()
    except TypeError:
        encoded = None
    if encoded is None or "null" in encoded:
        # orjson refused it, or wrote a NaN or Infinity as null: the stdlib encoder decides.
        try:
            encoded = _dumps(value)
        except (TypeError, ValueError) as exc:
            raise InvalidData(field, f"not JSON-serializable: {exc}") from exc
    if len(encoded) > limit:
        raise InvalidData(field, f"JSON longer than {limit} characters")
    if "\\u0000" in encoded:
        raise InvalidData(field, "contains a NUL character")
    return encoded


def event_hash(user_id: str, event_type: str, payload: object) -> str:
    """Content hash of an outbox event: sha256 of its canonical (sorted-key) JSON."""
    canonical = _dumps_sorted({"payload": payload, "type": event_type, "userId": user_id})
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@lru_cache(maxsize=512)
def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def timezone(field: str, value: object) -> str:
    name = text(field, value, 64)
    if not _known_zone(name):
        raise InvalidData(field, f"unknown IANA timezone {name!r}")
    return name


def batch(field: str, rows: object, limits: Limits) -> Sequence[Any]:
    if not isinstance(rows, Sequence) or isinstance(rows, str | bytes):
        raise InvalidData(field, "expected a sequence")
    if len(rows) > limits.max_batch_rows:
        raise InvalidData(field, f"more than {limits.max_batch_rows} rows")
    return rows


Stamp = Callable[[datetime], Any]


def _slow_sample(index: int, row: tuple[Any, ...], limits: Limits) -> float:
    """Check every field of a row the fast path did not accept; return its value as a float.

    Raises InvalidData naming the first wrong field.
    """
    source, record, metric, value, unit, start, end, _ = row
    text(f"samples[{index}].source_id", source, limits.max_id_chars)
    text(f"samples[{index}].source_record_id", record, limits.max_id_chars)
    text(f"samples[{index}].metric", metric, limits.max_name_chars)
    text(f"samples[{index}].unit", unit, limits.max_name_chars)
    aware(f"samples[{index}].start_at", start)
    aware(f"samples[{index}].end_at", end)
    return finite(f"samples[{index}].value", value)


def samples(rows: Sequence[SampleIn], limits: Limits, *, micros: bool) -> list[tuple[Any, ...]]:
    """Check and normalize samples: (source, record, start, end, metric, value, unit, metadata).

    Timestamps come out as epoch microseconds if ``micros`` (SQLite), else as the aware
    datetimes given. Repeats of a natural key in one batch collapse to the last one (a row is
    upserted once per statement). This is the ingestion hot path: the common case is one
    inline test, and only a row that fails it takes the slow path that names the field.
    """
    batch("samples", rows, limits)
    id_max, name_max, json_max = limits.max_id_chars, limits.max_name_chars, limits.max_json_chars
    epoch, micro = EPOCH, MICROSECOND
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for index, row in enumerate(rows):
        try:
            source, record, metric, value, unit, start, end, metadata = row
        except (TypeError, ValueError):
            raise InvalidData(f"samples[{index}]", "expected a SampleIn") from None
        if not (
            type(value) is float
            and value - value == 0.0  # false for NaN and ±inf
            and type(source) is str
            and type(record) is str
            and type(metric) is str
            and type(unit) is str
            and 0 < len(source) <= id_max
            and 0 < len(record) <= id_max
            and 0 < len(metric) <= name_max
            and 0 < len(unit) <= name_max
            and "\x00" not in source
            and "\x00" not in record
            and type(start) is datetime
            and type(end) is datetime
        ):
            value = _slow_sample(index, row, limits)
        begin: Any
        finish: Any
        if micros:
            try:
                # Subtracting from the aware epoch raises TypeError for a naive datetime.
                begin, finish = (start - epoch) // micro, (end - epoch) // micro
            except TypeError:
                aware(f"samples[{index}].start_at", start)
                aware(f"samples[{index}].end_at", end)
                raise
        else:
            if start.utcoffset() is None or end.utcoffset() is None:
                aware(f"samples[{index}].start_at", start)
                aware(f"samples[{index}].end_at", end)
            begin, finish = start, end
        if finish < begin:
            raise InvalidData(f"samples[{index}].end_at", "ends before start_at")
        if metadata is None or (type(metadata) is dict and not metadata):
            meta = "{}"
        elif isinstance(metadata, dict):
            meta = dump_json(f"samples[{index}].metadata", metadata, json_max)
        else:
            raise InvalidData(f"samples[{index}].metadata", "expected a JSON object")
        out[(source, record, begin)] = (source, record, begin, finish, metric, value, unit, meta)
    return list(out.values())


def sample_keys(keys: Sequence[SampleKey], limits: Limits, stamp: Stamp) -> list[tuple[Any, ...]]:
    batch("keys", keys, limits)
    out: dict[tuple[Any, ...], None] = {}
    for index, key in enumerate(keys):
        try:
            source, record, start = key
        except (TypeError, ValueError):
            raise InvalidData(f"keys[{index}]", "expected a SampleKey") from None
        text(f"keys[{index}].source_id", source, limits.max_id_chars)
        text(f"keys[{index}].source_record_id", record, limits.max_id_chars)
        out[(source, record, stamp(aware(f"keys[{index}].start_at", start)))] = None
    return list(out)
