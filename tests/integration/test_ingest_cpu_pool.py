"""Upload decoding in worker processes (``Application.services(system, decode_pool=...)``): through
HTTP, an app whose uploads are decoded by a real one-process :class:`actors.ingest.DecodePool`
answers exactly as an app that decodes them in-process; errors raised in a worker cross back with
every field; a worker that dies is reported (``DecodePoolBroken``, 503 through HTTP) and replaced by
a fresh one.

pytest-trio fixtures are function-scoped (each test runs its own trio loop), so a pool cannot be
shared between tests: only three tests open one (about a second each to spawn).
"""

from __future__ import annotations

import copy
import json
import operator
import os
import pickle
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_asyncio

from actors.ingest import (
    BACKGROUND_NICENESS,
    DecodePool,
    DecodePoolBroken,
    IngestBatch,
    IngestUnavailable,
    InvalidUpload,
    LaneFull,
    PayloadHashMismatch,
    Problem,
    RequestInProgress,
    TooManyItems,
    UploadDisabled,
    decode_upload,
    open_decode_pool,
    payload_hash,
)
from kernel import ActorSystem
from storage import InvalidData, Limits, StoreConfig, open_store
from tests.ingest_helpers import (
    SAMPLES,
    SETTINGS,
    Db,
    Harness,
    build_application,
    deletion,
    error_of,
    fast_tree_config,
    sample,
    signed,
)
from transport import create_app

POOL_DEADLINE = 30.0  # spawning a worker takes about a second; this is only a guard against hangs
# Small enough that a 5 000-character metadata is refused by the store's check (which the worker
# must run with the lanes' store limits), large enough for every stored result and event here.
STORE_CONFIG = StoreConfig(limits=Limits(max_json_chars=4000))


# -- the app with (or without) a pool ---------------------------------------------------------------
@asynccontextmanager
async def app_with_pool(tmp_path: Path, pool: Any) -> AsyncIterator[Harness]:
    """``tests.ingest_helpers.running_app`` (asyncio loop, temp SQLite store, the real tree), with
    ``decode_pool=pool`` given to the services (``None``: decode in-process, exactly as running_app)."""
    await trio.Path(tmp_path).mkdir(parents=True, exist_ok=True)
    db_path = tmp_path / "v.db"
    async with trio_asyncio.open_loop(), open_store(f"sqlite:///{db_path}", config=STORE_CONFIG) as store:
        parts = build_application(store, fast_tree_config())
        async with ActorSystem.start(parts.tree, seed=1) as system:
            services = parts.services(system, decode_pool=pool)
            app = create_app(SETTINGS, system=system, services=services)
            yield Harness(app=app, system=system, store=store, db=Db(db_path), services=services)


@dataclass
class RecordingPool:
    """A DecodePool as the app sees it, recording each job (its function, whether it waited for a turn,
    outcome)."""

    pool: DecodePool
    jobs: list[tuple[str, bool, Any]] = field(default_factory=list)

    @property
    def processes(self) -> int:
        return self.pool.processes

    async def run(self, fn: Callable[..., Any], *args: Any, wait_turn: Any = None) -> Any:
        background = wait_turn is not None
        try:
            out = await self.pool.run(fn, *args, wait_turn=wait_turn)
        except BaseException as exc:
            self.jobs.append((fn.__name__, background, exc))
            raise
        self.jobs.append((fn.__name__, background, out))
        return out


@dataclass
class DyingOncePool:
    """The pool, but the first job kills its worker instead of running."""

    pool: DecodePool
    died: int = 0

    @property
    def processes(self) -> int:
        return self.pool.processes

    async def run(self, fn: Callable[..., Any], *args: Any, wait_turn: Any = None) -> Any:
        if not self.died:
            self.died += 1
            return await self.pool.run(os._exit, 1, wait_turn=wait_turn)
        return await self.pool.run(fn, *args, wait_turn=wait_turn)


def comparable(status: int, body: Any, hdrs: Any) -> tuple[int, Any, dict[str, str | None]]:
    """A response without what differs per HTTP request (error.requestId, X-Request-ID)."""
    body = copy.deepcopy(body)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        assert body["error"]["requestId"] == hdrs["X-Request-ID"]
        del body["error"]["requestId"]
    return status, body, {k: hdrs.get(k) for k in ("Idempotent-Replay", "Retry-After", "Content-Type")}


async def listing(h: Harness, user: str) -> list[dict[str, Any]]:
    status, page = await h.get(SAMPLES, user=user, limit=1000)
    assert status == 200, page
    assert page["nextCursor"] is None
    return [{k: v for k, v in item.items() if k != "updatedAt"} for item in page["items"]]


def stored_rows(h: Harness, user: str) -> list[tuple[Any, ...]]:
    return [(r["source_id"], r["source_record_id"], r["metric"], r["value"], r["unit"], r["metadata"])
            for r in h.db.samples(user, live=False)]


def raw_of(body: Any) -> bytes:
    return json.dumps(body).encode()


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


# -- the corpus -------------------------------------------------------------------------------------
T1, T2, T3 = "2026-11-24T08:00:00Z", "2026-11-24T08:01:00Z", "2026-11-24T08:02:00Z"


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    status: int
    code: str | None = None  # the error code, for a non-200


def backfill(samples: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    """A signed body on the cold lane: the pool decodes backfill only (foreground is decoded in the
    server process, with or without a pool)."""
    kw.setdefault("lane", "cold")
    return signed(samples, **kw)


FOREGROUND_CASES = {"change lane deletions", "deletions on the hot lane", "too many items"}


def corpus() -> list[Case]:
    """Request bodies posted in this order (some depend on the ones before: replay, reuse)."""
    units = backfill([
        sample("u1", value=61.0, unit="bpm"),
        sample("u2", value=62.0, unit="count/min", start=T2),
        sample("u3", metric="distance", value=1.5, unit="km"),
        sample("u4", metric="body_temperature", value=98.6, unit="degF"),
        sample("u5", metric="weight", value=150, unit="lb"),
        sample("u6", metric="spo2", value=0.97, unit="fraction"),
        sample("u7", metric="steps", value=120, unit="steps", metadata={"device": "watch", "n": [1, 2.5]}),
    ], request_id="units-1")
    rejections = backfill([
        sample("x1", metric="nope"),
        sample("x2", unit="furlongs"),
        sample("x3", value=None),
        sample("x4", start=T2, end=T1),
        sample("x5", value=500.0),
        sample("dup", value=70.0),
        sample("ok", metric="active_energy", value=4.184, unit="kJ"),
        sample("dup", value=71.0),  # the same natural key again: the later one wins
    ], request_id="rejections-1")
    cold_update = backfill([sample("u1", value=65.0), sample("c1", metric="hrv_sdnn", value=0.05, unit="s")],
                         lane="cold", request_id="cold-1")
    change = backfill([sample("ch1", metric="respiratory_rate", value=14, unit="count/min")], lane="change",
                    deletions=[deletion("u2", start=T2), deletion("never-stored")], request_id="change-1")
    ambiguous_lane = backfill([sample("amb", metadata={"lane": "hot"})], lane="cold", request_id="ambiguous-1")
    reused = backfill([sample("other")], request_id="units-1")
    mismatch = backfill([sample("m1")], request_id="mismatch-1")
    mismatch["samples"][0]["value"] = 99.0  # changed after signing
    schema_invalid = backfill([_without(sample("v1", start="2026-11-24T08:00:00"), "unit")], lane="warm",
                            request_id="invalid-1")
    too_many = backfill([], lane="change", deletions=[deletion(f"d{i}") for i in range(5001)], request_id="big-1")
    nan_body = backfill([sample("nan1", value=None), sample("nan2")], request_id="nan-1")
    nan_raw = raw_of(nan_body).replace(b'"value": null', b'"value": NaN')
    assert nan_raw.count(b"NaN") == 1
    big_int = backfill([sample("big")], request_id="bigint-1")
    big_int["samples"][0]["metadata"] = {"big": 2**60}  # past 2**53: hashed as the double JavaScript reads
    big_int["payloadHash"] = payload_hash({k: v for k, v in big_int.items() if k != "payloadHash"})
    return [
        Case("mixed units", raw_of(units), 200),
        Case("per-sample rejections", raw_of(rejections), 200),
        Case("cold lane update", raw_of(cold_update), 200),
        Case("change lane deletions", raw_of(change), 200),
        Case("lane named twice (metadata)", raw_of(ambiguous_lane), 200),
        Case("replay, reformatted", json.dumps(dict(reversed(list(units.items()))), indent=2).encode(), 200),
        Case("requestId reused with another payload", raw_of(reused), 422, "PAYLOAD_HASH_MISMATCH"),
        Case("payloadHash mismatch", raw_of(mismatch), 422, "PAYLOAD_HASH_MISMATCH"),
        Case("malformed JSON", b'{"requestId": "x", ', 400, "VALIDATION_ERROR"),
        Case("not an object", b"[1, 2]", 400, "VALIDATION_ERROR"),
        Case("schema-invalid", raw_of(schema_invalid), 400, "VALIDATION_ERROR"),
        Case("deletions on the hot lane", raw_of(signed([], deletions=[deletion("u1")], request_id="hotdel-1")),
             400, "VALIDATION_ERROR"),
        Case("too many items", raw_of(too_many), 413, "PAYLOAD_TOO_LARGE"),
        Case("NUL in sourceId", raw_of(backfill([sample("n1", source="watch\u0000x")], request_id="nul-1")),
             400, "VALIDATION_ERROR"),
        Case("NUL in metadata", raw_of(backfill([sample("n2", metadata={"k": "a\u0000b"})], request_id="nul-2")),
             400, "VALIDATION_ERROR"),
        Case("metadata past the store's limit", raw_of(backfill([sample("l1", metadata={"k": "x" * 5000})],
                                                              request_id="long-1")), 400, "VALIDATION_ERROR"),
        Case("NaN literal (stdlib path)", nan_raw, 200),
        Case("integer past 2**53", raw_of(big_int), 200),
        Case("no samples", raw_of(backfill([], request_id="empty-1")), 200),
    ]


async def post_all(h: Harness, cases: list[Case], user: str) -> list[tuple[int, Any, dict[str, str | None]]]:
    out = []
    for case in cases:
        status, body, hdrs = await h.post(None, user=user, raw=case.raw)
        out.append(comparable(status, body, hdrs))
        if case.code is None:
            assert status == case.status, (case.name, body)
        else:
            error_of(status, body, case.code, case.status)
    return out


# -- 1. equivalence -----------------------------------------------------------------------------------
async def test_every_answer_through_the_pool_equals_the_in_process_one(tmp_path: Path) -> None:
    cases = corpus()
    async with app_with_pool(tmp_path / "plain", None) as plain:
        expected = await post_all(plain, cases, "alice")
        expected_listing = await listing(plain, "alice")
        expected_rows = stored_rows(plain, "alice")
        expected_events = plain.db.events("alice")

    with trio.fail_after(POOL_DEADLINE):
        async with open_decode_pool(1) as opened:
            assert isinstance(opened, DecodePool) and opened.processes == 1
            pool = RecordingPool(opened)
            async with app_with_pool(tmp_path / "pooled", pool) as pooled:
                got = await post_all(pooled, cases, "alice")
                got_listing = await listing(pooled, "alice")
                got_rows = stored_rows(pooled, "alice")
                got_events = pooled.db.events("alice")
            worker_pid = await opened.run(os.getpid)

    for case, want, have in zip(cases, expected, got, strict=True):
        assert have == want, case.name
    assert got_listing == expected_listing
    assert got_rows == expected_rows
    assert got_events == expected_events
    assert worker_pid != os.getpid()

    # Every backfill upload (and every one whose lane is unknown before parsing) was decoded in the
    # worker after its turn; foreground ones were decoded in this process.
    backfill_cases = [c.name for c in cases if c.name not in FOREGROUND_CASES]
    assert [(name, turn) for name, turn, _ in pool.jobs] == [("decode_upload", True)] * len(backfill_cases)
    by_case = dict(zip(backfill_cases, pool.jobs, strict=True))
    # What came back pickled: plain rows, no sample models; errors as our own types.
    units_batch = by_case["mixed units"][2]
    assert isinstance(units_batch, IngestBatch)
    assert units_batch.samples == () and units_batch.request_id == "units-1" and units_batch.lane == "cold"
    assert units_batch.prepared is not None and len(units_batch.prepared.rows) == 7
    assert units_batch.prepared.metrics == {"heart_rate", "distance", "body_temperature", "weight", "spo2", "steps"}
    assert type(by_case["malformed JSON"][2]) is InvalidUpload
    assert type(by_case["NUL in sourceId"][2]) is InvalidData
    assert by_case["NUL in sourceId"][2].problem == "contains a NUL character"

    # And the answers themselves, concretely (the same for both apps, checked above).
    answers = {c.name: a for c, a in zip(cases, got, strict=True)}
    status, body, hdrs = answers["mixed units"]
    assert (status, body) == (200, {"requestId": "units-1", "status": "completed", "inserted": 7, "updated": 0,
                                    "deleted": 0, "rejected": []})
    assert hdrs["Idempotent-Replay"] is None
    status, body, _ = answers["per-sample rejections"]
    assert (body["inserted"], body["updated"]) == (2, 0)
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [
        (0, "UNKNOWN_METRIC"), (1, "UNKNOWN_UNIT"), (2, "NON_FINITE_VALUE"), (3, "INVALID_TIME_RANGE"),
        (4, "VALUE_OUT_OF_RANGE")]
    assert (answers["cold lane update"][1]["inserted"], answers["cold lane update"][1]["updated"]) == (1, 1)
    assert (answers["change lane deletions"][1]["inserted"], answers["change lane deletions"][1]["deleted"]) == (1, 1)
    assert answers["replay, reformatted"][1] == answers["mixed units"][1]
    assert answers["replay, reformatted"][2]["Idempotent-Replay"] == "true"
    assert answers["malformed JSON"][1]["error"]["details"][0]["type"] == "json_invalid"
    assert {d["path"] for d in answers["schema-invalid"][1]["error"]["details"]} == {
        "samples.0.startAt", "samples.0.endAt", "samples.0.unit", "lane"}
    assert answers["too many items"][1]["error"]["details"] == {"maxItems": 5000}
    assert answers["NUL in sourceId"][1]["error"]["details"] == [
        {"field": "samples[0].source_id", "problem": "contains a NUL character"}]
    assert answers["metadata past the store's limit"][1]["error"]["details"][0]["problem"] == \
        "JSON longer than 4000 characters"
    nan = answers["NaN literal (stdlib path)"][1]
    assert (nan["inserted"], [(r["index"], r["code"]) for r in nan["rejected"]]) == (1, [(0, "NON_FINITE_VALUE")])
    assert answers["no samples"][1]["inserted"] == 0

    by_record = {row["sourceRecordId"]: row for row in got_listing}
    assert (by_record["u1"]["value"], by_record["u1"]["unit"]) == (65.0, "bpm")
    assert "u2" not in by_record  # deleted on the change lane
    assert (by_record["u3"]["value"], by_record["u3"]["unit"]) == (1500.0, "m")
    assert by_record["u4"]["unit"] == "degC" and by_record["u4"]["value"] == pytest.approx(37.0)
    assert by_record["u5"]["unit"] == "kg" and by_record["u5"]["value"] == pytest.approx(68.0388555)
    assert (by_record["u6"]["value"], by_record["u6"]["unit"]) == (97.0, "%")
    assert (by_record["u7"]["metric"], by_record["u7"]["unit"], by_record["u7"]["metadata"]) == (
        "steps", "count", {"device": "watch", "n": [1, 2.5]})
    assert by_record["dup"]["value"] == 71.0
    assert by_record["ok"]["unit"] == "kcal" and by_record["ok"]["value"] == pytest.approx(1.0)
    assert (by_record["c1"]["value"], by_record["c1"]["unit"]) == (50.0, "ms")
    assert answers["integer past 2**53"][1]["inserted"] == 1
    assert by_record["big"]["metadata"] == {"big": 2**60}  # stored exactly as sent
    assert sorted(by_record) == sorted(["u1", "u3", "u4", "u5", "u6", "u7", "dup", "ok", "c1", "ch1", "amb",
                                        "nan2", "big"])


# -- 2. blocked metrics -------------------------------------------------------------------------------
def blocked_corpus() -> list[Case]:
    mixed = backfill([
        sample("same", value=60.0),
        sample("s1", metric="steps", value=100, unit="count"),
        sample("h2", value=70.0, unit="count/min", start=T2),
        sample("same", metric="steps", value=5, unit="count"),  # the same natural key, blocked: ignored
        sample("d1", metric="distance", value=2, unit="km", start=T3),
    ], request_id="blocked-1")
    unaffected = backfill([sample("w1", metric="weight", value=150, unit="lb")], request_id="blocked-2")
    blocked_first = backfill([sample("s9", metric="steps", value=None, unit="furlongs"), sample("x", metric="nope")],
                           lane="cold", request_id="blocked-3")
    all_blocked = backfill([sample("s10", metric="steps", value=1, unit="count")], lane="change",
                         deletions=[deletion("h2", start=T2)], request_id="blocked-4")
    return [Case("mixed blocked and allowed", raw_of(mixed), 200), Case("no blocked metric", raw_of(unaffected), 200),
            Case("blocking judged first", raw_of(blocked_first), 200),
            Case("only blocked samples, with a deletion", raw_of(all_blocked), 200)]


async def test_blocked_metrics_through_the_pool_equal_the_in_process_answers(tmp_path: Path) -> None:
    cases = blocked_corpus()

    async def run(h: Harness) -> tuple[Any, ...]:
        assert await h.put_settings("carol", blockedMetrics=["steps"]) == (
            200, {"allowHealthDataUpload": True, "blockedMetrics": ["steps"], "timezone": "UTC", "sourcePriority": []})
        answers = await post_all(h, cases, "carol")
        return answers, await listing(h, "carol"), stored_rows(h, "carol"), h.db.events("carol")

    async with app_with_pool(tmp_path / "plain", None) as plain:
        expected = await run(plain)
    with trio.fail_after(POOL_DEADLINE):
        async with open_decode_pool(1) as opened:
            assert opened is not None
            pool = RecordingPool(opened)
            async with app_with_pool(tmp_path / "pooled", pool) as pooled:
                got = await run(pooled)

    assert got == expected
    answers, got_listing, rows, _ = got
    results = [body for _, body, _ in answers]
    assert results[0] == {"requestId": "blocked-1", "status": "completed", "inserted": 3, "updated": 0, "deleted": 0,
                          "rejected": [{"index": 1, "code": "METRIC_BLOCKED",
                                        "message": "uploads of steps are blocked in your settings"},
                                       {"index": 3, "code": "METRIC_BLOCKED",
                                        "message": "uploads of steps are blocked in your settings"}]}
    assert (results[1]["inserted"], results[1]["rejected"]) == (1, [])
    assert [(r["index"], r["code"]) for r in results[2]["rejected"]] == [(0, "METRIC_BLOCKED"), (1, "UNKNOWN_METRIC")]
    assert results[2]["inserted"] == 0
    assert (results[3]["inserted"], results[3]["deleted"]) == (0, 1)
    assert [(r["source_record_id"], r["metric"]) for r in plain.db.samples("carol")] == [
        ("same", "heart_rate"), ("d1", "distance"), ("w1", "weight")]
    assert [(row[1], row[2], row[3]) for row in rows] == [
        ("same", "heart_rate", 60.0), ("h2", "heart_rate", 70.0), ("d1", "distance", 2000.0),
        ("w1", "weight", pytest.approx(68.0388555))]
    assert [item["sourceRecordId"] for item in got_listing] == ["same", "w1", "d1"]  # oldest first

    # The worker prepared every upload without the user's settings: the ones naming "steps" were
    # prepared again in the lane from the raw body (UploadSamples), the other one was used as is.
    assert [(name, turn) for name, turn, _ in pool.jobs] == [("decode_upload", True)] * 3  # the change one: here
    prepared = [batch.prepared for _, _, batch in pool.jobs]
    assert [p.applies_to({"steps"}) for p in prepared] == [False, True, False]
    assert len(prepared[0].rows) == 4  # without blocking: "same" as steps displaced the heart rate
    assert [r.code for r in prepared[2].rejected] == ["NON_FINITE_VALUE", "UNKNOWN_METRIC"]  # unblocked order


# -- 3. pickling ----------------------------------------------------------------------------------------
def round_trip(exc: BaseException) -> BaseException:
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert back is not exc
    assert vars(back) == vars(exc)
    assert back.args == exc.args
    assert str(back) == str(exc)
    return back


def test_ingest_errors_pickle_with_every_field() -> None:
    problems = (Problem(path="samples.0.unit", problem="Field required", kind="missing"),)
    invalid = round_trip(InvalidUpload("the request body is invalid", problems))
    assert isinstance(invalid, InvalidUpload)
    assert (invalid.message, invalid.problems) == ("the request body is invalid", problems)

    too_many = round_trip(TooManyItems(5001, 5000))
    assert isinstance(too_many, TooManyItems)
    assert (too_many.count, too_many.limit) == (5001, 5000)

    full = round_trip(LaneFull("hot", 250))
    assert isinstance(full, LaneFull)
    assert (full.lane, full.retry_after_ms, full.message) == ("hot", 250, "the hot lane is full; retry later")

    for error in (PayloadHashMismatch("payloadHash does not match"), UploadDisabled(), RequestInProgress(),
                  IngestUnavailable("retry")):
        assert round_trip(error).message == error.message  # type: ignore[attr-defined]


def test_invalid_data_pickles_with_its_fields() -> None:
    back = round_trip(InvalidData("samples[3].source_id", "contains a NUL character"))
    assert isinstance(back, InvalidData) and isinstance(back, ValueError)
    assert (back.field, back.problem, str(back), back.retryable) == (
        "samples[3].source_id", "contains a NUL character", "samples[3].source_id: contains a NUL character", False)


# -- 4. a worker that dies --------------------------------------------------------------------------------
async def test_a_dead_worker_raises_decode_pool_broken_and_is_replaced(tmp_path: Path) -> None:
    with trio.fail_after(POOL_DEADLINE):
        async with open_decode_pool(1) as pool:
            assert pool is not None
            first_pid = await pool.run(os.getpid)
            assert first_pid != os.getpid()
            assert await pool.run(os.getpid) == first_pid  # the same warm worker, while it lives

            with pytest.raises(DecodePoolBroken, match="a worker process died"):
                await pool.run(os._exit, 1)
            assert await pool.run(operator.add, 2, 3) == 5
            second_pid = await pool.run(os.getpid)
            assert second_pid not in (first_pid, os.getpid())
            with pytest.raises(DecodePoolBroken):
                await pool.run(os._exit, 7, wait_turn=trio.lowlevel.checkpoint)
            assert await pool.run(operator.mul, 6, 7, wait_turn=trio.lowlevel.checkpoint) == 42
            # Backfill runs below the server's priority: its workers are niced.
            assert await pool.run(os.nice, 0) >= os.nice(0) + BACKGROUND_NICENESS

            # Errors raised in a worker cross back as our own types, with their fields.
            async with app_with_pool(tmp_path / "probe", None) as probe:
                preparer = probe.store.preparer
            with pytest.raises(InvalidUpload) as refused:
                await pool.run(decode_upload, "alice", b"{", preparer)
            assert [p.kind for p in refused.value.problems] == ["json_invalid"]
            with pytest.raises(InvalidData) as invalid:
                await pool.run(decode_upload, "alice", raw_of(signed([sample(source="a\u0000b")])), preparer)
            assert (invalid.value.field, invalid.value.problem) == ("samples[0].source_id", "contains a NUL character")

            # Through HTTP: a worker dying under an upload is a retryable 503; nothing was claimed,
            # and the same upload then succeeds on a fresh worker.
            dying = DyingOncePool(pool)
            async with app_with_pool(tmp_path / "dying", dying) as h:
                body = backfill([sample("r1")], request_id="dies-1")
                status, out, hdrs = await h.post(body)
                err = error_of(status, out, "UNAVAILABLE", 503)
                assert err["retryable"] is True and err["retryAfterMs"] == 1000
                assert err["message"] == "decoding this upload failed on the server's side; retry"
                assert hdrs["Retry-After"] == "1"
                assert dying.died == 1
                assert h.db.request("alice", "dies-1") is None
                assert h.db.sample_count("alice") == 0
                status, out, hdrs = await h.post(body)
                assert (status, out["inserted"], out["rejected"]) == (200, 1, []), out
                assert "Idempotent-Replay" not in hdrs
                assert [r["source_record_id"] for r in h.db.samples("alice")] == ["r1"]
            assert await pool.run(os.getpid) not in (first_pid, second_pid, os.getpid())
