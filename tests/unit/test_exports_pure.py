"""The exports domain's pure parts: the line format and its gzip stream, the transfer progress arithmetic, backup
keys, the S3 retry classification and configuration."""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime

import pytest
import trio
from botocore.exceptions import ClientError, EndpointConnectionError

from actors.exports import (
    BackupError,
    Gzipper,
    Progress,
    S3Config,
    backup_key,
    classify_s3,
    encode_lines,
    parse_backup_key,
    progress_report,
    render,
    sample_line,
)
from kernel import NO_RETRY, CircuitOpen, RetryAfter
from storage import SampleRecord


def test_a_sample_line_embeds_the_stored_metadata_and_iso_times() -> None:
    record = SampleRecord(7, "watch", "r1", "heart_rate", 61.5, "bpm", 1_764_547_200_000_001, 1_764_547_230_000_000,
                          '{"a": [1, 2]}', 2, 0)
    (line,) = encode_lines([sample_line(record)]).splitlines()
    assert json.loads(line) == {
        "kind": "sample", "sourceId": "watch", "sourceRecordId": "r1", "metric": "heart_rate", "value": 61.5,
        "unit": "bpm", "startAt": "2025-12-01T00:00:00.000001Z", "endAt": "2025-12-01T00:00:30Z",
        "metadata": {"a": [1, 2]}, "revision": 2, "updatedAt": "1970-01-01T00:00:00Z"}


def test_gzip_pieces_make_one_valid_file() -> None:
    gz = Gzipper(level=1)
    pieces = [gz.feed(b"a" * 100_000), gz.feed(b"line\n" * 1000), gz.finish()]
    assert gzip.decompress(b"".join(pieces)) == b"a" * 100_000 + b"line\n" * 1000
    assert gz.raw_bytes == 105_000


def test_progress_rate_and_eta() -> None:
    r = progress_report(50_000_000, 200_000_000, 2.0)
    assert (r.rate, r.eta) == (25_000_000.0, 6.0)
    assert progress_report(10, None, 1.0).eta is None  # pg_dump's size is not known in advance
    assert progress_report(0, 100, 0.0).rate == 0.0 and progress_report(0, 100, 0.0).eta is None
    assert render("backup", r) == "backup: 50.0 MB / 200.0 MB  25.0 MB/s  ETA 6 s  (2.0 s)"


def test_backup_keys_carry_time_and_schema_and_parse_back() -> None:
    at = datetime(2026, 12, 3, 4, 5, 6, tzinfo=UTC)
    key = backup_key("postgresql", 4, at)
    assert key == "backups/postgresql/20261203T040506Z-schema4.pgdump"
    assert parse_backup_key(key) == ("postgresql", at, 4)
    sqlite = backup_key("sqlite", 9, at)
    assert sqlite == "backups/sqlite/20261203T040506Z-schema9.sqlite.zst"
    for older in (sqlite, sqlite.removesuffix(".zst") + ".gz", sqlite.removesuffix(".zst")):  # all restore
        assert parse_backup_key(older) == ("sqlite", at, 9)
    for bad in ("backups/sqlite/x.sqlite", "backups/oracle/20261203T040506Z-schema4.db", "../../etc"):
        with pytest.raises(BackupError):
            parse_backup_key(bad)


def _client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "UploadPart")


@pytest.mark.parametrize("error, retry", [
    (EndpointConnectionError(endpoint_url="http://x"), True),
    (_client_error(503, "SlowDown"), True),
    (_client_error(500, "InternalError"), True),
    (_client_error(403, "AccessDenied"), False),
    (_client_error(404, "NoSuchBucket"), False),
    (CircuitOpen("s3", 3.0), False),
    (ValueError("bug"), False),
])
def test_what_is_worth_another_try(error: Exception, retry: bool) -> None:
    decision = classify_s3(error)
    assert isinstance(decision, RetryAfter) if retry else decision is NO_RETRY


def test_s3_config_from_the_environment() -> None:
    assert S3Config.from_env({}) is None
    assert S3Config.from_env({"VIGIL_S3_BUCKET": "b"}) is None  # no credentials: not configured
    cfg = S3Config.from_env({"VIGIL_S3_BUCKET": "b", "VIGIL_S3_ACCESS_KEY_ID": "AKID", "VIGIL_S3_SECRET_ACCESS_KEY":
                             "very-secret", "VIGIL_S3_ENDPOINT_URL": "http://127.0.0.1:9000"})
    assert cfg is not None and (cfg.bucket, cfg.endpoint_url, cfg.region) == ("b", "http://127.0.0.1:9000", "us-east-1")
    assert "very-secret" not in repr(cfg) and "AKID" not in repr(cfg)
    with pytest.raises(ValueError, match="part_size"):
        S3Config(bucket="b", access_key_id="a", secret_access_key="s", part_size=1024)


async def test_progress_on_a_terminal_rewrites_one_line(autojump_clock: trio.testing.MockClock) -> None:
    stream = io.StringIO()
    progress = Progress("restore", total=4_000_000, stream=stream, terminal=True, interval=1.0)
    progress.advance(0)
    await trio.sleep(1.0)
    progress.advance(1_000_000)  # 1 s in: 1 MB/s, 3 s left
    progress.advance(1_000_000)  # within the interval: not shown
    await trio.sleep(1.0)
    final = progress.finish()
    assert (final.done, final.rate, final.eta) == (2_000_000, 1_000_000.0, 2.0)
    assert stream.getvalue() == (
        "\r\x1b[2Krestore: 0.0 MB / 4.0 MB  0.0 MB/s  ETA --  (0.0 s)"
        "\r\x1b[2Krestore: 1.0 MB / 4.0 MB  1.0 MB/s  ETA 3 s  (1.0 s)"
        "\r\x1b[2Krestore: 2.0 MB / 4.0 MB  1.0 MB/s  ETA 2 s  (2.0 s)\n")
