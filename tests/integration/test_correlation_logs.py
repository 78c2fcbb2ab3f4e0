"""API.md "Conventions": work a request causes later carries its request id as ``correlationId`` — here the
log lines of a projection that fails on an upload's event name the upload's X-Request-ID."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from actors.projection import default_projections
from tests.ingest_helpers import running_app, sample, signed
from tests.integration.test_projection_http import ROLLUPS, Flaky, projections_with, quick_config, until


async def test_a_failing_projection_logs_the_request_id(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flaky = Flaky(next(p for p in default_projections() if p.name == "daily_rollups"), failures=1)
    caplog.set_level(logging.WARNING, logger="vigil.projection")
    async with running_app(tmp_path, config=quick_config(), projections=projections_with(flaky)) as h:
        status, _, hdrs = await h.post(signed([sample("a")]), extra_headers={"X-Request-ID": "corr-42"})
        assert status == 200 and hdrs["X-Request-ID"] == "corr-42"
        await until(h, ROLLUPS, metric="heart_rate", **{"from": "2026-11-24", "to": "2026-11-24"})  # retried
        assert flaky.attempts == 2
    lines = [r for r in caplog.records if r.name == "vigil.projection"]
    assert {r.getMessage().split(":")[0] for r in lines} >= {"projection daily_rollups failed",
                                                             "projection daily_rollups"}
    for record in lines:
        assert record.fields["correlationIds"] == ["corr-42"], record.getMessage()  # type: ignore[attr-defined]
