"""10,000 hostile request bodies against the real application (ingestion and settings over a temp SQLite
store): whatever arrives — bytes that are not JSON, JSON of the wrong shape, valid batches with one field
swapped for something absurd, lying content types, gzip that is not gzip — the answer is a 4xx (or a 2xx)
in the API.md error shape, never a 5xx. The bodies come from hypothesis, derandomized (one fixed seed)."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from actors.ingest import payload_hash
from tests.ingest_helpers import BATCH, ERROR_KEYS, USER_SETTINGS, headers, running_app, sample, signed

BODIES = 10_000


@dataclass(frozen=True, slots=True)
class Case:
    method: str
    path: str
    data: bytes
    content_type: str
    encoding: str | None


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                      st.floats(allow_nan=False), st.text(max_size=40))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                             st.dictionaries(st.text(max_size=12), inner, max_size=5)),
                          max_leaves=20)
FIELDS = ["requestId", "lane", "samples", "deletions", "payloadHash", "sourceId", "sourceRecordId", "metric",
          "value", "unit", "startAt", "endAt", "metadata", "allowHealthDataUpload", "blockedMetrics", "timezone",
          "sourcePriority"]


@st.composite
def mutated_batch(draw: st.DrawFn) -> bytes:
    """A valid batch with one field of the body or of a sample replaced, re-signed half of the time."""
    body = signed([sample(f"r{i}") for i in range(draw(st.integers(0, 3)))])
    target = body if draw(st.booleans()) or not body["samples"] else body["samples"][0]
    key = draw(st.sampled_from(FIELDS))
    if draw(st.booleans()):
        target[key] = draw(json_value)
    else:
        target.pop(key, None)
    if draw(st.booleans()):
        try:
            body["payloadHash"] = payload_hash({k: v for k, v in body.items() if k != "payloadHash"})
        except Exception:
            pass  # not hashable as canonical JSON: sent with the stale hash
    return json.dumps(body).encode()


@st.composite
def settings_body(draw: st.DrawFn) -> bytes:
    body: dict[str, Any] = {"allowHealthDataUpload": True, "blockedMetrics": [], "timezone": "Europe/Berlin",
                            "sourcePriority": []}
    body[draw(st.sampled_from(FIELDS))] = draw(json_value)
    return json.dumps(body).encode()


payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    json_value.map(lambda v: json.dumps(v).encode()),
    mutated_batch(),
    settings_body(),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),  # deep nesting
)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    method, path = draw(st.sampled_from([("POST", BATCH), ("PUT", USER_SETTINGS)]))
    data = draw(payloads)
    encoding = draw(st.sampled_from([None, None, None, "gzip", "gzip-lie", "deflate"]))
    if encoding == "gzip":
        data = gzip.compress(data)
    elif encoding == "gzip-lie":
        encoding = "gzip"  # claims gzip, sends the bytes as they are
    content_type = draw(st.sampled_from(["application/json", "application/json", "application/json; charset=latin-1",
                                         "text/plain", "", "application/problem+json"]))
    return Case(method, path, data, content_type, encoding)


def draw_cases(count: int) -> list[Case]:
    drawn: list[Case] = []

    @settings(max_examples=count, database=None, derandomize=True, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(cases())
    def collect(case: Case) -> None:
        drawn.append(case)

    collect()
    return drawn


@pytest.mark.slow
async def test_hostile_bodies_never_get_a_5xx(tmp_path: Path) -> None:
    drawn = draw_cases(BODIES)
    assert len(drawn) == BODIES
    statuses: dict[int, int] = {}
    async with running_app(tmp_path) as h:
        client = h.client
        for case in drawn:
            hdrs = headers(f"user-{len(case.data) % 7}")
            if case.content_type:
                hdrs["Content-Type"] = case.content_type
            if case.encoding:
                hdrs["Content-Encoding"] = case.encoding
            response = await client.open(case.path, method=case.method, data=case.data, headers=hdrs)
            status = response.status_code
            statuses[status] = statuses.get(status, 0) + 1
            assert status < 500, (case, await response.get_data(as_text=True))
            if status >= 400:
                body = await response.get_json()
                assert set(body["error"]) == ERROR_KEYS, body
    # The mix reached every layer: refused media types, bad encodings, invalid bodies, accepted ones.
    assert {200, 400, 415} <= set(statuses), statuses
