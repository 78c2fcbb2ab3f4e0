"""What an export contains, as pure functions: one JSON object per line, gzip-compressed.

    {"kind": "sample", "sourceId", "sourceRecordId", "metric", "value", "unit", "startAt", "endAt", "metadata",
     "revision", "updatedAt"}
    {"kind": "entity", "entityType", "entityId", "version", "data", "deleted", "updatedAt"}

Samples first (by start time), then sync entities (by type and id); deleted samples are not exported.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from storage import SampleRecord, SyncEntity

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _iso_us(micros: int) -> str:
    return (_EPOCH + timedelta(microseconds=micros)).isoformat().replace("+00:00", "Z")


def sample_line(s: SampleRecord) -> dict[str, Any]:
    # The stored metadata is JSON text already: embedded as is, never parsed.
    return {"kind": "sample", "sourceId": s.source_id, "sourceRecordId": s.source_record_id, "metric": s.metric,
            "value": s.value, "unit": s.unit, "startAt": _iso_us(s.start_us), "endAt": _iso_us(s.end_us),
            "metadata": orjson.Fragment(s.metadata_json), "revision": s.revision, "updatedAt": _iso_us(s.updated_us)}


def entity_line(e: SyncEntity) -> dict[str, Any]:
    return {"kind": "entity", "entityType": e.entity_type, "entityId": e.entity_id, "version": e.version,
            "data": e.data, "deleted": e.deleted, "updatedAt": _iso(e.updated_at)}


def encode_lines(lines: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


class Gzipper:
    """A gzip member fed piece by piece: ``feed`` returns the compressed bytes ready so far, ``finish`` the
    rest (trailer included). The output of one Gzipper is one valid .gz file."""

    def __init__(self, level: int = 6) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16+: the gzip wrapper
        self.raw_bytes = 0

    def feed(self, data: bytes) -> bytes:
        self.raw_bytes += len(data)
        return self._z.compress(data)

    def finish(self) -> bytes:
        return self._z.flush(zlib.Z_FINISH)


__all__ = ["Gzipper", "encode_lines", "entity_line", "sample_line"]
